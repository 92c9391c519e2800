"""The solver registry: ``(problem type, method name) -> solver``.

Every solver module registers its function with :func:`register`; :func:`select` picks the solver for a problem
(the default for its type when no method is named), and :func:`available` lists what can solve a problem. Solver
modules are discovered by walking the :mod:`optkit.solvers` package once, on first use, so adding a solver is
adding a file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optkit._arrays import is_jax_array

__all__ = ["SolverInfo", "register", "available", "select", "get", "resolve_backend", "COMMON_OPTIONS"]

#: Keyword arguments every solver takes, handled by :func:`optkit.solve` itself.
COMMON_OPTIONS = ("backend", "callback", "progress", "seed")
BACKENDS = ("numpy", "numba", "jax")


@dataclass(frozen=True)
class SolverInfo:
    """A registered solver: its name, the problems it accepts, its backends and its options with defaults."""

    name: str
    func: Callable[..., Any]
    problem_types: tuple[type, ...]
    backends: tuple[str, ...]
    options: Mapping[str, Any]
    default: bool = False
    stochastic: bool = False
    iterative: bool = True
    accepts: Callable[[Any], str | None] | None = field(default=None, repr=False)
    example: Callable[[], Any] | None = field(default=None, repr=False)
    summary: str = ""

    def refusal(self, problem: Any) -> str | None:
        """``None`` when this solver can take ``problem``; otherwise the reason it cannot."""
        if not isinstance(problem, self.problem_types):
            names = ", ".join(t.__name__ for t in self.problem_types)
            return f"method {self.name!r} solves {names}, not {type(problem).__name__}"
        if self.accepts is not None:
            return self.accepts(problem)
        return None


_REGISTRY: dict[str, SolverInfo] = {}
_DISCOVERED = False


def register(
    name: str,
    problem_types: type | Sequence[type],
    *,
    backends: Sequence[str] = ("numpy",),
    default: bool = False,
    stochastic: bool = False,
    iterative: bool = True,
    accepts: Callable[[Any], str | None] | None = None,
    example: Callable[[], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a solver function under ``name``.

    The function must take the problem as its only positional argument and everything else as keyword-only
    arguments with defaults, including the common ones (``backend``, ``callback``, ``progress``, ``seed``).
    Its keyword-only parameters become the options :func:`optkit.solve` accepts for this method.

    Parameters
    ----------
    name
        The method name users pass to :func:`optkit.solve`.
    problem_types
        The problem class(es) it solves.
    backends
        The backends it implements, among ``"numpy"``, ``"numba"``, ``"jax"``.
    default
        Whether it is the default method for problems it accepts.
    stochastic
        Whether it draws random numbers (and so uses ``seed``).
    iterative
        ``False`` for direct solvers (one call to an external exact solver): they have no iterations for a
        callback to interrupt.
    accepts
        Optional finer check: returns ``None`` when the problem is accepted, else the reason it is not.
    example
        A factory of a small problem this solver solves with its default options in well under a second; the
        registry-wide contract tests run every solver on its example.
    """
    types = (problem_types,) if isinstance(problem_types, type) else tuple(problem_types)
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; choose among {BACKENDS}")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(func).parameters
        missing = [c for c in COMMON_OPTIONS if c not in params]
        if missing:
            raise TypeError(f"solver {name!r} must accept the common keyword arguments {missing}")
        options = {
            p.name: p.default
            for p in params.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_OPTIONS
        }
        doc = (func.__doc__ or "").strip().splitlines()
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"a solver named {name!r} is already registered")
        _REGISTRY[name] = SolverInfo(
            name=name,
            func=func,
            problem_types=types,
            backends=tuple(backends),
            options=options,
            default=default,
            stochastic=stochastic,
            iterative=iterative,
            accepts=accepts,
            example=example,
            summary=doc[0] if doc else "",
        )
        func.solver_info = _REGISTRY[name]  # type: ignore[attr-defined]
        return func

    return decorator


def _discover() -> None:
    """Import every module below :mod:`optkit.solvers` once so that each registers its solvers."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import optkit.solvers as root

    for module in pkgutil.walk_packages(root.__path__, prefix="optkit.solvers."):
        leaf = module.name.rsplit(".", 1)[-1]
        if not leaf.startswith("_"):
            importlib.import_module(module.name)
    _DISCOVERED = True


def get(name: str) -> SolverInfo:
    """The registered solver called ``name``."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered methods are {sorted(_REGISTRY)}") from None


def available(problem: Any = None) -> list[str]:
    """Names of the registered solvers, or of those that can solve ``problem``."""
    _discover()
    if problem is None:
        return sorted(_REGISTRY)
    return sorted(n for n, info in _REGISTRY.items() if info.refusal(problem) is None)


def select(problem: Any, method: Any = None) -> SolverInfo:
    """Pick the solver for ``problem``: the named one, or the registry's default for that problem.

    ``method`` may be a registered name, a registered solver function, a :class:`SolverInfo`, or ``None``.
    """
    _discover()
    if method is None:
        candidates = [info for info in _REGISTRY.values() if info.refusal(problem) is None]
        defaults = [info for info in candidates if info.default]
        if defaults:
            return defaults[0]
        if candidates:
            return sorted(candidates, key=lambda i: i.name)[0]
        raise ValueError(f"no registered solver accepts a {type(problem).__name__}: {problem!r}")
    if isinstance(method, SolverInfo):
        info = method
    elif isinstance(method, str):
        info = get(method)
    elif callable(method) and hasattr(method, "solver_info"):
        info = method.solver_info
    else:
        raise TypeError(f"method must be a registered name, a solver function or None, not {type(method).__name__}")
    reason = info.refusal(problem)
    if reason is not None:
        others = available(problem)
        raise ValueError(f"{reason}; methods that accept this problem: {others}")
    return info


def resolve_backend(requested: str, info_or_backends: SolverInfo | Sequence[str], *arrays: Any) -> str:
    """Resolve ``backend="auto"``: JAX arrays run on JAX; otherwise Numba where implemented; else NumPy."""
    backends = info_or_backends.backends if isinstance(info_or_backends, SolverInfo) else tuple(info_or_backends)
    if requested == "auto":
        if any(is_jax_array(a) for a in arrays) and "jax" in backends:
            return "jax"
        for candidate in ("numba", "numpy", "jax"):
            if candidate in backends:
                return candidate
    if requested not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {requested!r}")
    if requested not in backends:
        raise ValueError(f"backend {requested!r} is not implemented for this method; available: {list(backends)}")
    return requested
