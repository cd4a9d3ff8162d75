"""``vaelab push``: a run directory to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_command


def cmd_push(args: argparse.Namespace) -> int:
    """Upload the model in RUN_DIR to the Hugging Face Hub as model repo REPO_ID (user/name).

    One commit, into a repo created if needed: config.json, model.safetensors, the model card
    README.md (refreshed first; a README.md you wrote goes up as it is), and the run's pictures and
    metrics, never its checkpoints. Anyone can then load it with VAE.from_pretrained("REPO_ID").
    Needs huggingface_hub (pip install "vaelab[hub]") and a token with write access: hf auth login,
    $HF_TOKEN, or --token."""
    from vaelab.card import write_card
    from vaelab.errors import CheckpointError
    from vaelab.hub import push_folder, require_hub, upload_files
    from vaelab.io import WEIGHTS_FILE, read_config

    run_dir = Path(args.run_dir)
    read_config(run_dir)  # a missing or broken RUN_DIR is the error to show first
    if not (run_dir / WEIGHTS_FILE).is_file():  # before the card is touched
        raise CheckpointError(f"'{run_dir / WEIGHTS_FILE}' is missing")
    require_hub("pushing to the Hugging Face Hub")  # before the card is touched
    card = write_card(run_dir, repo_id=args.repo_id)
    if card is not None:
        print(f"wrote {card}")
    names = upload_files(run_dir)
    print(f"uploading {', '.join(names)} to {args.repo_id} ...", flush=True)
    url = push_folder(
        run_dir,
        args.repo_id,
        token=args.token,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.message,
    )
    print(f"pushed: {url}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "push", cmd_push)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub model repo, user/name or org/name")
    p.add_argument(
        "--private",
        action="store_true",
        help="create the repo private (a repo that exists keeps its visibility)",
    )
    p.add_argument(
        "--revision", metavar="BRANCH", help="the branch to commit to, created if missing (default main)"
    )
    p.add_argument("--message", metavar="TEXT", help="the commit message (default 'Upload vaelab model')")
    p.add_argument(
        "--token",
        help="a Hugging Face token (default: huggingface_hub's login or $HF_TOKEN; a token typed here "
        "stays in your shell history)",
    )
