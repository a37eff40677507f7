"""Non-negative matrix factorisation of a low-rank-plus-sparse matrix, without forming the products densely.

The network state (``pipeline.regressors.state``) factorises R = clip0(A B + 1 mu^T): the predicted
next-trial activity, of rank <= rank(A) + 1 before the clip, which moves few entries (0.03 % on
full-size synthetic recordings). Written as R = A B + 1 mu^T + E with E sparse (E = -(A B + 1 mu^T)
where that is negative), every product the NMF needs, R H^T and R^T W, costs O((P + N) r k + nnz(E) k)
instead of O(P N k): at SENSORIUM+ size (P ~ 4,200 pairs, N ~ 8,000 neurons, k = 10, 1,000 iterations)
about 70 s per recording with scikit-learn on 2 cores becomes about a second.

The algorithm is scikit-learn's NMF with ``solver="cd"`` (coordinate descent = HALS on the Frobenius
loss, no regularisation, no shuffling), its ``init="random"`` start and its stopping rule (projected-
gradient violation relative to the first iteration's <= ``tol``), so the result equals
``sklearn.decomposition.NMF(init="random", random_state=seed, max_iter=..., tol=...)`` up to rounding
(tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class LowRankPlusSparse:
    """R (P, N) = A @ B + mu (broadcast over rows) + E, never formed.

    Attributes:
        A: (P, r) float64.
        B: (r, N) float64.
        mu: (N,) float64 row offset.
        E: (P, N) sparse correction (CSR).
    """

    A: np.ndarray
    B: np.ndarray
    mu: np.ndarray
    E: sparse.csr_matrix

    @classmethod
    def clipped(cls, A: np.ndarray, B: np.ndarray, mu: np.ndarray, block: int = 1024) -> LowRankPlusSparse:
        """clip0(A @ B + mu): the dense product is formed ``block`` rows at a time only to find the
        negative entries (the memory stays O(block N))."""
        A, B, mu = (np.asarray(x, dtype=np.float64) for x in (A, B, mu))
        rows, cols, vals = [], [], []
        for start in range(0, A.shape[0], block):
            dense = A[start : start + block] @ B
            dense += mu[None, :]
            r, c = np.nonzero(dense < 0)
            rows.append(r + start)
            cols.append(c)
            vals.append(-dense[r, c])
        E = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(A.shape[0], B.shape[1]),
        )
        return cls(A, B, mu, E)

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape[0], self.B.shape[1]

    def dense(self) -> np.ndarray:
        """(P, N) R formed (tests, small problems)."""
        return self.A @ self.B + self.mu[None, :] + self.E.toarray()

    def mean(self) -> float:
        P, N = self.shape
        total = self.A.sum(axis=0) @ self.B.sum(axis=1) + P * self.mu.sum() + self.E.sum()
        return float(total / (P * N))

    def left(self, Wt: np.ndarray) -> np.ndarray:
        """W^T R: (k, N) for Wt = W^T (k, P)."""
        return (Wt @ self.A) @ self.B + np.outer(Wt.sum(axis=1), self.mu) + (self.E.T @ Wt.T).T

    def right(self, H: np.ndarray) -> np.ndarray:
        """H R^T: (k, P) for H (k, N)."""
        return (H @ self.B.T) @ self.A.T + (H @ self.mu)[:, None] + (self.E @ H.T).T


@dataclass(frozen=True)
class Dense:
    """A formed matrix with the same interface as :class:`LowRankPlusSparse` (tests, small problems)."""

    X: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape

    def mean(self) -> float:
        return float(self.X.mean())

    def left(self, Wt: np.ndarray) -> np.ndarray:
        return Wt @ self.X

    def right(self, H: np.ndarray) -> np.ndarray:
        return H @ self.X.T


Matrix = LowRankPlusSparse | Dense


def _sweep(F: np.ndarray, G: np.ndarray, gram: np.ndarray) -> float:
    """One coordinate-descent pass over the rows of a factor F (k, M) stored component-major (in place);
    returns the projected-gradient violation.

    Minimises ||X - F^T Q||^2 over F >= 0 one component at a time, all M entries of a component at once
    (each entry's update involves only its own column of F, so this equals scikit-learn's element-by-
    element loop): G (k, M) = Q X^T, gram (k, k) = Q Q^T. Component-major rows keep every operation on
    contiguous memory.
    """
    violation = 0.0
    for t in range(F.shape[0]):
        grad = gram[t] @ F - G[t]
        projected = np.where(F[t] == 0, np.minimum(grad, 0.0), grad)
        violation += float(np.abs(projected).sum())
        if gram[t, t] != 0:
            np.maximum(F[t] - grad / gram[t, t], 0.0, out=F[t])
    return violation


@dataclass(frozen=True)
class NMFResult:
    """W (P, k), H (k, N), iterations run and whether the tolerance was reached before ``max_iter``."""

    W: np.ndarray
    H: np.ndarray
    n_iter: int
    converged: bool


def _solve(
    X: Matrix, Wt: np.ndarray, H: np.ndarray, update_h: bool, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-learn's ``_fit_coordinate_descent`` on Wt = W^T (k, P) and H (k, N), both updated in place
    (H only when ``update_h``); returns (Wt, H, iterations)."""
    violation_init = None
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        violation = _sweep(Wt, X.right(H), H @ H.T)
        if update_h:
            violation += _sweep(H, X.left(Wt), Wt @ Wt.T)
        if violation_init is None:
            violation_init = violation
        if violation_init == 0 or violation / violation_init <= tol:
            break
    return Wt, H, n_iter


