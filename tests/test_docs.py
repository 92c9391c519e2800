"""The Sphinx site builds with warnings as errors (what `make docs` runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import optkit

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    env = dict(os.environ, PYTHONPATH=str(Path(optkit.__file__).resolve().parents[1]), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
    html = tmp_path / "html"
    for page in ("index.html", "guide.html", "data.html", "api.html", "methods/sinkhorn.html",
                 "api/generated/optkit.experiments.runner.html"):
        assert (html / page).exists(), page
    assert "Log-domain updates" in (html / "methods" / "sinkhorn.html").read_text()
