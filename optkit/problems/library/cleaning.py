r"""Data hyper-cleaning (Franceschi et al., ICML 2017, §5.1; Shaban et al., AISTATS 2019, §4.1): learn one weight
per training example so that a classifier trained on corrupted labels does well on clean validation data.

A linear multinomial (softmax) classifier :math:`W \in \mathbb R^{d \times K}` (features with a bias column) is
trained on :math:`N` examples, a fraction of whose labels were replaced by random *wrong* labels. The upper
variable :math:`x \in \mathbb R^N` gives the example weights :math:`\sigma(x_i) = 1 / (1 + e^{-x_i})`:

.. math::

    \min_x F(x, W^*(x)) = \frac1M \sum_{j \in \text{val}} \ell_j(W^*(x)), \qquad
    W^*(x) = \operatorname*{arg\,min}_W f(x, W) = \frac1N \sum_{i \in \text{train}} \sigma(x_i)\,\ell_i(W)
    + \frac\lambda2 \|W\|_F^2,

with the cross-entropy :math:`\ell_i(W) = \log\sum_k e^{a_i^\top W_{:k}} - a_i^\top W_{:b_i}`. The lower level is
:math:`\lambda`-strongly convex in :math:`W` for every :math:`x` (the weighted softmax loss is convex), so
:math:`W^*(x)` is unique and differentiable and every bilevel method applies. An example is flagged as corrupted
when :math:`\sigma(x_i) < 1/2` (:func:`cleaner_f1`).

Both levels are :class:`~optkit.problems.bilevel.FiniteSum` objects with hand-written NumPy gradients and
Hessian-vector products (checked against finite differences in ``tests/problems/test_cleaning.py``). With
:math:`P_i = \operatorname{softmax}(a_i^\top W)`, :math:`e_{b_i}` the one-hot label, :math:`U = A V` for a
direction :math:`V` of :math:`W` and :math:`s_i = \sigma(x_i)` over a minibatch :math:`B`:

.. math::

    \nabla_W f = \tfrac1{|B|} A_B^\top \operatorname{diag}(s) (P - E) + \lambda W, \qquad
    \partial_{x_i} f = \tfrac1{|B|} s_i (1 - s_i)\,\ell_i(W),

    \nabla^2_{WW} f[V] = \tfrac1{|B|} A_B^\top \operatorname{diag}(s)\big(P \odot (U - (P \odot U)\mathbf 1
    \mathbf 1^\top)\big) + \lambda V, \qquad
    \nabla^2_{Wx} f[v_x] = \tfrac1{|B|} A_B^\top \operatorname{diag}(s(1-s) v_x)(P - E),

    \nabla^2_{xx} f[v_x]_i + \nabla^2_{xW} f[V]_i = \tfrac1{|B|}\big(s_i(1-s_i)(1-2s_i)\,\ell_i\,v_{x,i}
    + s_i(1-s_i)\,\langle P_i - e_{b_i}, U_i\rangle\big).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_softmax

from optkit._arrays import as_generator
from optkit.problems.bilevel import BilevelProblem, FiniteSum

__all__ = ["CleaningProblem", "accuracy", "cleaner_f1", "data_cleaning"]


@dataclass(frozen=True)
class CleaningProblem:
    """The data hyper-cleaning bilevel problem with its splits and the mask of corrupted training labels.

    ``train``, ``validation`` and ``test`` are ``(features, labels)`` pairs (features with a trailing bias
    column, labels in ``0..n_classes-1``; the training labels are the corrupted ones); ``clean_train_labels``
    holds the original training labels; ``corrupted[i]`` says whether training label ``i`` was replaced.
    """

    problem: BilevelProblem
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    corrupted: np.ndarray
    clean_train_labels: np.ndarray
    n_classes: int
    source: str
    note: str = ""

    def weights(self, y: np.ndarray) -> np.ndarray:
        """The classifier :math:`W` (shape ``(d, K)``) from the lower variable ``y = vec(W)``."""
        return np.asarray(y, dtype=np.float64).reshape(self.train[0].shape[1], self.n_classes)


def _softmax_sum(A: np.ndarray, labels: np.ndarray, n_classes: int, n_x: int, *, weighted: bool, l2: float,
                 name: str) -> FiniteSum:
    """Mean (optionally :math:`\\sigma(x_i)`-weighted) cross-entropy over rows of ``A``, plus ``l2/2 ||W||^2``."""
    n_samples, d = A.shape
    shape = (d, n_classes)

    def parts(y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = A[idx]
        log_p = log_softmax(rows @ y.reshape(shape), axis=1)
        loss = -log_p[np.arange(len(idx)), labels[idx]]
        residual = np.exp(log_p)
        residual[np.arange(len(idx)), labels[idx]] -= 1.0  # P - E
        return rows, log_p, loss, residual

    def scatter(idx: np.ndarray, values: np.ndarray) -> np.ndarray:
        # idx may repeat (minibatches drawn with replacement): accumulate, do not overwrite
        return np.bincount(idx, weights=values, minlength=n_samples).astype(np.float64)

    def value(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
        _, _, loss, _ = parts(y, idx)
        total = float(np.mean(expit(x[idx]) * loss)) if weighted else float(np.mean(loss))
        return total + 0.5 * l2 * float(y @ y)

    def grad(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx)
        rows, _, loss, residual = parts(y, idx)
        b = len(idx)
        if not weighted:
            return np.zeros(n_x), (rows.T @ residual).ravel() / b + l2 * y
        s = expit(x[idx])
        gy = (rows.T @ (s[:, None] * residual)).ravel() / b + l2 * y
        return scatter(idx, s * (1.0 - s) * loss / b), gy

    def hvp(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, idx: np.ndarray) -> Any:
        idx = np.asarray(idx)
        rows, log_p, loss, residual = parts(y, idx)
        b = len(idx)
        p = np.exp(log_p)
        u = rows @ vy.reshape(shape)
        curvature = p * (u - np.sum(p * u, axis=1, keepdims=True))  # softmax Jacobian applied to u
        if not weighted:
            return np.zeros(n_x), (rows.T @ curvature).ravel() / b + l2 * vy
        s = expit(x[idx])
        ds = s * (1.0 - s)
        mixed = ds * vx[idx]
        hy = (rows.T @ (s[:, None] * curvature + mixed[:, None] * residual)).ravel() / b + l2 * vy
        hx = (ds * (1.0 - 2.0 * s) * loss * vx[idx] + ds * np.sum(residual * u, axis=1)) / b
        return scatter(idx, hx), hy

    return FiniteSum(value, n_samples, grad=grad, hvp=hvp, name=name)


def _features(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1)
    flat = flat / max(float(flat.max()), 1.0)  # grey levels to [0, 1] (MNIST 0-255, sklearn 0-16)
    return np.hstack([flat, np.ones((flat.shape[0], 1))])


def data_cleaning(source: str = "auto", *, n_train: int = 4000, n_val: int = 2000, n_test: int = 4000,
                  corruption: float = 0.5, seed: Any = 0, l2: float = 1e-3, x0: float = 0.0) -> CleaningProblem:
    r"""The data hyper-cleaning problem on digit images (see the module docstring for the formulation).

    The images of ``source`` (the 10,000 MNIST ``t10k`` digits, or scikit-learn's 1,797 8 x 8 digits; ``"auto"``
    takes MNIST when it is in the data home, see :func:`~optkit.problems.library.digits.digit_images`) are
    shuffled and split into ``n_train`` / ``n_val`` / ``n_test`` examples; pixels are scaled to :math:`[0, 1]`
    and a bias feature is appended. ``round(corruption * n_train)`` training labels, chosen at random, are
    replaced by a label drawn uniformly among the *other* classes (so each is wrong). Start: :math:`x = x_0
    \mathbf 1` (all weights :math:`\sigma(x_0)`), :math:`W = 0`.

    Parameters
    ----------
    source : {"auto", "mnist", "sklearn"}
    n_train, n_val, n_test : int
        Split sizes; their sum must not exceed the number of images.
    corruption : float in [0, 1]
        Fraction of corrupted training labels (0.5 in Franceschi et al. 2017).
    seed : int or numpy.random.Generator
        Drives the shuffle and the corruption.
    l2 : float > 0
        :math:`\lambda`, the lower level's strong-convexity modulus.
    x0 : float
        The initial logit of every example weight.

    Returns
    -------
    CleaningProblem

    Examples
    --------
    >>> cp = data_cleaning("sklearn", n_train=100, n_val=100, n_test=100, seed=0)
    >>> cp.problem.dims, int(cp.corrupted.sum())
    ((100, 650), 50)
    """
    from optkit.problems.library.digits import digit_images

    for argument, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    if not isinstance(corruption, (int, float)) or not 0.0 <= corruption <= 1.0:
        raise ValueError(f"corruption must be a fraction in [0, 1], got {corruption!r}")
    if not isinstance(l2, (int, float)) or not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2 must be a positive float (the lower level's strong convexity), got {l2!r}")
    if not np.isfinite(x0):
        raise ValueError(f"x0 must be finite, got {x0!r}")
    images, labels, chosen = digit_images(source)
    total = n_train + n_val + n_test
    if total > images.shape[0]:
        raise ValueError(f"n_train + n_val + n_test = {total} exceeds the {images.shape[0]} images of {chosen!r}")
    rng = as_generator(seed)
    order = rng.permutation(images.shape[0])[:total]
    features = _features(np.asarray(images, dtype=np.float64)[order])
    y_all = np.asarray(labels, dtype=np.int64)[order]
    n_classes = int(labels.max()) + 1
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, total)
    clean = y_all[tr].copy()
    corrupted = np.zeros(n_train, dtype=bool)
    corrupted[rng.choice(n_train, size=round(corruption * n_train), replace=False)] = True
    noisy = clean.copy()
    noisy[corrupted] = (clean[corrupted] + rng.integers(1, n_classes, size=int(corrupted.sum()))) % n_classes
    train = (features[tr], noisy)
    validation = (features[va], y_all[va])
    test = (features[te], y_all[te])
    for array in (*train, *validation, *test, corrupted, clean):
        array.setflags(write=False)
    d = features.shape[1]
    lower = _softmax_sum(train[0], train[1], n_classes, n_train, weighted=True, l2=float(l2),
                         name=f"{chosen}_train_weighted")
    upper = _softmax_sum(validation[0], validation[1], n_classes, n_train, weighted=False, l2=0.0,
                         name=f"{chosen}_validation")
    problem = BilevelProblem(upper, lower, x0=np.full(n_train, float(x0)), y0=np.zeros(d * n_classes),
                             name=f"data-cleaning-{chosen}")
    return CleaningProblem(problem, train, validation, test, corrupted, clean, n_classes, chosen,
                           note=f"{corruption:.0%} corrupted labels, softmax regression, l2 = {l2:g}")


def accuracy(cleaning: CleaningProblem, y: np.ndarray, data: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Accuracy of the linear classifier ``y = vec(W)`` on ``data`` (default: the test split)."""
    A, labels = cleaning.test if data is None else data
    return float(np.mean(np.argmax(A @ cleaning.weights(y), axis=1) == labels))


def cleaner_f1(x: np.ndarray, corrupted: np.ndarray) -> float:
    r"""F1 score of the cleaner that flags example :math:`i` as corrupted when :math:`\sigma(x_i) < 1/2`
    (i.e. :math:`x_i < 0`), against the true mask ``corrupted``; 0 when nothing is flagged or nothing is
    corrupted."""
    x = np.asarray(x, dtype=np.float64)
    corrupted = np.asarray(corrupted, dtype=bool)
    if x.shape != corrupted.shape:
        raise ValueError(f"x and corrupted must have the same shape, got {x.shape} and {corrupted.shape}")
    flagged = x < 0.0
    true_positive = float(np.sum(flagged & corrupted))
    denominator = float(np.sum(flagged) + np.sum(corrupted))
    return 0.0 if denominator == 0 else 2.0 * true_positive / denominator
