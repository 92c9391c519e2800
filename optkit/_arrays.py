"""Array helpers shared by every layer (no solver or problem knowledge here)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_jax_array", "is_tracer", "as_generator"]


def is_jax_array(value: Any) -> bool:
    """True for JAX arrays and tracers, without importing JAX."""
    return type(value).__module__.split(".", 1)[0] in ("jax", "jaxlib")


def is_tracer(value: Any) -> bool:
    """True for JAX tracers (values inside ``jax.jit``/``jax.vmap``/``jax.grad``)."""
    if not is_jax_array(value):
        return False
    import jax

    return isinstance(value, jax.core.Tracer)


def as_generator(seed: Any) -> np.random.Generator:
    """A NumPy ``Generator`` from an int, a ``Generator`` or ``None`` (then a fixed default seed, 0)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng(0)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be an int, a numpy.random.Generator or None, got {type(seed).__name__}")
