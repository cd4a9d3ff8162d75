"""``python -m vaelab``: the ``vaelab`` command (torchrun launches it this way)."""

from vaelab.cli import run

run()
