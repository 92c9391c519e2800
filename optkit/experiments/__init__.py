"""Reproduced tables and figures: one module per experiment, run by :mod:`optkit.experiments.runner`.

Adding a module here that declares ``NAME``, ``DESCRIPTION``, ``instances(quick)``, ``methods(quick)`` and
``METRICS`` adds an experiment to ``optkit list``, ``optkit reproduce NAME`` and (with ``demo()``) ``optkit demo``;
see :mod:`optkit.experiments.runner` for the full protocol.

Examples
--------
>>> from optkit.experiments import get_experiment, run_experiment
>>> run = run_experiment("entropic-ot", quick=True, instances=["clouds-n100-eps0.1"])  # doctest: +SKIP
>>> print(run.table())  # doctest: +SKIP
"""

from optkit.experiments.runner import (
    RECORD_FIELDS,
    Experiment,
    ExperimentRun,
    Instance,
    MethodSpec,
    experiments,
    get_experiment,
    markdown_table,
    run_experiment,
    write_outputs,
)

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
