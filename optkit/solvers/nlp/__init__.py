"""Solvers for equality-constrained nonlinear programs (:class:`~optkit.problems.nlp.NonlinearProgram`)."""
