"""The training engine: the fast step is the plain step's maths, every example is seen once per epoch,
warm-up steps before a CUDA-graph capture are undone exactly, and every fallback works on CPU."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torch.distributed as dist

from vaelab.cli import main
from vaelab.config import TrainConfig
from vaelab.data.dataset import Split
from vaelab.errors import VaelabError
from vaelab.models.objectives import Elbo, Iwae, make_objective, neg_elbo
from vaelab.models.vae import VAE
from vaelab.training.cuda_graph import Snapshot, batch_sizes, graph_key
from vaelab.training.distributed import Context, DataParallelLoss, data_parallel
from vaelab.training.engine import (
    Engine,
    EngineOptions,
    LossDisplay,
    configure_threads,
    epoch_batches,
    make_optimizer,
    resolve_mode,
    run_epoch,
)
from vaelab.training.step import autocast

CPU = torch.device("cpu")


def plain_epoch(model: VAE, opt: torch.optim.Optimizer, split: Split, batch_size: int) -> torch.Tensor:
    """The textbook loop, written out independently of the engine: same RNG order (perm, then eps)."""
    perm = torch.randperm(len(split))
    sums = torch.zeros(3)
    for start in range(0, len(split), batch_size):
        x = split.batch(perm[start : start + batch_size])
        terms = neg_elbo(model, x)
        opt.zero_grad()
        terms.loss.backward()
        opt.step()
        sums += torch.tensor([terms.neg_elbo.sum().item(), terms.recon.sum().item(), terms.kl.sum().item()])
    return sums


def test_fast_step_learns_what_the_plain_step_learns(digits, make_vae):
    """The engine's default CPU step (fused Adam, device sums, one read per epoch) against a plain
    loop with torch's reference Adam, same seed: same weights and same epoch sums after 2 epochs."""
    fast, plain = make_vae(), make_vae()
    engine = Engine(fast, make_optimizer(fast, 1e-2))
    ref_opt = torch.optim.Adam(plain.parameters(), lr=1e-2, foreach=False, fused=False)
    assert engine.mode == "eager" and engine.opt.param_groups[0]["fused"]
    for epoch in range(2):
        torch.manual_seed(100 + epoch)
        got = engine.run_epoch(digits.train, 128, progress=False)
        torch.manual_seed(100 + epoch)
        want = plain_epoch(plain, ref_opt, digits.train, 128)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-2)
    for p, q in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_every_example_is_seen_once_per_epoch_including_the_partial_batch(digits, make_vae):
    n = len(digits.train)  # 1500 = 11 * 128 + 92
    ids = Split(digits.train.x, torch.arange(n))
    seen, sizes = [], []

    def recording_loss(model, x, y):
        seen.append(y.clone())
        sizes.append(len(y))
        return neg_elbo(model, x, y)

    model = make_vae()
    sums = Engine(model, make_optimizer(model, 1e-3)).run_epoch(ids, 128, recording_loss, progress=False)
    assert sizes == [128] * 11 + [92]
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(n))
    assert sums.shape == (3,) and torch.isfinite(sums).all()
    torch.testing.assert_close(sums[0], sums[1] + sums[2])  # -ELBO = recon + KL, summed


def test_epoch_batches_and_batch_sizes():
    perm = torch.randperm(10)
    assert [len(b) for b in epoch_batches(perm, 4)] == [4, 4, 2]
    assert torch.equal(torch.cat(list(epoch_batches(perm, 4))), perm)
    assert batch_sizes(1500, 128) == [128, 92]
    assert batch_sizes(256, 128) == [128]
    assert batch_sizes(100, 128) == [100]


def test_explicit_row_order_is_followed(digits, make_vae):
    """``perm`` (a data-parallel shard, or a resumed order) is visited as given, and nothing else."""
    n = len(digits.train)
    ids = Split(digits.train.x, torch.arange(n))
    order = torch.randperm(n)[:300]
    seen = []

    def recording_loss(model, x, y):
        seen.append(y.clone())
        return neg_elbo(model, x, y)

    model = make_vae()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_epoch(model, opt, ids, 128, recording_loss, progress=False, perm=order)
    assert torch.equal(torch.cat(seen), order)


