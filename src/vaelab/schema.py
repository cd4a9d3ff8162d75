"""Config dataclasses as data: command-line metadata for their fields, and a strict JSON round trip.

`opt` declares a field with a `Flag` (what ``cli/_flags.py`` turns into a command-line flag);
`to_dict`/`from_dict` write a config to JSON and read it back, refusing unknown keys and values of
the wrong type, so a tampered or foreign ``config.json`` fails with one clear line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vaelab.errors import VaelabError

FLAG = "flag"  # the metadata key of a field's `Flag`


PARSES = ("", "positive", "nonneg", "fraction", "ints", "switch")


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line.

    ``parse`` narrows the field's type: positive or nonneg numbers, a fraction in (0, 1), ``ints``, a
    comma list such as 400,400, or ``switch``, a flag without a value from which the caller works out
    the field (--conditional: n_classes from the data's labels). ``resume`` is "allowed" for the
    `TrainConfig` settings ``vaelab train --resume`` may change (how and how long to train), "fixed"
    for those that define the run.
    """

    help: str
    parse: str = ""
    choices: tuple[str, ...] = ()
    name: str = ""  # the flag, when it is not --field-name
    metavar: str = ""
    default_help: str = ""  # shown in --help instead of the default (one that depends on other fields)
    resume: str = "fixed"

    def __post_init__(self) -> None:
        if self.parse not in PARSES or self.resume not in ("fixed", "allowed"):
            raise ValueError(f"bad Flag: parse={self.parse!r}, resume={self.resume!r}")


def opt(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field with a command-line `Flag` (``flag`` are its other arguments)."""
    if isinstance(default, list | dict | set):
        raise TypeError("opt() defaults must be immutable")
    return field(default=default, metadata={FLAG: Flag(help, **flag)})


def flag_of(f: dataclasses.Field) -> Flag | None:
    return f.metadata.get(FLAG)


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """One config field's flag: the field it sets and how it is spelled."""

    owner: type
    field: str
    spec: Flag
    default: Any

    @property
    def option(self) -> str:
        return self.spec.name or "--" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


def config_flags(cls: type) -> list[ConfigFlag]:
    """The flags of ``cls``'s fields, in field order."""
    return [
        ConfigFlag(cls, f.name, spec, f.default)
        for f in dataclasses.fields(cls)
        if (spec := flag_of(f)) is not None
    ]


def flag_settings(cfg: Any) -> list[tuple[ConfigFlag, Any]]:
    """``cfg``'s value for each of its flags, in field order: a switch as True or False
    (--conditional: n_classes > 0), and a field whose default is None (a default that follows from
    the other fields) left out while it holds what None resolves to. What run.toml writes and the
    model card's command spells."""
    out = []
    for flag in config_flags(type(cfg)):
        value = getattr(cfg, flag.field)
        if flag.spec.parse == "switch":
            value = bool(value)
        elif flag.default is None and value == _resolved(cfg, flag.field):
            continue  # what None resolves to: the file or command repeats less and means the same
        out.append((flag, value))
    return out


def _resolved(cfg: Any, field: str) -> Any:
    """What ``field`` of ``cfg`` becomes when set to None (a default that follows from the others)."""
    return getattr(dataclasses.replace(cfg, **{field: None}), field)


T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], raw: Any, where: str = "config.json") -> T:
    """Build ``cls`` from ``raw``, rejecting unknown keys and wrongly typed values."""
    if not isinstance(raw, dict):
        raise VaelabError(f"{where}: expected an object, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise VaelabError(f"{where}: unknown key(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except VaelabError as e:  # a ConfigError stays one, naming config.json's keys as fields
        raise e.in_context(where) from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against a simple type hint (int, float, str, bool, tuple, dict)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except VaelabError:
                continue
        raise VaelabError(f"{where}: unexpected value {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise VaelabError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise VaelabError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        return tuple(_coerce(v, item, where) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise VaelabError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise VaelabError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VaelabError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VaelabError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise VaelabError(f"{where}: expected a string, got {value!r}")
        return value
    return value
