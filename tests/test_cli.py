"""The ``optkit`` command line: help, list, demo, reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optkit
from optkit.cli import main


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "reproduce", "list", "bench"):
        assert command in out
    assert main([]) == 0  # no command: help, success


def test_console_module_entry_point():
    env = dict(os.environ, PYTHONPATH=str(Path(optkit.__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "optkit.cli", "reproduce", "--help"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "--scheduler" in done.stdout and "--workers" in done.stdout and "--quick" in done.stdout


def test_list_and_bench(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "entropic-ot" in out and "sinkhorn" in out and "numpy" in out
    assert main(["bench"]) == 0
    assert "make bench" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert optkit.__version__ in capsys.readouterr().out


def test_demo_writes_results(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| instance | method | status |" in out and "CONVERGED" in out
    folder = tmp_path / "entropic-ot"
    payload = json.loads((folder / "results.json").read_text())
    assert payload["settings"]["quick"] is True
    assert all(r["status"] in ("CONVERGED", "REFERENCE") for r in payload["records"])
    assert (folder / "results.md").read_text().startswith("# entropic-ot")
    assert sorted(p.suffix for p in (folder / "plots").iterdir()) == [".png"] * 6


def test_reproduce_quick(tmp_path, capsys):
    assert main(["reproduce", "entropic-ot", "--quick", "--out", str(tmp_path), "--no-plots"]) == 0
    assert "entropic-ot" in capsys.readouterr().out
    assert (tmp_path / "entropic-ot" / "results.md").exists()
    assert not (tmp_path / "entropic-ot" / "plots").exists()


def test_reproduce_errors(tmp_path, capsys):
    assert main(["reproduce", "no-such-experiment", "--out", str(tmp_path)]) == 2
    assert "entropic-ot" in capsys.readouterr().err
    assert main(["reproduce", "entropic-ot", "--quick", "--workers", "0", "--out", str(tmp_path)]) == 2
