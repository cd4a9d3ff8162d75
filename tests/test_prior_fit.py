"""The Gaussian mixture prior (`priors.MixturePrior`), checked against torch.distributions and Monte
Carlo; --prior mixture in training; and `vaelab fit-prior`, which fits one to a trained model's
aggregate posterior."""

from __future__ import annotations

import json

import pytest
import torch
from datagen import assert_one_line_error
from datagen import run_cli as captured_cli
from torch import distributions as D

from vaelab.cli import main
from vaelab.config import MIXTURE_COMPONENTS, VAEConfig
from vaelab.errors import VaelabError
from vaelab.evaluation.prior_fit import aggregate_draws, fit_mixture_prior
from vaelab.models import priors
from vaelab.models.objectives import iwae_terms, neg_elbo
from vaelab.models.priors import MixturePrior, StandardNormal
from vaelab.models.vae import VAE, load

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "300", "--no-progress"]


def spread_mixture(m: int = 5, d: int = 2, seed: int = 0) -> MixturePrior:
    torch.manual_seed(seed)
    prior = MixturePrior(d, m)
    with torch.no_grad():  # unequal weights and variances, so every parameter matters
        prior.logits.copy_(torch.randn(m))
        prior.mean.mul_(4)
        prior.logvar.uniform_(-1.5, 0.5)
    return prior


def reference(prior: MixturePrior) -> D.MixtureSameFamily:
    """The same density built independently from torch.distributions."""
    std = torch.exp(0.5 * prior.logvar)
    return D.MixtureSameFamily(
        D.Categorical(logits=prior.logits), D.Independent(D.Normal(prior.mean, std), 1)
    )


@torch.no_grad()
def test_mixture_log_prob_matches_mixture_same_family(monkeypatch):
    prior = spread_mixture()
    z = 3 * torch.randn(4, 6, 2)
    got = prior.log_prob(z)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, reference(prior).log_prob(z), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(priors, "PAIR_FLOATS", 5 * 2 * 3)  # 3 rows at a time: the same numbers
    torch.testing.assert_close(prior.log_prob(z), got)


@torch.no_grad()
def test_mixture_log_prob_is_exact_for_narrow_components_far_from_zero():
    """The expanded squares cancel when z sits near a narrow component far from 0: checked against
    direct differences in float64."""
    prior = spread_mixture(m=3, d=4)
    with torch.no_grad():
        prior.mean.add_(30.0)
        prior.logvar.fill_(2 * torch.log(torch.tensor(1e-3)).item())  # sigma = 0.001
    z = prior.mean[torch.tensor([0, 1, 2, 1])] + 1e-3 * torch.randn(4, 4)
    diff = z.double().unsqueeze(1) - prior.mean.double()
    var = prior.logvar.double().exp()
    log_n = -0.5 * (diff.pow(2) / var + var.log() + torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    ref = torch.logsumexp(log_n + torch.log_softmax(prior.logits.double(), 0), -1)
    torch.testing.assert_close(prior.log_prob(z).double(), ref, rtol=0, atol=1e-4)


@torch.no_grad()
def test_mixture_samples_follow_the_weights_and_moments():
    prior = spread_mixture()
    n = 60_000
    z = prior.sample(n, torch.Generator().manual_seed(1))
    assert z.shape == (n, 2)
    ref = reference(prior)
    mean, var = ref.mean, ref.variance
    assert ((z.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()
    centred = (z - mean).pow(2)
    assert ((centred.mean(0) - var).abs() < 4 * centred.var(0).div(n).sqrt()).all()
    # temperature 0: every draw is a component mean, chosen with the mixture's weights
    z0 = prior.sample(n, torch.Generator().manual_seed(2), temperature=0.0)
    which = (z0.unsqueeze(1) - prior.mean).abs().amax(-1).argmin(-1)
    freq = torch.bincount(which, minlength=5).double() / n
    w = torch.softmax(prior.logits, 0).double()
    assert ((freq - w).abs() < 4 * (w * (1 - w) / n).sqrt() + 1e-9).all()


@torch.no_grad()
def test_the_elbo_and_iwae_use_the_mixture(digits):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,), prior="mixture", mixture_components=4))
    model.prior = spread_mixture(4)
    x = digits.test.batch(slice(0, 16))
    terms = neg_elbo(model, x, generator=torch.Generator().manual_seed(3))
    q = model.encode(x)
    z = q.sample(torch.Generator().manual_seed(3))  # the same draw
    log_q = D.Independent(D.Normal(q.mean, q.std), 1).log_prob(z)
    logits = model.decoder(z).view_as(x)
    log_px = D.Independent(D.Bernoulli(logits=logits, validate_args=False), 3).log_prob(x)
    direct = -(log_px + reference(model.prior).log_prob(z) - log_q)
    torch.testing.assert_close(terms.neg_elbo, direct, rtol=1e-5, atol=1e-4)
    iw = iwae_terms(model, x, generator=torch.Generator().manual_seed(3), k=1)
    torch.testing.assert_close(iw.neg_iwae, terms.neg_elbo, rtol=1e-5, atol=1e-4)


