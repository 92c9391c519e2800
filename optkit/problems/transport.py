"""Optimal-transport problems: marginals, a ground cost and a regularization.

.. math::

    \\min_{P \\ge 0,\\; P\\mathbf 1 = a,\\; P^\\top \\mathbf 1 = b} \\langle C, P\\rangle + R(P)

with :math:`R = 0` (exact OT), :math:`R(P) = \\varepsilon \\sum_{ij} P_{ij}(\\log P_{ij} - 1)` (:class:`Entropic`),
:math:`R(P) = \\tfrac{\\gamma}{2}\\|P\\|_F^2` (:class:`Quadratic`), or the same with at most :math:`k` nonzeros per
column of :math:`P` (:class:`SparsityConstrained`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from optkit._arrays import is_jax_array, is_tracer

__all__ = ["Regularization", "Entropic", "Quadratic", "SparsityConstrained", "TransportProblem", "pairwise_cost"]


@dataclasses.dataclass(frozen=True)
class Regularization:
    """Base class of OT regularizations; ``None`` means exact (unregularized) OT."""


@dataclasses.dataclass(frozen=True)
class Entropic(Regularization):
    """Entropic regularization :math:`\\varepsilon \\sum_{ij} P_{ij}(\\log P_{ij} - 1)`.

    With this convention the optimal plan is :math:`P_{ij} = \\exp((f_i + g_j - C_{ij})/\\varepsilon)` for the
    dual potentials ``(f, g)``, the same plan as POT's ``ot.sinkhorn`` (whose regularizer
    :math:`\\sum P\\log P` differs from ours by the constant :math:`\\varepsilon \\sum_i a_i`).

    Parameters
    ----------
    epsilon
        The regularization strength, > 0, in the units of the cost.
    """

    epsilon: Any

    def __post_init__(self) -> None:
        if is_jax_array(self.epsilon):
            return
        try:
            value = float(self.epsilon)
        except (TypeError, ValueError):
            raise TypeError(f"epsilon must be a real number, got {type(self.epsilon).__name__}") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"epsilon must be finite and > 0, got {self.epsilon!r}")
        object.__setattr__(self, "epsilon", value)


def _check_gamma(gamma: Any) -> float:
    if isinstance(gamma, bool):
        raise TypeError("gamma must be a real number, got bool")
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Quadratic(Regularization):
    """Quadratic regularization :math:`\\tfrac{\\gamma}{2}\\|P\\|_F^2` (Blondel, Seguy & Rolet, AISTATS 2018).

    The optimal plan is sparse; it is recovered from the dual potentials as
    :math:`P_{ij} = [f_i + g_j - C_{ij}]_+ / \\gamma`.

    Parameters
    ----------
    gamma
        The regularization strength, finite and > 0, in the units of the cost times the plan's mass.
    """

    gamma: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _check_gamma(self.gamma))


@dataclasses.dataclass(frozen=True)
class SparsityConstrained(Regularization):
    """Quadratic regularization with at most ``k`` nonzeros per column of the plan (Liu, Puigcerver & Blondel,
    ICLR 2023).

    .. math::

        \\min_{P \\in U(a, b),\\; \\|P_{:,j}\\|_0 \\le k} \\langle C, P\\rangle + \\tfrac{\\gamma}{2}\\|P\\|_F^2

    (nonconvex; solved through its dual or semi-dual). ``k = n`` (the number of rows) is :class:`Quadratic`.

    Parameters
    ----------
    k
        The maximum number of nonzeros in each column, an int >= 1; ``k <= n`` is checked by
        :class:`TransportProblem`, where ``n`` is known.
    gamma
        The strength of the quadratic term, finite and > 0.
    """

    k: int
    gamma: Any = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(self.k).__name__}")
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1 (the maximum number of nonzeros per column), got {self.k!r}")
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "gamma", _check_gamma(self.gamma))


def _namespace(*arrays: Any) -> Any:
    if any(is_jax_array(a) for a in arrays):
        import jax.numpy as jnp

        return jnp
    return np


def pairwise_cost(x: Any, y: Any, metric: str | Callable[[Any, Any], Any] = "sqeuclidean") -> Any:
    """Cost matrix between the rows of ``x`` (n, d) and ``y`` (m, d).

    ``"sqeuclidean"`` gives :math:`\\|x_i - y_j\\|^2`, ``"euclidean"`` :math:`\\|x_i - y_j\\|` (with a gradient of
    zero where two points coincide), ``"cityblock"`` the L1 distance; a callable ``metric(x, y)`` must return the
    (n, m) matrix. JAX inputs give a JAX matrix, differentiable in the points.
    """
    xp = _namespace(x, y)
    if callable(metric):
        return metric(x, y)
    if metric == "sqeuclidean":
        sq = xp.sum(x * x, axis=1)[:, None] + xp.sum(y * y, axis=1)[None, :] - 2.0 * (x @ y.T)
        return xp.maximum(sq, 0.0)
    if metric == "euclidean":
        sq = xp.maximum(xp.sum(x * x, axis=1)[:, None] + xp.sum(y * y, axis=1)[None, :] - 2.0 * (x @ y.T), 0.0)
        positive = sq > 0
        return xp.where(positive, xp.sqrt(xp.where(positive, sq, 1.0)), 0.0)
    if metric == "cityblock":
        return xp.sum(xp.abs(x[:, None, :] - y[None, :, :]), axis=-1)
    raise ValueError(f"metric must be 'sqeuclidean', 'euclidean', 'cityblock' or a callable, got {metric!r}")


@dataclasses.dataclass(frozen=True)
class TransportProblem:
    """Discrete optimal transport between weights ``a`` (n,) and ``b`` (m,) with ground cost ``cost`` (n, m).

    Validated at construction: shapes, finiteness, non-negative weights, equal masses (to
    :math:`\\sqrt{\\text{machine epsilon}}` relative). NumPy inputs are copied and made read-only; JAX inputs are
    kept as JAX arrays (and under ``jax.jit``/``jax.vmap`` only shapes are checked, since values are traced).

    Parameters
    ----------
    a, b
        Source and target weights; ``None`` means uniform with total mass 1.
    cost
        The ground cost matrix.
    regularization
        ``None`` for exact OT, or a :class:`Regularization` such as :class:`Entropic`.

    Examples
    --------
    >>> import numpy as np
    >>> from optkit.problems import TransportProblem, Entropic
    >>> problem = TransportProblem(None, None, np.array([[0.0, 1.0], [1.0, 0.0]]), Entropic(0.1))
    >>> problem.shape
    (2, 2)
    """

    a: Any
    b: Any
    cost: Any
    regularization: Regularization | None = None

    def __post_init__(self) -> None:
        jax_mode = any(is_jax_array(v) for v in (self.a, self.b, self.cost))
        cost = self.cost if jax_mode else _as_float_array("cost", self.cost)
        if getattr(cost, "ndim", None) != 2:
            raise ValueError(f"cost must be a 2-D (n, m) matrix, got shape {getattr(cost, 'shape', None)}")
        n, m = cost.shape
        if n == 0 or m == 0:
            raise ValueError(f"cost must have at least one row and one column, got shape {cost.shape}")
        xp = _namespace(self.a, self.b, cost)
        dtype = cost.dtype
        a = xp.full(n, 1.0 / n, dtype=dtype) if self.a is None else self.a
        b = xp.full(m, 1.0 / m, dtype=dtype) if self.b is None else self.b
        if not jax_mode:
            a = _as_float_array("a", a)
            b = _as_float_array("b", b)
        for name, w, size, axis in (("a", a, n, "rows"), ("b", b, m, "columns")):
            if getattr(w, "ndim", None) != 1 or w.shape[0] != size:
                raise ValueError(
                    f"{name} must be a 1-D array of length {size} (the number of cost {axis}), got shape {w.shape}"
                )
        if self.regularization is not None and not isinstance(self.regularization, Regularization):
            raise TypeError(
                f"regularization must be None or a Regularization such as Entropic(epsilon), "
                f"got {type(self.regularization).__name__}"
            )
        if isinstance(self.regularization, SparsityConstrained) and self.regularization.k > n:
            raise ValueError(
                f"SparsityConstrained k must be <= n = {n} (the number of cost rows: k bounds the nonzeros of each "
                f"column of the plan), got k = {self.regularization.k}"
            )
        if not any(is_tracer(v) for v in (a, b, cost)):
            _check_values(np.asarray(a), np.asarray(b), np.asarray(cost))
        if not jax_mode:
            for arr in (a, b, cost):
                arr.setflags(write=False)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "cost", cost)

    @classmethod
    def from_points(
        cls,
        x: Any,
        y: Any,
        a: Any = None,
        b: Any = None,
        *,
        metric: str | Callable[[Any, Any], Any] = "sqeuclidean",
        normalize: str | None = None,
        regularization: Regularization | None = None,
    ) -> TransportProblem:
        """OT between point clouds ``x`` (n, d) and ``y`` (m, d) with a cost from :func:`pairwise_cost`.

        ``normalize`` rescales the cost by its ``"max"``, ``"mean"`` or ``"median"`` (``None``: as is), so that
        epsilon can be given relative to a unit cost.
        """
        jax_mode = is_jax_array(x) or is_jax_array(y)
        if not jax_mode:
            x = _as_float_array("x", x)
            y = _as_float_array("y", y)
        if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
            raise ValueError(
                f"x and y must be 2-D point arrays with the same dimension, got shapes {x.shape} and {y.shape}"
            )
        cost = pairwise_cost(x, y, metric)
        if normalize is not None:
            xp = _namespace(cost)
            reducers = {"max": xp.max, "mean": xp.mean, "median": xp.median}
            if normalize not in reducers:
                raise ValueError(f"normalize must be None, 'max', 'mean' or 'median', got {normalize!r}")
            scale = reducers[normalize](cost)
            if not is_tracer(scale) and not float(scale) > 0:
                raise ValueError(f"cannot normalize a cost whose {normalize} is {float(scale)} (all points equal?)")
            cost = cost / scale
        return cls(a, b, cost, regularization)

    def with_regularization(self, regularization: Regularization | None) -> TransportProblem:
        """The same marginals and cost with another regularization."""
        return dataclasses.replace(self, regularization=regularization)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return tuple(self.cost.shape)  # type: ignore[return-value]

    @property
    def is_jax(self) -> bool:
        """Whether the data are JAX arrays (so ``backend="auto"`` runs on JAX)."""
        return any(is_jax_array(v) for v in (self.a, self.b, self.cost))

    @property
    def epsilon(self) -> Any:
        """The entropic epsilon, or ``None`` when the regularization is not entropic."""
        return self.regularization.epsilon if isinstance(self.regularization, Entropic) else None

    def __repr__(self) -> str:
        n, m = self.shape
        return f"TransportProblem(n={n}, m={m}, dtype={self.cost.dtype}, regularization={self.regularization!r})"

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


def _as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.array(value, copy=True)
    except Exception as exc:  # noqa: BLE001 - report what could not be converted
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {exc}") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _check_values(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> None:
    if not np.all(np.isfinite(cost)):
        bad = np.argwhere(~np.isfinite(cost))[0]
        raise ValueError(f"cost must be finite; found {cost[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    for name, w in (("a", a), ("b", b)):
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{name} must be finite; found NaN or inf at index {int(np.argmax(~np.isfinite(w)))}")
        if np.any(w < 0):
            i = int(np.argmax(w < 0))
            raise ValueError(f"{name} must be non-negative; {name}[{i}] = {w[i]}")
        if not w.sum() > 0:
            raise ValueError(f"{name} must have positive total mass, got {w.sum()}")
    mass_a, mass_b = float(a.sum()), float(b.sum())
    rtol = math.sqrt(np.finfo(cost.dtype).eps)
    if abs(mass_a - mass_b) > rtol * max(mass_a, mass_b):
        raise ValueError(
            f"a and b must have the same total mass: sum(a) = {mass_a!r}, sum(b) = {mass_b!r} "
            f"(relative difference {abs(mass_a - mass_b) / max(mass_a, mass_b):.2e} > {rtol:.1e}); "
            "normalize both to 1 or use an unbalanced formulation"
        )
