"""Saving and loading a `VAE` as a model repository: ``config.json`` + ``model.safetensors``.

Every vaelab run directory is such a repository, so ``VAE.from_pretrained(run_dir)`` loads a run, and
a folder written by ``model.save_pretrained(dir)`` can be pushed to the Hugging Face Hub as it is.
Loading never executes anything from a file: the config is JSON checked field by field, the weights
are safetensors, and a model with the user's own networks is rebuilt only from networks passed in.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from vaelab.errors import CheckpointError
from vaelab.io import CONFIG_FILE, WEIGHTS_FILE, check_weights, load_model_config, read_weights, save_model

M = TypeVar("M", bound="PretrainedMixin")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # user/name; anything else is a local path


class PretrainedMixin:
    """``save_pretrained`` and ``from_pretrained`` for `VAE` (kept here so vae.py stays the model)."""

    def save_pretrained(self, save_directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (created if needed)
        and return it. A folder that already holds a model is refused unless ``overwrite``."""
        out = Path(save_directory)
        if out.exists() and not out.is_dir():
            raise CheckpointError(f"'{out}' exists and is not a directory")
        held = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if (out / name).exists()]
        if held and not overwrite:
            raise CheckpointError(f"'{out}' already holds a model ({', '.join(held)}); pass overwrite=True")
        out.mkdir(parents=True, exist_ok=True)
        save_model(self, out)  # type: ignore[arg-type]  # self is a VAE
        return out

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | Path,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        device: str | torch.device = "cpu",
        revision: str | None = None,
    ) -> M:
        """Load a model from a local directory (a run directory, or one written by `save_pretrained`)
        or from a Hugging Face Hub repo id such as ``"user/vae-digits"`` (needs ``vaelab[hub]``).

        A model trained with its own networks is rebuilt around the ``encoder`` and ``decoder``
        given here (fresh instances of the same classes); nothing named in the files is imported.
        Returns the model on ``device`` in eval mode."""
        folder = Path(name_or_path)
        if not folder.exists() and REPO_ID.fullmatch(str(name_or_path)):
            from vaelab.hub import resolve_model_dir  # only a repo id needs huggingface_hub

            folder = resolve_model_dir(str(name_or_path), revision=revision)
        config = load_model_config(folder)
        model = cls.from_config(config, encoder=encoder, decoder=decoder)  # type: ignore[attr-defined]
        state = read_weights(folder)
        check_weights(state, model.state_dict(), f"'{folder / WEIGHTS_FILE}'")
        model.load_state_dict(state)
        return model.to(device).eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Upload the model to Hugging Face Hub repo ``repo_id`` (created if needed; ``private`` applies
        then) as ``config.json``, ``model.safetensors`` and a model card ``README.md``, in one commit
        to branch ``revision`` (default main). Needs ``vaelab[hub]``; ``token`` defaults to
        huggingface_hub's login. Returns the commit's URL. A run directory's pictures and metrics
        go up with ``vaelab push RUN_DIR REPO_ID`` instead."""
        from vaelab.card import write_card
        from vaelab.hub import push_folder, require_hub

        require_hub(f"pushing to '{repo_id}' on the Hugging Face Hub")  # before any work
        with tempfile.TemporaryDirectory(prefix="vaelab-push-") as tmp:
            folder = self.save_pretrained(tmp, overwrite=True)
            write_card(folder, repo_id=repo_id)
            return push_folder(
                folder,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                commit_message=commit_message,
            )
