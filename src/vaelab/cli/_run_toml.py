"""``vaelab train --config FILE.toml`` and ``RUN_DIR/run.toml``: the train flags in a TOML file.

The keys are the flags of ``vaelab train`` without their dashes (``latent-dim`` or ``latent_dim``),
found in its argparse parser, so every flag (the generated config flags, the data flags, --data and
--out) is a key. Values keep their TOML types (``hidden = [400, 400]``, ``gated = true``) and pass the
flag's own parser; flags typed on the command line override the file.

Every run `vaelab train` writes gets ``run.toml``: its effective settings as such a file, without
``out``, ``force`` or ``resume``, so ``vaelab train --config RUN_DIR/run.toml --out NEW`` repeats it.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from vaelab.config import RUN_TOML, TrainConfig, VAEConfig
from vaelab.errors import VaelabError
from vaelab.schema import flag_settings

from . import _flags
from ._common import fraction, image_size, int_list, nonneg_float, nonneg_int, positive_float, positive_int

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before 3.11
    import tomli as tomllib

INT_PARSERS = (int, positive_int, nonneg_int)
FLOAT_PARSERS = (float, positive_float, nonneg_float, fraction)
NAME_OR_INDEX = ("label_column",)  # string flags that also take an integer: a column index
NOT_KEYS = ("help", "config")  # flags that are not settings a file can hold
MAX_BYTES = 1 << 20
HEADER = f"""\
# The settings of this run: `vaelab train --config {RUN_TOML} --out NEW_DIR` trains it again.
# Keys are vaelab train's flags without their dashes; flags on the command line override them.
# It holds no out, force or resume, so repeating it never overwrites a run.
"""


def keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The keys a file may hold -> the parser's action for each: every flag but --help and --config,
    named by its first long option (--no-progress is ``progress = false``)."""
    found = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in NOT_KEYS:
            found[action.option_strings[0].removeprefix("--").replace("-", "_")] = action
    return found


def read(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, tuple[str, Any]]:
    """FILE's settings -> {flag dest: (its key, its value as the flag parses it)}; a one-line `VaelabError`
    naming FILE for a file that does not read or parse, an unknown key, or a value of the wrong type."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise VaelabError(f"{path}: over {MAX_BYTES >> 20} MiB, not a settings file")
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise VaelabError(f"'{path}': cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise VaelabError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise VaelabError(f"{path}: not valid TOML: {e}") from None
    actions = keys(parser)
    spelled: dict[str, str] = {}
    values: dict[str, tuple[str, Any]] = {}
    for raw, value in doc.items():
        key = raw.replace("-", "_")
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise VaelabError(f"{path}: unknown key '{raw}'{hint}")
        if key in spelled:
            raise VaelabError(f"{path}: key '{key}' is given twice (as '{spelled[key]}' and '{raw}')")
        spelled[key] = raw
        action = actions[key]
        values[action.dest] = (raw, _parse(value, action, f"{path}: {raw}"))
    return values


def apply(args: argparse.Namespace) -> None:
    """Set the flags of ``args.config``'s keys that were not typed on the command line. They then
    count as given (a switch set to false does not), as typed flags do for --resume and --init-from."""
    parser = args.train_parser
    typed = set(_flags.given(args))
    actions = {a.dest: a for a in parser._actions}
    from_file = {}
    for dest, (key, value) in read(args.config, parser).items():
        if dest in typed:
            continue  # the command line wins
        setattr(args, dest, value)
        from_file[dest] = key
        if isinstance(actions[dest], _flags.GeneratedFlag) and value is not False:
            _flags.mark_given(args, dest)
    setattr(args, _flags.FROM_FILE, from_file)


def _parse(value: Any, action: argparse.Action, where: str) -> Any:
    """A TOML value for the flag of ``action``: checked against the type the flag takes, then
    through the flag's parser and choices as its text would be."""
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise VaelabError(f"{where}: expected true or false, got {_show(value)}")
        return value
    text = _as_text(value, action, where)
    try:
        parsed = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise VaelabError(f"{where}: {e}") from None
    if action.choices is not None and parsed not in action.choices:
        allowed = ", ".join(str(c) for c in action.choices)
        raise VaelabError(f"{where}: must be one of {allowed}; got {_show(value)}")
    return parsed


