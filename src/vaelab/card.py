"""The model card: ``README.md`` in a run directory, the page the Hugging Face Hub shows for a model.

`write_card` writes it from the run's own files: YAML front matter with the Hub's metadata
(``library_name: vaelab``, tags, the dataset when it is a public one), the architecture from
``config.json``, the ``vaelab train`` command that reproduces the run, the metrics of
``evaluate.json`` (else the last test -ELBO of ``metrics.jsonl``), the samples picture and a usage
snippet. ``vaelab train`` writes it at the end of a run, ``vaelab evaluate`` and ``vaelab push``
refresh it. A card carries `MARKER`; a ``README.md`` without it is the user's, and is never
overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import warnings
from pathlib import Path
from typing import Any

from vaelab.config import RUN_TOML, TrainConfig, VAEConfig
from vaelab.data.types import DataOptions
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_bytes
from vaelab.io import (
    CARD_FILE,
    CONFIG_FILE,
    EVALUATE_FILE,
    WEIGHTS_FILE,
    read_config,
    read_evaluation,
    read_metrics,
)
from vaelab.schema import flag_settings, from_dict

__all__ = ["CARD_FILE", "MARKER", "is_generated", "render_card", "train_command", "write_card"]
MARKER = "<!-- vaelab model card: vaelab rewrites this file; delete this line to keep your edits -->"
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
# How a run trained rather than what it trained: left out of the command that reproduces it.
NOT_IN_COMMAND = ("device", "threads", "compile", "checkpoint_every", "nan_retries", "nan_lr_factor")
# The data options a command repeats: all but where this machine keeps the files.
DATA_FLAGS = tuple(f.name for f in dataclasses.fields(DataOptions) if f.name != "data_dir")
PRIOR_FIELDS = ("prior", "pseudo_inputs", "mixture_components")  # what vaelab fit-prior replaces


def is_generated(path: str | Path) -> bool:
    """Whether the file at ``path`` is a card vaelab wrote (it holds `MARKER`)."""
    try:
        return MARKER in Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def write_card(run_dir: str | Path, *, repo_id: str | None = None) -> Path | None:
    """Write ``RUN_DIR/README.md`` (`render_card`) and return its path, unless a README.md that vaelab
    did not write is there: that one is left as it is, with a warning, and None is returned."""
    path = Path(run_dir) / CARD_FILE
    if path.exists() and not is_generated(path):
        warnings.warn(
            f"'{path}' was not written by vaelab: left as it is (no model card written)", stacklevel=2
        )
        return None
    atomic_write_bytes(path, render_card(run_dir, repo_id=repo_id).encode())
    return path


def render_card(run_dir: str | Path, *, repo_id: str | None = None) -> str:
    """The model card of the model in ``run_dir`` (a run directory or a `save_pretrained` folder), as
    Markdown. ``repo_id`` names the model in the title and the usage snippet (default: ``run_dir``)."""
    run_dir = Path(run_dir)
    doc = read_config(run_dir)
    model = from_dict(VAEConfig, doc.get("model"), f"{run_dir / CONFIG_FILE}: model")
    train = _train_config(doc)
    name = repo_id or str(run_dir)
    parts = [
        _front_matter(model, train),
        MARKER,
        f"\n# {_plain(repo_id.split('/')[-1] if repo_id else run_dir.resolve().name)}\n",
        "A variational autoencoder made with [vaelab](https://github.com/vaelab/vaelab)"
        + (f", trained on {_data_name(train.data)}." if train else "."),
    ]
    if (run_dir / "samples.png").is_file():
        parts.append("\n![samples](samples.png)")
    parts += ["\n## Architecture\n", _table(_architecture(model, run_dir / WEIGHTS_FILE))]
    if train is not None:
        parts += ["\n## Training\n", _training(doc, run_dir, model)]
    metrics = _metrics(run_dir)
    if metrics:
        parts += ["\n## Metrics\n", metrics]
    parts += ["\n## Usage\n", _usage(name, model)]
    return "\n".join(parts) + "\n"


def _training(doc: dict[str, Any], run_dir: Path, model: VAEConfig) -> str:
    """The commands that make the model again: ``vaelab train`` (or its run.toml), then for a
    `vaelab fit-prior` output, that command."""
    train = _train_config(doc)
    if model.arch == "custom" or (train is not None and train.data.startswith("torch:")):
        return (
            "Trained from Python with `vaelab.train` (its own networks or a torch Dataset), so no "
            "`vaelab train` command repeats it."
        )
    fit = doc.get("prior_fit")
    out = Path(fit["from"]).name if isinstance(fit, dict) and isinstance(fit.get("from"), str) else ""
    command = train_command(doc, out or run_dir.resolve().name or "RUN_DIR")
    text = f"```bash\n{command}\n```" if command else "(not recorded)"
    if isinstance(fit, dict):
        m = model.mixture_components
        refit = shlex.join(["vaelab", "fit-prior", out or "RUN_DIR", "--out", run_dir.resolve().name])
        return (
            f"The run it comes from (its prior flags are not recorded here):\n\n{text}\n\n"
            f"then its prior was replaced by a {m}-component Gaussian mixture fitted to the aggregate "
            "posterior:\n\n"
            f"```bash\n{refit} --components {m}\n```"
        )
    if (run_dir / RUN_TOML).is_file():
        text += "\n\nor, with this folder's run.toml: `vaelab train --config run.toml --out NEW_DIR`"
    return text


def _train_config(doc: dict[str, Any]) -> TrainConfig | None:
    """config.json's training section, if it has a valid one (a `save_pretrained` folder has none)."""
    try:
        return from_dict(TrainConfig, doc["train"]) if "train" in doc else None
    except VaelabError:
        return None