def test_bf16_autocast_keeps_the_densities_in_fp32(digits, make_vae):
    """Under bf16 autocast only the matrix products are bf16: the terms are fp32 and equal the fp32
    terms to bf16 accuracy (same weights, same eps)."""
    model = make_vae()
    x = digits.test.batch(slice(0, 64))
    want = neg_elbo(model, x, generator=torch.Generator().manual_seed(1))
    with autocast(CPU, "bf16"):
        got = neg_elbo(model, x, generator=torch.Generator().manual_seed(1))
    assert got.recon.dtype == got.kl.dtype == got.loss.dtype == torch.float32
    torch.testing.assert_close(got.recon, want.recon, rtol=2e-2, atol=0.5)
    torch.testing.assert_close(got.kl, want.kl, rtol=5e-2, atol=5e-2)
    assert abs(got.loss.item() - want.loss.item()) < 0.01 * abs(want.loss.item())


@pytest.mark.filterwarnings("ignore:bf16 on this CPU")
def test_bf16_training_tracks_fp32(digits, make_vae):
    """Two epochs in bf16 and in fp32 from the same seed end within 2% of each other."""
    ends = {}
    for precision in ("fp32", "bf16"):
        model = make_vae()
        engine = Engine(model, make_optimizer(model, 1e-2), EngineOptions(precision=precision))
        torch.manual_seed(7)
        for _ in range(2):
            sums = engine.run_epoch(digits.train, 64, progress=False)
        ends[precision] = sums[0].item() / len(digits.train)
    assert abs(ends["bf16"] - ends["fp32"]) < 0.02 * ends["fp32"]


@pytest.mark.parametrize("warm_state", [False, True])
def test_snapshot_undoes_warm_up_steps_exactly(digits, warm_state, make_vae):
    """The CUDA-graph path warms up with real steps and then restores parameters, Adam state and RNG
    in place. Checked on CPU: after warm-up + restore, training goes on bitwise as if no warm-up ran,
    from a fresh optimizer (state created by the warm-up is zeroed) or one with state."""
    x = digits.train.batch(slice(0, 64))

    def steps(model, opt, k):
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            neg_elbo(model, x).loss.backward()
            opt.step()

    a, b = make_vae(), make_vae()
    opt_a, opt_b = make_optimizer(a, 1e-2), make_optimizer(b, 1e-2)
    if warm_state:
        torch.manual_seed(3)
        steps(a, opt_a, 2)
        torch.manual_seed(3)
        steps(b, opt_b, 2)
    torch.manual_seed(5)
    snap = Snapshot(a, opt_a)
    steps(a, opt_a, 3)  # the warm-up
    snap.restore()
    steps(a, opt_a, 4)
    torch.manual_seed(5)
    steps(b, opt_b, 4)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        for k in opt_a.state[p]:
            assert torch.equal(opt_a.state[p][k], opt_b.state[q][k])


def test_snapshot_refuses_optimizers_whose_fresh_state_is_not_zero(make_vae):
    model = make_vae()
    with pytest.raises(TypeError):
        Snapshot(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))


