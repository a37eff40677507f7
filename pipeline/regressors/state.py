"""Network state: reduced-rank VAR(1) of the next known trial, then NMF (see docs/model.md#network-state;
fixed as in docs/model.md#fix-state-pairs and docs/model.md#fix-state-transform).

Steps, with A the normalised responses in time order, clipped at 0:

1. pairs (A[t], A[t+1]) of consecutive trials in time order, used only when BOTH are known
   (the winner tested ``tier[t]`` twice and never ``tier[t+1]``, so held-out or zeroed test responses
   became regression targets: docs/model.md#fix-state-pairs);
2. X1 = sqrt(A[t] + eps), X2 = sqrt(A[t+1] + eps);
3. PCA fitted on X1; Z1 = PCA(X1), Z2 = PCA(X2);
4. Z2^T ~ W V Z1^T with V (rank, n_pca), W (n_pca, rank) by alternating least squares from V ~ N(0, 1):
   W <- Z2^T pinv(V Z1^T); V <- pinv(W) Z2^T pinv(Z1^T); no intercept;
5. R = clip0(PCA^-1((W V Z1^T)^T)) and an NMF fitted on R;
6. for every trial (test included) the state is NMF.transform(clip0(PCA^-1((W V PCA(sqrt(h1 + eps))^T)^T)))
   with h1 the lag-1 history (the last known trial before it; zeros at the session start). The winner fed
   the raw h1 to a model fitted on square-rooted data (docs/model.md#fix-state-transform); here the same
   map is used in fitting and in prediction, so for a trial whose predecessor is known the NMF input is
   exactly the row of R predicted for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from pipeline.configs import StateConfig
from pipeline.regressors.history import check_inputs
from pipeline.regressors.nmf import FittedNMF, LowRankPlusSparse


@dataclass(frozen=True)
class StateResult:
    """Network state of one recording and diagnostics of the fit.

    Attributes:
        state: (T, n_components) float32, file-index order.
        n_pairs: consecutive (known, known) pairs in time order the model was fitted on.
        n_pca: PCA components actually used (min(cfg.n_pca, n_pairs - 1, N)).
        pca_explained: fraction of the variance of X1 kept by the PCA.
        nmf_converged: False when the NMF fit (or the transform of all trials) hit its iteration limit.
        nmf_n_iter: iterations of the NMF fit.
        rrr_fit_r2: R^2 of Z2 ~ Z1 V^T W^T on the pairs (relative to the column means of Z2).
    """

    state: np.ndarray
    n_pairs: int
    n_pca: int
    pca_explained: float
    nmf_converged: bool
    nmf_n_iter: int
    rrr_fit_r2: float


def _reduced_rank_var(
    Z1: np.ndarray, Z2: np.ndarray, rank: int, n_iter: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Alternating least squares for Z2^T ~ W V Z1^T (step 4 of docs/model.md#network-state).

    Args:
        Z1, Z2: (P, D) PCA scores of the current and the next trial.

    Returns:
        W (D, rank), V (rank, D).
    """
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((rank, Z1.shape[1]))
    # with Z1 = Q Rz (Q: P x D orthonormal columns), pinv(X Z1^T) = Q pinv(X Rz^T) for any X, so every
    # pseudo-inverse below is of a (., D) matrix instead of a (., P) one:
    # W = Z2^T pinv(V Z1^T) = (Q^T Z2)^T pinv(V Rz^T), and Z2^T pinv(Z1^T) = (Q^T Z2)^T pinv(Rz^T) does not
    # change across iterations, so it is computed once
    Q, Rz = np.linalg.qr(Z1)
    Yt = (Q.T @ Z2).T
    del Q
    M = Yt @ np.linalg.pinv(Rz.T)
    W = np.zeros((Z1.shape[1], rank))
    for _ in range(n_iter):
        W = Yt @ np.linalg.pinv(V @ Rz.T)
        V = np.linalg.pinv(W) @ M
    return W, V


