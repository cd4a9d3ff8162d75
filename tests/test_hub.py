"""Sharing models: `save_pretrained`/`from_pretrained` on local folders, downloads from the Hugging Face
Hub through huggingface_hub's own cache (served by a local stand-in for the Hub, `hubserver`), then
offline from that cache; uploads captured at the `HfApi` boundary (`push_to_hub`, ``vaelab push``);
and the one-line errors, a missing ``vaelab[hub]`` extra included. Nothing here uses the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datagen import assert_one_line_error, run_cli, serving
from hubserver import FakeHub, commit_of

from vaelab import VAE, CheckpointError, VaelabError
from vaelab.card import MARKER, write_card

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402

MODEL_FILES = {"config.json", "model.safetensors", "README.md"}


def same_model(a: VAE, b: VAE) -> None:
    """Equal weights, and equal outputs on the same inputs."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.rand(5, *a.config.input_shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.eval().reconstruct(x), b.eval().reconstruct(x))
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(a.sample(4, generator=g1), b.sample(4, generator=g2))


def repo_files(model: VAE, tmp_path: Path, repo_id: str) -> dict[str, bytes]:
    """What a pushed model repo holds: the model, its card, and files loading must not fetch."""
    folder = model.save_pretrained(tmp_path / "repo-src")
    write_card(folder, repo_id=repo_id)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["samples.png"] = b"\x89PNG not fetched"
    files["metrics.jsonl"] = b'{"epoch": 1}\n'
    files["evil.py"] = b"raise SystemExit('executed a file from the repo')\n"
    files["pytorch_model.bin"] = b"a pickle: never fetched, never loaded"
    files["checkpoints/epoch-1/state.json"] = b"{}"
    return files


# ---- local folders ------------------------------------------------------------------------------


def test_save_pretrained_then_from_pretrained(tmp_path, make_vae):
    model = make_vae(seed=3)
    out = model.save_pretrained(tmp_path / "m")
    assert out == tmp_path / "m"
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    same_model(model, VAE.from_pretrained(out))
    same_model(model, VAE.from_pretrained(str(out)))


def test_from_pretrained_loads_a_run_directory(trained_run):
    import vaelab

    same_model(vaelab.load(trained_run), VAE.from_pretrained(trained_run))


def test_save_pretrained_never_overwrites_a_model(tmp_path, make_vae):
    out = make_vae(seed=0).save_pretrained(tmp_path / "m")
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a model"):
        make_vae(seed=1).save_pretrained(out)
    assert (out / "model.safetensors").read_bytes() == before
    other = make_vae(seed=1)
    other.save_pretrained(out, overwrite=True)
    same_model(other, VAE.from_pretrained(out))


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        VAE.from_pretrained(tmp_path / "nothing-here")


# ---- downloads through huggingface_hub's cache --------------------------------------------------


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """huggingface_hub pointed at an empty cache in tmp_path, online, without a token. Its settings
    are read from the environment when it is imported, so they are set on its `constants`."""
    home = tmp_path / "hf"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home


def point_at(monkeypatch, hub: FakeHub) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


def test_a_repo_id_downloads_only_the_model_files_then_loads_offline(
    tmp_path, hf_home, monkeypatch, make_vae
):
    model = make_vae(seed=4)
    hub = FakeHub({"someone/tiny-vae": repo_files(model, tmp_path, "someone/tiny-vae")})
    point_at(monkeypatch, hub)
    with serving(hub):
        same_model(model, VAE.from_pretrained("someone/tiny-vae"))
    assert hub.fetched() == MODEL_FILES  # not the pictures, the pickle, the .py file or checkpoints
    snapshots = list((hf_home / "hub" / "models--someone--tiny-vae" / "snapshots").iterdir())
    assert len(snapshots) == 1 and {p.name for p in snapshots[0].iterdir()} == MODEL_FILES

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # and the server is gone
    requests = len(hub.log)
    same_model(model, VAE.from_pretrained("someone/tiny-vae"))
    assert len(hub.log) == requests
    with pytest.raises(CheckpointError) as err:
        VAE.from_pretrained("someone/never-downloaded")
    assert "'someone/never-downloaded'" in str(err.value) and "offline" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_revision_is_a_branch_or_a_commit(tmp_path, hf_home, monkeypatch, make_vae):
    model = make_vae(seed=5)
    files = repo_files(model, tmp_path, "someone/tiny-vae")
    hub = FakeHub({"someone/tiny-vae": files})
    point_at(monkeypatch, hub)
    with serving(hub):
        same_model(model, VAE.from_pretrained("someone/tiny-vae", revision=commit_of(files)))
        with pytest.raises(CheckpointError) as err:
            VAE.from_pretrained("someone/tiny-vae", revision="v9")
    assert "'someone/tiny-vae'" in str(err.value) and "no revision 'v9'" in str(err.value)


