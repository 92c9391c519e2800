"""Bilevel solvers on benchopt's quadratic instance (d = 100, n = 1024, built with benchopt's recipe): time and
oracle calls to reach ||grad h(x)||^2 <= 1e-8 (h the hyper-objective, its gradient exact by linear solves, as
benchopt's ``value`` metric), for optkit's deterministic ``penalty``, ``aid`` and ``f2sa`` beside jaxopt's implicit
differentiation (jaxopt is deprecated upstream and used here only as the peer; ``pip install jaxopt``). optkit runs
on the NumPy backend (hand-written NumPy oracles of the toy) and on ``backend="jax"`` (the same instance with
JAX-traceable levels, ``benchopt_quadratic(..., jax=True)``: autodiff oracles; compile time excluded by an untimed
first run). On JAX, ``aid`` makes one compiled call per hypergradient evaluation, ``penalty`` one per watchdog
segment (up to 10 BB steps) and ``f2sa`` one per ``check_every`` = 10 outer iterations, so their callbacks, and
with them this benchmark's stop at the target, come at segment ends: the overshoot is part of the time and of the
counts.

Accounting: oracle calls = gradients of either level + lower Hessian-vector products (function values, used by our
inner backtracking, are listed separately). Every run stops at the first iterate meeting the target, checked by a
callback whose own time (one 100 x 100 linear solve) is subtracted. Times are CPU seconds (``time.process_time``)
with BLAS and XLA limited to one thread (the machine is shared; wall times are reported beside them), the best of
3 runs for both libraries. jaxopt runs jitted (compile time excluded); its oracle calls are counted in a separate, untimed run with ``jax.debug.callback``
counters in the two objectives (every evaluation, whatever derivative it feeds, counts once).

Usage: python benchmarks/bilevel.py [--seed 0] [--target 1e-8] [--quick] [--no-jaxopt] [--no-jax]
Writes benchmarks/results/bilevel.json.
"""

from __future__ import annotations

import os

# single-threaded CPU timings (the machine is shared): BLAS and XLA on one thread, set before numpy/jax import
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import optkit
from optkit.problems.library.bilevel_toys import benchopt_quadratic

RESULTS = Path(__file__).parent / "results"


def run_optkit(toy, method: str, target: float, repeats: int = 3, **options) -> dict:
    """Best of ``repeats`` runs (oracle counts are deterministic). CPU time: from the call to the end of the
    callback that sees the target, minus the callbacks' own CPU time (the reference lower solve that ``Result``
    reports afterwards, ``info["lower_gap"]``, is excluded)."""
    best = None
    if options.get("backend") == "jax":  # compile outside the timed runs (as jaxopt's)
        _run_optkit_once(toy, method, target, **options)
    for _ in range(repeats):
        row = _run_optkit_once(toy, method, target, **options)
        if best is None or row["cpu_seconds"] < best["cpu_seconds"]:
            best = row
        if row["cpu_seconds"] > 2.0:  # slow rows: one run is enough to rank them
            break
    return best


def _run_optkit_once(toy, method: str, target: float, **options) -> dict:
    spent = {"callback": 0.0, "callback_cpu": 0.0, "hit": False, "end_cpu": None}

    def stop(state) -> bool:
        start, start_cpu = time.perf_counter(), time.process_time()
        x = state.x[0]
        value = float(np.sum(toy.hypergradient(x) ** 2))
        spent["callback"] += time.perf_counter() - start
        end_cpu = time.process_time()
        spent["callback_cpu"] += end_cpu - start_cpu
        spent["end_cpu"] = end_cpu
        if value <= target:
            spent["hit"] = True
            return True
        return False

    start, start_cpu = time.perf_counter(), time.process_time()
    result = optkit.solve(toy.problem, method, callback=stop, **options)
    wall = time.perf_counter() - start
    end_cpu = spent["end_cpu"] if spent["end_cpu"] is not None else time.process_time()
    cpu = end_cpu - start_cpu - spent["callback_cpu"]
    final = float(np.sum(toy.hypergradient(result.x[0]) ** 2))
    solver_time = result.wall_time - spent["callback"]
    counts = result.counts
    return {
        "library": "optkit", "method": method, "options": {k: v for k, v in options.items()},
        "reached": spent["hit"] or final <= target, "grad_h_sq": final, "seconds": solver_time, "cpu_seconds": cpu,
        "oracle_calls": int(counts["upper_grad"] + counts["lower_grad"] + counts["lower_hvp"]),
        "values": int(counts.get("upper_value", 0) + counts.get("lower_value", 0)), "nit": result.nit,
        "status": result.status.name, "wall_with_reporting": wall,
    }