def _as_text(value: Any, action: argparse.Action, where: str) -> str:
    """The command-line text of a TOML value, refusing a value of another type than the flag takes."""
    parse = action.type
    number = isinstance(value, int | float) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    ints = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if parse is int_list:
        if not ints:
            raise VaelabError(f"{where}: expected a list of integers such as [400, 400], got {_show(value)}")
        return ",".join(str(v) for v in value)
    if parse is image_size:
        if integer or (ints and value):
            return "x".join(str(v) for v in (value if isinstance(value, list) else [value]))
        if not isinstance(value, str):
            raise VaelabError(f'{where}: expected S, [H, W] or "HxW", got {_show(value)}')
        return value
    kind = _kind(parse)
    if kind == "int" and not integer:
        raise VaelabError(f"{where}: expected an integer, got {_show(value)}")
    if kind == "float" and not number:
        raise VaelabError(f"{where}: expected a number, got {_show(value)}")
    if kind == "str" and not (isinstance(value, str) or (integer and action.dest in NAME_OR_INDEX)):
        raise VaelabError(f"{where}: expected a string, got {_show(value)}")
    return repr(float(value)) if kind == "float" else str(value)


def _kind(parse: Any) -> str:
    """What a flag parser takes: int, float or str (a parser of ints refuses '1.5', of floats 'x')."""
    if parse in INT_PARSERS:
        return "int"
    if parse in FLOAT_PARSERS:
        return "float"
    return "str"


def _show(value: Any) -> str:
    """A TOML value as the file spells it (near enough for an error message)."""
    return _toml(value) if isinstance(value, bool | int | float | str | list | tuple) else repr(value)


# ---- writing ---------------------------------------------------------------------------


def settings(model: VAEConfig, train: TrainConfig, parser: argparse.ArgumentParser) -> list[tuple[str, dict]]:
    """The run's settings as (section title, {key: value}) in flag order: its data (SOURCE, the data
    options as applied, --init-from), its model (unless --init-from fixes it) and its training."""
    known = keys(parser)
    data: dict[str, Any] = {"data": train.data}
    if train.init_from:
        data["init_from"] = train.init_from
    for key, value in train.data_options.items():
        if key in known and value is not None:
            data[key] = str(value) if known[key].type is None and not known[key].choices else value
    sections = [("data", data)]
    if not train.init_from:
        sections.append(("model", _config_settings(model)))
    sections.append(("training", _config_settings(train)))
    return sections


def render(model: VAEConfig, train: TrainConfig, parser: argparse.ArgumentParser) -> str:
    """run.toml's text for a run of ``model`` trained with ``train``."""
    lines = [HEADER]
    for title, values in settings(model, train, parser):
        lines += [f"# {title}", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
    return "\n".join(lines)


def write(run_dir: str | Path, model: VAEConfig, train: TrainConfig, parser: argparse.ArgumentParser) -> None:
    """RUN_DIR/run.toml, atomically."""
    from vaelab.files import atomic_write_bytes

    atomic_write_bytes(Path(run_dir) / RUN_TOML, render(model, train, parser).encode())


def writer(run_dir: str | Path, model: VAEConfig, train: TrainConfig, parser: argparse.ArgumentParser):
    """A `Callback` that writes RUN_DIR/run.toml when training starts (after `train` has made the
    folder a run, or cut a resumed one back to its checkpoint)."""
    from vaelab.training.callbacks import Callback

    class WriteRunToml(Callback):
        def on_train_start(self, history: list[dict[str, Any]]) -> None:
            write(run_dir, model, train, parser)

    return WriteRunToml()


def _config_settings(cfg: Any) -> dict[str, Any]:
    """A config's flag settings (`schema.flag_settings`), keyed as run.toml keys them."""
    return {flag.dest: value for flag, value in flag_settings(cfg)}


def _toml(value: Any) -> str:
    """A TOML value: a bool, an int, a float, a string or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 0.001, 1e-05, inf and nan are all TOML floats
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + "".join(_escape(ch) for ch in str(value)) + '"'


def _escape(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ord(ch) < 0x20 or ord(ch) == 0x7F:  # control characters are not allowed raw in a TOML string
        return f"\\u{ord(ch):04x}"
    return ch