def test_config_validation():
    assert VAEConfig(prior="mixture", mixture_components=3).mixture_components == 3
    with pytest.raises(VaelabError, match="mixture_components"):
        VAEConfig(prior="mixture", mixture_components=0)
    assert VAEConfig(prior="mixture").mixture_components == MIXTURE_COMPONENTS  # M left unset
    with pytest.raises(VaelabError, match=r"mixture_components needs prior mixture \(got 3"):
        VAEConfig(mixture_components=3)
    with pytest.raises(VaelabError, match=r"pseudo_inputs needs prior vamp \(got 3"):
        VAEConfig(prior="mixture", mixture_components=3, pseudo_inputs=3)
    cvae = VAEConfig(prior="mixture", mixture_components=3, n_classes=10)  # p(z) needs no encoder
    assert VAE(cvae).prior.mean.shape == (3, 20)


def test_cli_train_with_a_learned_mixture_resumes_exactly(tmp_path, capsys):
    argv = ["train", "--data", "digits", *TINY, "--prior", "mixture", "--mixture-components", "6"]
    assert main([*argv, "--out", str(tmp_path / "full"), "--epochs", "3"]) == 0
    assert main([*argv, "--out", str(tmp_path / "part"), "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "3", "--no-progress"]) == 0
    a, b = load(tmp_path / "full").state_dict(), load(tmp_path / "part").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    start = MixturePrior(2, 6)  # what training started from: the mixture's parameters were learned
    assert not torch.equal(a["prior.mean"], start.mean.detach())
    assert main(["evaluate", str(tmp_path / "full"), "--importance-samples", "20", "--no-probes"]) == 0
    assert "KL per dim: n/a (mixture prior)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mixture-components", "4"], "--mixture-components needs --prior mixture"),
        (["--prior", "vamp", "--mixture-components", "4"], "--mixture-components needs --prior mixture"),
        (["--prior", "mixture", "--pseudo-inputs", "4"], "--pseudo-inputs needs --prior vamp"),
        (["--prior", "mixture", "--free-bits", "0.5"], "--prior mixture does not have"),
        (["--prior", "mixture", "--mixture-components", "0"], "positive integer"),
    ],
)
def test_cli_mixture_flag_errors_are_one_line(tmp_path, flags, message):
    argv = ["train", "--data", "digits", "--out", str(tmp_path / "r"), "--epochs", "1", *flags]
    assert_one_line_error(captured_cli(argv), message)
    assert not (tmp_path / "r" / "config.json").exists()


