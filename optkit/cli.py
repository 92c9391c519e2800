"""The ``optkit`` command: ``demo``, ``reproduce NAME``, ``list`` and ``bench``.

This is the user-facing layer, the one place in optkit that prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

DEFAULT_OUT = Path("optkit-results")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optkit",
        description="optkit: solvers for constrained, bilevel and optimal-transport problems. Run the demo, "
        "reproduce a paper's table or figure, or list what is available.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the quick slice of every experiment that has a demo")
    demo.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: ./{DEFAULT_OUT}/)")
    demo.add_argument("--no-plots", action="store_true", help="skip the convergence plots")

    reproduce = sub.add_parser("reproduce", help="run one experiment and write JSON, a markdown table and plots")
    reproduce.add_argument("name", help="experiment name (see `optkit list`)")
    reproduce.add_argument("--quick", action="store_true", help="run the quick slice only")
    reproduce.add_argument("--out", type=Path, default=DEFAULT_OUT,
                           help=f"output directory; results go to OUT/NAME/ (default: ./{DEFAULT_OUT}/)")
    reproduce.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    reproduce.add_argument("--scheduler", metavar="ADDR", default=None,
                           help="run on a Dask cluster at this scheduler address (needs dask.distributed)")
    reproduce.add_argument("--seeds", type=int, nargs="+", default=None, help="override the experiment's seeds")
    reproduce.add_argument("--no-plots", action="store_true", help="skip the convergence plots")

    sub.add_parser("list", help="list the experiments and the registered solvers")
    sub.add_parser("bench", help="how to run the benchmarks")
    return parser


def _run_and_write(name: str, out: Path, plots: bool, **settings: object) -> int:
    from optkit.experiments import run_experiment, write_outputs

    run = run_experiment(name, **settings)  # type: ignore[arg-type]
    written = write_outputs(run, out / name, plots=plots)
    print(f"## {name}: {run.experiment.description}\n")
    print(run.table())
    failed = [r for r in run.records if r["status"] == "ERROR"]
    print(f"{len(run.records)} runs in {run.wall_time:.2f} s; wrote {written['json']}, {written['markdown']}"
          + (f" and {len(written['plots'])} plots in {out / name / 'plots'}" if written["plots"] else ""))
    for record in failed:
        print(f"  error: {record['instance']} / {record['method']}: {record['message']}", file=sys.stderr)
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from optkit.experiments import experiments

    chosen = [exp for exp in experiments() if exp.has_demo]
    if not chosen:
        print("no experiment defines a demo")
        return 0
    status = 0
    for exp in chosen:
        status |= _run_and_write(exp.name, args.out, not args.no_plots, **exp.demo_settings())
        print()
    return status


def _reproduce(args: argparse.Namespace) -> int:
    from optkit.experiments import get_experiment

    try:
        get_experiment(args.name)
    except ValueError as exc:
        print(f"optkit reproduce: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"optkit reproduce: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        return _run_and_write(args.name, args.out, not args.no_plots, quick=args.quick, workers=args.workers,
                              scheduler=args.scheduler, seeds=args.seeds)
    except ImportError as exc:
        print(f"optkit reproduce: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. no Dask scheduler listening at --scheduler
        if args.scheduler is None:
            raise
        print(f"optkit reproduce: could not use the Dask scheduler at {args.scheduler}: {exc}", file=sys.stderr)
        return 2


def _list() -> int:
    from optkit.experiments import experiments
    from optkit.solvers.registry import available, get

    print("Experiments (optkit reproduce NAME; * = part of optkit demo):")
    for exp in experiments():
        print(f"  {exp.name:<24}{'*' if exp.has_demo else ' '} {exp.description}")
    print("\nSolvers (optkit.solve(problem, NAME)):")
    for name in available():
        info = get(name)
        types = ", ".join(t.__name__ for t in info.problem_types)
        print(f"  {name:<24} {types:<24} backends: {', '.join(info.backends):<20} {info.summary}")
    return 0


def _bench() -> int:
    print("The benchmarks compare optkit with its peers (POT, OTT-JAX, ...) on the same instances in one process.\n"
          "Run them from a source checkout with\n\n    make bench\n\n"
          "which installs the [bench] extra into .venv, runs every benchmarks/*.py, prints ratio tables and\n"
          "writes JSON under benchmarks/results/.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optkit`` console script; returns the exit status.

    Examples
    --------
    >>> from optkit.cli import main
    >>> main(["list"])  # doctest: +SKIP
    """
    parser = _parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.verbose:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("optkit").setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    if args.version:
        from optkit import __version__

        print(f"optkit {__version__}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command == "reproduce":
        return _reproduce(args)
    if args.command == "list":
        return _list()
    if args.command == "bench":
        return _bench()
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