def _last_known_rows(A_t: np.ndarray, known_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lag-1 history in time order as (distinct rows, which row each trial uses).

    Trials that share their last known trial share the same h1, so the state map runs once per distinct
    row: K + 1 rows (the zero row for trials before the first known one), gathered by ``which`` (T,).
    """
    T, N = A_t.shape
    pos = np.where(known_t, np.arange(T), -1)
    # most recent known position strictly before each trial (-1: none yet)
    last = np.concatenate([[-1], np.maximum.accumulate(pos)[:-1]])
    known_pos = np.flatnonzero(known_t)
    rows = np.vstack([np.zeros((1, N), dtype=A_t.dtype), A_t[known_pos]])  # row 0 = session start
    which = np.searchsorted(known_pos, last) + 1  # index into rows of the known position `last`
    which[last < 0] = 0
    return rows, which


@dataclass(frozen=True)
class _StateModel:
    """The fitted maps (internal; exposed to the tests through ``_fit``).

    Attributes:
        pca: fitted on X1 = sqrt(A[t] + eps) of the known pairs.
        W, V: (D, rank) and (rank, D), the reduced-rank VAR(1): Z_next^T = W V Z^T.
        nmf: fitted on R, the predicted next-trial activity of the known pairs.
        eps: added before the square root.
    """

    pca: PCA
    W: np.ndarray
    V: np.ndarray
    nmf: FittedNMF | None
    eps: float

    @property
    def T_map(self) -> np.ndarray:  # noqa: N802 (the math name)
        """(D, D) = V^T W^T, the map in row-vector form: Z_next = Z @ T_map."""
        return self.V.T @ self.W.T

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """(M, N) rows of A (clipped at 0) -> (M, D) float64 PCA scores of sqrt(rows + eps) (the PCA's
        float32 precision, see :func:`_fit`)."""
        return self.pca.transform(np.sqrt(np.asarray(rows, dtype=np.float32) + np.float32(self.eps))).astype(
            np.float64
        )

    def next_trial_matrix(self, Z: np.ndarray) -> LowRankPlusSparse:
        """(M, D) PCA scores of trials -> the (M, N) predicted next-trial activity, clipped at 0, as
        clip0((Z V^T)(W^T C) + mean): rank <= ``rank`` + 1 before the clip (C: the PCA components).

        The one map used both to build the NMF's training data R and to compute the state
        (docs/model.md#fix-state-transform: the square root is applied in both places, by :meth:`scores`).
        """
        if self.pca.whiten:
            raise ValueError("the state map assumes an unwhitened PCA")
        C = self.pca.components_.astype(np.float64)
        return LowRankPlusSparse.clipped(Z @ self.V.T, self.W.T @ C, self.pca.mean_.astype(np.float64))

    def next_trial(self, prev_rows: np.ndarray) -> np.ndarray:
        """(M, N) rows of A -> the predicted next-trial activity, formed: (M, N)."""
        return self.next_trial_matrix(self.scores(prev_rows)).dense()


def _time_order(
    responses: np.ndarray, rank: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs -> (rank int64, known in time order (T,), A in time order (T, N) float32).

    A holds the known responses clipped at 0 and zeros for unknown trials: held-out (or zeroed) responses
    are never read, so they cannot reach the pairs or the state. float32 is the precision the responses
    are stored and normalised in, so nothing is lost, and it halves the memory of the largest arrays.
    """
    responses = np.asarray(responses)
    rank = np.asarray(rank, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    T, N = check_inputs(responses, rank, known)
    sort_id = np.argsort(rank, kind="stable")
    known_t = known[sort_id]
    A_t = np.zeros((T, N), dtype=np.float32)
    A_t[known_t] = np.clip(np.asarray(responses[sort_id[known_t]], dtype=np.float32), 0.0, None)
    if not np.all(np.isfinite(A_t)):
        raise ValueError("responses of known trials must be finite")
    return rank, known_t, A_t


def _fit(
    responses: np.ndarray, rank: np.ndarray, known: np.ndarray, cfg: StateConfig
) -> tuple[StateResult, _StateModel]:
    """``fit_network_state`` plus the fitted maps (for tests)."""
    rank, known_t, A_t = _time_order(responses, rank, known)
    T, N = A_t.shape

    prev = np.flatnonzero(known_t[:-1] & known_t[1:])  # time positions t with t and t+1 both known
    n_pairs = int(prev.size)
    if n_pairs < 3:
        raise ValueError(
            f"network state needs at least 3 pairs of consecutive known trials in time order, got {n_pairs}"
        )
    # PCA in float32 (the responses' precision): its randomized SVD (power iterations over P x N, the
    # largest cost here) runs at twice the float64 speed; the scores go on in float64
    eps = np.float32(cfg.eps)
    n_pca = int(min(cfg.n_pca, n_pairs - 1, N))
    # random_state matters only when sklearn picks the randomized solver (large data); fixed for determinism
    pca = PCA(n_components=n_pca, random_state=cfg.rrr_seed)
    Z1 = pca.fit_transform(np.sqrt(A_t[prev] + eps)).astype(np.float64)  # X1 = sqrt(A[t] + eps)
    model = _StateModel(pca=pca, W=np.zeros(0), V=np.zeros(0), nmf=None, eps=cfg.eps)
    # scores of every known trial, once: the pair targets X2, R's inputs and the state's inputs are all
    # known rows (row 0 of `rows` is the session start's zero history)
    rows, which = _last_known_rows(A_t, known_t)
    Z_rows = model.scores(rows)
    known_pos = np.flatnonzero(known_t)
    at = np.searchsorted(known_pos, prev) + 1  # row of `rows` holding time position t
    Z2 = Z_rows[at + 1]  # t + 1 is known, so it is the next known row

    W, V = _reduced_rank_var(Z1, Z2, min(cfg.rank, n_pca), cfg.n_iter, cfg.rrr_seed)
    T_map = V.T @ W.T  # (D, D): row-vector form of Z -> (W V Z^T)^T
    Z2_hat = Z1 @ T_map
    ss_res = float(np.sum((Z2 - Z2_hat) ** 2))
    ss_tot = float(np.sum((Z2 - Z2.mean(axis=0)) ** 2))
    rrr_fit_r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    model = _StateModel(pca=pca, W=W, V=V, nmf=None, eps=cfg.eps)
    # R = clip0(PCA^-1(Z2_hat)): predicted next trial of each pair; low rank + sparse (regressors.nmf)
    R = model.next_trial_matrix(Z_rows[at])
    nmf = FittedNMF.fit(R, cfg.n_components, cfg.nmf_seed, cfg.nmf_max_iter)
    model = _StateModel(pca=pca, W=W, V=V, nmf=nmf, eps=cfg.eps)
    del R
    transformed = nmf.transform_result(model.next_trial_matrix(Z_rows))
    state_t = transformed.W[which]  # time order
    result = StateResult(
        state=state_t[rank].astype(np.float32),  # file i sits at time position rank[i]
        n_pairs=n_pairs,
        n_pca=n_pca,
        pca_explained=float(np.sum(pca.explained_variance_ratio_)),
        nmf_converged=bool(nmf.converged and transformed.converged),
        nmf_n_iter=int(nmf.n_iter_),
        rrr_fit_r2=float(rrr_fit_r2),
    )
    return result, model


def fit_network_state(
    responses: np.ndarray, rank: np.ndarray, known: np.ndarray, cfg: StateConfig
) -> StateResult:
    """Fit the state model on known pairs and compute the state of every trial.

    Args:
        responses: (T, N) normalised responses (r * p_n), file-index order. Unknown rows are never read.
        rank: (T,) time rank of each file index (permutation of 0..T-1).
        known: (T,) bool, True for train / validation trials (original tiers).
        cfg: PCA size, RRR rank and iterations, NMF size, seeds, eps.

    Returns:
        The state (T, n_components) in file order and fit diagnostics. Deterministic for the same inputs.

    Raises:
        ValueError: bad shapes, or fewer than 3 consecutive known pairs.
    """
    return _fit(responses, rank, known, cfg)[0]
