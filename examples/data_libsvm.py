"""Load a LIBSVM data set shipped with optkit and look at it.

Run: python examples/data_libsvm.py
"""

import numpy as np

from optkit.data import load_libsvm

X, y = load_libsvm("heart_scale")  # a scipy.sparse CSR matrix and labels in {-1, +1}
print(f"heart_scale: {X.shape[0]} samples x {X.shape[1]} features, {X.nnz} non-zeros ({X.format})")
print(f"labels: {int(np.sum(y == 1))} positive, {int(np.sum(y == -1))} negative")