def test_hub_errors_are_one_line_naming_the_repo(tmp_path, hf_home, monkeypatch, make_vae):
    not_a_model = {"README.md": b"# just a readme\n", "weights.bin": b"..."}
    hub = FakeHub({"someone/not-a-model": not_a_model})
    point_at(monkeypatch, hub)
    with serving(hub):
        with pytest.raises(CheckpointError) as missing:
            VAE.from_pretrained("someone/missing")
        with pytest.raises(CheckpointError) as other:
            VAE.from_pretrained("someone/not-a-model")
    assert "'someone/missing'" in str(missing.value) and "no such repo" in str(missing.value)
    assert "'someone/not-a-model'" in str(other.value) and "has no config.json" in str(other.value)
    for e in (missing.value, other.value):
        assert "\n" not in str(e)


def test_a_local_path_wins_over_a_repo_id(tmp_path, monkeypatch, make_vae):
    """A folder that exists is loaded as a folder even when its name reads like user/name."""
    model = make_vae(seed=6)
    monkeypatch.chdir(tmp_path)
    model.save_pretrained(Path("someone") / "local")
    same_model(model, VAE.from_pretrained("someone/local"))


@pytest.mark.slow
def test_the_environment_variables_a_user_sets(tmp_path, make_vae):
    """HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE as a user sets them, in fresh processes: download
    once, then load from the cache with the Hub gone."""
    model = make_vae(seed=7)
    hub = FakeHub({"someone/tiny-vae": repo_files(model, tmp_path, "someone/tiny-vae")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    code = (
        "import sys, torch; from vaelab import VAE\n"
        "m = VAE.from_pretrained('someone/tiny-vae')\n"
        "print(sum(float(v.double().sum()) for v in m.state_dict().values()))\n"
    )
    expected = sum(float(v.double().sum()) for v in model.state_dict().values())

    def child(offline: str) -> float:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env | {"HF_HUB_OFFLINE": offline},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return float(proc.stdout.split()[-1])

    with serving(hub):
        assert child("0") == expected
    assert hub.fetched() == MODEL_FILES
    assert child("1") == expected


# ---- uploads ------------------------------------------------------------------------------------


@pytest.fixture
def uploads(monkeypatch):
    """`HfApi`'s repo, branch and commit calls, recorded instead of sent; each commit's files are read
    when it is made (``calls[i]["files"]``: {path in repo: bytes})."""
    calls: list[dict] = []

    def create_repo(self, repo_id, **kw):
        calls.append({"call": "create_repo", "repo_id": repo_id, **kw})
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        calls.append({"call": "create_branch", "repo_id": repo_id, **kw})

    def create_commit(self, repo_id, operations, **kw):
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        calls.append({"call": "create_commit", "repo_id": repo_id, "files": files, "token": self.token, **kw})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

    monkeypatch.setattr(hf.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hf.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(hf.HfApi, "create_commit", create_commit)
    return calls


def test_push_to_hub_is_one_commit_of_the_model_and_its_card(tmp_path, uploads, make_vae):
    model = make_vae(seed=8)
    url = model.push_to_hub("someone/tiny-vae", private=True, commit_message="first")
    assert url == "https://huggingface.co/someone/tiny-vae/commit/0123abc"
    assert [c["call"] for c in uploads] == ["create_repo", "create_commit"]
    repo, commit = uploads
    assert repo["exist_ok"] is True and repo["private"] is True
    assert commit["commit_message"] == "first" and commit["revision"] is None
    assert set(commit["files"]) == MODEL_FILES
    card = commit["files"]["README.md"].decode()
    assert MARKER in card and 'VAE.from_pretrained("someone/tiny-vae")' in card
    for name, data in commit["files"].items():  # what went up loads back as the same model
        (tmp_path / name).write_bytes(data)
    same_model(model, VAE.from_pretrained(tmp_path))


def test_vaelab_push_uploads_the_run_without_its_checkpoints(tmp_path, uploads, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "notes.txt").write_text("mine")
    result = run_cli(
        ["push", str(run), "someone/digits-vae", "--private", "--revision", "v1", "--token", "t0k"]
    )
    assert result[0] == 0, result
    assert "https://huggingface.co/someone/digits-vae/commit/0123abc" in result[1]
    assert [c["call"] for c in uploads] == ["create_repo", "create_branch", "create_commit"]
    repo, branch, commit = uploads
    assert repo["private"] is True and branch["branch"] == "v1" and commit["revision"] == "v1"
    assert commit["token"] == "t0k"
    names = set(commit["files"])
    assert MODEL_FILES | {"samples.png", "reconstructions.png", "metrics.jsonl"} <= names
    assert not any(n.startswith("checkpoints") or n.startswith(".") or n == "notes.txt" for n in names)
    assert 'VAE.from_pretrained("someone/digits-vae")' in commit["files"]["README.md"].decode()
    assert commit["files"]["README.md"] == (run / "README.md").read_bytes()  # refreshed, then pushed


def test_vaelab_push_keeps_a_readme_the_user_wrote(tmp_path, uploads, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "README.md").write_text("# My VAE\n\nWritten by hand.\n")
    rc, _, err = run_cli(["push", str(run), "someone/digits-vae"])
    assert rc == 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("warning:") and "README.md" in err
    assert uploads[-1]["files"]["README.md"] == b"# My VAE\n\nWritten by hand.\n"


def test_vaelab_push_errors_are_one_line(tmp_path, monkeypatch, uploads, trained_run):
    assert_one_line_error(run_cli(["push", str(tmp_path / "nope"), "someone/x"]), "does not exist")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model.safetensors").unlink()
    assert_one_line_error(run_cli(["push", str(run), "someone/x"]), "model.safetensors", "missing")
    assert uploads == []

    from huggingface_hub.errors import LocalTokenNotFoundError

    def no_token(self, repo_id, **kw):
        raise LocalTokenNotFoundError("Token is required (`token=True`), but no token found.\nMore text.")

    monkeypatch.setattr(hf.HfApi, "create_repo", no_token)
    shutil.copy(trained_run / "model.safetensors", run / "model.safetensors")
    line = assert_one_line_error(run_cli(["push", str(run), "someone/x"]), "'someone/x'", "hf auth login")
    assert line.startswith("vaelab push: error:")


# ---- without the hub extra ----------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """huggingface_hub as if it were not installed: importing it raises ImportError."""
    for name in [m for m in sys.modules if m == "huggingface_hub" or m.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)


def test_without_huggingface_hub_each_way_in_is_one_line(tmp_path, no_hub, make_vae, trained_run):
    hint = 'pip install "vaelab[hub]"'
    with pytest.raises(VaelabError) as load:
        VAE.from_pretrained("someone/tiny-vae")
    with pytest.raises(VaelabError) as push:
        make_vae().push_to_hub("someone/tiny-vae")
    for e in (load.value, push.value):
        assert "needs huggingface_hub" in str(e) and hint in str(e) and "\n" not in str(e)
    assert "'someone/tiny-vae'" in str(load.value)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    card = (run / "README.md").read_bytes()
    assert_one_line_error(run_cli(["push", str(run), "someone/x"]), "needs huggingface_hub", hint)
    assert (run / "README.md").read_bytes() == card  # nothing touched before the error
    # a local folder never needs it
    same_model(VAE.from_pretrained(trained_run), VAE.from_pretrained(trained_run))