def run_jaxopt(toy, target: float, inner_tol: float, outer: str = "lbfgs", repeats: int = 3) -> dict:
    import jax
    import jax.numpy as jnp
    import jaxopt

    jax.config.update("jax_enable_x64", True)
    low = toy.problem.lower.spec
    up = toy.problem.upper.spec
    ml, mu_ = _means(low, *toy.problem.dims), _means(up, *toy.problem.dims)
    ml = {k: jnp.asarray(v) for k, v in ml.items()}
    mu_ = {k: jnp.asarray(v) for k, v in mu_.items()}
    counter = {"n": 0}

    def bump(_):
        counter["n"] += 1

    def quad(m, z, x):
        return 0.5 * z @ (m["yy"] @ z) + 0.5 * x @ (m["xx"] @ x) + x @ (m["xy"] @ z) + m["ly"] @ z + m["lx"] @ x

    def make(count: bool):
        def g(z, x):
            if count:
                jax.debug.callback(bump, 0.0)
            return quad(ml, z, x)

        def f(z, x):
            if count:
                jax.debug.callback(bump, 0.0)
            return quad(mu_, z, x)

        lipschitz = float(np.linalg.eigvalsh(np.asarray(ml["yy"])).max())
        solve = lambda matvec, b, **kw: jaxopt.linear_solve.solve_cg(matvec, b, tol=inner_tol, maxiter=1000)
        inner = jaxopt.GradientDescent(fun=g, stepsize=1.0 / lipschitz, maxiter=10_000, tol=inner_tol,
                                       implicit_diff=True, implicit_diff_solve=solve)
        z0 = jnp.zeros(toy.problem.dims[1])

        def h(x):
            z = inner.run(z0, x).params
            return f(z, x)

        if outer == "lbfgs":
            solver = jaxopt.LBFGS(fun=h, tol=math.sqrt(target), maxiter=2000)
        else:
            solver = jaxopt.GradientDescent(fun=h, tol=math.sqrt(target), maxiter=20_000, acceleration=False)
        return jax.jit(solver.run)

    x0 = jnp.zeros(toy.problem.dims[0])
    run = make(False)
    out = run(x0)
    jax.block_until_ready(out.params)  # compile
    best = best_cpu = math.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = run(x0)
        jax.block_until_ready(out.params)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    final = float(np.sum(toy.hypergradient(np.asarray(out.params)) ** 2))
    counted = make(True)
    counter["n"] = 0
    jax.block_until_ready(counted(x0).params)
    jax.effects_barrier()
    return {"library": "jaxopt", "method": f"implicit diff (outer {outer}, inner GD+CG, tol {inner_tol:g})",
            "reached": final <= target, "grad_h_sq": final, "seconds": best, "cpu_seconds": best_cpu,
            "oracle_calls": counter["n"],
            "nit": int(out.state.iter_num)}


