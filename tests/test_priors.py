"""The priors: the VampPrior's density, sampling, KL estimate and likelihood weights, checked against
torch.distributions and Monte Carlo; saving, loading and the CLI with --prior vamp."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from datagen import assert_one_line_error, run_cli
from PIL import Image
from torch import distributions as D

from vaelab.cli import main
from vaelab.config import VAMP_PSEUDO_INPUTS, VAEConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.evaluation.elbo import collapse_diagnostics
from vaelab.evaluation.likelihood import importance_log_weights, log_px_estimates
from vaelab.io import save_model
from vaelab.models import priors
from vaelab.models.objectives import iwae_terms, neg_elbo
from vaelab.models.priors import StandardNormal, VampPrior
from vaelab.models.vae import VAE, load
from vaelab.viz.latent import rank_dims


def vamp_model(k: int = 7, latent: int = 2, seed: int = 0, **kw) -> VAE:
    torch.manual_seed(seed)
    model = VAE(VAEConfig(latent_dim=latent, hidden=(16,), prior="vamp", pseudo_inputs=k, **kw))
    with torch.no_grad():  # spread the pseudo-inputs over [0, 1] so the components differ
        model.prior.raw.uniform_(-0.2, 1.2)
    return model


def mixture(prior: VampPrior) -> D.MixtureSameFamily:
    """The same prior built independently from torch.distributions."""
    comp = prior.components()
    k = comp.mean.shape[0]
    return D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(k)), D.Independent(D.Normal(comp.mean, comp.std), 1)
    )


def test_vamp_log_prob_matches_mixture_same_family():
    model = vamp_model()
    z = 2 * torch.randn(3, 5, 2)  # any leading shape -> (3, 5)
    got = model.prior.log_prob(z)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, mixture(model.prior).log_prob(z), rtol=1e-5, atol=1e-5)


def test_vamp_log_prob_is_the_same_in_chunks(monkeypatch):
    model = vamp_model()
    z = torch.randn(50, 2)
    whole = model.prior.log_prob(z)
    monkeypatch.setattr(priors, "PAIR_FLOATS", 7 * 2 * 3)  # 3 rows at a time
    torch.testing.assert_close(model.prior.log_prob(z), whole)


def test_pseudo_inputs_stay_in_the_data_domain():
    model = vamp_model()
    u = model.prior.pseudo_inputs
    assert u.shape == (7, 1, 8, 8) and u.min() >= 0 and u.max() <= 1
    gauss = vamp_model(likelihood="gaussian")
    assert torch.equal(gauss.prior.pseudo_inputs, gauss.prior.raw)  # unconstrained for Gaussian data


@torch.no_grad()
def test_vamp_samples_have_the_mixture_moments():
    model = vamp_model()
    n = 40_000
    z = model.prior.sample(n, torch.Generator().manual_seed(1))
    assert z.shape == (n, 2)
    comp = model.prior.components()
    mean = comp.mean.mean(0)  # E z = mean_k mu_k
    var = (comp.std.pow(2) + comp.mean.pow(2)).mean(0) - mean.pow(2)  # law of total variance
    se_mean = (var / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 4 * se_mean).all()
    centred = (z - mean).pow(2)
    se_var = centred.var(0).div(n).sqrt()
    assert ((centred.mean(0) - var).abs() < 4 * se_var).all()


@torch.no_grad()
def test_temperature_scales_the_component_std():
    model = vamp_model()
    z0 = model.prior.sample(20, torch.Generator().manual_seed(0), temperature=1e-8)
    means = model.prior.components().mean
    dist = (z0.unsqueeze(1) - means).abs().amax(-1).amin(-1)  # each draw sits on a component mean
    assert (dist < 1e-6).all()
    x = model.sample(5, torch.Generator().manual_seed(0), temperature=0.5)
    assert x.shape == (5, 1, 8, 8)


def test_normal_prior_is_the_closed_form():
    p = StandardNormal(3)
    z = torch.randn(4, 5, 3)
    ref = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1).log_prob(z)
    torch.testing.assert_close(p.log_prob(z), ref)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    assert not any(k.startswith("prior") for k in model.state_dict())  # old weights load unchanged


def direct_neg_elbo(model: VAE, x, z) -> torch.Tensor:
    """-(log p(x|z) + log p(z) - log q(z|x)) at z (N, D), from torch.distributions only."""
    q = model.encode(x)
    log_q = D.Independent(D.Normal(q.mean, q.std), 1).log_prob(z)
    logits = model.decoder(z).view_as(x)
    log_px = D.Independent(D.Bernoulli(logits=logits, validate_args=False), 3).log_prob(x)
    return -(log_px + mixture(model.prior).log_prob(z) - log_q)


@torch.no_grad()
def test_vamp_neg_elbo_is_the_single_sample_elbo_at_the_same_z(digits):
    model = vamp_model()
    x = digits.test.batch(slice(0, 16))
    terms = neg_elbo(model, x, generator=torch.Generator().manual_seed(3))
    z = model.encode(x).sample(torch.Generator().manual_seed(3))  # the same draw
    torch.testing.assert_close(terms.neg_elbo, direct_neg_elbo(model, x, z), rtol=1e-5, atol=1e-4)
    assert terms.loss == pytest.approx(terms.neg_elbo.mean().item(), rel=1e-6)
    # beta weights the KL estimate in the loss only; the terms stay the unweighted ELBO
    weighted = neg_elbo(model, x, generator=torch.Generator().manual_seed(3), beta=2.0)
    torch.testing.assert_close(weighted.neg_elbo, terms.neg_elbo)
    assert weighted.loss == pytest.approx((terms.recon + 2 * terms.kl).mean().item(), rel=1e-6)
    # IWAE with k=1 draws the same z: its bound is that same ELBO estimate
    iw = iwae_terms(model, x, generator=torch.Generator().manual_seed(3), k=1)
    torch.testing.assert_close(iw.neg_iwae, terms.neg_elbo, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(iw.kl, terms.kl, rtol=1e-5, atol=1e-4)


@torch.no_grad()
def test_vamp_kl_estimate_is_unbiased(digits):
    """The mean of many single-sample KL estimates matches KL(q || p) estimated independently with
    torch.distributions' own samples."""
    model = vamp_model()
    x = digits.test.batch(slice(0, 4))
    many = x.repeat(4000, 1, 1, 1)  # (4000 * 4, C, H, W): 4000 independent draws of each example
    est = neg_elbo(model, many, generator=torch.Generator().manual_seed(0)).kl.view(4000, 4)
    q = model.encode(x)
    qd = D.Independent(D.Normal(q.mean, q.std), 1)
    torch.manual_seed(1)
    zs = qd.sample((4000,))  # (4000, 4, D)
    ref = qd.log_prob(zs) - mixture(model.prior).log_prob(zs)
    se = (est.var(0) / 4000 + ref.var(0) / 4000).sqrt()
    assert ((est.mean(0) - ref.mean(0)).abs() < 4 * se).all()


