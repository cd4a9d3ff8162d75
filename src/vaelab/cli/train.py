"""``vaelab train``: a new run into --out, or ``--resume RUN_DIR``; one process, or DDP under torchrun."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from vaelab.config import TrainConfig, VAEConfig
from vaelab.errors import VaelabError

from . import _holdout, _init_from, _resume
from ._common import SOURCE_HELP, add_command, add_data_flags, data_options, one_line_warning
from ._flags import add_config_flags, model_config_from_args, train_config_from_args


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR.

    A checkpoint is saved every --checkpoint-every epochs; Ctrl-C or SIGTERM stops at the end of
    the epoch with a checkpoint. --resume RUN_DIR continues a stopped or crashed run (bitwise
    identically on CPU), --epochs then being the new total. Under torchrun
    (torchrun --nproc_per_node N -m vaelab train ...) the processes train data-parallel."""
    from vaelab.device import resolve_device
    from vaelab.training import distributed

    if args.config is not None:
        from . import _run_toml  # here, not at start-up: tomllib is only needed with --config

        _run_toml.apply(args)  # before anything reads the flags
    if args.tensorboard is not None:
        from vaelab.training.tensorboard import require_tensorboard

        require_tensorboard("--tensorboard")  # before anything is written
    ctx, device = distributed.setup(resolve_device(_resume.device_name(args)))
    together = False  # whether every rank got here through the same collectives
    try:
        with _open_run(args, ctx) as run:  # locked until training and the final files are done
            code = _train(args, ctx, device, run)
        together = code != 130  # Ctrl-C may have caught the ranks at different points
        return code
    finally:
        distributed.shutdown(synchronize=together)


def _open_run(args: argparse.Namespace, ctx):
    """The `Run` to train: --resume's (locked, its checkpoint read) or a new one in --out (locked
    before anything else looks at it, `_check_out`)."""
    from vaelab.training.run import Run

    if args.resume is not None:
        _resume.check_flags(args)
        return Run.resume(args.resume, _resume.changes(args), ctx=ctx)
    if args.out is None or (args.data is None and not args.init_from):
        raise VaelabError("--data and --out are required (or --resume RUN_DIR to continue a run)")
    if args.init_from:
        _init_from.check_flags(args)
    return _check_out(Path(args.out), args.force, ctx)


def _train(args: argparse.Namespace, ctx, device, run) -> int:
    import torch

    from vaelab.card import write_card
    from vaelab.data.dataset import check_likelihood_range
    from vaelab.data.sources import canonical_source, load_dataset
    from vaelab.models.objectives import check_compatible
    from vaelab.models.vae import VAE
    from vaelab.training.distributed import on_main
    from vaelab.training.engine import resolve_mode
    from vaelab.training.loop import TrainingStopped, train
    from vaelab.training.run import train_extra
    from vaelab.training.signals import exit_code
    from vaelab.viz.figures import recon_grid, save_grid

    out, mcfg, source = run.path, None, None
    if args.resume is not None:
        mcfg, tcfg = run.model_config, run.train_config
        resolve_mode(tcfg.compile, device)  # e.g. cuda-graph without CUDA: fail before writing anything
        data = run.load_data(options=data_options(args))  # e.g. --data-dir on another machine
    else:
        source_run, source, data_name = (
            _init_from.load_source(args) if args.init_from else (None, None, args.data)
        )
        tcfg = train_config_from_args(args, data=canonical_source(data_name), init_from=args.init_from or "")
        resolve_mode(tcfg.compile, device)  # e.g. cuda-graph without CUDA: fail before writing anything
        if source is not None:
            mcfg = source.config
            data = _init_from.load_data(args, source_run, data_options(args))
        else:
            data = load_dataset(tcfg.data, likelihood=args.likelihood, **data_options(args))
            check_likelihood_range(data, args.likelihood)
        tcfg.data_options = dict(data.meta.get("options", {}))  # as applied, so evaluate sees the same
    if mcfg is None:
        mcfg = model_config_from_args(args, data.shape, _n_classes(data) if args.conditional else 0)
    check_compatible(mcfg, tcfg)
    torch.manual_seed(tcfg.seed)
    model = VAE(mcfg).to(device)
    if source is not None:
        model.load_state_dict(source.state_dict())
    elif args.resume is None and mcfg.likelihood == "logistic":
        model.init_decoder_at_marginal(data.train)  # a fresh run: start p(x|z) at the data's marginal
    if args.resume is not None:
        _resume.announce(run, ctx)
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        where = f"{device} x {ctx.world_size} processes" if ctx.distributed else f"{device}"
        print(
            f"training on '{data.name}' ({len(data.train)} train / {len(data.test)} "
            f"test, shape {data.shape}) on {where}, {n_params:,} parameters"
        )
        if source is not None:
            print(f"starting from the weights of '{args.init_from}'")

    def on_epoch(rec: dict[str, Any]) -> None:  # metrics.jsonl is train's
        print(
            f"epoch {rec['epoch']:>4}/{tcfg.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
            f"test -ELBO {rec['test_neg_elbo']:8.3f} (recon {rec['recon']:.3f} + KL "
            f"{rec['kl']:.3f}){_objective_note(rec)}{_holdout.epoch_note(rec)}  active units "
            f"{rec['active_units']}/{mcfg.latent_dim}  {rec['seconds']:.2f}s",
            flush=True,
        )

    if ctx.is_main and tcfg.holdout:
        print(_holdout.plan(tcfg, len(data.train)))
    callbacks = _callbacks(args, run, mcfg, tcfg, ctx)
    try:
        with warnings.catch_warnings():  # a warning (e.g. posterior collapse) is one line, not a source dump
            warnings.showwarning = one_line_warning
            history = train(
                model,
                data,
                tcfg,
                on_epoch=on_epoch if ctx.is_main else None,
                progress=args.progress,
                run_dir=run,
                resume=run.checkpoint,
                callbacks=callbacks,
            )
    except TrainingStopped as e:
        if ctx.is_main:
            print(
                f"stopped after epoch {e.epoch}/{tcfg.epochs}; checkpoint saved in {out}/checkpoints.\n"
                f"resume with: {_resume.command(out, ctx)}",
                file=sys.stderr,
            )
        return exit_code(e.signum)
    except KeyboardInterrupt:
        if ctx.is_main:
            print(
                f"vaelab train: interrupted; the last checkpoint ({_resume.last_epoch(out)}) is intact.\n"
                f"resume with: {_resume.command(out, ctx)}",
                file=sys.stderr,
            )
        return 130

    def finish() -> None:
        run.save_model(model, train_extra(tcfg, ctx.world_size))
        gen = torch.Generator(device=device).manual_seed(tcfg.seed)
        # A CVAE's sample grid has one row per class.
        y = torch.arange(mcfg.n_classes, device=device).repeat_interleave(8) if mcfg.n_classes else None
        save_grid(model.sample(64 if y is None else len(y), generator=gen, y=y), out / "samples.png", nrow=8)
        x = data.test.batch(slice(0, 32)).to(device)
        y = None if data.test.y is None else data.test.y[:32].to(device)
        save_grid(recon_grid(x, model.reconstruct(x, y)), out / "reconstructions.png", nrow=8)
        write_card(out)  # README.md, the model card (one the user wrote is left alone)
        if history and "best_epoch" in history[-1]:
            print(_holdout.best_note(history[-1], tcfg, out))
        print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")

    on_main(finish, ctx)  # the other ranks wait here, and fail with rank 0 if saving fails
    return 0


