"""Log-domain Sinkhorn in Numba: stabilised scaling iterations with absorption (CPU, parallel over rows).

The iterates are the exact log-domain Sinkhorn iterates of :mod:`optkit.kernels.numpy_sinkhorn`, computed the way
Schmitzer (2019, *Stabilized sparse scaling algorithms for entropy regularized transport problems*, SIAM J. Sci.
Comput. 41(3), Algorithm 2) and Chizat et al. (2018, *Scaling algorithms for unbalanced transport problems*,
Algorithm 2) compute them: the potentials are split as

.. math::

    f = \\tilde f + \\varepsilon\\log u,\\qquad g = \\tilde g + \\varepsilon\\log v,\\qquad
    \\tilde K_{ij} = e^{(\\tilde f_i + \\tilde g_j - C_{ij})/\\varepsilon},\\qquad P = \\mathrm{diag}(u)\\,\\tilde K
    \\,\\mathrm{diag}(v),

so that one Sinkhorn update is two matrix-vector products (:math:`u = a / \\tilde K v`,
:math:`v = b / \\tilde K^\\top u`) instead of two log-sum-exps. Whenever a scaling leaves
:math:`[e^{-\\tau}, e^{\\tau}]` the scalings are *absorbed* into :math:`(\\tilde f, \\tilde g)` and
:math:`\\tilde K` is rebuilt by one exact log-domain ``f`` update (a stable log-sum-exp pass), after which the
rows of :math:`\\tilde K` sum to :math:`a` and its entries lie below 1; entries that underflow to 0 then stand for
plan entries below :math:`e^{2\\tau}\\cdot` ``tiny``, which is negligible. A row (column) whose scaled sum
:math:`(\\tilde K v)_i` (:math:`(\\tilde K^\\top u)_j`) underflows gets an exact log-domain update of its own
potential instead. This is what lets the kernel converge at :math:`\\varepsilon = 10^{-4}` on a max-normalised
cost, where :math:`e^{-C/\\varepsilon}` underflows and kernel-domain Sinkhorn fails.

Speed: the two products of one update are fused into a single pass over :math:`\\tilde K`: row :math:`i` gives
:math:`(\\tilde K v)_i`, hence the new :math:`u_i`, and, while the row is still in cache, its contribution
:math:`u_i \\tilde K_{i\\cdot}` to :math:`\\tilde K^\\top u` (accumulated per row block, then reduced). The L1
marginal error of the current iterate, :math:`\\sum_i |u_i(\\tilde K v)_i - a_i|` (columns are exact after a ``v``
update), falls out of the same pass, so it is measured at every update for free and the kernel stops at the
first update that meets ``tol``.

Floating point: the matrix :math:`\\tilde K` is stored in the input dtype (float32 or float64); potentials,
scalings and all sums are float64. Only the inner products use ``fastmath={"reassoc", "contract"}`` (so that
LLVM can vectorise the sums); no flag that assumes finite values is used, so ``-inf`` potentials of zero-mass
points and NaN detection behave as in IEEE arithmetic.
"""

from __future__ import annotations

import math
import weakref

import numba
import numpy as np
from numba import njit, prange

__all__ = ["clear_workspace", "sinkhorn_log_chunk"]

_FAST = {"reassoc", "contract"}
# Below this many cost entries a pass takes ~100 us and starting threads costs more than it saves.
_PARALLEL_MIN_ENTRIES = 1 << 18


@njit(cache=True, inline="always")
def _exp(t):  # pragma: no cover
    """exp(t), flushed to 0 below e^-700 (1e-304, either relative to the largest entry of a shifted row or column
    or as absolute plan mass, so no float64 sum changes); avoids exp's slow subnormal path at small epsilon."""
    return math.exp(t) if t > -700.0 else 0.0