def test_vamp_free_bits_are_refused(digits):
    with pytest.raises(VaelabError, match=r"free.bits"):
        neg_elbo(vamp_model(), digits.test.batch(slice(0, 4)), free_bits=0.5)


def test_gradients_reach_the_pseudo_inputs(digits):
    model = vamp_model()
    neg_elbo(model, digits.test.batch(slice(0, 8))).loss.backward()
    assert model.prior.raw.grad is not None and model.prior.raw.grad.abs().sum() > 0


@torch.no_grad()
def test_importance_weights_use_the_vamp_prior_and_nll_bounds_the_elbo(digits):
    model = vamp_model().eval()
    x = digits.test.batch(slice(0, 5))
    q = model.encode(x)
    eps = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(0))
    log_w = importance_log_weights(model, x, q, eps)  # (S, B)
    z = q.mean + q.std * eps  # (3, 5, D)
    ref = torch.stack([-direct_neg_elbo(model, x, z[s]) for s in range(3)])
    torch.testing.assert_close(log_w, ref, rtol=1e-5, atol=1e-4)
    split = Split(digits.test.x[:40])
    log_px, elbo = log_px_estimates(model, split, importance_samples=200, progress=False)
    assert (-log_px <= -elbo + 1e-9).all()  # NLL <= -ELBO for every example
    single = torch.stack([neg_elbo(model, split.batch(slice(None))).neg_elbo for _ in range(50)]).mean(0)
    assert (-log_px).mean() < single.mean()


def test_vamp_save_load_round_trip(tmp_path, digits):
    model = vamp_model()
    save_model(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())["model"]
    assert cfg["prior"] == "vamp" and cfg["pseudo_inputs"] == 7
    back = load(tmp_path)
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    z = torch.randn(6, 2)
    with torch.no_grad():
        assert torch.equal(back.prior.log_prob(z), model.prior.log_prob(z))
        a = model.sample(4, torch.Generator().manual_seed(2))
        assert torch.equal(back.sample(4, torch.Generator().manual_seed(2)), a)


def test_config_validation():
    with pytest.raises(VaelabError, match=r"^VAEConfig\.prior .flow. is not registered; registered: normal"):
        VAE(VAEConfig(prior="flow"))
    with pytest.raises(VaelabError, match="prior must be the name of a registered part"):
        VAEConfig(prior="two words")
    with pytest.raises(VaelabError, match=r"VAEConfig\.pseudo_inputs needs prior vamp \(got 5"):
        VAEConfig(pseudo_inputs=5)
    with pytest.raises(VaelabError, match="pseudo_inputs"):
        VAEConfig(prior="vamp", pseudo_inputs=0)
    assert VAEConfig(prior="vamp").pseudo_inputs == VAMP_PSEUDO_INPUTS  # K left unset: the default
    assert VAEConfig().pseudo_inputs == 0
    with pytest.raises(VaelabError, match="unconditional"):
        VAEConfig(prior="vamp", pseudo_inputs=10, n_classes=10)


