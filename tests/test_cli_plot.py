"""``vaelab plot``: one PNG per kind, flags checked against the kind, nothing overwritten silently."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from vaelab.cli import main

FAST = {  # small options per kind so the suite stays quick
    "samples": ["-n", "4"],
    "recon": ["-n", "4"],
    "interp": ["--chains", "1", "--steps", "3"],
    "traverse": ["--steps", "3"],
    "manifold": ["--grid", "3"],
    "latents": [],
    "curves": [],
}


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


@pytest.mark.parametrize("kind", list(FAST))
def test_plot_each_kind_writes_a_png(run, tmp_path, kind: str, capsys) -> None:
    out = tmp_path / f"{kind}.png"
    assert main(["plot", str(run), "--kind", kind, "--out", str(out), *FAST[kind]]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 50 and img.height > 50
        size = img.size
    assert f"{size[0]}x{size[1]} px" in capsys.readouterr().out


def test_plot_default_out_and_no_silent_overwrite(trained_run, tmp_path, capsys) -> None:
    run = shutil.copytree(trained_run, tmp_path / "run")
    assert main(["plot", str(run), "--kind", "samples", "-n", "4"]) == 0
    out = run / "figures" / "samples.png"
    before = out.read_bytes()
    assert main(["plot", str(run), "--kind", "samples", "-n", "9"]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["plot", str(run), "--kind", "samples", "-n", "9", "--force"]) == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--kind", "recon", "--temperature", "2"], "--temperature does not apply to --kind recon"),
        (["--kind", "samples", "--out", "x.jpg"], "must end in .png"),
        (["--kind", "recon", "--data", "nope"], "unknown data source"),
        (["--kind", "interp", "--indices", "0,100000"], "indices"),
    ],
)
def test_plot_errors_are_one_line(run, tmp_path, argv, message, capsys) -> None:
    argv = [a.replace("x.jpg", str(tmp_path / "x.jpg")) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "f.png")]
    assert main(["plot", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--kind", "pie"], ["--kind", "interp", "--steps", "1"], ["--grid", "2"]])
def test_plot_bad_flags_exit_2(run, argv) -> None:
    with pytest.raises(SystemExit) as e:
        main(["plot", str(run), *argv])
    assert e.value.code == 2


def test_plot_needs_data_when_the_run_names_none(trained_run, tmp_path, capsys) -> None:
    run = shutil.copytree(trained_run, tmp_path / "run")
    doc = json.loads((run / "config.json").read_text())
    del doc["train"]
    (run / "config.json").write_text(json.dumps(doc))
    assert main(["plot", str(run), "--kind", "recon", "--out", str(tmp_path / "r.png")]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert (
        main(["plot", str(run), "--kind", "recon", "--data", "digits", "--out", str(tmp_path / "r.png")]) == 0
    )
    assert main(["plot", str(run), "--kind", "samples", "--out", str(tmp_path / "s.png")]) == 0
