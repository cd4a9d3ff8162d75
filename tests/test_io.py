"""config.json + model.safetensors: exact round trips and clear errors on bad files."""

from __future__ import annotations

import json

import pytest
import torch

from vaelab import VAE, VAEConfig, VaelabError, load
from vaelab.config import TrainConfig
from vaelab.io import save_model
from vaelab.schema import from_dict


def _saved(tmp_path, likelihood: str = "bernoulli"):
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(16, 8), likelihood=likelihood))
    save_model(model, tmp_path)
    return model


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_save_load_round_trip_is_exact(tmp_path, likelihood):
    model = _saved(tmp_path, likelihood)
    loaded = load(tmp_path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(5, 1, 8, 8)
    q1, q2 = model.encode(x), loaded.encode(x)
    assert torch.equal(q1.mean, q2.mean) and torch.equal(q1.logvar, q2.logvar)
    assert torch.equal(model.decode(q1.mean).mean, loaded.decode(q2.mean).mean)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["version"] == 1 and doc["format"] == "vaelab-run"


def _edit_config(tmp_path, fn):
    path = tmp_path / "config.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model"].update(latent_dim=3), "does not match config.json"),
        (lambda d: d["model"].update(hidden=[16]), "does not match config.json"),
        (lambda d: d["model"].update(latent_dim="two"), "expected an integer"),
        (lambda d: d["model"].update(latent_dim=0), "latent_dim must be a positive integer"),
        (lambda d: d["model"].update(likelihood="poisson"), "likelihood 'poisson' is not registered"),
        (lambda d: d["model"].update(bogus=1), "unknown key"),
        (lambda d: d.update(version=99), "config version 99"),
        (lambda d: d.pop("format"), "not a vaelab config"),
    ],
)
def test_tampered_config_is_rejected_clearly(tmp_path, edit, message):
    _saved(tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(VaelabError, match=message):
        load(tmp_path)


def test_corrupt_or_missing_files(tmp_path):
    _saved(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(VaelabError, match="corrupt"):
        load(tmp_path)
    weights.unlink()
    with pytest.raises(VaelabError, match="missing"):
        load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(VaelabError, match="not valid JSON"):
        load(tmp_path)
    with pytest.raises(VaelabError, match="does not exist"):
        load(tmp_path / "nope")


def test_save_writes_no_temp_files_and_no_pickle(tmp_path):
    _saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert not (tmp_path / "model.safetensors").read_bytes().startswith(b"\x80")  # pickle magic


def test_train_config_from_dict_round_trip():
    cfg = TrainConfig(epochs=3, lr=0.01, data_options={"a": 1})
    from vaelab.schema import to_dict

    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(VaelabError, match="epochs must be a positive integer"):
        from_dict(TrainConfig, {**to_dict(cfg), "epochs": -1})


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    _saved(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "config.json").stat().st_mode)
    assert mode == 0o666 & ~umask