@torch.no_grad()
def test_aggregate_draws_are_posterior_draws_of_the_top_latent(digits):
    torch.manual_seed(0)
    flat = VAE(VAEConfig(latent_dim=3, hidden=(16,)))
    split = digits.train.head(50)
    z = aggregate_draws(flat, split, draws=2, seed=4)
    assert z.shape == (100, 3) and z.dtype == torch.float64
    q = flat.encode(split.batch(slice(0, 50)))
    eps = torch.randn((2, 50, 3), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(z, (q.mean + q.std * eps).flatten(0, 1).double())
    assert torch.equal(aggregate_draws(flat, split, draws=2, seed=4), z)  # seeded
    hier = VAE(VAEConfig(latent_dim=4, top_latent_dim=2, hidden=(16,)))
    top = hier.encode(split.batch(slice(0, 50))).top
    zh = aggregate_draws(hier, split, seed=1)
    eps = torch.randn((1, 50, 2), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(zh, (top.mean + top.std * eps).flatten(0, 1).double())


def test_fit_replaces_only_the_prior_and_fits_the_draws(digits):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    rng = torch.get_rng_state()
    new, stats = fit_mixture_prior(model, digits.train, components=1, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # building the copy left the caller's RNG alone
    assert new.config.prior == "mixture" and new.config.mixture_components == 1
    old = model.state_dict()
    assert all(torch.equal(v, old[k]) for k, v in new.state_dict().items() if not k.startswith("prior."))
    # one diagonal Gaussian fitted by maximum likelihood: the draws' own mean and variance, which fit
    # them at least as well as N(0, I) does
    z = aggregate_draws(model, digits.train, seed=0)
    torch.testing.assert_close(new.prior.mean.detach()[0].double(), z.mean(0), rtol=1e-4, atol=1e-4)
    var = new.prior.logvar.detach()[0].exp().double()
    torch.testing.assert_close(var, z.var(0, correction=0), rtol=1e-3, atol=1e-4)
    assert stats["n"] == len(digits.train) and stats["draws"] == 1 and stats["converged"]
    assert stats["log_density_mixture"] >= stats["log_density_old_prior"]
    ref = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1).log_prob(z.float()).double().mean()
    assert stats["log_density_old_prior"] == pytest.approx(float(ref), abs=1e-4)
    with pytest.raises(VaelabError, match="cannot fit 5000 mixture components"):
        fit_mixture_prior(model, digits.train.head(100), components=5000)


def test_fit_on_a_hierarchy_and_on_a_vamp_model(digits):
    torch.manual_seed(0)
    hier = VAE(VAEConfig(latent_dim=4, top_latent_dim=2, hidden=(16,)))
    new, _ = fit_mixture_prior(hier, digits.train, components=3)
    assert isinstance(new.prior.top, MixturePrior) and new.prior.top.mean.shape == (3, 2)
    for k, v in hier.prior.net.state_dict().items():  # p(z1|z2) is kept
        assert torch.equal(new.prior.net.state_dict()[k], v)
    vamp = VAE(VAEConfig(latent_dim=2, hidden=(16,), prior="vamp", pseudo_inputs=7))
    new, stats = fit_mixture_prior(vamp, digits.train, components=3)
    assert new.config.pseudo_inputs == 0 and "prior.raw" not in new.state_dict()
    assert stats["log_density_old_prior"] < 0  # measured under the VampPrior it replaces
    assert isinstance(StandardNormal(2), torch.nn.Module)


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def test_cli_fit_prior_writes_a_new_run_and_leaves_the_old_one(tmp_path, trained_run, capsys):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    out = tmp_path / "fitted"
    assert main(["fit-prior", str(trained_run), "--out", str(out), "--components", "5"]) == 0
    assert {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()} == before
    assert "under the normal prior" in capsys.readouterr().out
    doc = json.loads((out / "config.json").read_text())
    assert doc["model"]["prior"] == "mixture" and doc["model"]["mixture_components"] == 5
    assert doc["prior_fit"]["components"] == 5 and doc["prior_fit"]["from"] == str(trained_run.resolve())
    assert doc["train"] == json.loads((trained_run / "config.json").read_text())["train"]
    fitted = load(out)
    assert fitted.prior.mean.shape == (5, 2)
    assert "vaelab fit-prior" in (out / "README.md").read_text()  # the model card names both commands
    # the CLI fitted what the library fits: the rows the run trained on, pixels as evaluate draws them
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["evaluate", str(out), "--importance-samples", "20", "--no-probes"]) == 0
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert f"Gaussian mixture, 5 components, fitted after training to {trained_run.name}" in html
    # it has no training to resume: that would start again from random weights and lose these
    assert run_cli(["train", "--resume", str(out), "--epochs", "9"]) == 2
    assert "vaelab fit-prior" in capsys.readouterr().err
    assert torch.equal(load(out).prior.mean, fitted.prior.mean)
    # but --init-from trains it further (the mixture is learned along with the rest)
    argv = ["train", "--init-from", str(out), "--out", str(tmp_path / "ft"), "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    assert load(tmp_path / "ft").config.prior == "mixture"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{run}"], "is RUN_DIR"),
        (["--out", "{full}"], "is not empty; pass --force"),
        (["--out", "{new}", "--components", "100000"], "cannot fit 100000 mixture components"),
        (["--out", "{new}", "--components", "0"], "positive integer"),
        (["--out", "{file}"], "exists and is not a directory"),
    ],
)
def test_cli_fit_prior_errors_are_one_line(tmp_path, trained_run, capsys, args, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    (tmp_path / "f.txt").write_text("mine")
    paths = {"run": trained_run, "full": full, "new": tmp_path / "new", "file": tmp_path / "f.txt"}
    argv = ["fit-prior", str(trained_run), *[a.format(**paths) for a in args]]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (full / "keep.txt").read_text() == "mine" and (tmp_path / "f.txt").read_text() == "mine"
    assert not (tmp_path / "new" / "config.json").exists()
    assert run_cli(["fit-prior", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_fit_prior_force_replaces_a_run_and_uses_only_trained_rows(tmp_path, capsys):
    run = tmp_path / "held"
    argv = ["train", "--data", "digits", *TINY, "--epochs", "2", "--holdout", "0.2", "--out", str(run)]
    assert main(argv) == 0
    out = tmp_path / "fitted"
    assert main(["train", "--data", "digits", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").read_text() and (out / "checkpoints").is_dir()
    assert (
        main(["fit-prior", str(run), "--out", str(out), "--components", "2", "--force", "--draws", "3"]) == 0
    )
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()  # the old run's
    doc = json.loads((out / "config.json").read_text())
    assert doc["prior_fit"]["n"] == 3 * 1200  # 1,500 digits less the 300 the run held out


def test_a_conditional_run_with_a_mixture_prior_says_where_z_comes_from(tmp_path, capsys):
    run = tmp_path / "cvae"
    argv = ["train", "--data", "digits", *TINY, "--epochs", "1", "--conditional", "--prior", "mixture"]
    assert main([*argv, "--mixture-components", "5", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "3", "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert "p(x | z, y=3) with z ~ the mixture prior" in capsys.readouterr().out
