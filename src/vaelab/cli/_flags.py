"""``vaelab train``'s config flags, generated from the `Flag` metadata of the config dataclasses.

Each field of `TrainConfig` and `VAEConfig` with a `Flag` becomes one flag (help, choices, parser and
the default shown in ``--help`` all come from the field), and `config_from_args` builds the config back
from the parsed flags. The generated flags record that they were given, so a flag typed with its default
value still counts as given (``--resume`` refuses the flags that its run fixes only when they are typed).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from vaelab.config import TrainConfig, VAEConfig
from vaelab.errors import Ref
from vaelab.schema import ConfigFlag, config_flags

from ._common import fraction, int_list, nonneg_float, nonneg_int, positive_float, positive_int

GIVEN = "given_flags"  # the namespace's record of the generated flags given, in command-line order
FROM_FILE = "file_flags"  # the namespace's record of the flags a --config file set: {dest: its key}
INTERNAL = ("func", "command", "train_parser", GIVEN, FROM_FILE)  # namespace entries that are not flags
RUN_FLAGS_ON_RESUME = ("resume", "progress", "data_dir", "tensorboard", "config")  # outside the configs

# How the CLI spells the library's arguments that its flags name otherwise (else --name), and the
# `TrainConfig` fields without a Flag that ``vaelab train`` sets from flags of its own.
ARGUMENT_FLAGS = {"source": "--data", "which": "--split"}
FIELD_FLAGS: dict[tuple[type, str], str] = {
    (TrainConfig, "data"): "--data",
    (TrainConfig, "init_from"): "--init-from",
}

T = TypeVar("T")

PARSERS: dict[tuple[str, type], Callable[[str], Any]] = {
    ("positive", int): positive_int,
    ("positive", float): positive_float,
    ("nonneg", int): nonneg_int,
    ("nonneg", float): nonneg_float,
    ("fraction", float): fraction,
    ("ints", tuple): int_list,
}


def add_config_flags(p: argparse.ArgumentParser, cls: type, title: str) -> None:
    """A group of ``p`` with one flag per field of ``cls`` that has a `Flag`."""
    g = p.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for flag in config_flags(cls):
        base = _base_type(hints[flag.field])
        kwargs: dict[str, Any] = {"dest": flag.dest, "help": _help(flag)}
        if flag.spec.metavar:
            kwargs["metavar"] = flag.spec.metavar
        if base is bool or flag.spec.parse == "switch":
            g.add_argument(flag.option, action=_StoreTrue, default=False, **kwargs)
            continue
        if flag.spec.choices:
            kwargs["choices"] = flag.spec.choices
        parse = PARSERS.get((flag.spec.parse, base)) if flag.spec.parse else base
        if parse is None:
            raise TypeError(f"{cls.__name__}.{flag.field}: no parser for {flag.spec.parse} {base.__name__}")
        g.add_argument(flag.option, action=GeneratedFlag, type=parse, default=flag.default, **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """``cls`` from its flags in ``args`` (their defaults being its own), with ``values`` on top.
    A switch flag's field comes from ``values`` (or keeps its default)."""
    kwargs = {f.field: getattr(args, f.dest) for f in config_flags(cls) if f.spec.parse != "switch"}
    return cls(**{**kwargs, **values})


def train_config_from_args(args: argparse.Namespace, **values: Any) -> TrainConfig:
    """`TrainConfig` from the flags; ``values`` sets the fields without a flag (data, init_from)."""
    return config_from_args(TrainConfig, args, **values)


def model_config_from_args(
    args: argparse.Namespace, input_shape: tuple[int, ...], n_classes: int = 0
) -> VAEConfig:
    """`VAEConfig` from the flags, for data of ``input_shape`` (C, H, W); ``n_classes`` > 0 for a CVAE."""
    return config_from_args(VAEConfig, args, input_shape=input_shape, n_classes=n_classes)


