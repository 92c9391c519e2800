"""The experiment runner: discover experiment modules, run their grids, write JSON, a markdown table and plots.

An *experiment* is a module of :mod:`optkit.experiments` (any name not starting with ``_``) that declares

``NAME``
    The name used by ``optkit reproduce NAME`` (e.g. ``"entropic-ot"``).
``DESCRIPTION``
    One line.
``instances(quick: bool) -> list[Instance]``
    The problems; ``quick=True`` gives a small slice that runs in seconds.
``methods(quick: bool) -> list[MethodSpec]``
    The methods: a registered solver name, its options and a label.
``METRICS``
    The columns of the table: names looked up in each record's fields (``nit``, ``wall_time``, ``fun``), its
    ``residuals``, its ``metrics`` and its ``counts``, in that order.

and optionally

``seeds(quick) -> list[int]``
    Seeds to repeat each run with (default ``[0]``).
``reference(instance) -> dict``
    An exact reference computed once per instance (e.g. the exact OT cost); it becomes a row of the table
    labelled ``REFERENCE_LABEL`` and is passed to ``measure``. A ``"wall_time"`` entry, when present, replaces
    the runner's timing of the call (e.g. to leave out a first import).
``measure(instance, result, reference) -> dict``
    Extra per-run metrics computed from the :class:`~optkit.Result` (e.g. the gap to the reference).
``RESIDUAL``
    The history column plotted (default: the first residual the solver reports).
``demo() -> dict``
    Settings of the demo slice (keyword arguments of :func:`run_experiment`, ``quick=True`` by default);
    only experiments that define it run in ``optkit demo``.
``run(experiment, *, quick, seeds, workers, scheduler) -> list[dict]``
    A custom runner for experiments whose shape is not a grid; it returns records with the fields below.

Each run gives one *record*, a JSON-friendly dict with the fields ``experiment``, ``instance``, ``method``
(the label), ``solver`` (the registered name), ``backend``, ``seed``, ``params`` (the instance's parameters),
``status`` (a :class:`~optkit.Status` name, ``"REFERENCE"`` for reference rows, ``"NOT_APPLICABLE"`` when
the method does not accept the instance (the message says why), ``"ERROR"`` when the solver raised),
``success``, ``nit``, ``wall_time`` (seconds, as the solver measured them), ``fun``, ``residuals``, ``counts``,
``metrics``, ``history`` (column name to list) and ``message``.

The grid runs in this process (``workers=1``), in local processes (``workers > 1``, :mod:`concurrent.futures`)
or on a Dask cluster (``scheduler="tcp://host:port"`` or a ``distributed.Client``; Dask is imported only then).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from optkit.experiments._outputs import _jsonable, _number, markdown_table, write_outputs

__all__ = [
    "RECORD_FIELDS",
    "Experiment",
    "ExperimentRun",
    "Instance",
    "MethodSpec",
    "experiments",
    "get_experiment",
    "markdown_table",
    "run_experiment",
    "write_outputs",
]

logger = logging.getLogger("optkit.experiments")

#: The fields of every run record.
RECORD_FIELDS = (
    "experiment", "instance", "method", "solver", "backend", "seed", "params", "status", "success", "nit",
    "wall_time", "fun", "residuals", "counts", "metrics", "history", "message",
)
_NOT_EXPERIMENTS = {"runner"}


@dataclass(frozen=True)
class Instance:
    """One problem of an experiment.

    Parameters
    ----------
    name
        Unique within the experiment; used in the table and in plot file names.
    problem
        The problem object passed to :func:`optkit.solve` (it must be picklable to run in processes or on Dask).
    params
        Parameters describing the instance (``n``, ``epsilon``, ...), copied into every record.
    """

    name: str
    problem: Any
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A method of an experiment: a registered solver, its options and a label.

    Parameters
    ----------
    method
        A registered solver name (see :func:`optkit.available`).
    options
        Options passed to :func:`optkit.solve`.
    label
        The column/row label; defaults to ``method`` (with the backend when one is named).
    backend
        The backend to request (``"auto"`` lets the registry choose).
    warmup
        Solve once, untimed, before the timed run (JIT-compiled backends compile on their first call).
    """

    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    backend: str = "auto"
    warmup: bool = False

    @property
    def name(self) -> str:
        """The label shown in tables and plots."""
        if self.label:
            return self.label
        return self.method if self.backend == "auto" else f"{self.method} ({self.backend})"


