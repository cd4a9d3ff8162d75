"""Models on the Hugging Face Hub: download a model repository into the local cache, upload a folder.

A vaelab model repository is a run directory's files: ``config.json`` and ``model.safetensors`` (what
loading needs), the model card ``README.md``, and for a trained run its pictures and metrics.
Downloading fetches only the first three, through huggingface_hub's cache, and nothing in them is
executed (JSON and safetensors). Uploading makes one commit of the files present.

huggingface_hub is an optional dependency (``pip install "vaelab[hub]"``), imported only here, and
only when one of these functions runs.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from vaelab.config import RUN_TOML
from vaelab.errors import CheckpointError, VaelabError
from vaelab.io import CARD_FILE, CONFIG_FILE, EVALUATE_FILE, METRICS_FILE, WEIGHTS_FILE, read_config

DOWNLOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)  # what loading reads, and the card to show
UPLOAD_FILES = (  # a run's shareable files; never checkpoints/ or the lock
    *DOWNLOAD_FILES,
    "samples.png",
    "reconstructions.png",
    EVALUATE_FILE,
    METRICS_FILE,
    RUN_TOML,
)
INSTALL_HINT = 'pip install "vaelab[hub]"'


def require_hub(what: str) -> ModuleType:
    """The ``huggingface_hub`` module, or a one-line `VaelabError` saying that ``what`` needs it."""
    try:
        import huggingface_hub
    except ImportError:
        raise VaelabError(f"{what} needs huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def resolve_model_dir(repo_id: str, revision: str | None = None) -> Path:
    """The local folder holding Hub model ``repo_id`` (at ``revision``: a branch, tag or commit; default
    main): its ``config.json``, ``model.safetensors`` and ``README.md``, downloaded into (or, offline,
    found in) huggingface_hub's cache. Every failure is a one-line `CheckpointError` naming the repo."""
    # from_pretrained comes here for a name that is no local folder: a mistyped path reads as a repo id
    hf = require_hub(f"'{repo_id}' is not a local folder; loading it from the Hugging Face Hub")
    try:
        folder = Path(
            hf.snapshot_download(
                repo_id, repo_type="model", revision=revision, allow_patterns=list(DOWNLOAD_FILES)
            )
        )
    except Exception as e:  # huggingface_hub's error classes change between its versions; see _why
        raise CheckpointError(
            f"cannot load '{repo_id}' from the Hugging Face Hub: {_why(e, revision, loading=True)}"
        ) from None
    if not (folder / CONFIG_FILE).is_file():
        at = f" at revision '{revision}'" if revision else ""
        raise CheckpointError(
            f"Hugging Face Hub repo '{repo_id}'{at} has no {CONFIG_FILE}: it is not a vaelab model"
        )
    return folder


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the model files in ``folder`` (a run directory, or a `save_pretrained` folder) to Hub
    model repo ``repo_id`` in one commit, creating the repo if needed (``private`` applies only then)
    and branch ``revision`` if it is given and missing. Returns the commit's URL.

    The files are those of `UPLOAD_FILES` that exist; ``token`` defaults to huggingface_hub's login
    (``hf auth login``, or $HF_TOKEN). Each error is a one-line `VaelabError` naming the repo."""
    folder = Path(folder)
    read_config(folder)  # a vaelab model folder, or a one-line CheckpointError
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"'{folder / WEIGHTS_FILE}' is missing")
    hf = require_hub(f"pushing to '{repo_id}' on the Hugging Face Hub")
    names = upload_files(folder)
    operations = [
        hf.CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names
    ]
    api = hf.HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or "Upload vaelab model",
            repo_type="model",
            revision=revision,
        )
    except Exception as e:  # as in resolve_model_dir: every huggingface_hub failure is one line
        raise VaelabError(
            f"pushing to '{repo_id}' on the Hugging Face Hub failed: {_why(e, revision)}"
        ) from None
    return str(getattr(commit, "commit_url", None) or repo_url)


def upload_files(folder: str | Path) -> list[str]:
    """The files of ``folder`` that `push_folder` uploads: those of `UPLOAD_FILES` it holds."""
    return [name for name in UPLOAD_FILES if (Path(folder) / name).is_file()]


def _why(error: Exception, revision: str | None, loading: bool = False) -> str:
    """A huggingface_hub error in a few words (``loading``: for `resolve_model_dir`). Matched by class
    name through the class's bases, since the classes move between modules (and HTTP libraries)
    across huggingface_hub versions."""
    kinds = {cls.__name__ for cls in type(error).__mro__}
    if "RevisionNotFoundError" in kinds:
        return f"no revision '{revision}' there"
    if "GatedRepoError" in kinds:
        return "the repo is gated: accept its conditions on the Hub and log in (hf auth login)"
    if "RepositoryNotFoundError" in kinds:
        nor = " (nor a local folder of that name)" if loading else ""
        return f"no such repo{nor}, or it is private and no valid token was given (hf auth login)"
    if "LocalTokenNotFoundError" in kinds:
        return "no Hugging Face token: log in with hf auth login, set $HF_TOKEN or pass a token"
    if kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "IncompleteSnapshotError"}:
        return "it is not in the local cache and the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1)"
    if "HFValidationError" in kinds:
        return f"not a valid repo id ({_first_line(error)})"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"
