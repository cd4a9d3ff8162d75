"""The exception types users see: a clear, one-line message about their input."""

from __future__ import annotations

from collections.abc import Callable


class VaelabError(Exception):
    """An expected error caused by user input (a file, a flag, a dataset).

    The CLI prints ``str(error)`` as a single line and exits with code 2. The subclasses say what
    kind of input was wrong; catch `VaelabError` to catch them all.
    """


class DataError(VaelabError):
    """A data source or data file that cannot be used: unknown, unreadable, corrupt, or not data a
    model can train on (wrong shape, non-finite values, bad labels)."""


class CheckpointError(VaelabError):
    """A run directory, its ``config.json`` or weights, or a training checkpoint that cannot be used:
    missing, corrupt, from another format version, or not matching the model."""


class ConfigError(VaelabError):
    """A config value or combination that is not allowed, naming the fields involved.

    The message is a ``str.format`` template in which ``{f.name}`` refers to the field ``name`` of
    ``owner``; a keyword whose value is a class (``m=VAEConfig``) lets ``{m.name}`` refer to its fields,
    the other keywords are values. ``str()`` names the first field as ``Owner.field`` and the others
    plainly; `render` spells them another way (the CLI spells them as its flags).
    """

    def __init__(self, owner: type, template: str, **values: object) -> None:
        self.owner, self.template, self.values = owner, template, values
        first: list[str] = []

        def qualify_first(cls: type, name: str) -> str:
            first.append(name)
            return f"{cls.__name__}.{name}" if len(first) == 1 else name

        super().__init__(self.render(qualify_first))

    def render(self, spell: Callable[[type, str], str]) -> str:
        """The message with each field named ``spell(its class, its name)``."""
        refs = {"f": self.owner, **{k: v for k, v in self.values.items() if isinstance(v, type)}}
        names = {k: _Names(cls, spell) for k, cls in refs.items()}
        return self.template.format_map({**self.values, **names})


class _Names:
    """``{f.name}`` in a `ConfigError` template: the field ``name`` of ``owner``, spelled by ``spell``."""

    def __init__(self, owner: type, spell: Callable[[type, str], str]) -> None:
        self._owner, self._spell = owner, spell

    def __getattr__(self, name: str) -> str:
        return self._spell(self._owner, name)
