"""Sphinx configuration of the optkit documentation (``make docs``; warnings are errors)."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys

# Document the checkout these docs belong to (``make docs`` installs the same sources first).
sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optkit

project = "optkit"
author = "the optkit developers"
copyright = "2026, the optkit developers"
version = release = optkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# numpydoc-style docstrings through napoleon.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
# Parameter types stay text: as cross-references, words such as "shape" in "array, shape (n,)" would resolve to
# several attributes and warn.
napoleon_use_param = False

autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}


# ---------------------------------------------------------------------------------------------------- API pages
# The API pages are generated (autosummary, recursively) from the packages listed in api.rst, so a new module
# appears without editing the docs. A public object is often reachable under several names (``optkit.Result``,
# ``optkit.solvers.Result``, ``optkit.solvers.result.Result``); it is documented everywhere it is public but
# indexed (a cross-reference target) only once, at its shortest public name, so that Sphinx sees no duplicates.
# ``api_members`` tells the page template, per module, what to document and which entries are ``:no-index:``.

API_ROOTS = ("optkit.problems", "optkit.solvers", "optkit.data", "optkit.experiments", "optkit.plotting",
             "optkit.cli")
TOP_LEVEL = ("solve", "available", "Result", "Status", "History")  # documented in api.rst itself


def _public_modules() -> list:
    found = []
    for root in API_ROOTS:
        module = importlib.import_module(root)
        found.append(module)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, prefix=root + "."):
                if not any(part.startswith("_") for part in info.name.split(".")):
                    found.append(importlib.import_module(info.name))
    return found


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _members(module) -> list:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, o in vars(module).items()
                 if not n.startswith("_") and getattr(o, "__module__", None) == module.__name__
                 and (inspect.isclass(o) or inspect.isfunction(o))]
    return [(n, getattr(module, n)) for n in names if not inspect.ismodule(getattr(module, n, None))]


def _api_members() -> dict:
    modules = _public_modules()
    names = {m.__name__ for m in modules}
    owner = {id(getattr(optkit, n)): "optkit" for n in TOP_LEVEL}
    # Shallowest public name first: packages before their modules.
    for module in sorted(modules, key=lambda m: (m.__name__.count("."), not hasattr(m, "__path__"))):
        for name, obj in _members(module):
            if _kind(obj) != "data" and f"{module.__name__}.{name}" not in names:
                owner.setdefault(id(obj), module.__name__)
    table = {}
    for module in modules:
        rows = []
        for name, obj in _members(module):
            kind = _kind(obj)
            indexed = kind == "data" or owner.get(id(obj)) == module.__name__
            rows.append((name, kind, not indexed))
        table[module.__name__] = rows
    return table


autosummary_context = {"api_members": _api_members()}

html_theme = "alabaster"
html_static_path = []
html_title = f"optkit {release}"
