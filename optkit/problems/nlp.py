r"""Equality-constrained nonlinear programs.

.. math::

    \min_{x\in\mathbb{R}^n} f(x) \quad \text{s.t.}\quad c(x) = 0,\qquad c:\mathbb{R}^n\to\mathbb{R}^m,

with Lagrangian :math:`\mathcal L(x,\lambda) = f(x) + \lambda^\top c(x)`, constraint Jacobian
:math:`G(x) = \nabla c(x)^\top \in \mathbb{R}^{m\times n}` and KKT residual
:math:`\|\nabla\mathcal L\| = \|(\nabla_x\mathcal L, c)\|` (Hong, Na, Mahoney & Kolar, ICML 2023, Section 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from optkit.problems.functions import CountedFunction, Function

__all__ = ["NonlinearProgram"]

Matrix = Any


def _as_function(value: Any, argument: str) -> Function:
    if isinstance(value, Function):
        return value
    if callable(value):
        return Function.from_jax(value, name=getattr(value, "__name__", argument))
    raise TypeError(f"{argument} must be an optkit Function or a JAX-traceable callable, got {type(value).__name__}")


def _dense(matrix: Matrix) -> np.ndarray:
    if isinstance(matrix, LinearOperator):
        return np.asarray(matrix @ np.eye(matrix.shape[1]), dtype=np.float64)
    if sparse.issparse(matrix):
        return matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


class NonlinearProgram:
    r"""An equality-constrained nonlinear program :math:`\min f(x)` s.t. :math:`c(x) = 0`.

    Parameters
    ----------
    f : Function or callable
        The objective. A plain callable must be JAX-traceable; it is wrapped with :meth:`Function.from_jax`.
        A :class:`~optkit.problems.functions.Function` needs ``grad`` (and ``hess`` or ``hvp`` unless
        ``lagrangian_hessian``/``lagrangian_hvp`` is given).
    c : Function or callable
        The constraints, returning a 1-D array of length ``m >= 1``; needs a Jacobian (``jac``, dense,
        :mod:`scipy.sparse` or a ``LinearOperator``) or the products ``jvp`` and ``vjp``.
    x0 : array_like, shape (n,)
        Starting point; :math:`f`, :math:`c` and their first derivatives must be finite there.
    lam0 : array_like, shape (m,), optional
        Starting multipliers (zeros by default).
    lagrangian_hessian : callable, optional
        ``lagrangian_hessian(x, lam)`` returns :math:`\nabla^2_x\mathcal L(x,\lambda)` (dense, sparse or a
        ``LinearOperator``). Without it, the Hessian comes from JAX autodiff when ``c`` is a JAX function,
        or from ``lagrangian_hvp``, or (for ``linear_constraints=True``) from ``f`` alone.
    lagrangian_hvp : callable, optional
        ``lagrangian_hvp(x, lam, v)`` returns :math:`\nabla^2_x\mathcal L(x,\lambda)\,v` (matrix-free).
    linear_constraints : bool, default False
        Declares :math:`c` affine, so that :math:`\nabla^2_x\mathcal L = \nabla^2 f`.
    name : str, optional
        Used in messages.

    Raises
    ------
    ValueError
        Naming the argument: ``x0`` not a finite 1-D array, ``lam0`` of the wrong length, a non-finite
        ``f``/``c``/derivative at ``x0``, a Jacobian whose shape disagrees with ``c``.
    TypeError
        When ``f`` or ``c`` is neither a Function nor callable.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> problem = NonlinearProgram(lambda x: x[0] + x[1], lambda x: jnp.array([x[0]**2 + x[1]**2 - 2.0]),
    ...                            x0=np.array([1.0, -1.0]))
    >>> problem.n, problem.m
    (2, 1)
    >>> gx, cx = problem.kkt_residual(np.array([-1.0, -1.0]), np.array([0.5]))
    >>> float(np.linalg.norm(np.concatenate([gx, cx])))
    0.0
    """

    def __init__(
        self,
        f: Any,
        c: Any,
        x0: Any,
        lam0: Any = None,
        *,
        lagrangian_hessian: Callable[[np.ndarray, np.ndarray], Matrix] | None = None,
        lagrangian_hvp: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
        linear_constraints: bool = False,
        name: str | None = None,
    ) -> None:
        f = _as_function(f, "f")
        c = _as_function(c, "c")
        for argument, value in (("lagrangian_hessian", lagrangian_hessian), ("lagrangian_hvp", lagrangian_hvp)):
            if value is not None and not callable(value):
                raise TypeError(f"{argument} must be callable, got {type(value).__name__}")
        x0 = np.array(x0, dtype=np.float64)
        if x0.ndim != 1 or x0.size == 0:
            raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x0.shape}")
        if not np.all(np.isfinite(x0)):
            raise ValueError("x0 must be finite (it contains NaN or inf)")
        fx = f.value(x0)
        if not isinstance(fx, float):
            raise ValueError(f"f must be scalar-valued, got an output of shape {np.shape(fx)}")
        if not np.isfinite(fx):
            raise ValueError(f"f is not finite at x0 (f(x0) = {fx})")
        cx = np.atleast_1d(np.asarray(c.value(x0), dtype=np.float64))
        if cx.ndim != 1 or cx.size == 0:
            raise ValueError(f"c must return a non-empty 1-D array, got shape {cx.shape}")
        if not np.all(np.isfinite(cx)):
            raise ValueError(f"c is not finite at x0 (components {np.flatnonzero(~np.isfinite(cx)).tolist()})")
        n, m = x0.size, cx.size
        gx = f.grad(x0)
        if not np.all(np.isfinite(gx)):
            raise ValueError("the gradient of f is not finite at x0")
        if c.has("jac"):
            jac = c.jac(x0)
            if tuple(jac.shape) != (m, n):
                raise ValueError(f"the Jacobian of c has shape {tuple(jac.shape)} but c(x0) has {m} components and "
                                 f"x0 has {n}: expected ({m}, {n})")
            if not isinstance(jac, LinearOperator):
                values = jac.data if sparse.issparse(jac) else jac
                if not np.all(np.isfinite(values)):
                    raise ValueError("the Jacobian of c is not finite at x0")
        elif not (c.has("jvp") and c.has("vjp")):
            raise ValueError("c needs a Jacobian: pass jac=... (or jvp=... and vjp=...) to its Function")
        if lam0 is None:
            lam0 = np.zeros(m)
        lam0 = np.array(lam0, dtype=np.float64)
        if lam0.shape != (m,):
            raise ValueError(f"lam0 must have shape ({m},) (one multiplier per constraint), got {lam0.shape}")
        if not np.all(np.isfinite(lam0)):
            raise ValueError("lam0 must be finite")
        if lagrangian_hessian is None and lagrangian_hvp is None and not linear_constraints and not c.is_jax:
            raise ValueError("c is not a JAX function, so the Lagrangian Hessian cannot be derived: pass "
                             "lagrangian_hessian=... or lagrangian_hvp=..., or linear_constraints=True")
        x0.setflags(write=False)
        lam0.setflags(write=False)
        self._f, self._c = f, c
        self._x0, self._lam0 = x0, lam0
        self._n, self._m = n, m
        self._lagrangian_hessian = lagrangian_hessian
        self._lagrangian_hvp = lagrangian_hvp
        self._linear = bool(linear_constraints)
        self._name = name or f.name
        self._jax_cache: dict[str, Callable[..., Any]] = {}

    # -- properties ----------------------------------------------------------------------------------------------

    @property
    def f(self) -> Function:
        """The objective :math:`f`."""
        return self._f

    @property
    def c(self) -> Function:
        """The constraint function :math:`c`."""
        return self._c

    @property
    def x0(self) -> np.ndarray:
        """Starting point (read-only)."""
        return self._x0

    @property
    def lam0(self) -> np.ndarray:
        """Starting multipliers (read-only)."""
        return self._lam0

    @property
    def n(self) -> int:
        """Number of variables."""
        return self._n

    @property
    def m(self) -> int:
        """Number of equality constraints."""
        return self._m

    @property
    def name(self) -> str:
        return self._name

    @property
    def linear_constraints(self) -> bool:
        return self._linear

    def __repr__(self) -> str:
        return f"NonlinearProgram({self._name!r}, n={self._n}, m={self._m})"

    # -- oracles ---------------------------------------------------------------------------------------------------

    def objective(self, x: Any) -> float:
        """:math:`f(x)`."""
        return float(self._f.value(x))

    def gradient(self, x: Any) -> np.ndarray:
        r""":math:`\nabla f(x)`."""
        return self._f.grad(x)

    def constraints(self, x: Any) -> np.ndarray:
        """:math:`c(x)`, shape ``(m,)``."""
        return np.atleast_1d(np.asarray(self._c.value(x), dtype=np.float64))

    def jacobian(self, x: Any) -> Matrix:
        r""":math:`G(x)`, shape ``(m, n)``: dense, sparse, or a ``LinearOperator`` built from ``jvp``/``vjp``."""
        if self._c.has("jac"):
            return self._c.jac(x)
        x = np.asarray(x, dtype=np.float64)
        c = self._c
        return LinearOperator((self._m, self._n), matvec=lambda v: c.jvp(x, np.ravel(v)),
                              rmatvec=lambda u: c.vjp(x, np.ravel(u)), dtype=np.float64)

    def lagrangian(self, x: Any, lam: Any) -> float:
        r""":math:`\mathcal L(x,\lambda) = f(x) + \lambda^\top c(x)`."""
        return self.objective(x) + float(np.asarray(lam) @ self.constraints(x))

    def lagrangian_gradient(self, x: Any, lam: Any, jacobian: Matrix | None = None) -> np.ndarray:
        r""":math:`\nabla_x\mathcal L = \nabla f(x) + G(x)^\top\lambda`."""
        G = self.jacobian(x) if jacobian is None else jacobian
        lam = np.asarray(lam, dtype=np.float64)
        product = G.rmatvec(lam) if isinstance(G, LinearOperator) else G.T @ lam
        return self.gradient(x) + np.asarray(product, dtype=np.float64).reshape(-1)

    def kkt_residual(self, x: Any, lam: Any) -> tuple[np.ndarray, np.ndarray]:
        r"""The KKT components :math:`(\nabla_x\mathcal L(x,\lambda),\ c(x))`; their joint norm is the stopping measure."""
        return self.lagrangian_gradient(x, lam), self.constraints(x)

    def kkt_norm(self, x: Any, lam: Any) -> float:
        r""":math:`\|(\nabla_x\mathcal L, c)\|_2`."""
        gx, cx = self.kkt_residual(x, lam)
        return float(np.sqrt(gx @ gx + cx @ cx))

    def lagrangian_hessian(self, x: Any, lam: Any) -> Matrix:
        r""":math:`\nabla^2_x\mathcal L(x,\lambda) = \nabla^2 f(x) + \sum_i \lambda_i\nabla^2 c_i(x)`.

        Dense, sparse or a ``LinearOperator`` (when only Hessian-vector products are available).
        """
        x = np.asarray(x, dtype=np.float64)
        lam = np.asarray(lam, dtype=np.float64)
        if self._lagrangian_hessian is not None:
            out = self._lagrangian_hessian(x, lam)
            if not (sparse.issparse(out) or isinstance(out, LinearOperator)):
                out = np.asarray(out, dtype=np.float64)
            if tuple(out.shape) != (self._n, self._n):
                raise ValueError(f"lagrangian_hessian must return shape ({self._n}, {self._n}), got {out.shape}")
            return out
        if self._lagrangian_hvp is not None:
            return LinearOperator((self._n, self._n), matvec=lambda v: self.lagrangian_hvp(x, lam, np.ravel(v)),
                                  rmatvec=lambda v: self.lagrangian_hvp(x, lam, np.ravel(v)), dtype=np.float64)
        hf = self._f.hess(x)
        if self._linear:
            return hf
        hc = self._constraint_curvature(x, lam)
        if isinstance(hf, LinearOperator):
            return hf + aslinearoperator(hc)
        if sparse.issparse(hf):
            return (hf + sparse.csr_matrix(hc)).tocsr()
        return hf + hc

    def lagrangian_hvp(self, x: Any, lam: Any, v: Any) -> np.ndarray:
        r""":math:`\nabla^2_x\mathcal L(x,\lambda)\,v`."""
        x = np.asarray(x, dtype=np.float64)
        lam = np.asarray(lam, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        if self._lagrangian_hvp is not None:
            return np.asarray(self._lagrangian_hvp(x, lam, v), dtype=np.float64).reshape(-1)
        if self._lagrangian_hessian is not None:
            return np.asarray(self.lagrangian_hessian(x, lam) @ v, dtype=np.float64).reshape(-1)
        out = self._f.hvp(x, v)
        if not self._linear:
            out = out + self._jax("hvp")(x, lam, v)
        return out

    def _constraint_curvature(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        return self._jax("hess")(x, lam)

    def _jax(self, kind: str) -> Callable[..., np.ndarray]:
        """Compiled :math:`\\nabla^2(\\lambda^\\top c)` (or its product with v) by JAX autodiff."""
        if kind not in self._jax_cache:
            import jax
            import jax.numpy as jnp

            from optkit.problems.functions import _numpy_caller

            cfun = self._c._jax_fun

            def weighted(x: Any, lam: Any) -> Any:
                return jnp.dot(lam, jnp.reshape(cfun(x), (-1,)))

            if kind == "hess":
                compiled = jax.jit(jax.hessian(weighted, argnums=0))
            else:
                def hvp(x: Any, lam: Any, v: Any) -> Any:
                    return jax.jvp(lambda y: jax.grad(weighted)(y, lam), (x,), (v,))[1]

                compiled = jax.jit(hvp)
            self._jax_cache[kind] = _numpy_caller(compiled)
        return self._jax_cache[kind]

    # -- derived views -------------------------------------------------------------------------------------------

    def counting(self) -> NonlinearProgram:
        """A copy whose ``f`` and ``c`` count their oracle calls (see :attr:`counts`); this problem is unchanged."""
        clone = object.__new__(NonlinearProgram)
        clone.__dict__.update(self.__dict__)
        clone._f = self._f.counting()
        clone._c = self._c.counting()
        return clone

    @property
    def counts(self) -> dict[str, int]:
        """Oracle calls made through a :meth:`counting` copy: ``f_value``, ``f_grad``, ``c_value``, ``c_jac`` ..."""
        out: dict[str, int] = {}
        for prefix, fun in (("f", self._f), ("c", self._c)):
            if isinstance(fun, CountedFunction):
                out.update({f"{prefix}_{k}": v for k, v in fun.counts.items() if v})
        return out

    def dense_jacobian(self, x: Any) -> np.ndarray:
        """:math:`G(x)` as a dense array."""
        return _dense(self.jacobian(x))

    def dense_lagrangian_hessian(self, x: Any, lam: Any) -> np.ndarray:
        r""":math:`\nabla^2_x\mathcal L` as a dense array."""
        return _dense(self.lagrangian_hessian(x, lam))
