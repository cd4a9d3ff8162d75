"""Your own encoder and decoder: the contract, training (resume, NaN guard), evaluation, pictures,
saving and explicit loading. DDP with them is in test_distributed.py."""

from __future__ import annotations

import json
import math
import sys
import urllib.request

import numpy as np
import pytest
import torch
from custom_nets import ConvDecoder, ConvEncoder, own_vae
from torch import nn

from vaelab import VAE, Run, TrainConfig, VAEConfig, VaelabError, register_prior, train
from vaelab.evaluation.elbo import evaluate_model
from vaelab.evaluation.features import encode_dataset
from vaelab.models.distributions import Bernoulli, Gaussian
from vaelab.models.objectives import neg_elbo
from vaelab.models.priors import StandardNormal
from vaelab.training.engine import Engine
from vaelab.viz.plots import KINDS, make_figure, needs_data
from vaelab.viz.report import build_report
from vaelab.viz.server import make_server

pytestmark = pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
CONFIG = VAEConfig(input_shape=(1, 8, 8), latent_dim=2)


def cpu(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "threads": 1} | kw)


def test_the_config_records_the_networks_for_information():
    model = own_vae()
    assert model.config.arch == "custom"
    assert model.config.networks == {
        "encoder": "custom_nets.ConvEncoder",
        "decoder": "custom_nets.ConvDecoder",
    }
    assert model.config.hidden == () and model.config.latent_dim == 2
    assert isinstance(model.encoder, ConvEncoder) and isinstance(model.decoder, ConvDecoder)


def test_composing_the_parts_gives_the_same_model_as_a_config():
    torch.manual_seed(0)
    enc, dec = ConvEncoder(), ConvDecoder()
    composed = VAE(enc, dec, prior=StandardNormal(2), likelihood=Bernoulli, input_shape=(1, 8, 8))
    assert composed.config == own_vae().config
    assert composed.likelihood is Bernoulli and isinstance(composed.prior, StandardNormal)
    torch.manual_seed(1)
    by_name = VAE(
        ConvEncoder(), ConvDecoder(n_params=2), likelihood="gaussian", input_shape=(1, 8, 8), latent_dim=2
    )
    assert by_name.likelihood is Gaussian


BROKEN = [
    (ConvEncoder(3), ConvDecoder(), r"^encoder contract: x \(5, 1, 8, 8\) .* = \(5, 4\).*gave \(5, 6\)$"),
    (ConvEncoder(), ConvDecoder(n_params=2), r"^decoder contract: z \(5, 2\) .* bernoulli .*\(5, 2, 8, 8\)$"),
    (ConvEncoder(), nn.Linear(2, 63), r"^decoder contract: .* or flat \(5, 64\); .* gave \(5, 63\)$"),
]


@pytest.mark.parametrize(("encoder", "decoder", "message"), BROKEN)
def test_a_broken_contract_is_one_line_on_the_first_batch(encoder, decoder, message):
    model = VAE(CONFIG, encoder=encoder, decoder=decoder)
    with pytest.raises(VaelabError, match=message) as e:
        neg_elbo(model, torch.rand(5, 1, 8, 8))
    assert "\n" not in str(e.value)


def test_the_contract_is_checked_once_and_flat_decoder_outputs_are_fine():
    flat = nn.Sequential(nn.Linear(2, 64))
    model = VAE(CONFIG, encoder=ConvEncoder(), decoder=flat)
    neg_elbo(model, torch.rand(5, 1, 8, 8))
    assert not model._unchecked  # later batches pay nothing
    assert model.decode(torch.zeros(3, 2)).mean.shape == (3, 1, 8, 8)


def test_networks_come_in_pairs_and_custom_configs_need_them():
    with pytest.raises(VaelabError, match="pass both encoder= and decoder="):
        VAE(CONFIG, encoder=ConvEncoder())
    with pytest.raises(VaelabError, match=r"built with its own networks \(encoder custom_nets.ConvEncoder"):
        VAE(own_vae().config)
    with pytest.raises(VaelabError, match="top_latent_dim must be 0"):
        VAE(VAEConfig(latent_dim=3, top_latent_dim=1), encoder=ConvEncoder(3), decoder=ConvDecoder(3))


