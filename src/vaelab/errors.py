"""The exception types users see: a clear, one-line message about their input.

A message can name the settings involved by reference, so that each reader sees them as they set
them: the Python user the config field or function argument, the CLI user the flag. Given keywords,
the message is a ``str.format`` template in which

- ``{f.name}`` is the field ``name`` of the class passed as ``f`` (any keyword whose value is a
  class is such a namespace: ``f=TrainConfig, m=VAEConfig``);
- ``{a.name}`` is the function argument ``name`` (the keyword ``a`` is reserved for them);
- ``{f.name:=VALUE}`` (or ``{a.name:=VALUE}``) is that setting set to VALUE, written as Python
  writes it: ``{a.force:=True}``, ``{f.rescale:='minmax'}``, ``{f.holdout:={v:g}}``;
- the other keywords are values (``{v!r}``). Text the user gave (a path) goes in as a value, never
  into the template itself. Without keywords, the message is plain text.

``str(error)`` spells the references for Python: the first field as ``Owner.name``, later fields and
the arguments as ``name``, a setting as ``name=VALUE``. `VaelabError.render` spells them another way;
the CLI's error handler spells them as its flags (``--name``, ``--name VALUE``, ``--name`` for True).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference in a message template: the field ``name`` of ``owner`` (a class), or the function
    argument ``name`` (``owner`` None); ``value``: the value it is set to, as Python writes it."""

    owner: type | None
    name: str
    value: str | None = None


Spelling = Callable[[Ref], str]


class VaelabError(Exception):
    """An expected error caused by user input (a file, a setting, a dataset).

    The CLI prints it as a single line, its references spelled as flags, and exits with code 2. The
    subclasses say what kind of input was wrong; catch `VaelabError` to catch them all. With
    ``values``, ``message`` is a template (see the module docstring).
    """

    def __init__(self, message: str = "", /, **values: object) -> None:
        super().__init__(message)
        self.template = message if values else None
        self.values = values

    def render(self, spell: Spelling) -> str:
        """The message with each reference spelled ``spell(ref)``."""
        if self.template is None:
            return super().__str__()
        spaces = {k: _Names(v, spell) for k, v in self.values.items() if isinstance(v, type)}
        return self.template.format_map({**self.values, "a": _Names(None, spell), **spaces})

    def __str__(self) -> str:
        return self.render(python_spelling())

    def in_context(self, where: str) -> VaelabError:
        """The same kind of error about a file's content, ``where: `` before the message: its
        references keep Python's spelling (a key of config.json is a field, not a flag)."""
        new = copy.copy(self)
        new.template, new.values = "{where_}: {message_}", {"where_": where, "message_": str(self)}
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class DataError(VaelabError):
    """A data source or data file that cannot be used: unknown, unreadable, corrupt, or not data a
    model can train on (wrong shape, non-finite values, bad labels)."""


class CheckpointError(VaelabError):
    """A run directory, its ``config.json`` or weights, or a training checkpoint that cannot be used:
    missing, corrupt, from another format version, or not matching the model."""


class ConfigError(VaelabError):
    """A config value or combination that is not allowed: ``template`` names the fields of ``owner``
    as ``{f.name}`` (and those of the classes among ``values``), its other keywords are values."""

    def __init__(self, owner: type, template: str, **values: object) -> None:
        super().__init__(template, f=owner, **values)
        self.owner = owner
        self.args = (owner, template)  # what pickling passes back to __init__


def python_spelling() -> Spelling:
    """``str()``'s spelling of one message: the first field as ``Owner.name``, later fields and the
    arguments as ``name``; ``name=VALUE`` with a value."""
    qualified = False

    def spell(ref: Ref) -> str:
        nonlocal qualified
        name = ref.name
        if ref.owner is not None and not qualified:
            name, qualified = f"{ref.owner.__name__}.{name}", True
        return name if ref.value is None else f"{name}={ref.value}"

    return spell


class _Names:
    """A template's namespace: ``{f.name}`` is a `_Name` of ``owner`` (None: the arguments)."""

    def __init__(self, owner: type | None, spell: Spelling) -> None:
        self._owner, self._spell = owner, spell

    def __getattr__(self, name: str) -> _Name:
        return _Name(Ref(self._owner, name), self._spell)


class _Name:
    """One reference; spelled when formatted, so that references are spelled in message order."""

    def __init__(self, ref: Ref, spell: Spelling) -> None:
        self._ref, self._spell = ref, spell

    def __format__(self, spec: str) -> str:
        if spec and not spec.startswith("="):
            raise ValueError(f"a reference's format is '=VALUE', got {spec!r}")
        return self._spell(dataclasses.replace(self._ref, value=spec[1:]) if spec else self._ref)
