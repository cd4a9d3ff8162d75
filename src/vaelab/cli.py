"""The ``vaelab`` command line: a thin typed layer over the library.

One function per command; its docstring is the help. Expected errors (`VaelabError`, bad
flags, unreadable files) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .errors import VaelabError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- flag types -------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """'400,400' -> (400, 400); '' -> () for no hidden layer."""
    if text.strip() == "":
        return ()
    try:
        return tuple(positive_int(t.strip()) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 400,400; got {text!r}"
        ) from None


# ---- helpers ------------------------------------------------------------------------------


def _check_writable(path: Path, force: bool, flag: str = "--out") -> None:
    """Refuse to overwrite an existing file silently."""
    if path.exists() and not force:
        raise VaelabError(f"{flag} '{path}' already exists; pass --force to overwrite it")
    if path.is_dir():
        raise VaelabError(f"{flag} '{path}' is a directory, expected a file")


def _load_run(run_dir: str, device: str = "auto"):
    from .device import resolve_device
    from .io import load

    return load(run_dir, device=resolve_device(device))


def _load_data_for(model, source: str):
    """Load SOURCE and check it fits the model's input shape."""
    from .data import load_dataset

    data = load_dataset(source)
    if data.shape != tuple(model.config.input_shape):
        raise VaelabError(
            f"data '{source}' has shape {data.shape} but the model expects "
            f"{tuple(model.config.input_shape)}"
        )
    return data