def _front_matter(model: VAEConfig, train: TrainConfig | None) -> str:
    """The YAML block the Hub reads: library, tags, and the dataset when it is a public one."""
    tags = ["vae", "pytorch", "vaelab"]
    if model.n_classes:
        tags.append("conditional-vae")
    if model.top_latent_dim:
        tags.append("hierarchical-vae")
    lines = ["---", "library_name: vaelab", "tags:", *(f"- {t}" for t in tags)]
    if train is not None and train.data in HUB_DATASETS:
        lines += ["datasets:", f"- {HUB_DATASETS[train.data]}"]
    return "\n".join([*lines, "---"])


def _architecture(m: VAEConfig, weights: Path) -> list[tuple[str, str]]:
    """The rows of the architecture table."""
    arch = f"convolutional, channels {_ints(m.channels)}" if m.arch == "conv" else "MLP"
    arch += f", hidden {_ints(m.hidden)}" if m.hidden else ", no hidden layer"
    if m.arch == "custom":  # the user's own classes, as config.json records them
        arch = "own networks: " + ", ".join(f"{k} {v}" for k, v in m.networks.items())
    k, k2 = m.latent_dim, m.top_latent_dim
    prior = {
        "vamp": f"VampPrior, {m.pseudo_inputs} pseudo-inputs",
        "mixture": f"Gaussian mixture, {m.mixture_components} components",
        "normal": "N(0, I)",
    }.get(m.prior, f"{m.prior} (a registered prior)")
    rows = [
        ("input (C x H x W)", " x ".join(str(v) for v in m.input_shape)),
        ("encoder and decoder", arch + (", gated" if m.gated else "")),
        ("latent", f"{k} dims in two levels: z1 {k - k2}, z2 {k2} (hierarchical VAE)" if k2 else f"{k} dims"),
        ("likelihood", m.likelihood),
        ("prior", f"{prior}{' over z2' if k2 else ''}"),
    ]
    if m.n_classes:
        rows.append(("conditional", f"a CVAE on {m.n_classes} classes (labels 0..{m.n_classes - 1})"))
    n = _n_weights(weights)
    if n is not None:
        rows.append(("parameters", f"{n:,}"))
    return rows


