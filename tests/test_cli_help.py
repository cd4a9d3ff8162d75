"""`--help` tells the whole story: every command's one-line summary is a whole sentence, and every
flag with a default shows it."""

from __future__ import annotations

import argparse

import pytest

from vaelab.cli import build_parser
from vaelab.cli._common import summary


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_command_list_gives_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for name, parser in _commands().items():
        line = summary(parser.description or "")
        assert line.endswith("."), (name, line)
        assert " ".join(line.split()[:4]) in " ".join(text.split()), name


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_default_is_in_the_help(name):
    parser = _commands()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        d = action.default
        if not action.option_strings or action.nargs == 0 or d in (None, argparse.SUPPRESS) or d is False:
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert "default" in text, (name, action.option_strings, text)


def test_summary_is_the_first_sentence():
    assert summary("Do a thing to x.json and y.\n\nMore.") == "Do a thing to x.json and y."
    assert summary("First line\ncontinues here. Second sentence.") == "First line continues here."
