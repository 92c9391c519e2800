"""Hot loops on arrays: the NumPy reference, Numba (CPU) and JAX (CPU/GPU) versions.

Kernels take arrays and return arrays; they know no problem class. Numba and JAX modules are imported lazily by
the solvers that use them, so ``import optkit`` never compiles or allocates on a device.
"""