def test_an_old_config_without_prior_fields_loads_as_normal(tmp_path, trained_run):
    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    doc = json.loads((run / "config.json").read_text())
    del doc["model"]["prior"], doc["model"]["pseudo_inputs"]
    (run / "config.json").write_text(json.dumps(doc))
    model = load(run)
    assert model.config.prior == "normal" and isinstance(model.prior, StandardNormal)


def test_cli_train_sample_evaluate_with_vamp(tmp_path, capsys):
    run = tmp_path / "vamp"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "2", "--latent-dim", "2"]
    argv += ["--hidden", "16", "--batch-size", "100", "--prior", "vamp", "--pseudo-inputs", "20"]
    assert main([*argv, "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())["model"]
    assert (cfg["prior"], cfg["pseudo_inputs"]) == ("vamp", 20)
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["test_neg_elbo"] == pytest.approx(rec["recon"] + rec["kl"])
    assert rec["kl_per_dim"] is None and 0 <= rec["active_units"] <= 2
    assert main(["sample", str(run), "-n", "8", "--out", str(tmp_path / "s.npy")]) == 0
    out = tmp_path / "e.json"
    argv = ["evaluate", str(run), "--data", "digits", "--importance-samples", "50", "--json", str(out)]
    assert main(argv) == 0
    assert "KL per dim: n/a (vamp prior)" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["nll"] <= r["neg_elbo_k"] and math.isfinite(r["nll"])
    assert collapse_diagnostics(load(run), Split(torch.rand(10, 1, 8, 8)))["kl_per_dim"] is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pseudo-inputs", "10"], "--pseudo-inputs needs --prior vamp"),
        (["--prior", "vamp", "--conditional"], "unconditional"),
        (["--prior", "vamp", "--free-bits", "0.5"], "--free-bits"),
        (["--prior", "vamp", "--pseudo-inputs", "0"], "positive integer"),
        (["--prior", "flow"], "invalid choice"),
    ],
)
def test_cli_prior_errors_are_one_line(tmp_path, flags, message):
    argv = ["train", "--data", "digits", "--out", str(tmp_path / "r"), "--epochs", "1", *flags]
    assert_one_line_error(run_cli(argv), message)
    assert not (tmp_path / "r" / "config.json").exists()


def test_cli_resume_of_a_vamp_run_is_exact(tmp_path):
    argv = ["train", "--data", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "300"]
    argv += ["--prior", "vamp", "--pseudo-inputs", "10", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "full"), "--epochs", "3"]) == 0
    assert main([*argv, "--out", str(tmp_path / "part"), "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "3", "--no-progress"]) == 0
    a, b = load(tmp_path / "full").state_dict(), load(tmp_path / "part").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and "prior.raw" in a


def test_vamp_dims_are_ranked_by_activity_not_by_a_kl_to_n01(digits):
    model = vamp_model(latent=3)
    mu = torch.tensor([[0.0, 5.0, 1.0], [0.0, -5.0, 2.0], [0.0, 5.0, 3.0]])
    kl = torch.tensor([[9.0, 0.0, 0.0]]).expand(3, 3)  # a per-dim KL that must not be used
    order, score, name = rank_dims(model, mu, kl)
    assert name == "activity" and order == [1, 2, 0]
    assert score == pytest.approx(mu.double().var(0, correction=0)[order].tolist())
    normal = VAE(VAEConfig(latent_dim=3, hidden=(16,)))
    assert rank_dims(normal, mu, kl)[::2] == ([0, 1, 2], "KL")


def test_cli_plot_and_report_of_a_vamp_run(tmp_path, capsys):
    run = tmp_path / "vamp"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "1", "--latent-dim", "3"]
    argv += ["--hidden", "16", "--batch-size", "300", "--prior", "vamp", "--pseudo-inputs", "10"]
    argv.append("--no-progress")
    assert main(argv) == 0
    out = tmp_path / "pseudo.png"
    assert main(["plot", str(run), "--kind", "pseudo", "--out", str(out)]) == 0
    with Image.open(out) as img:  # 10 pseudo-inputs over 8 columns: 2 rows of u, 2 of decoded
        grid = img.size
    assert main(["plot", str(run), "--kind", "pseudo", "-n", "4", "--out", str(tmp_path / "p4.png")]) == 0
    with Image.open(tmp_path / "p4.png") as img:
        assert img.height < grid[1] and img.width < grid[0]
    model = load(run)
    u = model.prior.pseudo_inputs.detach()
    assert u.min() >= 0 and u.max() <= 1 and u.shape == (10, 1, 8, 8)
    traverse = ["plot", str(run), "--kind", "traverse", "--steps", "3", "--out", str(tmp_path / "t.png")]
    assert main(traverse) == 0
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "VampPrior pseudo-inputs" in html and 'id="fig-pseudo"' in html
    capsys.readouterr()


def test_pseudo_plot_of_a_normal_prior_run_is_a_one_line_error(trained_run, tmp_path, capsys):
    assert main(["plot", str(trained_run), "--kind", "pseudo", "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--prior vamp" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.png").exists()
