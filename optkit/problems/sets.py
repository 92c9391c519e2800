r"""Closed convex sets with Euclidean projections.

Every set :math:`C \subseteq \mathbb{R}^n` offers

.. math::

    P_C(x) = \operatorname*{arg\,min}_{z \in C} \tfrac12 \|z - x\|_2^2

as :meth:`ConvexSet.project`, and a membership test :meth:`ConvexSet.contains`
with a tolerance. Sets are validated when built (``ValueError`` naming the
argument) and immutable afterwards; their array attributes are read-only.
``project`` accepts a point of shape ``(dim,)`` or a batch of shape
``(..., dim)`` (projected row by row) and always returns a new array.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["Affine", "Ball", "Box", "ConvexSet", "NonNegative", "Product", "Reals", "Simplex"]


def _check_dim(dim: Any, argument: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"{argument} must be a positive integer, got {dim!r}")
    return int(dim)


def _check_scalar(value: Any, argument: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be a real number, got {value!r}") from None
    if np.isnan(out):
        raise ValueError(f"{argument} must not be NaN")
    return out


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.float64)  # a private copy
    array.flags.writeable = False
    return array


def _as_float_array(value: Any, argument: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be a real array, got {type(value).__name__}") from None
    if np.isnan(array).any():
        raise ValueError(f"{argument} must not contain NaN")
    return array


def _summary(array: np.ndarray) -> str:
    if array.size and np.all(array == array.flat[0]):
        return repr(float(array.flat[0]))
    return np.array2string(array, separator=", ", threshold=6, edgeitems=2)


class ConvexSet:
    r"""A nonempty closed convex set :math:`C \subseteq \mathbb{R}^n`, :math:`n` = ``dim``.

    Subclasses implement :meth:`_project` on a float64 array of shape
    ``(..., dim)`` and may override :meth:`_distance` with a cheaper formula
    than :math:`\|x - P_C(x)\|_2`.

    Examples
    --------
    >>> import numpy as np
    >>> box = Box(0.0, 1.0, dim=3)
    >>> box.project(np.array([-1.0, 0.5, 2.0]))
    array([0. , 0.5, 1. ])
    >>> box.contains(np.array([0.0, 1.0, 0.3]))
    True
    """

    __slots__ = ("_dim",)

    _dim: int
    #: Whether ``project`` accepts a batch of shape ``(..., dim)``.
    batched: bool = True

    def __init__(self, dim: int) -> None:
        self._set("_dim", _check_dim(dim))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new set instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        slots = (name for cls in type(self).__mro__ for name in getattr(cls, "__slots__", ()))
        state = {name: getattr(self, name) for name in slots}
        return (_rebuild, (type(self), state))

    @property
    def dim(self) -> int:
        """Dimension :math:`n` of the ambient space."""
        return self._dim

    def _check_input(self, x: Any, argument: str = "x", allow_batch: bool = True) -> np.ndarray:
        array = np.asarray(x, dtype=np.float64)
        ok = array.ndim == 1 or (allow_batch and self.batched and array.ndim > 1)
        if not ok or array.shape[-1] != self._dim:
            expected = f"({self._dim},)"
            if allow_batch and self.batched:
                expected += f" or (..., {self._dim})"
            raise ValueError(f"{argument} must have shape {expected}, got shape {array.shape}")
        return array

    def project(self, x: Any) -> np.ndarray:
        r"""Euclidean projection :math:`P_C(x)`.

        Parameters
        ----------
        x : array_like, shape (dim,) or (..., dim)
            A batch is projected along its last axis (where ``batched`` is true).

        Returns
        -------
        ndarray
            A new float64 array with the shape of ``x``.
        """
        return self._project(self._check_input(x))

    def contains(self, x: Any, tol: float = 1e-9) -> bool:
        r"""Whether :math:`x \in C` up to a tolerance.

        True when ``x`` is finite and :math:`\operatorname{dist}_2(x, C) \le
        \mathrm{tol} \cdot \max(1, \|x\|_\infty)`: the Euclidean distance to
        the set, relative to the size of ``x`` so that a projection computed in
        floating point is contained in the set.

        Parameters
        ----------
        x : array_like, shape (dim,)
        tol : float, default 1e-9
        """
        x = self._check_input(x, allow_batch=False)
        if not np.all(np.isfinite(x)):
            return False
        return bool(self._distance(x) <= tol * max(1.0, float(np.max(np.abs(x)))))

    def _project(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _distance(self, x: np.ndarray) -> float:
        return float(np.linalg.norm(x - self._project(x)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self._dim})"


def _rebuild(cls: type, state: dict[str, Any]) -> ConvexSet:
    self = cls.__new__(cls)
    for name, value in state.items():
        if isinstance(value, np.ndarray) and value.flags.writeable:
            value.flags.writeable = False
        object.__setattr__(self, name, value)
    return self


class Box(ConvexSet):
    r"""The box :math:`\{x : \ell \le x \le u\}` (componentwise), bounds may be infinite.

    .. math::

        P(x) = \min(\max(x, \ell), u).

    Parameters
    ----------
    lower, upper : float or array_like of shape (dim,)
        Bounds; scalars are broadcast to ``dim``. ``-inf``/``+inf`` leave a
        coordinate unbounded. ``lower <= upper`` and no NaN.
    dim : int, optional
        Required when both bounds are scalars; checked against them otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> box = Box([0.0, -np.inf], [1.0, 2.0])
    >>> box.project(np.array([3.0, -5.0]))
    array([ 1., -5.])
    >>> box
    Box(lower=[  0., -inf], upper=[1., 2.])
    """

    __slots__ = ("_lower", "_upper")

    _lower: np.ndarray
    _upper: np.ndarray

    def __init__(self, lower: Any, upper: Any, *, dim: int | None = None) -> None:
        lower_array = _as_float_array(lower, "lower")
        upper_array = _as_float_array(upper, "upper")
        for array, argument in ((lower_array, "lower"), (upper_array, "upper")):
            if array.ndim > 1:
                raise ValueError(f"{argument} must be a scalar or a 1-D array, got shape {array.shape}")
        sizes = {a.size for a in (lower_array, upper_array) if a.ndim == 1}
        if len(sizes) > 1:
            raise ValueError(
                f"lower and upper must have the same length, got {lower_array.size} and {upper_array.size}"
            )
        if dim is not None:
            dim = _check_dim(dim)
            if sizes and sizes != {dim}:
                raise ValueError(f"dim={dim} does not match the length {sizes.pop()} of the bounds")
        elif not sizes:
            raise ValueError("dim is required when lower and upper are both scalars")
        else:
            dim = sizes.pop()
        super().__init__(dim)
        lower_array = np.broadcast_to(lower_array, (dim,))
        upper_array = np.broadcast_to(upper_array, (dim,))
        bad = np.flatnonzero(lower_array > upper_array)
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"lower must not exceed upper, got lower[{i}]={lower_array[i]} > upper[{i}]={upper_array[i]}"
            )
        if np.any(lower_array == np.inf):
            raise ValueError("lower must not be +inf (the box would be empty)")
        if np.any(upper_array == -np.inf):
            raise ValueError("upper must not be -inf (the box would be empty)")
        self._set("_lower", _frozen(lower_array))
        self._set("_upper", _frozen(upper_array))

    @property
    def lower(self) -> np.ndarray:
        """Lower bounds, shape ``(dim,)`` (read-only)."""
        return self._lower

    @property
    def upper(self) -> np.ndarray:
        """Upper bounds, shape ``(dim,)`` (read-only)."""
        return self._upper

    def _project(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self._lower, self._upper)

    def _distance(self, x: np.ndarray) -> float:
        violation = np.maximum(self._lower - x, 0.0) + np.maximum(x - self._upper, 0.0)
        return float(np.linalg.norm(violation))

    def __repr__(self) -> str:
        lower, upper = _summary(self._lower), _summary(self._upper)
        uniform = "[" not in lower + upper
        return f"Box(lower={lower}, upper={upper}" + (f", dim={self._dim})" if uniform else ")")


class Reals(Box):
    r"""The whole space :math:`\mathbb{R}^n`; the projection is the identity (a copy).

    Parameters
    ----------
    dim : int

    Examples
    --------
    >>> Reals(2).project([1.0, -3.0])
    array([ 1., -3.])
    """

    __slots__ = ()

    def __init__(self, dim: int) -> None:
        super().__init__(-np.inf, np.inf, dim=_check_dim(dim))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    def _distance(self, x: np.ndarray) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"Reals(dim={self._dim})"


class NonNegative(Box):
    r"""The nonnegative orthant :math:`\{x : x \ge 0\}`, :math:`P(x) = \max(x, 0)`.

    Parameters
    ----------
    dim : int

    Examples
    --------
    >>> NonNegative(3).project([-1.0, 0.0, 2.0])
    array([0., 0., 2.])
    """

    __slots__ = ()

    def __init__(self, dim: int) -> None:
        super().__init__(0.0, np.inf, dim=_check_dim(dim))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)

    def _distance(self, x: np.ndarray) -> float:
        return float(np.linalg.norm(np.minimum(x, 0.0)))

    def __repr__(self) -> str:
        return f"NonNegative(dim={self._dim})"


class Simplex(ConvexSet):
    r"""The scaled probability simplex :math:`\{x : x \ge 0,\ \sum_i x_i = s\}`, :math:`s` = ``total``.

    The projection is :math:`P(x) = \max(x - \theta, 0)` with the threshold
    :math:`\theta` found by sorting :math:`x` decreasingly,
    :math:`x_{(1)} \ge \dots \ge x_{(n)}`,

    .. math::

        \rho = \max\Big\{k : x_{(k)} > \tfrac1k \big(\textstyle\sum_{j \le k} x_{(j)} - s\big)\Big\},
        \qquad \theta = \tfrac1\rho \big(\textstyle\sum_{j \le \rho} x_{(j)} - s\big),

    in :math:`O(n \log n)` (Held, Wolfe and Crowder 1974; see Condat, *Fast
    projection onto the simplex and the l1 ball*, Math. Program. 2016, Alg. 1).

    Parameters
    ----------
    dim : int
    total : float, default 1.0
        The sum :math:`s > 0`.

    Examples
    --------
    >>> Simplex(3).project([0.5, 0.5, 0.5])
    array([0.33333333, 0.33333333, 0.33333333])
    >>> Simplex(2, total=2.0).project([3.0, -1.0])
    array([2., 0.])
    """

    __slots__ = ("_total",)

    _total: float

    def __init__(self, dim: int, total: float = 1.0) -> None:
        super().__init__(dim)
        total = _check_scalar(total, "total")
        if not (0.0 < total < np.inf):
            raise ValueError(f"total must be positive and finite, got {total}")
        self._set("_total", total)

    @property
    def total(self) -> float:
        """The sum :math:`s` of the coordinates."""
        return self._total

    def _project(self, x: np.ndarray) -> np.ndarray:
        descending = -np.sort(-x, axis=-1)
        excess = np.cumsum(descending, axis=-1) - self._total
        k = np.arange(1, self._dim + 1)
        # The condition holds for k = 1..rho and fails after, so rho counts it.
        rho = np.count_nonzero(descending * k > excess, axis=-1, keepdims=True)
        theta = np.take_along_axis(excess, rho - 1, axis=-1) / rho
        return np.maximum(x - theta, 0.0)

    def __repr__(self) -> str:
        return f"Simplex(dim={self._dim}, total={self._total!r})"


class Ball(ConvexSet):
    r"""The ball :math:`\{x : \|x - c\| \le r\}` in the 2-norm or the :math:`\infty`-norm.

    .. math::

        P_2(x) = c + \min\Big(1, \frac{r}{\|x - c\|_2}\Big)(x - c), \qquad
        P_\infty(x) = \min(\max(x, c - r), c + r).

    Parameters
    ----------
    center : float or array_like of shape (dim,)
        A scalar is broadcast to ``dim``.
    radius : float
        :math:`r \ge 0` and finite.
    norm : {2, inf}, default 2
    dim : int, optional
        Required when ``center`` is a scalar.

    Examples
    --------
    >>> import numpy as np
    >>> Ball(np.zeros(2), 1.0).project([3.0, 4.0])
    array([0.6, 0.8])
    >>> Ball(0.0, 1.0, norm=np.inf, dim=2).project([3.0, 0.5])
    array([1. , 0.5])
    """

    __slots__ = ("_center", "_norm", "_radius")

    _center: np.ndarray
    _radius: float
    _norm: float

    def __init__(self, center: Any, radius: float, norm: float | str = 2, *, dim: int | None = None) -> None:
        center_array = _as_float_array(center, "center")
        if center_array.ndim > 1:
            raise ValueError(f"center must be a scalar or a 1-D array, got shape {center_array.shape}")
        if not np.all(np.isfinite(center_array)):
            raise ValueError("center must be finite")
        if center_array.ndim == 0:
            if dim is None:
                raise ValueError("dim is required when center is a scalar")
            dim = _check_dim(dim)
        elif dim is not None and _check_dim(dim) != center_array.size:
            raise ValueError(f"dim={dim} does not match the length {center_array.size} of center")
        else:
            dim = center_array.size
        super().__init__(dim)
        radius = _check_scalar(radius, "radius")
        if not (0.0 <= radius < np.inf):
            raise ValueError(f"radius must be nonnegative and finite, got {radius}")
        if isinstance(norm, str) and norm.lower() == "inf":
            norm = np.inf
        if isinstance(norm, bool) or not isinstance(norm, numbers.Real) or norm not in (2, np.inf):
            raise ValueError(f"norm must be 2 or inf, got {norm!r}")
        self._set("_center", _frozen(np.broadcast_to(center_array, (dim,))))
        self._set("_radius", radius)
        self._set("_norm", float(norm))

    @property
    def center(self) -> np.ndarray:
        """The center :math:`c`, shape ``(dim,)`` (read-only)."""
        return self._center

    @property
    def radius(self) -> float:
        """The radius :math:`r`."""
        return self._radius

    @property
    def norm(self) -> float:
        """``2.0`` or ``inf``."""
        return self._norm

    def _project(self, x: np.ndarray) -> np.ndarray:
        c, r = self._center, self._radius
        if self._norm == np.inf:
            return np.clip(x, c - r, c + r)
        shift = x - c
        length = np.linalg.norm(shift, axis=-1, keepdims=True)
        # Outside: scale back onto the sphere; inside (length <= r): unchanged.
        scale = np.where(length > r, r / np.where(length > r, length, 1.0), 1.0)
        return c + scale * shift

    def _distance(self, x: np.ndarray) -> float:
        shift = x - self._center
        if self._norm == np.inf:
            return float(np.linalg.norm(np.maximum(np.abs(shift) - self._radius, 0.0)))
        return max(0.0, float(np.linalg.norm(shift)) - self._radius)

    def __repr__(self) -> str:
        norm = "2" if self._norm == 2 else "inf"
        return f"Ball(center={_summary(self._center)}, radius={self._radius!r}, norm={norm}, dim={self._dim})"


class Affine(ConvexSet):
    r"""The affine subspace :math:`\{x : A x = b\}`, for a consistent system.

    With the thin SVD :math:`A = U_r \Sigma_r V_r^\top` (rank :math:`r`, singular
    values below :math:`\max(m, n)\,\epsilon\,\sigma_1` dropped), computed once,

    .. math::

        x_0 = V_r \Sigma_r^{-1} U_r^\top b, \qquad
        P(x) = x - V_r V_r^\top (x - x_0),

    so a projection costs :math:`O(nr)`. :math:`x_0` is the least-norm point of
    the set. Rank-deficient :math:`A` is fine as long as :math:`b` lies in its
    range (up to a relative residual :math:`\sqrt{\epsilon}\,\|b\|`).

    Parameters
    ----------
    A : array_like, shape (m, n)
        Dense, or a :mod:`scipy.sparse` matrix (densified for the factorisation).
    b : array_like, shape (m,)

    Raises
    ------
    ValueError
        For wrong shapes, non-finite entries, or an inconsistent system
        (``b`` not in the range of ``A``: the set is empty, "infeasible").

    Examples
    --------
    >>> import numpy as np
    >>> plane = Affine(np.array([[1.0, 1.0]]), np.array([1.0]))
    >>> plane.project([1.0, 1.0])
    array([0.5, 0.5])
    """

    __slots__ = ("_A", "_anchor", "_b", "_basis", "_rank")

    _A: np.ndarray
    _b: np.ndarray
    _basis: np.ndarray
    _anchor: np.ndarray
    _rank: int

    def __init__(self, A: Any, b: Any) -> None:
        if hasattr(A, "toarray"):  # scipy.sparse
            A = A.toarray()
        A_array = _as_float_array(A, "A")
        b_array = _as_float_array(b, "b")
        if A_array.ndim != 2:
            raise ValueError(f"A must be a 2-D array, got shape {A_array.shape}")
        if b_array.shape != (A_array.shape[0],):
            raise ValueError(f"b must have shape ({A_array.shape[0]},) to match A, got shape {b_array.shape}")
        for array, argument in ((A_array, "A"), (b_array, "b")):
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{argument} must be finite")
        m, n = A_array.shape
        super().__init__(n)
        if m == 0:
            rank, basis, anchor = 0, np.zeros((n, 0)), np.zeros(n)
        else:
            u, s, vt = np.linalg.svd(A_array, full_matrices=False)
            cutoff = max(m, n) * np.finfo(np.float64).eps * s[0]
            rank = int(np.count_nonzero(s > cutoff))
            u, s, basis = u[:, :rank], s[:rank], vt[:rank].T
            coefficients = u.T @ b_array
            anchor = basis @ (coefficients / s)
            # b must lie in range(A): its component outside span(U_r) is the residual.
            residual = float(np.linalg.norm(b_array - u @ coefficients))
            b_norm = float(np.linalg.norm(b_array))
            if residual > np.sqrt(np.finfo(np.float64).eps) * max(b_norm, np.finfo(np.float64).tiny):
                raise ValueError(
                    f"A x = b is infeasible: b is not in the range of A (least-squares residual "
                    f"{residual:.3e}, ||b|| = {b_norm:.3e}), so the affine set is empty"
                )
        self._set("_A", _frozen(A_array))
        self._set("_b", _frozen(b_array))
        self._set("_basis", _frozen(basis))
        self._set("_anchor", _frozen(anchor))
        self._set("_rank", rank)

    @property
    def A(self) -> np.ndarray:
        """The matrix :math:`A`, shape ``(m, n)`` (read-only)."""
        return self._A

    @property
    def b(self) -> np.ndarray:
        """The right-hand side :math:`b`, shape ``(m,)`` (read-only)."""
        return self._b

    @property
    def rank(self) -> int:
        """Numerical rank :math:`r` of :math:`A`."""
        return self._rank

    def _project(self, x: np.ndarray) -> np.ndarray:
        return x - ((x - self._anchor) @ self._basis) @ self._basis.T

    def __repr__(self) -> str:
        m = self._A.shape[0]
        return f"Affine(m={m}, dim={self._dim}, rank={self._rank})"


class Product(ConvexSet):
    r"""The Cartesian product :math:`C_1 \times \dots \times C_k`, acting on concatenated vectors.

    .. math::

        P(x_1, \dots, x_k) = (P_{C_1}(x_1), \dots, P_{C_k}(x_k)).

    Parameters
    ----------
    *sets : ConvexSet
        At least one.

    Examples
    --------
    >>> import numpy as np
    >>> prod = Product(NonNegative(2), Simplex(2))
    >>> prod.dim
    4
    >>> prod.project(np.array([-1.0, 1.0, 2.0, 0.0]))
    array([0., 1., 1., 0.])
    >>> [piece.tolist() for piece in prod.split(np.arange(4.0))]
    [[0.0, 1.0], [2.0, 3.0]]
    """

    __slots__ = ("_offsets", "_sets")

    _sets: tuple[ConvexSet, ...]
    _offsets: tuple[int, ...]

    def __init__(self, *sets: ConvexSet) -> None:
        if not sets:
            raise ValueError("sets must contain at least one ConvexSet")
        for i, piece in enumerate(sets):
            if not isinstance(piece, ConvexSet):
                raise TypeError(f"sets[{i}] must be a ConvexSet, got {type(piece).__name__}")
        offsets = tuple(int(v) for v in np.cumsum([0] + [piece.dim for piece in sets]))
        super().__init__(offsets[-1])
        self._set("_sets", tuple(sets))
        self._set("_offsets", offsets)

    @property
    def sets(self) -> tuple[ConvexSet, ...]:
        """The factors :math:`C_1, \\dots, C_k`."""
        return self._sets

    @property
    def batched(self) -> bool:  # type: ignore[override]
        """True when every factor accepts batches."""
        return all(piece.batched for piece in self._sets)

    def split(self, x: Any) -> tuple[np.ndarray, ...]:
        """The pieces :math:`(x_1, \\dots, x_k)` of ``x`` (views along the last axis)."""
        x = self._check_input(x)
        return tuple(x[..., a:b] for a, b in zip(self._offsets[:-1], self._offsets[1:], strict=True))

    def _project(self, x: np.ndarray) -> np.ndarray:
        pieces = zip(self._sets, self.split(x), strict=True)
        return np.concatenate([s._project(p) for s, p in pieces], axis=-1)

    def _distance(self, x: np.ndarray) -> float:
        pieces = zip(self._sets, self.split(x), strict=True)
        return float(np.hypot.reduce([s._distance(p) for s, p in pieces]))

    def __repr__(self) -> str:
        return f"Product({', '.join(repr(piece) for piece in self._sets)})"