def nmf_fit(X: Matrix, k: int, seed: int, max_iter: int = 200, tol: float = 1e-4) -> NMFResult:
    """Factorise X ~ W H with W, H >= 0 (scikit-learn's cd solver from its random start)."""
    P, N = X.shape
    rng = np.random.RandomState(seed)
    avg = np.sqrt(X.mean() / k)
    H = np.abs(avg * rng.standard_normal(size=(k, N)))
    W = np.abs(avg * rng.standard_normal(size=(P, k)))
    Wt, H, n_iter = _solve(X, np.ascontiguousarray(W.T), H, True, max_iter, tol)
    return NMFResult(Wt.T, H, n_iter, n_iter < max_iter)


def nmf_transform(X: Matrix, H: np.ndarray, max_iter: int = 200, tol: float = 1e-4) -> NMFResult:
    """W >= 0 with X ~ W H for a fixed H (scikit-learn's ``NMF.transform``: with the cd solver W starts
    at zero)."""
    P, _ = X.shape
    Wt, H, n_iter = _solve(X, np.zeros((H.shape[0], P)), H, False, max_iter, tol)
    return NMFResult(Wt.T, H, n_iter, n_iter < max_iter)


@dataclass(frozen=True)
class FittedNMF:
    """A fitted factorisation: ``components_`` (k, N) = H, and :meth:`transform` of new rows."""

    components_: np.ndarray
    n_iter_: int
    converged: bool
    max_iter: int
    tol: float

    @classmethod
    def fit(cls, X: Matrix | np.ndarray, k: int, seed: int, max_iter: int, tol: float = 1e-4) -> FittedNMF:
        result = nmf_fit(_matrix(X), k, seed, max_iter, tol)
        return cls(result.H, result.n_iter, result.converged, max_iter, tol)

    def transform(self, X: Matrix | np.ndarray) -> np.ndarray:
        return self.transform_result(X).W

    def transform_result(self, X: Matrix | np.ndarray) -> NMFResult:
        return nmf_transform(_matrix(X), self.components_, self.max_iter, self.tol)


def _matrix(X: Matrix | np.ndarray) -> Matrix:
    return Dense(np.asarray(X, dtype=np.float64)) if isinstance(X, np.ndarray) else X
