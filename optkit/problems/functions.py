"""Smooth functions and their derivative oracles.

A :class:`Function` is an immutable bundle of numpy callables -- the value and
whichever derivatives the user can supply -- behind one interface that solvers
query (``grad``, ``hess``, ``hvp``, ``jac``, ``jvp``, ``vjp``).  Missing
derivatives are derived from the given ones where that is exact (a
Hessian-vector product from a Hessian, a dense Hessian from ``n`` products, ...)
and otherwise raise :class:`NotImplementedError` that says what to supply.

:meth:`Function.counting` returns a :class:`CountedFunction`, a view that counts
the oracle calls actually made (a solver reports them in its ``Result``)
without mutating the function it views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import LinearOperator

__all__ = ["CountedFunction", "Function", "check_derivatives"]

#: Oracle names, in the order used by ``counts`` and ``repr``.
ORACLES: tuple[str, ...] = ("value", "grad", "hess", "hvp", "jac", "jvp", "vjp")

# Constructor argument that supplies each oracle (for error messages).
_ARGUMENT = {name: ("fun" if name == "value" else name) for name in ORACLES}

Matrix = Any  # np.ndarray | scipy.sparse matrix/array | LinearOperator


def _as_point(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"x must be a 1-D array, got an array of shape {arr.shape}")
    return arr


def _as_direction(v: Any, n: int, argument: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{argument} must have shape ({n},) like x, got shape {arr.shape}")
    return arr


def _as_output(out: Any, oracle: str) -> float | np.ndarray:
    """Scalar outputs become ``float``, vector outputs 1-D float64 arrays."""
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim != 1:
        raise ValueError(
            f"{_ARGUMENT[oracle]} must return a scalar or a 1-D array, got shape {arr.shape}"
        )
    return arr


def _as_vector(out: Any, n: int, oracle: str) -> np.ndarray:
    arr = np.asarray(out, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{_ARGUMENT[oracle]} must return an array of shape ({n},), got {arr.shape}")
    return arr


def _as_matrix(out: Any, n: int, oracle: str, square: bool) -> Matrix:
    """Keep sparse matrices and linear operators; densify everything else."""
    if not (sparse.issparse(out) or isinstance(out, LinearOperator)):
        out = np.asarray(out, dtype=np.float64)
    shape = tuple(out.shape)
    ok = len(shape) == 2 and shape[1] == n and (shape[0] == n or not square)
    if not ok:
        expected = f"({n}, {n})" if square else f"(m, {n})"
        raise ValueError(f"{_ARGUMENT[oracle]} must return a matrix of shape {expected}, got {shape}")
    return out


def _matvec(matrix: Matrix, v: np.ndarray) -> np.ndarray:
    return np.asarray(matrix @ v, dtype=np.float64).reshape(-1)


def _rmatvec(matrix: Matrix, u: np.ndarray) -> np.ndarray:
    if isinstance(matrix, LinearOperator):
        return np.asarray(matrix.rmatvec(u), dtype=np.float64).reshape(-1)
    return np.asarray(matrix.T @ u, dtype=np.float64).reshape(-1)


def _x64_context() -> Any:
    """Context manager enabling 64-bit JAX types for the calls made inside it."""
    import jax

    enable = getattr(jax, "enable_x64", None)
    if enable is not None:
        return enable(True)
    from jax.experimental import enable_x64  # older JAX releases

    return enable_x64()


def _numpy_caller(jitted: Callable[..., Any]) -> Callable[..., np.ndarray]:
    def call(*args: np.ndarray) -> np.ndarray:
        with _x64_context():
            return np.asarray(jitted(*args), dtype=np.float64)

    return call


class Function:
    r"""A function :math:`f:\mathbb{R}^n \to \mathbb{R}` or :math:`\mathbb{R}^m` with derivative oracles.

    A scalar function (an objective) returns a ``float``; a vector function
    (constraints :math:`c(x)`) returns a 1-D array. The oracles are

    .. math::

        \nabla f(x),\quad \nabla^2 f(x),\quad \nabla^2 f(x)\,v,\quad
        J(x) = \frac{\partial f}{\partial x}(x) \in \mathbb{R}^{m\times n},\quad
        J(x)\,v,\quad J(x)^\top u .

    Only ``fun`` is required. Missing oracles fall back on the given ones where
    the result is exact: ``hvp`` from ``hess``; a dense ``hess`` from ``n``
    calls of ``hvp`` (:math:`H e_i`, :math:`i = 1..n`); ``jvp`` and ``vjp``
    from ``jac``; and for a scalar function ``jac(x) = grad(x)[None, :]``,
    ``jvp(x, v) = grad(x) @ v``, ``vjp(x, u) = u * grad(x)``. A derivative
    that cannot be obtained raises :class:`NotImplementedError`. Finite
    differences are never used silently; see :func:`check_derivatives`.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> float | ndarray`` for a 1-D float64 array ``x``.
    grad : callable, optional
        ``grad(x) -> ndarray`` of shape ``(n,)``.
    hess : callable, optional
        ``hess(x)`` of shape ``(n, n)``: a dense array, a :mod:`scipy.sparse`
        matrix or a :class:`scipy.sparse.linalg.LinearOperator`.
    hvp : callable, optional
        ``hvp(x, v) -> ndarray``, the product :math:`\nabla^2 f(x)\,v`.
    jac : callable, optional
        ``jac(x)`` of shape ``(m, n)``, dense, sparse or a ``LinearOperator``.
    jvp : callable, optional
        ``jvp(x, v)``, the product :math:`J(x)\,v` (a float for scalar functions).
    vjp : callable, optional
        ``vjp(x, u) -> ndarray``, the product :math:`J(x)^\top u` of shape ``(n,)``.
    name : str, optional
        Used in messages and ``repr``; defaults to ``fun.__name__``.

    Raises
    ------
    TypeError
        If ``fun`` or a given oracle is not callable.

    See Also
    --------
    Function.from_jax : every oracle by automatic differentiation.
    Function.counting : a view counting oracle calls.

    Notes
    -----
    Inputs are converted to float64 arrays; a dense ``hess``/``jac`` is returned
    as a float64 ``ndarray``, sparse matrices and linear operators are returned
    as the user's callable produced them. Instances are immutable.

    Examples
    --------
    >>> import numpy as np
    >>> f = Function(lambda x: 0.5 * x @ x, grad=lambda x: x, hvp=lambda x, v: v, name="half_sq")
    >>> f(np.array([3.0, 4.0]))
    12.5
    >>> f.hess(np.zeros(2))  # dense, from two Hessian-vector products
    array([[1., 0.],
           [0., 1.]])
    >>> f.jac(np.array([3.0, 4.0]))  # scalar function: the gradient as a row
    array([[3., 4.]])
    >>> f.has("jac"), f.has("vjp")
    (True, True)
    """

    __slots__ = ("_jax_fun", "_name", "_oracles")

    _oracles: Mapping[str, Callable[..., Any]]
    _name: str
    _jax_fun: Callable[..., Any] | None

    def __init__(
        self,
        fun: Callable[[np.ndarray], Any],
        grad: Callable[[np.ndarray], Any] | None = None,
        *,
        hess: Callable[[np.ndarray], Any] | None = None,
        hvp: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        jac: Callable[[np.ndarray], Any] | None = None,
        jvp: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        vjp: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        name: str | None = None,
    ) -> None:
        given = {"value": fun, "grad": grad, "hess": hess, "hvp": hvp, "jac": jac, "jvp": jvp, "vjp": vjp}
        if fun is None:
            raise TypeError("fun must be callable, got None")
        for oracle, callback in given.items():
            if callback is not None and not callable(callback):
                raise TypeError(
                    f"{_ARGUMENT[oracle]} must be callable, got {type(callback).__name__}"
                )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        oracles = {k: c for k, c in given.items() if c is not None}
        self._init(oracles, name if name is not None else getattr(fun, "__name__", "function"), None)

    def _init(
        self, oracles: Mapping[str, Callable[..., Any]], name: str, jax_fun: Callable[..., Any] | None
    ) -> None:
        object.__setattr__(self, "_oracles", MappingProxyType(dict(oracles)))
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_jax_fun", jax_fun)

    @classmethod
    def from_jax(cls, fun: Callable[[Any], Any], *, name: str | None = None) -> Function:
        r"""Build a :class:`Function` whose derivatives come from JAX autodiff.

        ``grad`` is reverse mode; ``hvp`` is forward-over-reverse,
        :math:`v \mapsto \partial_t \nabla f(x + t v)|_{t=0}`, which costs a
        small multiple of a gradient; ``hess`` is ``jax.hessian``; ``jac`` uses
        reverse mode when :math:`m \le n` and forward mode otherwise; ``jvp``
        and ``vjp`` are ``jax.jvp`` and ``jax.vjp``. Each oracle is compiled
        with ``jax.jit`` once (per input shape), on first use.

        Parameters
        ----------
        fun : callable
            JAX-traceable function of a 1-D array, returning a scalar or a 1-D array.
        name : str, optional
            Defaults to ``fun.__name__``.

        Returns
        -------
        Function
            Takes and returns numpy float64 arrays (floats for scalar values).

        Notes
        -----
        Every call runs inside a local ``jax.enable_x64`` context, so the
        computation is in float64 whether or not the user enabled 64-bit mode
        globally, and the global JAX configuration is left untouched. Arrays
        closed over by ``fun`` keep their own dtype (float32 constants are
        promoted when combined with the float64 input). The derivatives of a
        scalar function (``grad``, ``hvp``, ``hess``) raise :class:`ValueError`
        for a vector-valued ``fun``.

        Examples
        --------
        >>> import numpy as np
        >>> import jax.numpy as jnp
        >>> f = Function.from_jax(lambda x: jnp.sum(x ** 3))
        >>> f.grad(np.array([1.0, 2.0]))
        array([ 3., 12.])
        >>> f.hvp(np.array([1.0, 2.0]), np.array([1.0, 0.0]))
        array([6., 0.])
        """
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        import jax
        import jax.numpy as jnp

        def require_scalar(x: Any, oracle: str) -> None:
            shape = jax.eval_shape(fun, x).shape
            if shape != ():
                raise ValueError(
                    f"{oracle} is defined for scalar-valued functions, but fun returns shape "
                    f"{shape}; use jac, jvp or vjp for vector-valued functions"
                )

        def grad(x: Any) -> Any:
            require_scalar(x, "grad")
            return jax.grad(fun)(x)

        def hess(x: Any) -> Any:
            require_scalar(x, "hess")
            return jax.hessian(fun)(x)

        def hvp(x: Any, v: Any) -> Any:
            require_scalar(x, "hvp")
            return jax.jvp(jax.grad(fun), (x,), (v,))[1]

        def jac(x: Any) -> Any:
            m = int(np.prod(jax.eval_shape(fun, x).shape))
            n = x.shape[0]
            # Reverse mode costs m backward passes, forward mode n tangents.
            matrix = jax.jacrev(fun)(x) if m <= n else jax.jacfwd(fun)(x)
            return jnp.reshape(matrix, (m, n))

        def jvp(x: Any, v: Any) -> Any:
            return jax.jvp(fun, (x,), (v,))[1]

        def vjp(x: Any, u: Any) -> Any:
            out, pullback = jax.vjp(fun, x)
            return pullback(jnp.reshape(u, jnp.shape(out)).astype(out.dtype))[0]

        oracles = {
            oracle: _numpy_caller(jax.jit(callback))
            for oracle, callback in (
                ("value", fun), ("grad", grad), ("hess", hess), ("hvp", hvp),
                ("jac", jac), ("jvp", jvp), ("vjp", vjp),
            )
        }
        # A counting view needs a function to view: build the plain Function.
        target = Function if issubclass(cls, CountedFunction) else cls
        self = target.__new__(target)
        self._init(oracles, name if name is not None else getattr(fun, "__name__", "function"), fun)
        return self

    # -- immutability and pickling -------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        if self._jax_fun is not None:
            return (_rebuild_jax, (self._jax_fun, self._name))
        return (_rebuild, (dict(self._oracles), self._name))

    def __repr__(self) -> str:
        given = [k for k in ORACLES[1:] if k in self._oracles]
        kind = ", jax" if self.is_jax else ""
        return f"{type(self).__name__}({self._name!r}, oracles={given}{kind})"

    # -- properties ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """Name used in messages."""
        return self._name

    @property
    def is_jax(self) -> bool:
        """Whether the oracles were generated by :meth:`from_jax`."""
        return self._jax_fun is not None

    def has(self, name: str) -> bool:
        """Whether oracle ``name`` is available, directly or through an exact fallback.

        Parameters
        ----------
        name : {"value", "grad", "hess", "hvp", "jac", "jvp", "vjp"}

        Raises
        ------
        ValueError
            For an unknown oracle name.
        """
        if name not in ORACLES:
            raise ValueError(f"unknown oracle {name!r}; expected one of {list(ORACLES)}")
        given = self._oracles
        fallbacks = {
            "hess": ("hvp",),
            "hvp": ("hess",),
            "jac": ("grad",),
            "jvp": ("jac", "grad"),
            "vjp": ("jac", "grad"),
        }
        return name in given or any(k in given for k in fallbacks.get(name, ()))

    def counting(self) -> CountedFunction:
        """A view of this function that counts oracle calls (this function is not modified)."""
        return CountedFunction(self)

    # -- oracles ---------------------------------------------------------------------

    def _invoke(self, oracle: str, *args: Any) -> Any:
        # The single entry to the user's callables: CountedFunction counts here.
        return self._oracles[oracle](*args)

    def _missing(self, what: str, supply: str) -> NotImplementedError:
        return NotImplementedError(
            f"Function {self._name!r} has no {what}: pass {supply} when constructing "
            f"Function(...), or build it with Function.from_jax(...) to get it by autodiff"
        )

    def value(self, x: Any) -> float | np.ndarray:
        """:math:`f(x)`: a float for a scalar function, a 1-D array for a vector function."""
        return _as_output(self._invoke("value", _as_point(x)), "value")

    __call__ = value

    def grad(self, x: Any) -> np.ndarray:
        r""":math:`\nabla f(x)`, shape ``(n,)``."""
        x = _as_point(x)
        if "grad" not in self._oracles:
            raise self._missing("gradient", "grad=...")
        return _as_vector(self._invoke("grad", x), x.size, "grad")

    def hess(self, x: Any) -> Matrix:
        r""":math:`\nabla^2 f(x)`, shape ``(n, n)``: dense, sparse or a ``LinearOperator``.

        Without a ``hess`` oracle it is assembled densely from ``n`` Hessian-vector
        products (and counted as such).
        """
        x = _as_point(x)
        if "hess" in self._oracles:
            return _as_matrix(self._invoke("hess", x), x.size, "hess", square=True)
        if "hvp" in self._oracles:
            n = x.size
            columns = np.empty((n, n))
            unit = np.zeros(n)
            for i in range(n):
                unit[i] = 1.0
                columns[:, i] = _as_vector(self._invoke("hvp", x, unit.copy()), n, "hvp")
                unit[i] = 0.0
            return columns
        raise self._missing("Hessian", "hess=... or hvp=...")

    def hvp(self, x: Any, v: Any) -> np.ndarray:
        r""":math:`\nabla^2 f(x)\,v`, shape ``(n,)``."""
        x = _as_point(x)
        v = _as_direction(v, x.size, "v")
        if "hvp" in self._oracles:
            return _as_vector(self._invoke("hvp", x, v), x.size, "hvp")
        if "hess" in self._oracles:
            return _matvec(_as_matrix(self._invoke("hess", x), x.size, "hess", square=True), v)
        raise self._missing("Hessian-vector product", "hvp=... or hess=...")

    def jac(self, x: Any) -> Matrix:
        r""":math:`J(x)`, shape ``(m, n)`` (``(1, n)`` for a scalar function)."""
        x = _as_point(x)
        if "jac" in self._oracles:
            return _as_matrix(self._invoke("jac", x), x.size, "jac", square=False)
        if "grad" in self._oracles:
            return _as_vector(self._invoke("grad", x), x.size, "grad")[None, :]
        raise self._missing("Jacobian", "jac=... (or grad=... for a scalar function)")

    def jvp(self, x: Any, v: Any) -> float | np.ndarray:
        r""":math:`J(x)\,v`: shape ``(m,)``, a float for a scalar function."""
        x = _as_point(x)
        v = _as_direction(v, x.size, "v")
        if "jvp" in self._oracles:
            return _as_output(self._invoke("jvp", x, v), "jvp")
        if "jac" in self._oracles:
            return _matvec(_as_matrix(self._invoke("jac", x), x.size, "jac", square=False), v)
        if "grad" in self._oracles:
            return float(_as_vector(self._invoke("grad", x), x.size, "grad") @ v)
        raise self._missing("Jacobian-vector product", "jvp=... or jac=... (or grad=...)")

    def vjp(self, x: Any, u: Any) -> np.ndarray:
        r""":math:`J(x)^\top u`, shape ``(n,)``; ``u`` is a float (or shape ``(1,)``) for scalar ``f``."""
        x = _as_point(x)
        u = np.asarray(u, dtype=np.float64)
        if "vjp" in self._oracles:
            return _as_vector(self._invoke("vjp", x, u), x.size, "vjp")
        if "jac" in self._oracles:
            jac = _as_matrix(self._invoke("jac", x), x.size, "jac", square=False)
            if u.shape != (jac.shape[0],):
                raise ValueError(f"u must have shape ({jac.shape[0]},), got shape {u.shape}")
            return _rmatvec(jac, u)
        if "grad" in self._oracles:
            if u.size != 1:
                raise ValueError(f"u must be a scalar for a scalar function, got shape {u.shape}")
            return float(u.reshape(())) * _as_vector(self._invoke("grad", x), x.size, "grad")
        raise self._missing("vector-Jacobian product", "vjp=... or jac=... (or grad=...)")


class CountedFunction(Function):
    """A view of a :class:`Function` that counts the oracle calls made through it.

    ``counts[k]`` is the number of calls of the underlying oracle ``k``: a
    fallback counts the oracle it really calls (a dense Hessian assembled from
    Hessian-vector products adds ``n`` to ``counts["hvp"]``, a Jacobian of a
    scalar function adds one gradient). The viewed function is not modified;
    a view of a view counts in both.

    Parameters
    ----------
    function : Function
        The function to view.

    Examples
    --------
    >>> import numpy as np
    >>> f = Function(lambda x: x @ x, grad=lambda x: 2 * x, hvp=lambda x, v: 2 * v)
    >>> fc = f.counting()
    >>> _ = fc.grad(np.ones(3)), fc.hess(np.ones(3))
    >>> fc.counts["grad"], fc.counts["hvp"], fc.counts["hess"]
    (1, 3, 0)
    >>> fc.reset_counts()
    >>> sum(fc.counts.values())
    0
    """

    __slots__ = ("_counts", "_parent")

    _parent: Function
    _counts: dict[str, int]

    def __init__(self, function: Function) -> None:
        if not isinstance(function, Function):
            raise TypeError(f"function must be a Function, got {type(function).__name__}")
        self._init(function._oracles, function._name, function._jax_fun)
        object.__setattr__(self, "_parent", function)
        object.__setattr__(self, "_counts", dict.fromkeys(ORACLES, 0))

    def _invoke(self, oracle: str, *args: Any) -> Any:
        self._counts[oracle] += 1
        return self._parent._invoke(oracle, *args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_counted, (self._parent, dict(self._counts)))

    @property
    def function(self) -> Function:
        """The viewed function."""
        return self._parent

    @property
    def counts(self) -> dict[str, int]:
        """Calls per oracle (a copy): value, grad, hess, hvp, jac, jvp, vjp."""
        return dict(self._counts)

    def reset_counts(self) -> None:
        """Set every count to zero."""
        for key in self._counts:
            self._counts[key] = 0


def _rebuild(oracles: dict[str, Callable[..., Any]], name: str) -> Function:
    self = Function.__new__(Function)
    self._init(oracles, name, None)
    return self


def _rebuild_jax(fun: Callable[..., Any], name: str) -> Function:
    return Function.from_jax(fun, name=name)


def _rebuild_counted(parent: Function, counts: dict[str, int]) -> CountedFunction:
    view = CountedFunction(parent)
    view._counts.update(counts)
    return view


def _relative_error(computed: Any, reference: np.ndarray) -> float:
    if isinstance(computed, LinearOperator):
        computed = computed @ np.eye(computed.shape[1])
    elif sparse.issparse(computed):
        computed = computed.toarray()
    computed = np.asarray(computed, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if computed.shape != reference.shape:
        computed = computed.reshape(reference.shape)
    return float(np.linalg.norm(computed - reference) / max(1.0, float(np.linalg.norm(reference))))


def check_derivatives(
    f: Function,
    x: Any,
    *,
    rtol: float = 1e-5,
    seed: int | np.random.Generator | None = None,
) -> dict[str, dict[str, float | bool]]:
    r"""Compare the oracles of ``f`` with central finite differences at ``x``.

    The Jacobian (the gradient, for a scalar function) is differenced
    coordinate by coordinate,

    .. math::

        \hat J_{:,i} = \frac{f(x + h_i e_i) - f(x - h_i e_i)}{2 h_i},
        \qquad h_i = \epsilon^{1/3} \max(1, |x_i|),

    and checked against ``grad``, ``jac``, ``jvp(x, v)`` and ``vjp(x, u)`` for
    random ``v``, ``u``. Second derivatives are checked along a random unit
    direction :math:`v` against
    :math:`(\nabla f(x + h v) - \nabla f(x - h v)) / 2h`, for ``hvp`` and ``hess``.
    The cost is :math:`2n` evaluations of ``fun`` and two gradients.

    Only oracles that ``f`` was given (all of them for :meth:`Function.from_jax`)
    are checked; fallbacks are exact consequences of those. ``grad``, ``hvp``
    and ``hess`` are checked for scalar functions only.

    Parameters
    ----------
    f : Function
    x : array_like, shape (n,)
    rtol : float, default 1e-5
        An oracle passes when ``error <= rtol``.
    seed : int or numpy.random.Generator, optional
        Seeds the random directions, so that the check is reproducible.

    Returns
    -------
    dict
        ``{oracle: {"error": float, "passed": bool}}`` for every checked oracle,
        where ``error = ||computed - differenced|| / max(1, ||differenced||)``
        (relative, with an absolute floor so that stationary points do not
        amplify the finite-difference noise).

    Examples
    --------
    >>> import numpy as np
    >>> f = Function(lambda x: np.sum(np.sin(x)), grad=np.cos, hvp=lambda x, v: -np.sin(x) * v)
    >>> report = check_derivatives(f, np.array([0.1, 0.2]), seed=0)
    >>> sorted(report), all(r["passed"] for r in report.values())
    (['grad', 'hvp'], True)
    """
    if not isinstance(f, Function):
        raise TypeError(f"f must be a Function, got {type(f).__name__}")
    if not rtol > 0:
        raise ValueError(f"rtol must be positive, got {rtol}")
    x = _as_point(x)
    n = x.size
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    direct = set(f._oracles)

    f0 = f.value(x)
    scalar = isinstance(f0, float)
    m = 1 if scalar else f0.size
    step_scale = np.finfo(np.float64).eps ** (1.0 / 3.0)

    jacobian = np.empty((m, n))
    for i in range(n):
        h = step_scale * max(1.0, abs(x[i]))
        forward, backward = x.copy(), x.copy()
        forward[i] += h
        backward[i] -= h
        jacobian[:, i] = (np.atleast_1d(f.value(forward)) - np.atleast_1d(f.value(backward))) / (
            forward[i] - backward[i]
        )

    v = rng.standard_normal(n)
    v /= max(np.linalg.norm(v), np.finfo(np.float64).tiny)
    u = rng.standard_normal(m)
    errors: dict[str, float] = {}
    if scalar and "grad" in direct:
        errors["grad"] = _relative_error(f.grad(x), jacobian[0])
    if "jac" in direct:
        errors["jac"] = _relative_error(f.jac(x), jacobian)
    if "jvp" in direct:
        errors["jvp"] = _relative_error(np.atleast_1d(f.jvp(x, v)), jacobian @ v)
    if "vjp" in direct:
        errors["vjp"] = _relative_error(f.vjp(x, u[0] if scalar else u), jacobian.T @ u)
    if scalar and f.has("grad") and direct & {"hvp", "hess"}:
        h = step_scale * max(1.0, float(np.linalg.norm(x)))
        curvature = (f.grad(x + h * v) - f.grad(x - h * v)) / (2.0 * h)
        if "hvp" in direct:
            errors["hvp"] = _relative_error(f.hvp(x, v), curvature)
        if "hess" in direct:
            errors["hess"] = _relative_error(_matvec(f.hess(x), v), curvature)
    return {k: {"error": e, "passed": bool(e <= rtol)} for k, e in errors.items()}
