"""Solvers for monotone inclusions and min-max problems (Halpern family and extragradient family)."""