@njit(cache=True)
def _rebuild_block(blk, cost, a, log_a, f_state, g, inv_eps, epsilon, K, part, starts, row_err,
                   f_next):  # pragma: no cover
    """Exact log-domain ``f`` update from ``g`` that also builds :math:`\\tilde K` (rows summing to ``a``), on the
    rows of block ``blk``: ``row_err[blk]`` receives their error at the current iterate ``(f_state, g)`` and
    ``part[blk]`` their column sums of the new :math:`\\tilde K`."""
    m = cost.shape[1]
    acc = part[blk]
    acc[:] = 0.0
    err = 0.0
    for i in range(starts[blk], starts[blk + 1]):
        shift = -np.inf
        for j in range(m):
            t = g[j] - cost[i, j]
            if t > shift:
                shift = t
        total = 0.0
        for j in range(m):
            x = _exp((g[j] - cost[i, j] - shift) * inv_eps)
            K[i, j] = x
            total += x
        # Row sum of the current plan exp((f_state_i + g_j - C_ij)/eps) = exp((f_state_i + shift)/eps) * total.
        err += abs(math.exp((f_state[i] + shift) * inv_eps) * total - a[i])
        if a[i] > 0.0:
            f_next[i] = epsilon * (log_a[i] - math.log(total)) - shift
            scale = a[i] / total
            for j in range(m):
                x = K[i, j] * scale
                K[i, j] = x
                acc[j] += x
        else:
            f_next[i] = -np.inf
            for j in range(m):
                K[i, j] = 0.0
    row_err[blk] = err


@njit(cache=True, parallel=True)
def _rebuild(cost, a, log_a, f_state, g, inv_eps, epsilon, K, part, starts, row_err, f_next):  # pragma: no cover
    for blk in prange(starts.shape[0] - 1):
        _rebuild_block(blk, cost, a, log_a, f_state, g, inv_eps, epsilon, K, part, starts, row_err, f_next)


@njit(cache=True)
def _rebuild_serial(cost, a, log_a, f_state, g, inv_eps, epsilon, K, part, starts, row_err,
                    f_next):  # pragma: no cover
    for blk in range(starts.shape[0] - 1):
        _rebuild_block(blk, cost, a, log_a, f_state, g, inv_eps, epsilon, K, part, starts, row_err, f_next)


@njit(cache=True)
def _log(x):  # pragma: no cover
    return math.log(x) if x > 0.0 else -np.inf


@njit(cache=True, fastmath=_FAST)
def _dot_row(K, i, v):  # pragma: no cover
    total = 0.0
    for j in range(v.shape[0]):
        total += K[i, j] * v[j]
    return total


@njit(cache=True, fastmath=_FAST)
def _axpy_row(acc, scale, K, i):  # pragma: no cover
    for j in range(acc.shape[0]):
        acc[j] += scale * K[i, j]


@njit(cache=True)
def _scaling_block(blk, cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                   f_next):  # pragma: no cover
    """One fused pass over the rows of block ``blk``: :math:`r = \\tilde K v`, the row error,
    :math:`u^+ = a / r`, and ``part[blk]`` = their part of :math:`\\tilde K^\\top u^+`. Rows whose ``r``
    underflows get an exact log-domain update (``f_next``, :math:`u^+ = 1` and their row of :math:`\\tilde K`
    rebuilt)."""
    m = K.shape[1]
    acc = part[blk]
    acc[:] = 0.0
    err = 0.0
    for i in range(starts[blk], starts[blk + 1]):
        r = _dot_row(K, i, v)
        err += abs(u[i] * r - a[i])
        f_next[i] = f[i]
        if a[i] <= 0.0:
            u_next[i] = 0.0
            continue
        if r > tiny:
            scale = a[i] / r
            u_next[i] = scale
            _axpy_row(acc, scale, K, i)
            continue
        # Underflow: f_i = eps log a_i - eps LSE_j((g_j + eps log v_j - C_ij)/eps), then rebuild the row.
        shift = -np.inf
        for j in range(m):
            t = g[j] + epsilon * _log(v[j]) - cost[i, j]
            if t > shift:
                shift = t
        total = 0.0
        for j in range(m):
            total += _exp((g[j] + epsilon * _log(v[j]) - cost[i, j] - shift) * inv_eps)
        fi = epsilon * (log_a[i] - math.log(total)) - shift
        f_next[i] = fi
        u_next[i] = 1.0
        for j in range(m):
            x = _exp((fi + g[j] - cost[i, j]) * inv_eps)
            K[i, j] = x
            acc[j] += x
    row_err[blk] = err


@njit(cache=True, parallel=True)
def _scaling_pass(cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                  f_next):  # pragma: no cover
    for blk in prange(starts.shape[0] - 1):
        _scaling_block(blk, cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                       f_next)