@dataclass(frozen=True)
class Experiment:
    """A discovered experiment module (see the module docstring for what it declares)."""

    name: str
    description: str
    module: ModuleType

    @property
    def has_demo(self) -> bool:
        """Whether the experiment defines a demo slice (and so runs in ``optkit demo``)."""
        return callable(getattr(self.module, "demo", None))

    def demo_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`run_experiment` for the demo slice (``quick=True`` unless overridden)."""
        settings: dict[str, Any] = {"quick": True}
        if self.has_demo:
            settings.update(self.module.demo() or {})
        return settings

    @property
    def metrics(self) -> tuple[str, ...]:
        """The tabulated metric names."""
        return tuple(getattr(self.module, "METRICS", ("nit", "wall_time")))


@dataclass
class ExperimentRun:
    """The records of one run of an experiment, with what is needed to write them."""

    experiment: Experiment
    records: list[dict[str, Any]]
    settings: dict[str, Any]
    wall_time: float

    def table(self) -> str:
        """The markdown table of :attr:`records`."""
        return markdown_table(self.records, self.experiment.metrics)


_EXPERIMENTS: dict[str, Experiment] = {}
_DISCOVERED = False


def _discover() -> None:
    """Import every module below :mod:`optkit.experiments` once and keep those that declare ``NAME``."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import optkit.experiments as root

    for info in pkgutil.walk_packages(root.__path__, prefix="optkit.experiments."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf in _NOT_EXPERIMENTS:
            continue
        module = importlib.import_module(info.name)
        name = getattr(module, "NAME", None)
        if name is None:
            continue
        for required in ("instances", "methods"):
            if not callable(getattr(module, required, None)) and not callable(getattr(module, "run", None)):
                raise TypeError(f"experiment module {info.name} must define {required}(quick) or run(...)")
        if name in _EXPERIMENTS and _EXPERIMENTS[name].module is not module:
            raise ValueError(f"two experiment modules are named {name!r}: {_EXPERIMENTS[name].module.__name__} "
                             f"and {info.name}")
        _EXPERIMENTS[name] = Experiment(name, str(getattr(module, "DESCRIPTION", "")).strip(), module)
    _DISCOVERED = True


def experiments() -> list[Experiment]:
    """All discovered experiments, sorted by name."""
    _discover()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``."""
    if isinstance(name, Experiment):
        return name
    _discover()
    try:
        return _EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; available experiments are {sorted(_EXPERIMENTS)}") from None


# ----------------------------------------------------------------------------------------------- running


def run_experiment(
    experiment: str | Experiment,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    workers: int = 1,
    scheduler: Any = None,
    instances: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
) -> ExperimentRun:
    """Run an experiment's grid ``instances x methods x seeds`` and return its records.

    Parameters
    ----------
    experiment
        A name from :func:`experiments` or an :class:`Experiment`.
    quick
        Run the experiment's quick slice.
    seeds
        Seeds to repeat every run with; defaults to the experiment's ``seeds(quick)``, else ``[0]``.
    workers
        Local processes (1: run in this process).
    scheduler
        A Dask scheduler address or a ``distributed.Client``; when given, runs go to that cluster.
    instances, methods
        Keep only the instances / method labels with these names.

    Returns
    -------
    ExperimentRun
        Its ``records`` have the fields :data:`RECORD_FIELDS`.
    """
    exp = get_experiment(experiment)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    module = exp.module
    if seeds is None:
        seeds = list(module.seeds(quick)) if callable(getattr(module, "seeds", None)) else [0]
    seeds = [int(s) for s in seeds]
    settings = {"quick": bool(quick), "seeds": seeds, "workers": workers,
                "scheduler": None if scheduler is None else str(scheduler)}
    start = time.perf_counter()
    if callable(getattr(module, "run", None)):
        records = list(module.run(exp, quick=quick, seeds=seeds, workers=workers, scheduler=scheduler))
        return ExperimentRun(exp, records, settings, time.perf_counter() - start)

    grid = _select(list(module.instances(quick)), instances, "instance")
    specs = _select(list(module.methods(quick)), methods, "method")
    if not grid or not specs:
        raise ValueError(f"experiment {exp.name!r} has an empty grid: {len(grid)} instances, {len(specs)} methods")
    with Executor(workers, scheduler) as pool:
        references: dict[str, dict[str, Any]] = {}
        records: list[dict[str, Any]] = []
        if callable(getattr(module, "reference", None)):
            refs = pool.map(_reference_task, [(module.__name__, exp.name, inst) for inst in grid])
            for inst, record in zip(grid, refs):
                references[inst.name] = record["metrics"]
                records.append(record)
        tasks = [(module.__name__, exp.name, inst, spec, seed, references.get(inst.name, {}))
                 for inst in grid for spec in specs for seed in seeds]
        records.extend(pool.map(run_task, tasks))
    order = {inst.name: k for k, inst in enumerate(grid)}
    records.sort(key=lambda r: order[r["instance"]])  # stable: the reference row stays first
    wall = time.perf_counter() - start
    logger.info("experiment %s: %d records in %.3g s", exp.name, len(records), wall)
    return ExperimentRun(exp, records, settings, wall)


def _select(items: list[Any], names: Iterable[str] | None, what: str) -> list[Any]:
    if names is None:
        return items
    wanted = list(names)
    known = [item.name for item in items]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; this experiment has {known}")
    return [item for item in items if item.name in wanted]


class Executor:
    """Maps a picklable task function over tasks: in this process, in local processes, or on Dask."""

    def __init__(self, workers: int, scheduler: Any) -> None:
        self.workers, self.scheduler = workers, scheduler
        self._pool: Any = None
        self._client: Any = None
        self._own_client = False

    def __enter__(self) -> Executor:
        if self.scheduler is not None:
            try:
                from distributed import Client
            except ImportError:
                raise ImportError(
                    "running on a Dask cluster needs dask.distributed; install it with "
                    "`pip install 'dask[distributed]'` or drop --scheduler to run in local processes"
                ) from None
            if isinstance(self.scheduler, Client):
                self._client = self.scheduler
            else:
                self._client = Client(self.scheduler)
                self._own_client = True
        elif self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: forking a process that has started JAX or Numba threads can deadlock.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def map(self, func: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        if self._client is not None:
            return self._client.gather(self._client.map(func, tasks, pure=False))
        if self._pool is not None:
            return list(self._pool.map(func, tasks))
        return [func(task) for task in tasks]

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._own_client:
            self._client.close()


def _reference_task(task: tuple[str, str, Instance]) -> dict[str, Any]:
    module_name, exp_name, inst = task
    module = importlib.import_module(module_name)
    label = str(getattr(module, "REFERENCE_LABEL", "reference"))
    start = time.perf_counter()
    values = dict(module.reference(inst))
    wall = values.pop("wall_time", time.perf_counter() - start)
    record = _blank_record(exp_name, inst, label, label, "", None)
    record.update(status="REFERENCE", success=True, wall_time=wall, metrics=_jsonable(values),
                  fun=_number(values.get("fun")), message=f"{label}: exact reference")
    return record


def run_task(task: tuple[str, str, Instance, MethodSpec, int, dict[str, Any]]) -> dict[str, Any]:
    """Solve one (instance, method, seed) and reduce the Result to a record (the plan stays in the worker)."""
    from optkit.solvers.api import solve
    from optkit.solvers.registry import get as get_solver

    module_name, exp_name, inst, spec, seed, reference = task
    module = importlib.import_module(module_name)
    record = _blank_record(exp_name, inst, spec.name, spec.method, spec.backend, seed)
    refusal = get_solver(spec.method).refusal(inst.problem) if isinstance(spec.method, str) else None
    if refusal is not None:
        record.update(status="NOT_APPLICABLE", message=refusal)
        return record
    try:
        if spec.warmup:
            solve(inst.problem, spec.method, backend=spec.backend, seed=seed, **spec.options)
        result = solve(inst.problem, spec.method, backend=spec.backend, seed=seed, **spec.options)
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others; the record says why
        logger.warning("%s on %s raised %s: %s", spec.name, inst.name, type(exc).__name__, exc)
        record.update(status="ERROR", message=f"{type(exc).__name__}: {exc}")
        return record
    status = getattr(result.status, "name", str(result.status))
    metrics = dict(module.measure(inst, result, reference)) if callable(getattr(module, "measure", None)) else {}
    record.update(
        backend=result.backend or spec.backend,
        status=status,
        success=bool(result.success),
        nit=int(result.nit),
        wall_time=float(result.wall_time),
        fun=_number(result.fun),
        residuals=_jsonable(dict(result.residuals)),
        counts=_jsonable(dict(result.counts)),
        metrics=_jsonable(metrics),
        history=_jsonable(result.history.to_dict()),
        message=str(result.message),
    )
    return record


def _blank_record(exp_name: str, inst: Instance, label: str, solver: str, backend: str, seed: Any) -> dict[str, Any]:
    return {
        "experiment": exp_name, "instance": inst.name, "method": label, "solver": solver, "backend": backend,
        "seed": seed, "params": _jsonable(dict(inst.params)), "status": "", "success": False, "nit": None,
        "wall_time": None, "fun": None, "residuals": {}, "counts": {}, "metrics": {}, "history": {},
        "message": "",
    }
