"""History filter bank: boxcar means of each neuron's own past known responses (see docs/model.md#history).

For lag ``l`` the feature of trial ``i`` is the mean of the neuron's responses on the ``l`` most recent
*known* (train or validation) trials presented strictly before ``i``, zero-padded at the session start
(always divided by ``l``). Test / final_test responses are never inputs.

The winner stored the full bank, (T, N, L) float64 per mouse. Every boxcar mean is a difference of two
prefix sums over the known trials in time order, so here only the prefix sums are kept and features are
formed on demand for a batch of trials.

Memory for 27204-5-13 (T = 6959 trials, N = 7538 neurons, L = 5 lags):

* winner's float64 cache, T * N * L * 8 B = 2,098,277,680 B (2.10 GB, 1.95 GiB);
* a float32 full bank, T * N * L * 4 B = 1,049,138,840 B (1.05 GB);
* this prefix bank, (K + 1) * N * 8 B + T * 8 B with K known trials:
  K = 5959 -> 359,411,840 + 55,672 B (0.36 GB, 5.8x smaller than the winner's cache);
  K = 4959 (if test and final_test hold ~1000 trials each) -> 299,107,840 + 55,672 B (0.30 GB, 7.0x).

The prefix sums stay float64: a boxcar mean is a difference of two sums over up to K rows, and float32
would lose about 3 significant digits to cancellation late in the session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.configs import HistoryConfig


@dataclass(frozen=True)
class HistoryBank:
    """Prefix sums from which every history feature of one recording is formed.

    Attributes:
        lags: (L,) boxcar lengths, strictly increasing, >= 1.
        prefix: (K + 1, N) float64; ``prefix[k]`` = sum of the first ``k`` known responses in time order
            (``prefix[0]`` = 0).
        n_known_before: (T,) int64, file-index order: known trials presented strictly before each trial
            (a trial never sees itself).
    """

    lags: tuple[int, ...]
    prefix: np.ndarray
    n_known_before: np.ndarray

    def __post_init__(self) -> None:
        # accept a list of lags (configs and the database hold lists) but store an immutable tuple
        object.__setattr__(self, "lags", tuple(int(lag) for lag in self.lags))
        if not self.lags or any(lag < 1 for lag in self.lags):
            raise ValueError(f"lags must be positive integers, got {self.lags}")
        if self.prefix.ndim != 2 or self.n_known_before.ndim != 1:
            raise ValueError("prefix must be (K+1, N) and n_known_before (T,)")
        if self.n_known_before.size and (
            self.n_known_before.min() < 0 or self.n_known_before.max() > self.prefix.shape[0] - 1
        ):
            raise ValueError("n_known_before must lie in [0, K]")

    @property
    def n_trials(self) -> int:
        """T."""
        return int(self.n_known_before.shape[0])

    @property
    def n_neurons(self) -> int:
        """N."""
        return int(self.prefix.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays: (K + 1) * N * 8 + T * 8."""
        return int(self.prefix.nbytes + self.n_known_before.nbytes)

    def features(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """History features of the trials ``idx`` (file indices).

        Returns:
            (len(idx), N, L) float32; ``[:, :, j]`` = mean over the ``lags[j]`` most recent known trials
            before each trial, zero rows standing in for trials before the session start.
        """
        k = self.n_known_before[np.asarray(idx, dtype=np.int64)]
        out = np.empty((k.shape[0], self.n_neurons, len(self.lags)), dtype=np.float32)
        top = self.prefix[k]  # (B, N) float64
        for j, lag in enumerate(self.lags):
            # fewer than `lag` known trials so far: the missing ones are zero rows, hence / lag always
            out[:, :, j] = (top - self.prefix[np.maximum(k - lag, 0)]) / lag
        return out

    def full(self) -> np.ndarray:
        """(T, N, L) float32 features of every trial in file-index order (tests and small data only)."""
        return self.features(np.arange(self.n_trials))


def check_inputs(responses: np.ndarray, rank: np.ndarray, known: np.ndarray) -> tuple[int, int]:
    """Shapes and the permutation property of ``rank``; returns (T, N)."""
    if responses.ndim != 2:
        raise ValueError(f"responses must be (T, N), got shape {responses.shape}")
    T, N = responses.shape
    if rank.shape != (T,) or known.shape != (T,):
        raise ValueError(f"rank and known must be ({T},), got {rank.shape} and {known.shape}")
    if not np.array_equal(np.sort(rank), np.arange(T)):
        raise ValueError("rank must be a permutation of 0..T-1 (the time rank of each file index)")
    return T, N


def compress_responses(responses: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``log(1 + max(r, 0) / m)`` per neuron, m = mean of max(r, 0) over the known ``rows``.

    Calcium responses are heavy-tailed: a single burst dominates a boxcar of raw responses. Dividing by
    the neuron's own mean makes the compression independent of its units and rate; only known rows set
    m, so held-out responses cannot leak in (their transformed rows are never read either).

    Args:
        responses: (T, N) file-index order.
        rows: (K,) file indices of the known trials.

    Returns:
        (T, N) float64.
    """
    r = np.maximum(np.asarray(responses, dtype=np.float64), 0.0)
    if rows.size == 0:
        return np.log1p(r)
    m = r[rows].mean(axis=0)
    # a silent neuron (mean 0) keeps the unit scale: its known features stay 0 either way
    m = np.where(m > 0, m, 1.0)
    return np.log1p(r / m)


def build_history_bank(
    responses: np.ndarray, rank: np.ndarray, known: np.ndarray, cfg: HistoryConfig
) -> HistoryBank:
    """Prefix-sum history bank of one recording (vectorised; no loop over trials).

    Args:
        responses: (T, N) responses as the model sees them, file-index order. Rows of unknown trials are
            never read (they may hold zeros, held-out values or anything else).
        rank: (T,) time rank of each file index (a permutation of 0..T-1).
        known: (T,) bool, True for train / validation trials (original tiers).
        cfg: the lags and the transform (``log1p``: boxcars of ``compress_responses``).

    Returns:
        The bank; ``bank.full()`` equals the (T, N, L) history of docs/model.md#history in file order.
    """
    rank = np.asarray(rank, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    responses = np.asarray(responses)
    T, N = check_inputs(responses, rank, known)
    sort_id = np.argsort(rank, kind="stable")  # file indices in time order
    known_t = known[sort_id]
    # only the known rows are ever read, so unknown responses cannot leak into any feature
    rows = sort_id[known_t]  # (K,) file indices of the known trials, time order
    if cfg.transform == "log1p":
        responses = compress_responses(responses, rows)
    prefix = np.zeros((rows.size + 1, N), dtype=np.float64)
    # row by row instead of np.cumsum(axis=0): the same additions in the same order (bit-identical), ~2.5x
    # faster on a (6000, 8000) array, and no gathered (K, N) copy
    for i, f in enumerate(rows):
        np.add(prefix[i], responses[f], out=prefix[i + 1])
    # a NaN or an infinity in any known row reaches the last prefix row (inf - inf is NaN)
    if not np.all(np.isfinite(prefix[-1])):
        raise ValueError("responses of known trials must be finite (a NaN would poison every later sum)")
    # exclusive count: a trial's own response is added only after its features are formed
    before_t = np.cumsum(known_t, dtype=np.int64) - known_t
    n_known_before = before_t[rank]  # back to file order: file i sits at time position rank[i]
    return HistoryBank(lags=tuple(cfg.lags), prefix=prefix, n_known_before=n_known_before)


def history_reference(
    responses: np.ndarray, rank: np.ndarray, known: np.ndarray, lags: Sequence[int]
) -> np.ndarray:
    """Slow, literal form of docs/model.md#history (for tests): a list of the ``l`` most recent known
    trials per lag.

    The list starts with ``l`` virtual entries that point at zero rows. Each trial, in time order, takes
    the mean of the listed rows; then, only if it is known, the oldest entry is dropped and the trial
    appended.

    Returns:
        (T, N, L) float64 in file-index order.
    """
    rank = np.asarray(rank, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    T, N = check_inputs(np.asarray(responses), rank, known)
    A = np.asarray(responses, dtype=np.float64)[np.argsort(rank, kind="stable")]  # time order
    known_t = known[np.argsort(rank, kind="stable")]
    zero_row = np.zeros(N)
    out = np.zeros((T, N, len(lags)))
    for j, lag in enumerate(lags):
        recent: deque[np.ndarray] = deque([zero_row] * lag)
        for i in range(T):
            out[i, :, j] = sum(recent) / lag
            if known_t[i]:
                recent.popleft()
                recent.append(A[i])
    return out[rank]  # file i sits at time position rank[i]