@njit(cache=True)
def _scaling_pass_serial(cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                         f_next):  # pragma: no cover
    for blk in range(starts.shape[0] - 1):
        _scaling_block(blk, cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                       f_next)


@njit(cache=True)
def _add(x, y):  # pragma: no cover
    for j in range(x.shape[0]):
        x[j] += y[j]


@njit(cache=True)
def _column_update(cost, K, b, log_b, f, g, u, v, part, inv_eps, epsilon, tiny, parallel):  # pragma: no cover
    """:math:`v = b / \\tilde K^\\top u` from the block partial sums; columns whose sum underflows get an exact
    log-domain update of ``g_j`` (and their column of :math:`\\tilde K` rebuilt). Returns how many did."""
    n, m = K.shape
    nblocks = part.shape[0]
    flagged = np.zeros(m, dtype=np.bool_)
    total_col = part[0].copy()
    for blk in range(1, nblocks):
        _add(total_col, part[blk])
    for j in range(m):
        s = total_col[j]
        if b[j] <= 0.0:
            v[j] = 0.0
        elif s > tiny:
            v[j] = b[j] / s
        else:
            flagged[j] = True
    count = 0
    for j in range(m):
        if flagged[j]:
            count += 1
    if count == 0:
        return 0
    cols = np.empty(count, dtype=np.int64)
    k = 0
    for j in range(m):
        if flagged[j]:
            cols[k] = j
            k += 1
    log_u = np.empty(n)
    for i in range(n):
        log_u[i] = math.log(u[i]) if u[i] > 0.0 else -np.inf
    if parallel:
        _exact_columns(cost, K, log_b, f, g, v, log_u, cols, inv_eps, epsilon)
    else:
        _exact_columns_serial(cost, K, log_b, f, g, v, log_u, cols, inv_eps, epsilon)
    return count


@njit(cache=True)
def _exact_column(j, cost, K, log_b, f, g, v, log_u, inv_eps, epsilon):  # pragma: no cover
    n = K.shape[0]
    shift = -np.inf
    for i in range(n):
        t = f[i] + epsilon * log_u[i] - cost[i, j]
        if t > shift:
            shift = t
    total = 0.0
    for i in range(n):
        total += _exp((f[i] + epsilon * log_u[i] - cost[i, j] - shift) * inv_eps)
    gj = epsilon * (log_b[j] - math.log(total)) - shift
    g[j] = gj
    v[j] = 1.0
    for i in range(n):
        K[i, j] = _exp((f[i] + gj - cost[i, j]) * inv_eps)


@njit(cache=True, parallel=True)
def _exact_columns(cost, K, log_b, f, g, v, log_u, cols, inv_eps, epsilon):  # pragma: no cover
    for q in prange(cols.shape[0]):
        _exact_column(cols[q], cost, K, log_b, f, g, v, log_u, inv_eps, epsilon)


@njit(cache=True)
def _exact_columns_serial(cost, K, log_b, f, g, v, log_u, cols, inv_eps, epsilon):  # pragma: no cover
    for q in range(cols.shape[0]):
        _exact_column(cols[q], cost, K, log_b, f, g, v, log_u, inv_eps, epsilon)


@njit(cache=True)
def _out_of_range(x, weights, low, high):  # pragma: no cover
    for k in range(x.shape[0]):
        if weights[k] > 0.0 and not (low <= x[k] <= high):
            return True
    return False


