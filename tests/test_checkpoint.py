"""Checkpoint format: RNG states, bitwise round trip, atomic folders, fallback, safe loading."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch

from vaelab import VAE, VAEConfig, VaelabError
from vaelab.training.checkpoint import (
    Checkpoint,
    TrainState,
    checkpoint_dir,
    list_checkpoints,
    read_latest,
    save,
)
from vaelab.training.distributed import Context
from vaelab.training.rng import rng_from_json, rng_state, rng_to_json, set_rng_state

CPU = torch.device("cpu")


def _draws() -> tuple:
    return torch.rand(4), np.random.rand(3), np.random.randn(), random.random(), random.gauss(0, 1)


def test_rng_states_round_trip_through_json():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's legacy state
    random.gauss(0, 1)  # ... and in python's
    saved = json.loads(json.dumps(rng_to_json(rng_state(CPU))))
    expected = _draws()
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(rng_from_json(saved), CPU)
    got = _draws()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def _trained_state() -> tuple[VAE, torch.optim.Optimizer, torch.Generator]:
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model.decode(model.encode(torch.rand(5, 1, 8, 8)).sample()).log_prob(torch.rand(5, 1, 8, 8))
        opt.zero_grad()
        (-loss.mean()).backward()
        opt.step()
    order = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=order)
    return model, opt, order


def test_checkpoint_round_trip_is_bitwise(tmp_path):
    model, opt, order = _trained_state()
    history = [{"epoch": 1, "train_neg_elbo": 1.0 / 3.0}]
    save(tmp_path, 1, TrainState.capture(model, opt, order), history, Context())
    ck = Checkpoint.from_blobs(read_latest(tmp_path))
    assert (ck.epoch, ck.world_size, ck.history) == (1, 1, history)

    torch.manual_seed(1)
    model2 = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    order2 = torch.Generator()
    ck.restore(model2, opt2, order2, Context(), seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for i, st in s1["state"].items():
        for name, t in st.items():
            assert torch.equal(t, s2["state"][i][name])
    assert torch.equal(torch.randperm(10, generator=order), torch.randperm(10, generator=order2))


def test_keeps_two_newest_and_falls_back_past_a_damaged_one(tmp_path, capsys):
    model, opt, order = _trained_state()
    state = TrainState.capture(model, opt, order)
    stale = checkpoint_dir(tmp_path) / ".epoch-000009.x.tmp"  # a crash mid-write leaves this
    stale.mkdir(parents=True)
    for epoch in (1, 2, 3):
        save(tmp_path, epoch, state, [], Context())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-000003", "epoch-000002"]
    assert not stale.exists()

    newest = list_checkpoints(tmp_path)[0] / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert Checkpoint.from_blobs(read_latest(tmp_path)).epoch == 2
    assert "skipping damaged checkpoint" in capsys.readouterr().err


def test_optimizer_file_loads_weights_only(tmp_path):
    model, opt, order = _trained_state()
    save(tmp_path, 1, TrainState.capture(model, opt, order), [], Context())
    blobs = read_latest(tmp_path)
    buf = io.BytesIO()
    torch.save({"state": {}, "param_groups": [], "payload": _Unsafe()}, buf)
    with pytest.raises(VaelabError, match="unreadable"):
        Checkpoint.from_blobs([blobs[0], buf.getvalue(), blobs[2]])


class _Unsafe:  # any class instance needs pickle to load: weights_only refuses it
    pass


def test_unknown_checkpoint_version_is_a_clear_error(tmp_path):
    model, opt, order = _trained_state()
    save(tmp_path, 1, TrainState.capture(model, opt, order), [], Context())
    blobs = read_latest(tmp_path)
    doc = json.loads(blobs[2])
    doc["version"] = 99
    with pytest.raises(VaelabError, match="checkpoint version 99"):
        Checkpoint.from_blobs([blobs[0], blobs[1], json.dumps(doc).encode()])


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    model, opt, order = _trained_state()
    save(tmp_path, 1, TrainState.capture(model, opt, order), [], Context())
    ck = Checkpoint.from_blobs(read_latest(tmp_path))
    other = VAE(VAEConfig(latent_dim=3, hidden=(8,)))
    with pytest.raises(VaelabError, match="does not match"):
        ck.restore(other, torch.optim.Adam(other.parameters()), torch.Generator(), Context(), seed=0)