def _callbacks(args: argparse.Namespace, run, mcfg: VAEConfig, tcfg: TrainConfig, ctx) -> list:
    """The run's run.toml (written when training starts), and --tensorboard's logger."""
    from . import _run_toml

    callbacks = [_run_toml.writer(run.path, mcfg, tcfg, args.train_parser)] if ctx.is_main else []
    if args.tensorboard is not None:
        from vaelab.training.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(args.tensorboard, seed=tcfg.seed))
    return callbacks


def _check_out(out: Path, force: bool, ctx):
    """--out as a new `Run`: locked first, then refused if it is not empty without --force (a
    --force'd old run is cleared when the new one writes its first files)."""
    from vaelab.training.run import Run

    return Run.create(out, force, ctx=ctx)


def register(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--data", help=SOURCE_HELP + " (required unless --resume)")
    p.add_argument("--out", help="RUN_DIR to create (required unless --resume)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN_DIR")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="read these flags from a TOML file (latent_dim = 8, hidden = [400, 400], ...; the flags "
        "given here override it); RUN_DIR/run.toml repeats a run",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help='log the metrics and sample grids for TensorBoard into DIR (pip install "vaelab[tensorboard]")',
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="a new run starting from RUN_DIR's model and weights (its data by default), trained with "
        "this command's flags: e.g. fine-tune an ELBO run with --objective iwae",
    )
    add_config_flags(p, VAEConfig, "model (fixed by --init-from and --resume; see docs/training.md)")
    add_config_flags(p, TrainConfig, "training")
    add_data_flags(p)
    p.set_defaults(train_parser=p)  # --resume and --init-from tell the flags given from the defaults


def _n_classes(data) -> int:
    """--conditional: the number of classes in the data (its class names, or the largest label + 1)."""
    if not data.has_labels:
        raise VaelabError(f"--conditional needs labelled data; '{data.name}' has no labels")
    labels = [s.y for s in (data.train, data.test) if s.y is not None and len(s.y)]
    if min(int(y.min()) for y in labels) < 0:
        raise VaelabError(f"--conditional needs labels 0..C-1; '{data.name}' has negative labels")
    return max(len(data.classes or ()), *(int(y.max()) + 1 for y in labels))


def _objective_note(rec: dict[str, Any]) -> str:
    """The per-epoch line's note when the loss is not the plain ELBO."""
    if "test_neg_iwae" in rec:
        return f"  test -IWAE(k={rec['iwae_k']}) {rec['test_neg_iwae']:.3f}"
    if "kl_weight" in rec:
        fb = f", free bits {rec['free_bits']:g}" if rec["free_bits"] else ""
        return f"  [loss KL weight {rec['kl_weight']:.3g}{fb}]"
    return ""
