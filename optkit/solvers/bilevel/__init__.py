"""Bilevel solvers: value-function penalty methods (``penalty``, ``f2sa``, ``v-pbgd``), the proximal Lagrangian
value-function method ``lv-hba``, and the implicit/iterative differentiation baselines ``aid`` and ``itd``."""
