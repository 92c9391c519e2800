"""Smoke-run every script in examples/ in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import optkit

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    # Import the same optkit the tests import (installed package or source tree).
    env = dict(os.environ, PYTHONPATH=str(Path(optkit.__file__).resolve().parents[1]), MPLBACKEND="Agg",
               NUMBA_NUM_THREADS=os.environ.get("NUMBA_NUM_THREADS", "2"))
    done = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{script.name} printed nothing"