# ---- commands ----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE on SOURCE and write config.json, model.safetensors, metrics.jsonl,
    samples.png and reconstructions.png into RUN_DIR."""
    import torch

    from .config import TrainConfig, VAEConfig, to_dict
    from .data import check_likelihood_range, load_dataset
    from .device import resolve_device
    from .figures import recon_grid, save_grid
    from .io import CONFIG_FILE, atomic_write_json, run_config
    from .model import VAE
    from .train import train

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"--out '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise VaelabError(f"--out '{out}' is not empty; pass --force to overwrite the run in it")
    tcfg = TrainConfig(
        data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, device=args.device,
    )
    device = resolve_device(args.device)
    data = load_dataset(args.data)
    check_likelihood_range(data, args.likelihood)
    mcfg = VAEConfig(
        input_shape=data.shape, latent_dim=args.latent_dim, hidden=args.hidden,
        likelihood=args.likelihood,
    )
    torch.manual_seed(tcfg.seed)
    model = VAE(mcfg).to(device)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, run_config(mcfg, {"train": to_dict(tcfg)}))
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training on '{data.name}' ({len(data.train)} train / {len(data.test)} "
        f"{data.test_split}, shape {data.shape}) on {device}, {n_params:,} parameters"
    )

    def on_epoch(rec: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(
            f"epoch {rec['epoch']:>4}/{tcfg.epochs}  train -ELBO {rec['train_neg_elbo']:8.3f}  "
            f"test -ELBO {rec['test_neg_elbo']:8.3f} (recon {rec['recon']:.3f} + KL "
            f"{rec['kl']:.3f})  {rec['seconds']:.2f}s",
            flush=True,
        )

    train(model, data, tcfg, on_epoch=on_epoch, progress=args.progress)
    model.save(out, {"train": to_dict(tcfg)})
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)
    save_grid(model.sample(64, generator=gen), out / "samples.png", nrow=8)
    x = data.test.batch(slice(0, 32)).to(device)
    save_grid(recon_grid(x, model.reconstruct(x)), out / "reconstructions.png", nrow=8)
    print(f"done: model in {out}/, pictures {out}/samples.png and {out}/reconstructions.png")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Decode N random z ~ N(0, I) from the model in RUN_DIR to a PNG grid or a .npy array."""
    import numpy as np
    import torch

    from .figures import save_grid
    from .io import atomic_write_bytes

    model = _load_run(args.run_dir, args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"samples_seed{args.seed}.png"
    if out.suffix.lower() not in (".png", ".npy"):
        raise VaelabError(f"--out '{out}' must end in .png or .npy")
    _check_writable(out, args.force)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    x = model.sample(args.n, generator=gen, mean=not args.binary, temperature=args.temperature)
    if out.suffix.lower() == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, x.cpu().numpy())
        atomic_write_bytes(out, buf.getvalue())
    else:
        save_grid(x, out)
    print(f"wrote {args.n} samples to {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct the first N test examples of SOURCE: originals above reconstructions."""
    from .figures import recon_grid, save_grid

    model = _load_run(args.run_dir, args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / "reconstruct.png"
    _check_writable(out, args.force)
    data = _load_data_for(model, args.data)
    x = data.test.batch(slice(0, args.n)).to(model.device)
    save_grid(recon_grid(x, model.reconstruct(x)), out, nrow=min(8, len(x)))
    print(f"wrote {len(x)} reconstructions to {out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    """Encode SOURCE to latent features: arrays mu, logvar (and labels, split) in .npz or .csv."""
    from .features import encode_dataset, write_features

    model = _load_run(args.run_dir, args.device)
    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise VaelabError(f"--out '{out}' must end in .npz or .csv")
    _check_writable(out, args.force)
    data = _load_data_for(model, args.data)
    feats = encode_dataset(model, data, args.split)
    write_features(feats, out)
    print(f"wrote {len(feats['mu'])} x {feats['mu'].shape[1]} latent means/logvars to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the model on the test split of SOURCE: -ELBO, recon and KL in nats per example."""
    from .evaluate import evaluate_elbo
    from .io import atomic_write_json

    model = _load_run(args.run_dir, args.device)
    if args.json:
        _check_writable(Path(args.json), args.force, "--json")
    data = _load_data_for(model, args.data)
    result = evaluate_elbo(model, data.test, seed=args.seed)
    result["split"] = data.test_split
    result["data"] = args.data
    result["seed"] = args.seed
    print(
        f"{data.name} {data.test_split} (n={result['n']}): -ELBO {result['neg_elbo']:.3f} nats "
        f"(recon {result['recon']:.3f} + KL {result['kl']:.3f})"
    )
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# ---- parser -------------------------------------------------------------------------------


def _command(sub, name: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    doc = (fn.__doc__ or "").strip()
    p = sub.add_parser(name, help=doc.splitlines()[0], description=doc)
    p.set_defaults(func=fn)
    return p


def _device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="vaelab", description="Variational autoencoders on PyTorch.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = _command(sub, "train", cmd_train)
    p.add_argument("--data", required=True, help="SOURCE: a dataset name such as digits")
    p.add_argument("--out", required=True, help="RUN_DIR to create")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--latent-dim", type=positive_int, default=20)
    p.add_argument("--hidden", type=int_list, default=(400,), help="widths, e.g. 400,400")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=nonneg_int, default=0)
    _device_flag(p)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN_DIR")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")

    p = _command(sub, "sample", cmd_sample)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=positive_int, default=64)
    p.add_argument("--out", help="FILE.png or FILE.npy (default RUN_DIR/samples_seedS.png)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--temperature", type=positive_float, default=1.0, help="scale of z")
    p.add_argument("--binary", action="store_true", help="sample pixels instead of means")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    _device_flag(p)

    p = _command(sub, "reconstruct", cmd_reconstruct)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", required=True)
    p.add_argument("-n", type=positive_int, default=16)
    p.add_argument("--out", help="FILE.png (default RUN_DIR/reconstruct.png)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    _device_flag(p)

    p = _command(sub, "encode", cmd_encode)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="FILE.npz or FILE.csv")
    p.add_argument("--split", choices=["all", "train", "test"], default="all")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    _device_flag(p)

    p = _command(sub, "evaluate", cmd_evaluate)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", required=True)
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite --json")
    _device_flag(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn expected errors into one line + exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VaelabError as e:
        print(f"vaelab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        print(f"vaelab {args.command}: error:{where} {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return 130
