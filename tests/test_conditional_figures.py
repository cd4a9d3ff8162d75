"""Figures, the explorer and the report of a conditional VAE: every example is encoded and decoded
with its own label, free latents (samples, the manifold, the explorer) with a stated class."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.models.vae import load
from vaelab.viz.explore import ApiError, Explorer
from vaelab.viz.figures import grid_layout
from vaelab.viz.latent import decode_mean, encode_means, path_through
from vaelab.viz.plots import make_figure


def unpack(images: dict) -> np.ndarray:
    """The explorer's {"shape", "data"} pixels -> uint8 (N, ...)."""
    return np.frombuffer(base64.b64decode(images["data"]), np.uint8).reshape(images["shape"])


DRAWN = ("samples", "recon", "interp", "traverse", "manifold", "latents")


@pytest.fixture(scope="module", params=[1, 2], ids=["one-level", "hierarchical"])
def cvae_run(request, tmp_path_factory):
    """A CVAE on digits, trained 2 epochs; a 2 + 1 dim hierarchy for the second param."""
    run = tmp_path_factory.mktemp("cvae") / "run"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "2", "--hidden", "16"]
    argv += ["--conditional", "--batch-size", "100", "--no-progress"]
    argv += ["--latent-dim", "2"] if request.param == 1 else ["--latent-dim", "3", "--top-latent-dim", "1"]
    assert main(argv) == 0
    return run


@torch.no_grad()
def test_class_weights_decode_like_labels(cvae_run):
    model = load(cvae_run)
    z, y = torch.randn(5, model.config.latent_dim), torch.tensor([0, 3, 9, 3, 1])
    torch.testing.assert_close(model.decode(z, F.one_hot(y, 10).float()).mean, model.decode(z, y).mean)
    assert not torch.allclose(model.decode(z, (y + 1) % 10).mean, model.decode(z, y).mean)
    with pytest.raises(VaelabError, match=r"shape \(N, 10\)"):
        model.decode(z, torch.ones(5, 4))


@pytest.mark.parametrize("kind", DRAWN)
def test_every_figure_is_drawn(cvae_run, digits, kind):
    image = make_figure(kind, load(cvae_run), digits)
    assert image.width > 50 and image.height > 50


def test_samples_put_one_class_per_column(cvae_run):
    image = make_figure("samples", load(cvae_run), n=20)
    assert image.width == grid_layout(20, 8, 8, 10).size[0]  # 10 columns, one per class


@torch.no_grad()
def test_examples_are_encoded_with_their_labels(cvae_run, digits):
    model = load(cvae_run)
    split = digits.test
    mu, _ = encode_means(model, split)
    x, y = split.batch(slice(0, 6)), split.y[:6]
    torch.testing.assert_close(mu[:6], model.encode(x, y).mean)
    assert not torch.allclose(mu[:6], model.encode(x, (y + 1) % 10).mean)


@torch.no_grad()
def test_explorer_interpolates_labels_and_decodes_as_the_chosen_class(cvae_run, digits):
    model = load(cvae_run)
    ex = Explorer(model, digits, label=4)
    a, b = 0, int((digits.test.y != digits.test.y[0]).nonzero()[0])  # two different classes
    out = ex.interpolate({"a": a, "b": b, "steps": 3})
    frames = unpack(out["images"])
    ends = torch.stack([ex.mu[a], ex.mu[b]])
    soft = path_through(F.one_hot(digits.test.y[[a, b]], 10).float(), 3, "linear")
    want = decode_mean(model, path_through(ends, 3, "linear"), soft)  # the middle frame: half of each
    assert soft[1].max() == 0.5 and len(frames) == 3
    np.testing.assert_allclose(frames.reshape(3, -1) / 255, want.reshape(3, -1), atol=1 / 255 + 1e-6)
    z = [[0.5] * model.config.latent_dim]
    img = unpack(ex.decode({"z": z})["images"])
    four = decode_mean(model, torch.tensor(z), torch.tensor([4]))
    np.testing.assert_allclose(img.reshape(-1) / 255, four.reshape(-1), atol=1 / 255 + 1e-6)
    seven = decode_mean(model, torch.tensor(z), torch.tensor([7]))  # the page's label wins
    img = unpack(ex.decode({"z": z, "label": 7})["images"])
    np.testing.assert_allclose(img.reshape(-1) / 255, seven.reshape(-1), atol=1 / 255 + 1e-6)
    png = Image.open(
        io.BytesIO(ex.image_png({"z": "0.5," * (len(z[0]) - 1) + "0.5", "label": "7", "scale": "1"}))
    )
    np.testing.assert_allclose(np.asarray(png).reshape(-1) / 255, seven.reshape(-1), atol=1 / 255 + 1e-6)
    for bad in (10, -1, "3", True):
        with pytest.raises(ApiError, match="label"):
            ex.decode({"z": z, "label": bad})
    with pytest.raises(VaelabError, match=r"0\.\.9"):
        Explorer(model, digits, label=10)
    assert ex.info()["decode_label"] == 4 and ex.info()["n_classes"] == 10