@njit(cache=True)
def _chunk(cost, a, b, log_a, log_b, f, g, u, v, f_next, u_next, part, row_err, K, starts, epsilon, max_updates, tol,
           tau, tiny, parallel, resume, err):  # pragma: no cover
    """The update loop on the state ``(f, g, u, v)`` (modified in place).

    Each round is one pass (a rebuild after an absorption, else a fused scaling pass) that measures the error of
    the current iterate and prepares the next ``u`` (``f_next``, ``u_next``, ``part``); then, unless the loop
    stops, the commit of that ``u`` and the ``v`` update. On return the pass for the returned iterate is done, so
    a call with ``resume=True`` (and its ``err``) continues without repeating it.
    """
    n, m = cost.shape
    nblocks = starts.shape[0] - 1
    inv_eps = 1.0 / epsilon
    high = math.exp(tau)
    low = 1.0 / high
    done = 0
    rebuild = True
    rebuilds = 0
    fallback_columns = 0
    pending = resume
    while True:
        if not pending:
            if rebuild:
                rebuilds += 1
                # Absorb the scalings (f + eps log u and g + eps log v are unchanged), then rebuild K by an exact
                # log-domain f update.
                for j in range(m):
                    if v[j] != 1.0:
                        g[j] += epsilon * math.log(v[j]) if v[j] > 0.0 else -np.inf
                    v[j] = 1.0
                for i in range(n):
                    if u[i] != 1.0:
                        f[i] += epsilon * math.log(u[i]) if u[i] > 0.0 else -np.inf
                    u[i] = 1.0
                if parallel:
                    _rebuild(cost, a, log_a, f, g, inv_eps, epsilon, K, part, starts, row_err, f_next)
                else:
                    _rebuild_serial(cost, a, log_a, f, g, inv_eps, epsilon, K, part, starts, row_err, f_next)
                for i in range(n):
                    u_next[i] = 1.0
            elif parallel:
                _scaling_pass(cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err, u_next,
                              f_next)
            else:
                _scaling_pass_serial(cost, K, a, log_a, f, g, u, v, inv_eps, epsilon, tiny, part, starts, row_err,
                                     u_next, f_next)
            err = 0.0
            for blk in range(nblocks):
                err += row_err[blk]
        pending = False
        if err <= tol or done >= max_updates or math.isnan(err):
            break
        for i in range(n):
            f[i] = f_next[i]
            u[i] = u_next[i]
        fallback_columns += _column_update(cost, K, b, log_b, f, g, u, v, part, inv_eps, epsilon, tiny, parallel)
        done += 1
        rebuild = _out_of_range(u, a, low, high) or _out_of_range(v, b, low, high)
    return err, done, rebuilds, fallback_columns


@njit(cache=True)
def _potentials(f, u, epsilon):  # pragma: no cover
    out = np.empty(f.shape[0])
    for i in range(f.shape[0]):
        out[i] = f[i] + epsilon * math.log(u[i]) if u[i] > 0.0 else -np.inf
    return out


@njit(cache=True)
def _safe_log(w):  # pragma: no cover
    out = np.empty(w.shape[0])
    for i in range(w.shape[0]):
        out[i] = math.log(w[i]) if w[i] > 0.0 else -np.inf
    return out


def _frozen(x: np.ndarray) -> bool:
    """An array that owns its data and is read-only (as TransportProblem stores them): safe to resume on."""
    return isinstance(x, np.ndarray) and x.flags.owndata and not x.flags.writeable