def _n_weights(path: Path) -> int | None:
    """The number of weights in a safetensors file, read from its header (no tensor is loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


def train_command(doc: dict[str, Any], out: str = "RUN_DIR") -> str | None:
    """The ``vaelab train`` command that trains the run whose config.json is ``doc`` again, into
    ``out``: the flags whose values differ from their defaults (None without a training section).
    Local paths (a folder of data, --init-from) are shown by their last part only."""
    try:
        mcfg, tcfg = from_dict(VAEConfig, doc.get("model")), from_dict(TrainConfig, doc.get("train"))
    except VaelabError:
        return None
    argv = ["vaelab", "train", "--data", _source_name(tcfg.data), "--out", out]
    if tcfg.init_from:  # the model comes from that run: --init-from refuses model flags
        argv += ["--init-from", _source_name(tcfg.init_from)]
    else:
        argv += _flags(mcfg, PRIOR_FIELDS if "prior_fit" in doc else ())  # the prior before fit-prior's
    argv += _flags(tcfg)
    for key in DATA_FLAGS:
        value = tcfg.data_options.get(key)
        if key == "image_size" and isinstance(value, list):
            value = "x".join(str(v) for v in value)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    world = doc.get("world_size")
    if isinstance(world, int) and world > 1:
        argv[:1] = ["torchrun", "--nproc_per_node", str(world), "-m", "vaelab"]
    return shlex.join(argv)


def _flags(cfg: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """``cfg``'s flags (`schema.flag_settings`) whose values differ from the flag's default, as
    argv (but those of `NOT_IN_COMMAND` and ``skip``)."""
    argv: list[str] = []
    for flag, value in flag_settings(cfg):
        if flag.field in NOT_IN_COMMAND or flag.field in skip:
            continue
        if isinstance(value, bool):
            argv += [flag.option] if value else []
        elif value != flag.default:
            argv += [flag.option, ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)]
    return argv


def _data_name(source: str) -> str:
    """The data as the card's first line names it."""
    if source.startswith("torch:"):  # `vaelab.train` on a torch Dataset
        return f"a torch Dataset (`{_plain(source.removeprefix('torch:'))}`)"
    return f"`{_plain(_source_name(source))}`"


def _source_name(source: str) -> str:
    """A data source as the card shows it: a name as is, a local path by its last part."""
    return Path(source).name if ("/" in source or "\\" in source) else source


def _metrics(run_dir: Path) -> str:
    """The metrics section: evaluate.json's numbers, else the last test -ELBO of metrics.jsonl. An
    evaluate.json older than model.safetensors measured earlier weights (the run was resumed or
    trained again with --force since) and is left out."""
    ev = read_evaluation(run_dir)
    try:
        if ev is not None and _mtime(run_dir / EVALUATE_FILE) < _mtime(run_dir / WEIGHTS_FILE):
            ev = None
    except OSError:  # the weights are gone: nothing to date the evaluation against
        ev = None
    if ev is not None and _num(ev.get("neg_elbo")) is not None:
        return _evaluation(ev)
    rec = _last_epoch(run_dir)
    if rec is None:
        return ""
    epoch = f" after epoch {rec['epoch']}" if isinstance(rec.get("epoch"), int) else ""
    return (
        f"Test -ELBO {rec['test_neg_elbo']:.3f} nats{epoch} (from metrics.jsonl). "
        "`vaelab evaluate` (or `vaelab.evaluate_model`) adds the importance-sampled NLL."
    )