@torch.no_grad()
def test_explorer_decodes_one_point_as_every_class(cvae_run, digits):
    """The page's class strip: one request, the same z repeated, one class per row."""
    model = load(cvae_run)
    ex = Explorer(model, digits)
    z = torch.full((11, model.config.latent_dim), -0.7)
    labels = [3, *range(10)]
    img = unpack(ex.decode({"z": z.tolist(), "label": labels})["images"])
    want = torch.cat([decode_mean(model, z[i : i + 1], torch.tensor([c])) for i, c in enumerate(labels)])
    np.testing.assert_allclose(img.reshape(11, -1) / 255, want.reshape(11, -1), atol=1 / 255 + 1e-6)
    assert np.array_equal(img[0], img[4]) and not np.array_equal(img[1], img[2])  # class 3 twice
    for bad in ([3] * 10, [3] * 12, [], [3] * 10 + [10], [3] * 10 + [None], [3] * 10 + [True]):
        with pytest.raises(ApiError, match="label"):
            ex.decode({"z": z.tolist(), "label": bad})


def test_explorer_refuses_labels_for_unconditional_runs(trained_run, digits):
    ex = Explorer(load(trained_run), digits)
    assert ex.info()["decode_label"] is None and ex.info()["n_classes"] == 0
    for label in (3, [3]):
        with pytest.raises(ApiError, match="conditional runs only"):
            ex.decode({"z": [[0.0, 0.0]], "label": label})
    with pytest.raises(VaelabError, match="conditional runs"):
        Explorer(load(trained_run), digits, label=3)


def test_manifold_label(cvae_run, trained_run, digits):
    model = load(cvae_run)
    three, five = (np.asarray(make_figure("manifold", model, digits, grid=4, label=c)) for c in (3, 5))
    assert three.shape == five.shape and not np.array_equal(three, five)
    with pytest.raises(VaelabError, match="conditional runs"):
        make_figure("manifold", load(trained_run), digits, label=3)
    with pytest.raises(VaelabError, match=r"0\.\.9"):
        make_figure("manifold", model, digits, label=12)


def test_cli_plot_label_and_report(cvae_run, trained_run, tmp_path, capsys):
    png = tmp_path / "m.png"
    assert main(["plot", str(cvae_run), "--kind", "manifold", "--label", "7", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    other = tmp_path / "u.png"
    assert main(["plot", str(trained_run), "--kind", "manifold", "--label", "7", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "--label applies to conditional runs" in err and err.count("\n") == 1
    assert main(["plot", str(cvae_run), "--kind", "samples", "--label", "7", "--out", str(other)]) == 2
    assert "--label does not apply to --kind samples" in capsys.readouterr().err
    assert main(["report", str(cvae_run), "--out", str(tmp_path / "r.html")]) == 0
    assert not other.exists()
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Not drawn: this is a conditional VAE" not in html
    assert json.loads((cvae_run / "config.json").read_text())["model"]["n_classes"] == 10