def flag_name(ref: Ref) -> str:
    """How the CLI names a reference of a `VaelabError` message (`VaelabError.render`): a config
    field by its flag (--field-name, or its Flag's own name; a field with no flag by its name), a
    field of a class without flags (`DataOptions`) or an argument as --name (or its `ARGUMENT_FLAGS`
    entry), a setting as --name VALUE (--name alone for True)."""
    if ref.owner is None:
        flag = ARGUMENT_FLAGS.get(ref.name) or option(ref.name)
    else:
        flags = config_flags(ref.owner) if dataclasses.is_dataclass(ref.owner) else []
        spec = next((f for f in flags if f.field == ref.name), None)
        own = FIELD_FLAGS.get((ref.owner, ref.name)) or (ref.name if flags else option(ref.name))
        flag = spec.option if spec is not None else own
    if ref.value is None:
        return flag
    try:
        value = ast.literal_eval(ref.value)
    except (ValueError, SyntaxError):
        value = ref.value  # a placeholder such as SOURCE
    if value is True:
        return flag
    return f"{flag} {value if isinstance(value, str) else ref.value}"


def given(args: argparse.Namespace) -> list[str]:
    """The dests of the flags given on the command line: the generated flags recorded as typed, the
    others (whose defaults are None or False) where they differ from their default."""
    recorded = list(getattr(args, GIVEN, None) or ())
    parser = args.train_parser
    others = [
        dest
        for dest, value in vars(args).items()
        if dest not in recorded and dest not in INTERNAL and value != parser.get_default(dest)
    ]
    return recorded + others


def allowed_on_resume() -> list[str]:
    """The dests --resume takes: the settings marked resume="allowed", and RUN_FLAGS_ON_RESUME."""
    allowed = [f.dest for f in config_flags(TrainConfig) if f.spec.resume == "allowed"]
    return [*allowed, *RUN_FLAGS_ON_RESUME]


def fixed_on_resume(args: argparse.Namespace) -> list[str]:
    """The flags given that --resume cannot take: the run's config.json fixes them."""
    allowed = set(allowed_on_resume())
    return [dest for dest in given(args) if dest not in allowed]


def resume_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` fields that --resume changes: the allowed settings given."""
    typed = set(given(args))
    return {
        f.field: getattr(args, f.dest)
        for f in config_flags(TrainConfig)
        if f.spec.resume == "allowed" and f.dest in typed
    }


def model_flags_given(args: argparse.Namespace) -> list[str]:
    """The `VAEConfig` flags given (--init-from takes the model from its run, so none may be)."""
    model = {f.dest for f in config_flags(VAEConfig)}
    return [dest for dest in given(args) if dest in model]


def option(dest: str) -> str:
    """How a flag's dest is typed: latent_dim -> --latent-dim."""
    return "--" + dest.replace("_", "-")


def spelled(args: argparse.Namespace, dest: str) -> str:
    """How the user gave a flag, for an error message: --latent-dim, or "latent_dim in FILE" for a
    key of the --config file."""
    from_file = getattr(args, FROM_FILE, None) or {}
    if dest in from_file:
        return f"{from_file[dest]} in {args.config}"
    return option(dest)


def _base_type(hint: Any) -> type:
    """int | None -> int, tuple[int, ...] -> tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    return typing.get_origin(hint) or hint


def _help(flag: ConfigFlag) -> str:
    text = flag.spec.help
    shown = None if flag.spec.parse == "switch" else flag.spec.default_help or _show(flag.default)
    if shown is not None:
        text += f" (default: {shown})"
    return text.replace("%", "%%")  # argparse %-formats help


def _show(default: Any) -> str | None:
    if isinstance(default, bool) or default is None:
        return None  # a switch is off unless given
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default) or "''"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def mark_given(namespace: argparse.Namespace, dest: str) -> None:
    """Record the generated flag ``dest`` as given (typed, or set by a --config file)."""
    typed = getattr(namespace, GIVEN, None)
    if typed is None:  # one list per parse, not a default shared between parses
        typed = []
        setattr(namespace, GIVEN, typed)
    if dest not in typed:
        typed.append(dest)


class GeneratedFlag(argparse.Action):
    """argparse's store, recording that the flag was given: the action of each generated flag."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        mark_given(namespace, self.dest)


class _StoreTrue(GeneratedFlag):
    """argparse's store_true, recording that the flag was given."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, True, option_string)