def test_forward_gives_the_terms_neg_elbo_computes(digits):
    model = own_vae()
    x = digits.test.batch(slice(0, 16))
    out = model(x, generator=torch.Generator().manual_seed(3))
    terms = neg_elbo(model, x, generator=torch.Generator().manual_seed(3))
    assert out.z.shape == (16, 2) and out.posterior.mean.shape == (16, 2)
    torch.testing.assert_close(-out.likelihood.log_prob(x), terms.recon, rtol=0, atol=0)
    torch.testing.assert_close(out.posterior.kl(), terms.kl, rtol=0, atol=0)


def test_train_evaluate_save_and_load_back_without_flags(digits, tmp_path):
    model = own_vae()
    history = train(model, digits, cpu(epochs=3), progress=False, run_dir=tmp_path / "run", seed_rng=True)
    assert history[-1]["test_neg_elbo"] < history[0]["test_neg_elbo"] < 60
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        doc["model"]["arch"] == "custom" and doc["model"]["networks"]["encoder"] == "custom_nets.ConvEncoder"
    )
    result = evaluate_model(model, digits, importance_samples=20, progress=False)
    assert result["nll"] <= result["neg_elbo"] + 0.05 and result["probe_accuracy"] > 0.3
    with pytest.raises(
        VaelabError, match=r"pass them, as VAE.from_pretrained\(path, encoder=\.\.\., decoder=\.\.\.\)"
    ):
        VAE.from_pretrained(tmp_path / "run")
    back = VAE.from_pretrained(tmp_path / "run", encoder=ConvEncoder(), decoder=ConvDecoder())
    x = digits.test.batch(slice(0, 8))
    torch.testing.assert_close(back.reconstruct(x), model.eval().reconstruct(x), rtol=0, atol=0)
    feats = encode_dataset(back, digits, "test")
    expected = back.encode(digits.test.batch(slice(None))).mean.detach().numpy()
    np.testing.assert_allclose(feats["mu"], expected, rtol=1e-5, atol=1e-6)
    assert back.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)


def test_loading_never_imports_the_recorded_class_paths(digits, tmp_path):
    own_vae().save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    doc = json.loads(path.read_text())
    doc["model"]["networks"] = {"encoder": "evil_module_xyz.Boom", "decoder": "os.system"}
    path.write_text(json.dumps(doc))
    back = VAE.from_pretrained(tmp_path / "m", encoder=ConvEncoder(), decoder=ConvDecoder())
    assert "evil_module_xyz" not in sys.modules
    assert back.config.networks["encoder"] == "custom_nets.ConvEncoder"  # what was passed in


