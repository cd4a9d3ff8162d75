"""Tampered run directories: every bad config.json or weights file is one clean line, and nothing
is allocated for a model that could never fit."""

from __future__ import annotations

import json
import time

import pytest
import torch
from datagen import assert_one_line_error, run_cli
from safetensors.torch import load_file, save_file

from vaelab import VAE, VAEConfig, load
from vaelab.errors import VaelabError
from vaelab.io import save_model
from vaelab.models.vae import MAX_LAYERS, parameter_count


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    save_model(VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))), tmp_path / "run")
    return tmp_path / "run"


def _edit_config(run, edit) -> None:
    doc = json.loads((run / "config.json").read_text())
    edit(doc["model"])
    (run / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # past the parser's recursion limit
        '{"format": "vaelab-run", "version": ' + "9" * 5000 + "}",  # past the int digit limit
        '{"format": "vaelab-run"',
        "\udcff",
    ],
    ids=["deep", "huge-int", "truncated", "not-utf8"],
)
def test_hostile_config_json_is_one_line(run, text, tmp_path):
    (run / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(VaelabError, match=r"config\.json"):
        load(run)
    out = tmp_path / "s.png"
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(out)]), "config.json")
    assert not out.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("latent_dim", 10**9),
        ("hidden", [10**8, 10**8]),
        ("input_shape", [3, 10**5, 10**5]),
        ("n_classes", 10**10),
        ("hidden", [4] * (MAX_LAYERS + 1)),
    ],
)
def test_a_config_too_big_to_fit_is_refused_before_allocating(run, field, value):
    _edit_config(run, lambda m: m.update({field: value}))
    t0 = time.perf_counter()
    with pytest.raises(VaelabError, match="VAEConfig"):
        load(run)
    assert time.perf_counter() - t0 < 10  # counted on the meta device, never allocated
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(run / "s.png")]), "VAEConfig")


def test_parameter_count_matches_the_built_model():
    cfg = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16, 8), prior="vamp", pseudo_inputs=7)
    assert parameter_count(cfg) == sum(p.numel() for p in VAE(cfg).parameters())


def test_non_finite_weights_are_refused_at_load(run, tmp_path):
    weights = load_file(str(run / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(run / "model.safetensors"), metadata={"format": "vaelab-run"})
    with pytest.raises(VaelabError, match="non-finite weights"):
        load(run)
    out = tmp_path / "s.png"
    assert_one_line_error(run_cli(["sample", str(run), "--out", str(out)]), "non-finite")
    assert not out.exists()
