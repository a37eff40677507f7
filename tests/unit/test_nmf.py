"""The low-rank-plus-sparse NMF equals scikit-learn's NMF (cd solver, random start) on the same matrix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.decomposition import NMF

from pipeline.regressors.nmf import Dense, FittedNMF, LowRankPlusSparse, nmf_fit


@pytest.fixture(scope="module")
def matrix():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((120, 4))
    B = rng.standard_normal((4, 90)) * 0.3
    mu = rng.uniform(0.2, 1.0, 90)
    return LowRankPlusSparse.clipped(A, B, mu, block=37)  # blocks that do not divide the rows


def test_operator_is_the_clipped_product(matrix):
    dense = np.clip(matrix.A @ matrix.B + matrix.mu, 0, None)
    np.testing.assert_allclose(matrix.dense(), dense, atol=1e-12)
    assert 0 < matrix.E.nnz < dense.size * 0.5, "the clip moved some entries, not most"
    H = np.random.default_rng(0).uniform(size=(3, 90))
    Wt = np.random.default_rng(1).uniform(size=(3, 120))
    np.testing.assert_allclose(matrix.right(H), H @ dense.T, atol=1e-10)
    np.testing.assert_allclose(matrix.left(Wt), Wt @ dense, atol=1e-10)
    assert matrix.mean() == pytest.approx(dense.mean(), rel=1e-12)


@pytest.mark.parametrize("max_iter", [5, 400])  # stopped by the limit / by the tolerance
def test_fit_and_transform_equal_scikit_learn(matrix, max_iter):
    dense = matrix.dense()
    ref = NMF(n_components=3, init="random", random_state=674, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_ref = ref.fit_transform(dense)
        T_ref = ref.transform(dense[:30])
    ours = FittedNMF.fit(matrix, 3, 674, max_iter)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.components_, ref.components_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(nmf_fit(matrix, 3, 674, max_iter).W, W_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.transform(Dense(dense[:30])), T_ref, rtol=1e-6, atol=1e-9)
    assert ours.converged == (ref.n_iter_ < max_iter)