def test_graph_key_tracks_what_a_capture_bakes_in(digits, make_vae):
    model = make_vae()
    opt = make_optimizer(model, 1e-3)
    key = functools.partial(graph_key, model, opt)
    k0 = key(neg_elbo, digits.train, 1500, 128)
    assert key(neg_elbo, digits.train, 1500, 128) == k0
    assert key(neg_elbo, digits.train, 1500, 64) != k0  # batch shapes
    assert key(neg_elbo, digits.train, 1280, 128) != k0  # no remainder batch
    assert key(Elbo(beta=0.5), digits.train, 1500, 128) != k0
    assert key(Elbo(beta=0.5), digits.train, 1500, 128) == key(Elbo(beta=0.5), digits.train, 1500, 128)
    assert key(Elbo(beta=0.5), digits.train, 1500, 128) != key(Elbo(beta=1.0), digits.train, 1500, 128)
    assert key(Iwae(k=2), digits.train, 1500, 128) != key(Iwae(k=3), digits.train, 1500, 128)
    opt.param_groups[0]["lr"] = 5e-4  # e.g. a NaN guard lowering the lr
    assert key(neg_elbo, digits.train, 1500, 128) != k0
    neg_elbo(model, digits.train.batch(slice(0, 8))).loss.backward()
    opt.step()  # Adam's state now exists
    k1 = key(neg_elbo, digits.train, 1500, 128)
    assert key(neg_elbo, digits.train, 1500, 128) == k1
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # a roll-back: new state storage
    assert key(neg_elbo, digits.train, 1500, 128) != k1


def test_ddp_wrapped_objectives_are_keyed_by_value(digits, monkeypatch, make_vae):
    """Every epoch wraps a fresh objective for DDP: equal objectives give equal wrapped losses, so
    the inductor and CUDA-graph modes compile or capture once, not once per epoch. DDP here runs on a
    one-process gloo group; `data_parallel` only asks the context whether to wrap."""
    calls = []

    def counting_compile(fn, **_):
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", counting_compile)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = make_vae()
        opt = make_optimizer(model, 1e-3)
        wrap = data_parallel(model, Context(rank=0, world_size=2))
        config = TrainConfig(kl_warmup=2)
        e2, e3 = wrap(make_objective(config, 2)), wrap(make_objective(config, 3))
        assert isinstance(e2, DataParallelLoss) and e2 is not e3
        assert e2 == e3 and hash(e2) == hash(e3)  # warm-up over: the same Elbo(beta=1.0)
        assert wrap(make_objective(config, 1)) != e2  # half the KL weight: another step
        key = functools.partial(graph_key, model, opt, split=digits.train, n=1500, batch_size=128)
        assert key(e2) == key(e3) and key(wrap(make_objective(config, 1))) != key(e2)
        engine = Engine(model, opt, EngineOptions(compile="inductor"))
        for epoch in (1, 2, 3, 4):
            engine.run_epoch(
                digits.train, 128, wrap(make_objective(config, epoch)), progress=False, perm=torch.arange(256)
            )
        assert engine.mode == "inductor" and len(calls) == 2  # beta 0.5, then beta 1.0 for epochs 2-4
    finally:
        dist.destroy_process_group()


def test_modes_resolve_and_fall_back_on_cpu():
    assert resolve_mode("auto", CPU) == "eager"
    assert resolve_mode("off", CPU) == "eager"
    assert resolve_mode("inductor", CPU) == "inductor"
    with pytest.raises(VaelabError, match=r"^TrainConfig\.compile='cuda-graph' needs a CUDA device"):
        resolve_mode("cuda-graph", CPU)
    with pytest.raises(VaelabError):
        EngineOptions(precision="fp16")
    with pytest.raises(VaelabError):
        EngineOptions(compile="fast")
    with pytest.raises(VaelabError):
        TrainConfig(threads=-1)


def test_failed_compile_falls_back_to_the_same_eager_maths(digits, monkeypatch, make_vae):
    """When torch.compile is unusable (no C++ compiler, unsupported op) the engine warns, trains
    eagerly and learns exactly what the eager engine learns."""

    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    results = []
    for compile in ("inductor", "off"):
        model = make_vae()
        engine = Engine(model, make_optimizer(model, 1e-2), EngineOptions(compile=compile))
        torch.manual_seed(11)
        if compile == "inductor":
            with pytest.warns(UserWarning, match="torch.compile failed"):
                results.append(engine.run_epoch(digits.train, 128, progress=False))
            assert engine.mode == "eager"
        else:
            results.append(engine.run_epoch(digits.train, 128, progress=False))
    assert torch.equal(results[0], results[1])