def _evaluation(ev: dict[str, Any]) -> str:
    """evaluate.json as a table; each number with its ± where the file has a standard error."""

    def value(key: str, fmt: str = ".3f", unit: str = " nats") -> str | None:
        v = _num(ev.get(key))
        if v is None:
            return None
        err = _num(ev.get(f"{key}_std_err"))
        return f"{v:{fmt}}" + (f" ± {err:{fmt}}" if err is not None else "") + unit

    k = _num(ev.get("importance_samples"))
    nll = value("nll")
    bpd = _num(ev.get("bits_per_dim"))
    rows = [
        (
            f"NLL (K={k:g} importance samples)" if k else "NLL",
            nll and nll + (f" ({bpd:.4f} bits/dim)" if bpd else ""),
        ),
        ("-ELBO", value("neg_elbo")),
        ("reconstruction", value("recon")),
        ("KL", value("kl")),
        (
            "active units",
            f"{ev['active_units']} / {ev.get('latent_dim')}"
            if _num(ev.get("active_units")) is not None
            else None,
        ),
        ("linear probe accuracy", value("probe_accuracy", ".4f", "")),
        ("5-NN accuracy", value("knn_accuracy", ".4f", "")),
    ]
    split, n, data = ev.get("split"), _num(ev.get("n")), ev.get("data")
    where = f"On the {_plain(split if isinstance(split, str) else 'test')} split"
    where += f" of `{_plain(_source_name(data))}`" if isinstance(data, str) and data else ""
    where += f" ({n:g} examples)" if n is not None else ""
    return f"{where}, by `vaelab evaluate` (evaluate.json):\n\n" + _table(
        [(key, text) for key, text in rows if text is not None]
    )


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _last_epoch(run_dir: Path) -> dict[str, Any] | None:
    """The record of metrics.jsonl that matches the saved weights (the best holdout epoch when the run
    kept one, else the last), if it has a test -ELBO; damaged lines are skipped."""
    records = [r for r in read_metrics(run_dir) if _num(r.get("test_neg_elbo")) is not None]
    if not records:
        return None
    best = records[-1].get("best_epoch")
    return next((r for r in records if best is not None and r.get("epoch") == best), records[-1])


def _usage(name: str, model: VAEConfig) -> str:
    """Three lines that load the model and sample from it (a CVAE's samples need labels)."""
    c = model.n_classes
    sample = f"x = model.sample(16, y=torch.arange(16) % {c})" if c else "x = model.sample(16)"
    lines = ["import torch"] if c else []
    load = f"model = VAE.from_pretrained({json.dumps(name)})"
    if model.arch == "custom":  # the networks are the user's: built by them, never imported from a file
        # config.json's class paths, shown only if they look like class paths (a file may hold anything)
        named = [_class_path(model.networks.get(k), k.capitalize()) for k in ("encoder", "decoder")]
        paths = [path.rpartition(".") for path in named]
        modules: dict[str, list[str]] = {}
        for module, _, cls in paths:
            modules.setdefault(module or "your_package", []).append(cls)
        for module, names in modules.items():
            lines.append(f"from {module} import {', '.join(dict.fromkeys(names))}  # your own networks")
        (_, _, enc), (_, _, dec) = paths
        load = load[:-1] + f", encoder={enc}(...), decoder={dec}(...))"
    lines += ["from vaelab import VAE", load, sample]
    return "```python\n" + "\n".join(lines) + "\n```"


def _class_path(text: str | None, fallback: str) -> str:
    """``text`` if it is a dotted Python name (``pkg.module.Class``), else ``fallback``."""
    ok = isinstance(text, str) and len(text) < 200 and all(p.isidentifier() for p in text.split("."))
    return text if ok and text else fallback


def _table(rows: list[tuple[str, str]]) -> str:
    """Two-column Markdown rows (values from files made safe: `_plain`, and no ``|``)."""
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_plain(v).replace('|', '/')} |" for k, v in rows)


def _num(v: Any) -> float | None:
    """``v`` if it is a finite number (JSON from disk may hold anything)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _ints(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


def _plain(text: str) -> str:
    """Text from a file, made safe for one line of Markdown (no backticks, newlines or HTML)."""
    return " ".join(str(text).replace("`", "'").replace("<", "&lt;").split())