def _means(spec, dim_x: int, dim_y: int) -> dict:
    # the FiniteSum built by the toy library keeps its rank-one factors in closures; recover the mean matrices
    # through its full-batch gradient (exact for a quadratic: differences at unit vectors)
    idx = np.arange(spec.n_samples)
    grad = spec.grad
    lx, ly = grad(np.zeros(dim_x), np.zeros(dim_y), idx)
    xx = np.column_stack([grad(e, np.zeros(dim_y), idx)[0] - lx for e in np.eye(dim_x)])
    xy = np.column_stack([grad(np.zeros(dim_x), e, idx)[0] - lx for e in np.eye(dim_y)])
    yy = np.column_stack([grad(np.zeros(dim_x), e, idx)[1] - ly for e in np.eye(dim_y)])
    return {"xx": xx, "xy": xy, "yy": yy, "lx": lx, "ly": ly}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=1e-8)
    parser.add_argument("--quick", action="store_true", help="d = 20, n = 128")
    parser.add_argument("--no-jaxopt", action="store_true")
    parser.add_argument("--no-jax", action="store_true", help="skip optkit's backend='jax' rows")
    args = parser.parse_args()
    dims = (20, 20, 128) if args.quick else (100, 100, 1024)
    toy = benchopt_quadratic(*dims, seed=args.seed)
    optkit.solve(toy.problem, "aid", max_iter=1)  # warm-up: registry discovery and lazy imports
    rows = []
    rows.append(run_optkit(toy, "aid", args.target, tol=1e-12, max_iter=5000))
    rows.append(run_optkit(toy, "aid", args.target, tol=1e-12, max_iter=5000, inner_steps=1, cg_steps=1))
    rows.append(run_optkit(toy, "aid", args.target, tol=1e-12, max_iter=5000, outer_step="bb"))
    rows.append(run_optkit(toy, "aid", args.target, tol=1e-12, max_iter=5000, outer_step="bb", inner_steps=2,
                           cg_steps=2))
    limit = 120.0
    rows.append(run_optkit(toy, "penalty", args.target, tol=1e-12, max_iter=20_000, time_limit=limit))
    rows.append(run_optkit(toy, "penalty", args.target, tol=1e-12, max_iter=20_000, outer_step="secant",
                           time_limit=limit))
    rows.append(run_optkit(toy, "penalty", args.target, tol=1e-12, max_iter=20_000, outer_step="secant",
                           sigma0=1e-4, sigma_decay=0.1, inner_rtol=1.0, time_limit=limit))
    for sigma, steps in [(1e-5, 2), (1e-4, 2), (1e-5, 1)]:
        rows.append(run_optkit(toy, "penalty", args.target, tol=1e-12, max_iter=20_000, sigma=sigma, sigma0=sigma,
                               inner_steps=steps, outer_step="bb", time_limit=limit))
    for steps in (10, 2):  # F2SA at a fixed lambda = 1e5 (1e4 cannot reach the target: bias), T = 10 and 2
        rows.append(run_optkit(toy, "f2sa", args.target, tol=1e-12, max_iter=20_000, lambda0=1e5, lambda_max=1e5,
                               inner_steps=steps, time_limit=limit))
    if not args.no_jax:
        # backend="jax": the same instance with JAX-traceable levels (autodiff oracles), each outer iteration's
        # inner work one compiled call; the outer loops are the NumPy backend's
        toy_jax = benchopt_quadratic(*dims, seed=args.seed, jax=True)
        rows.append(run_optkit(toy_jax, "aid", args.target, tol=1e-12, max_iter=5000, backend="jax"))
        rows.append(run_optkit(toy_jax, "penalty", args.target, tol=1e-12, max_iter=20_000, time_limit=limit,
                               backend="jax"))
        for steps in (10, 2):
            rows.append(run_optkit(toy_jax, "f2sa", args.target, tol=1e-12, max_iter=20_000, lambda0=1e5,
                                   lambda_max=1e5, inner_steps=steps, time_limit=limit, backend="jax"))
    if not args.no_jaxopt:
        for tol in (1e-6, 1e-8, 1e-10):
            rows.append(run_jaxopt(toy, args.target, tol))
    peers = [r for r in rows if r["library"] == "jaxopt" and r["reached"]]
    reference = min(peers, key=lambda r: r["cpu_seconds"]) if peers else None
    print(f"benchopt quadratic d={dims[0]}, n={dims[2]}, seed {args.seed}: time and oracle calls to "
          f"||grad h||^2 <= {args.target:g}")
    header = f"{'library':8} {'method / options':60} {'reached':7} {'cpu ms':>9} {'wall ms':>9} {'calls':>7} " \
             f"{'vals':>6} {'cpu/jaxopt':>10} {'calls/jaxopt':>12}"
    print(header)
    for r in rows:
        label = r["method"] + ("" if r["library"] == "jaxopt" else " " + ",".join(
            f"{k}={v}" for k, v in r["options"].items() if k not in ("tol", "max_iter")))
        ratio_t = r["cpu_seconds"] / reference["cpu_seconds"] if reference else float("nan")
        ratio_c = r["oracle_calls"] / reference["oracle_calls"] if reference else float("nan")
        print(f"{r['library']:8} {label[:60]:60} {r['reached']!s:7} {1e3 * r['cpu_seconds']:9.2f} "
              f"{1e3 * r['seconds']:9.2f} {r['oracle_calls']:7d} {r.get('values', 0):6d} {ratio_t:10.2f} "
              f"{ratio_c:12.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"instance": {"recipe": "benchopt quadratic", "dim_x": dims[0], "dim_y": dims[1], "n_samples": dims[2],
                        "seed": args.seed, "target": args.target}, "rows": rows,
           "jaxopt_best": reference}
    (RESULTS / "bilevel.json").write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