def test_loss_display_reads_the_loss_on_cpu():
    display = LossDisplay(CPU)
    display.push(torch.tensor(3.5))
    assert display.value == 3.5


def test_progress_bar_runs(digits, capsys, make_vae):
    model = make_vae()
    Engine(model, make_optimizer(model, 1e-3)).run_epoch(digits.train, 256, progress=True, desc="e")
    assert "loss=" in capsys.readouterr().err


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads(0) == 1  # the user's environment wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        torch.set_num_threads(before)
        assert 1 <= configure_threads(0) <= before
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore:bf16 on this CPU")
def test_cli_precision_compile_threads(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--out", str(out), "--epochs", "1", "--hidden", "16"]
    args += ["--latent-dim", "2", "--precision", "bf16", "--compile", "off", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(before)
    train_cfg = json.loads((out / "config.json").read_text())["train"]
    assert (train_cfg["precision"], train_cfg["compile"], train_cfg["threads"]) == ("bf16", "off", 1)
    bad = tmp_path / "bad"
    assert (
        main(["train", "--data", "digits", "--out", str(bad), "--compile", "cuda-graph", "--device", "cpu"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vaelab train: error: --compile cuda-graph needs a CUDA device")
    assert not bad.exists()


# -- CUDA: run where a GPU is present (the CPU suite above covers every fallback) ---------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_learns_what_the_eager_step_learns(digits, precision, make_vae):
    dev = torch.device("cuda")
    data = digits.to(dev)
    ends = {}
    for compile in ("cuda-graph", "off"):
        model = make_vae().to(dev)
        engine = Engine(model, make_optimizer(model, 1e-2), EngineOptions(precision, compile))
        torch.manual_seed(3)
        for _ in range(3):
            sums = engine.run_epoch(data.train, 128, progress=False)  # 1500 = 11 x 128 + 92
        assert engine.mode == ("eager" if compile == "off" else "cuda-graph")
        torch.testing.assert_close(sums[0], sums[1] + sums[2])
        ends[compile] = sums[0].item() / len(data.train)
    assert abs(ends["cuda-graph"] - ends["off"]) < 0.02 * ends["off"]


@cuda
def test_cuda_graph_is_recaptured_when_the_lr_changes(digits, make_vae):
    dev = torch.device("cuda")
    data = digits.to(dev)
    model = make_vae().to(dev)
    engine = Engine(model, make_optimizer(model, 1e-2))
    engine.run_epoch(data.train, 128, progress=False)
    first = engine._graphs
    engine.run_epoch(data.train, 128, progress=False)
    assert engine._graphs is first  # same key: replayed, not captured again
    engine.opt.param_groups[0]["lr"] = 1e-3
    engine.run_epoch(data.train, 128, progress=False)
    assert engine._graphs is not first and engine.mode == "cuda-graph"


@cuda
@pytest.mark.parametrize(
    "flags",
    [
        ["--objective", "iwae", "--k", "4"],
        ["--prior", "vamp", "--pseudo-inputs", "20"],
        ["--top-latent-dim", "1", "--prior", "vamp", "--pseudo-inputs", "20"],  # hierarchical
        ["--arch", "conv", "--channels", "8,16", "--top-latent-dim", "1", "--gated"],  # conv hierarchy
    ],
)
def test_cuda_graph_trains_iwae_and_vamp_runs_like_the_eager_step(tmp_path, capsys, flags):
    ends = {}
    for compile in ("cuda-graph", "off"):
        out = tmp_path / compile
        argv = ["train", "--data", "digits", "--out", str(out), "--epochs", "3", "--hidden", "32"]
        argv += ["--latent-dim", "2", "--lr", "1e-2", "--device", "cuda", "--compile", compile, *flags]
        assert main(argv) == 0
        ends[compile] = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["train_neg_elbo"]
    assert "capture failed" not in capsys.readouterr().err  # no silent fallback to the eager step
    assert abs(ends["cuda-graph"] - ends["off"]) < 0.03 * ends["off"]