class _Workspace:
    """The n x m work matrix and the loop state of the last call, kept between calls.

    Allocating (and page-faulting) an n x m matrix at every chunk would cost as much as several updates at
    n = 4000, and rebuilding it from the returned potentials costs n m exponentials; so when a call continues
    exactly where the previous one stopped (same read-only cost and weights, same epsilon, and the very
    potentials it returned), the loop resumes from its saved state instead.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.K: np.ndarray | None = None
        self.inputs: tuple = ()
        self.state: dict[str, object] = {}

    def matrix(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        if self.K is None or self.K.shape != shape or self.K.dtype != dtype:
            self.clear()
            self.K = np.empty(shape, dtype=dtype)
        return self.K

    def resumable(self, cost: np.ndarray, a: np.ndarray, b: np.ndarray, f: np.ndarray, g: np.ndarray,
                  epsilon: float, nblocks: int) -> bool:
        if not self.state or not all(_frozen(x) for x in (cost, a, b)):
            return False
        refs = self.inputs
        if refs[0]() is not cost or refs[1]() is not a or refs[2]() is not b or refs[3:] != (epsilon, nblocks):
            return False
        return np.array_equal(f, self.state["f_out"]) and np.array_equal(g, self.state["g_out"])

    def remember(self, cost: np.ndarray, a: np.ndarray, b: np.ndarray, epsilon: float, nblocks: int,
                 state: dict[str, object]) -> None:
        if all(_frozen(x) for x in (cost, a, b)):
            self.inputs = (weakref.ref(cost), weakref.ref(a), weakref.ref(b), epsilon, nblocks)
            self.state = state
        else:
            self.inputs, self.state = (), {}


_WORKSPACE = _Workspace()
#: Diagnostics of the last call: absorptions (full log-domain rebuilds), exact column updates, and whether it
#: resumed the previous call's state.
_LAST_CALL: dict[str, int] = {}


def clear_workspace() -> None:
    """Release the work matrix and the saved loop state kept between calls."""
    _WORKSPACE.clear()


def sinkhorn_log_chunk(
    cost: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    g: np.ndarray,
    epsilon: float,
    max_updates: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Run at most ``max_updates`` Sinkhorn updates, stopping once the L1 marginal error is <= ``tol``.

    Same contract as :func:`optkit.kernels.numpy_sinkhorn.sinkhorn_log_chunk`: one update is the pair

    .. math::

        f \\leftarrow \\varepsilon\\log a - \\varepsilon\\,\\mathrm{LSE}_j\\big((g_j - C_{ij})/\\varepsilon\\big),\\qquad
        g \\leftarrow \\varepsilon\\log b - \\varepsilon\\,\\mathrm{LSE}_i\\big((f_i - C_{ij})/\\varepsilon\\big),

    (Peyré & Cuturi, *Computational Optimal Transport*, eq. 4.43), computed by stabilised scaling (see the module
    docstring). The error :math:`\\sum_i |\\sum_j P_{ij} - a_i|` (the column marginals are exact after a ``g``
    update) is measured before the first update and after every update.

    Parameters
    ----------
    cost : (n, m) float32 or float64 array
    a, b : (n,), (m,) non-negative weights of equal mass, same dtype as ``cost``
    f, g : (n,), (m,) starting potentials
    epsilon : float
        Regularization, > 0.
    max_updates : int
        Update budget.
    tol : float
        L1 marginal error at which to stop.

    Returns
    -------
    f, g : ndarray
        The potentials (dtype of ``cost``; ``-inf`` at zero-mass points).
    error : float
        The row L1 marginal error of the plan ``(f, g)`` define.
    updates : int
        Updates made (0 when the input already meets ``tol``).
    """
    cost_in, a_in, b_in = cost, a, b
    cost = np.ascontiguousarray(cost)
    dtype = cost.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"cost must be float32 or float64, got {dtype}")
    n, m = cost.shape
    epsilon = float(epsilon)
    if dtype == np.float64:
        tau, tiny = 50.0, 1e-280
    else:
        tau, tiny = 12.0, 1e-30
    parallel = n * m >= _PARALLEL_MIN_ENTRIES and numba.get_num_threads() > 1
    nblocks = max(1, min(n, max(16, 2 * numba.get_num_threads()))) if parallel else 1
    K = _WORKSPACE.matrix((n, m), dtype)
    resume = _WORKSPACE.resumable(cost_in, a_in, b_in, f, g, epsilon, nblocks)
    if resume:
        state = _WORKSPACE.state
    else:
        a64 = np.ascontiguousarray(a, dtype=np.float64)
        b64 = np.ascontiguousarray(b, dtype=np.float64)
        state = {
            "a": a64, "b": b64, "log_a": _safe_log(a64), "log_b": _safe_log(b64),
            "f": np.array(f, dtype=np.float64), "g": np.array(g, dtype=np.float64),
            "u": np.ones(n), "v": np.ones(m), "f_next": np.empty(n), "u_next": np.empty(n),
            "part": np.empty((nblocks, m)), "row_err": np.empty(nblocks),
            "starts": np.linspace(0, n, nblocks + 1).astype(np.int64), "err": np.inf,
        }
    err, done, rebuilds, fallbacks = _chunk(
        cost, state["a"], state["b"], state["log_a"], state["log_b"], state["f"], state["g"], state["u"],
        state["v"], state["f_next"], state["u_next"], state["part"], state["row_err"], K, state["starts"], epsilon,
        int(max_updates), float(tol), tau, tiny, parallel, resume, float(state["err"]),
    )
    f_out = _potentials(state["f"], state["u"], epsilon).astype(dtype, copy=False)
    g_out = _potentials(state["g"], state["v"], epsilon).astype(dtype, copy=False)
    state.update(err=err, f_out=f_out.copy(), g_out=g_out.copy())
    _WORKSPACE.remember(cost_in, a_in, b_in, epsilon, nblocks, state)
    _LAST_CALL.update(rebuilds=int(rebuilds), fallback_columns=int(fallbacks), resumed=bool(resume))
    return f_out, g_out, float(err), int(done)
