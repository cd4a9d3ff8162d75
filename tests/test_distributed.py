"""Data parallelism: sharding, and torchrun with 2 gloo processes against a single process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from custom_nets import own_vae
from ddp_scenarios import CUSTOM
from resume_helpers import PYTHON, cli, metrics, one_thread, same_weights, subprocess_env, train_argv, weights  # noqa: F401

from vaelab import VaelabError, load_dataset, train
from vaelab.training.checkpoint import Checkpoint, read_latest
from vaelab.training.distributed import Context, local_batch_size, shard_order

SCENARIOS = Path(__file__).with_name("ddp_scenarios.py")
LOSS_RTOL = 0.02  # DDP draws other eps than one process: losses agree up to Monte Carlo noise


@pytest.mark.parametrize("n", [1500, 1499, 130, 3])
def test_ranks_split_every_global_batch(n):
    batch, world = 64, 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard_order(perm, batch, Context(rank=r, world_size=world)) for r in range(world)]
    assert len(shards[0]) == len(shards[1])  # same number of equal steps on every rank (DDP needs it)
    local = batch // world
    steps = -(-len(shards[0]) // local)
    for i in range(steps):
        together = torch.cat([s[i * local : (i + 1) * local] for s in shards])
        expected = perm[i * batch : (i + 1) * batch]
        assert torch.equal(together[: len(expected)], expected)  # slice r of global batch i
        assert set(together[len(expected) :].tolist()) <= set(perm[:world].tolist())  # padding
    assert sum(len(s) for s in shards) - n == (-(n % batch)) % world


def test_global_batch_must_split_evenly():
    assert local_batch_size(64, 1500, Context(rank=0, world_size=4)) == 16
    with pytest.raises(VaelabError, match="divisible by the world size 3"):
        local_batch_size(64, 1500, Context(rank=0, world_size=3))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch of ddp_scenarios.py, plus the single-process runs it is compared with."""
    work = tmp_path_factory.mktemp("ddp")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(*train_argv(work / "S", 4)) == 0  # the single-process reference
        assert cli(*train_argv(work / "B", 2)) == 0  # resumed on 2 processes by the scenarios
        torchrun = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        launches = {  # the real entry point, then the scenarios that need more than one command
            "A": ["-m", "vaelab", *train_argv(work / "A", 3)],
            "scenarios": [str(SCENARIOS), str(work)],
        }
        for name, argv in launches.items():
            proc = subprocess.run(
                [*torchrun, *argv], env=subprocess_env(), capture_output=True, text=True, timeout=600
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            (work / f"{name}.stdout").write_text(proc.stdout)
        assert cli("train", "--resume", str(work / "A"), "--epochs", "4", "--no-progress") == 0  # 2 -> 1
        train(own_vae(), load_dataset("digits"), CUSTOM, progress=False, run_dir=work / "V")  # one process
    finally:
        torch.set_num_threads(before)
    return work


@pytest.mark.ddp
def test_ddp_steps_equal_one_process_on_the_global_batch(runs):
    r = json.loads((runs / "exactness.json").read_text())
    assert r["max_param_diff"] < 1e-5 * max(1.0, r["max_param"])
    assert r["sums"] == pytest.approx(r["ref_sums"], rel=1e-5)
    assert r["local_rows"] == 750  # 1499 rows + 1 pad, half each


@pytest.mark.ddp
def test_ddp_loss_matches_single_process(runs):
    ddp, single = metrics(runs / "A")[:3], metrics(runs / "S")[:3]
    for d, s in zip(ddp, single, strict=True):
        for key in ("train_neg_elbo", "test_neg_elbo"):
            assert d[key] == pytest.approx(s[key], rel=LOSS_RTOL), (d["epoch"], key)
    doc = json.loads((runs / "C" / "config.json").read_text())
    assert doc["world_size"] == 2
    out = (runs / "A.stdout").read_text()  # torchrun -m vaelab train: rank 0 alone prints
    assert out.count("training on 'digits'") == 1 and "on cpu x 2 processes" in out
    assert out.count("epoch    3/3") == 1


@pytest.mark.ddp
def test_ddp_resume_with_the_same_world_size_is_bitwise(runs):
    assert metrics(runs / "C") == metrics(runs / "A")[:3]
    a3 = runs / "A" / "checkpoints" / "epoch-000003"  # A itself went on to epoch 4 afterwards
    assert same_weights(weights(runs / "C"), weights(a3))
    ck = Checkpoint.from_blobs(read_latest(runs / "C"))
    assert (ck.epoch, ck.world_size, len(ck.rng)) == (3, 2, 2)
    assert not torch.equal(ck.rng[0]["torch"], ck.rng[1]["torch"])  # each rank has its own noise


@pytest.mark.ddp
def test_resume_on_more_processes(runs):
    b, s = metrics(runs / "B"), metrics(runs / "S")
    assert b[:2] == s[:2]  # the single-process part is untouched
    assert b[2]["train_neg_elbo"] == pytest.approx(s[2]["train_neg_elbo"], rel=LOSS_RTOL)
    assert json.loads((runs / "B" / "config.json").read_text())["world_size"] == 2


@pytest.mark.ddp
def test_resume_on_fewer_processes(runs):
    a, s = metrics(runs / "A"), metrics(runs / "S")
    assert [r["epoch"] for r in a] == [1, 2, 3, 4]
    assert a[3]["train_neg_elbo"] == pytest.approx(s[3]["train_neg_elbo"], rel=LOSS_RTOL)
    assert json.loads((runs / "A" / "config.json").read_text())["world_size"] == 1
    assert not same_weights(weights(runs / "A"), weights(runs / "S"))  # really two different runs


@pytest.mark.ddp
def test_ddp_early_stopping_stops_every_rank_at_the_same_epoch(runs):
    history = metrics(runs / "E")  # the launch returned 0: no rank was left waiting
    last = history[-1]
    assert last["epoch"] < 100 and last["epoch"] - last["best_epoch"] == 2
    ck = Checkpoint.from_blobs(read_latest(runs / "E"))
    assert ck.epoch == last["epoch"] and same_weights(ck.best, weights(runs / "E"))
    assert json.loads((runs / "E" / "config.json").read_text())["train"]["holdout"] == 0.2


@pytest.mark.ddp
def test_ddp_trains_the_users_own_networks_like_one_process(runs):
    ddp, single = metrics(runs / "U"), metrics(runs / "V")
    assert len(ddp) == len(single) == 3
    for d, s in zip(ddp, single, strict=True):
        for key in ("train_neg_elbo", "test_neg_elbo"):
            assert d[key] == pytest.approx(s[key], rel=LOSS_RTOL), (d["epoch"], key)
    doc = json.loads((runs / "U" / "config.json").read_text())
    assert doc["world_size"] == 2 and doc["model"]["arch"] == "custom"