def test_resume_of_a_custom_network_run_is_bitwise(digits, tmp_path):
    straight = own_vae()
    train(straight, digits, cpu(epochs=3), progress=False, run_dir=tmp_path / "a")
    first = own_vae()
    train(first, digits, cpu(epochs=2), progress=False, run_dir=tmp_path / "b")
    with Run.resume(tmp_path / "b", {"epochs": 3}) as run:
        resumed = VAE(run.model_config, encoder=ConvEncoder(), decoder=ConvDecoder())
        train(resumed, digits, run.train_config, progress=False, run_dir=run)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_nan_guard_rolls_back_a_custom_network(digits, monkeypatch):
    real, calls = Engine.run_epoch, [0]

    def run_epoch(self, *args, **kwargs):
        sums = real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 2:  # the first try of epoch 2 ends with a NaN weight
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = math.nan
        return sums

    monkeypatch.setattr(Engine, "run_epoch", run_epoch)
    model = own_vae()
    history = train(model, digits, cpu(epochs=3), progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[1]["lr"] == 5e-4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_conditional_model_passes_the_label_to_both_networks(digits):
    model = own_vae(n_classes=10)
    history = train(model, digits, cpu(epochs=2), progress=False)
    assert math.isfinite(history[-1]["test_neg_elbo"])
    images = model.sample(10, generator=torch.Generator().manual_seed(0), y=torch.arange(10))
    assert images.shape == (10, 1, 8, 8)


def test_a_vamp_prior_mixes_the_custom_encoders_posteriors(digits):
    model = own_vae(prior="vamp", pseudo_inputs=5)
    z = model.prior.sample(7, torch.Generator().manual_seed(0))
    assert z.shape == (7, 2) and torch.isfinite(model.prior.log_prob(z)).all()
    assert math.isfinite(train(model, digits, cpu(epochs=1), progress=False)[-1]["test_neg_elbo"])


def test_pictures_report_and_explorer_work_with_custom_networks(digits, tmp_path):
    model = own_vae()
    train(model, digits, cpu(epochs=1), progress=False, run_dir=tmp_path / "run")
    for kind in KINDS:
        if kind == "pseudo":
            continue  # a VampPrior's only
        fig = make_figure(
            kind, model, digits if needs_data(kind, model) else None, run_dir=str(tmp_path / "run")
        )
        assert fig is not None
    html = build_report(tmp_path / "run", model, digits)
    assert "custom" in html and "<img" in html
    server = make_server(model, digits, tmp_path / "run")
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_custom_networks_with_a_gaussian_likelihood_train(digits):
    model = own_vae(likelihood="gaussian")
    history = train(model, digits, cpu(epochs=2), progress=False)
    assert np.isfinite(history[-1]["test_neg_elbo"])


def test_own_networks_and_a_tensor_dataset_train_evaluate_save_and_load_without_flags(digits, tmp_path):
    from torch.utils.data import TensorDataset

    from vaelab.data import from_torch

    train_ds = TensorDataset(digits.train.batch(slice(None), binarize=False), digits.train.y)
    test_ds = TensorDataset(digits.test.batch(slice(None), binarize=False), digits.test.y)
    model = own_vae()
    history = train(model, train_ds, cpu(epochs=3), test=test_ds, progress=False, run_dir=tmp_path / "run")
    assert history[-1]["test_neg_elbo"] < history[0]["test_neg_elbo"]
    data = from_torch(train_ds, test_ds)
    result = evaluate_model(model, data, importance_samples=20, progress=False)
    assert result["nll"] <= result["neg_elbo"] + 0.05 and "probe_accuracy" in result
    back = VAE.from_pretrained(tmp_path / "run", encoder=ConvEncoder(), decoder=ConvDecoder())
    x = test_ds[:8][0]
    torch.testing.assert_close(back.reconstruct(x), model.eval().reconstruct(x), rtol=0, atol=0)


def test_a_config_and_loose_parts_do_not_mix():
    message = r"^VAE\(config\) takes its parts from the config .*; drop likelihood$"
    with pytest.raises(VaelabError, match=message):
        VAE(CONFIG, likelihood="gaussian", encoder=ConvEncoder(), decoder=ConvDecoder())
    with pytest.raises(VaelabError, match="drop input_shape, latent_dim"):
        VAE(CONFIG, input_shape=(1, 8, 8), latent_dim=2)
    with pytest.raises(VaelabError, match=r"needs the decoder and input_shape=\(C, H, W\)"):
        VAE(ConvEncoder(), ConvDecoder())


def test_a_mixture_prior_is_fitted_to_a_custom_network_model(digits):
    from vaelab.evaluation.prior_fit import fit_mixture_prior

    model = own_vae()
    train(model, digits, cpu(epochs=1), progress=False)
    new, stats = fit_mixture_prior(model, digits.train.head(200), components=3)
    assert new.config.arch == "custom" and new.config.prior == "mixture" and new.encoder is not model.encoder
    x = digits.test.batch(slice(0, 4))
    torch.testing.assert_close(new.encode(x).mean, model.encode(x).mean)  # the same trained encoder
    assert stats["log_density_mixture"] >= stats["log_density_old_prior"] - 0.5


def test_a_composed_prior_must_be_what_loading_rebuilds():
    class Scaled(StandardNormal):
        def __init__(self, latent_dim: int, scale: float = 1.0) -> None:
            super().__init__(latent_dim)
            self.scale = scale

        @classmethod
        def from_config(cls, config, latent_dim, encode):
            return cls(latent_dim)

    register_prior("scaled_normal_test")(Scaled)
    VAE(ConvEncoder(), ConvDecoder(), prior=Scaled(2), input_shape=(1, 8, 8))  # what loading rebuilds
    message = r"^prior Scaled has scale=5\.0, but loading rebuilds it .* scale=1\.0"
    with pytest.raises(VaelabError, match=message):
        VAE(ConvEncoder(), ConvDecoder(), prior=Scaled(2, scale=5.0), input_shape=(1, 8, 8))
