"""The guide's examples run as written: every ```python block of docs/guides/own-networks-and-data.md,
in order, in one namespace, in a scratch folder (so the run directories they write land there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "own-networks-and-data.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
def test_the_own_networks_and_data_guide_runs(tmp_path, monkeypatch):
    blocks = BLOCK.findall(GUIDE.read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{GUIDE.name}, block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{GUIDE.name} block {i + 1} failed: {e!r}\n{code}") from e
