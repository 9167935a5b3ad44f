import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from glassvi.metrics import rank_correlation, stability, topk_jaccard, topk_rank_correlation

# ---------------------------------------------------------------- topk_jaccard


def test_topk_jaccard_known_values():
    a = [4.0, 3.0, 2.0, 1.0]
    b = [4.0, 1.0, 3.0, 2.0]
    assert topk_jaccard(a, b, k=1) == 1.0
    assert topk_jaccard(a, b, k=2) == pytest.approx(1 / 3)  # {0, 1} vs {0, 2}
    assert topk_jaccard(a, b, k=3) == pytest.approx(2 / 4)  # {0, 1, 2} vs {0, 2, 3}
    assert topk_jaccard(a, b, k=4) == 1.0
    assert topk_jaccard(a, [-x for x in a], k=2) == 0.0
    assert isinstance(topk_jaccard(a, b, k=2), float)


def test_topk_jaccard_per_column():
    a = np.array([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])
    b = np.array([[4.0, 4.0], [1.0, 3.0], [3.0, 2.0], [2.0, 1.0]])
    np.testing.assert_allclose(topk_jaccard(a, b, k=2), [1 / 3, 0.0])


def test_topk_jaccard_absolute_and_ties():
    a = [-5.0, 1.0, 0.5, 0.0]
    b = [5.0, 1.0, 0.0, 0.5]
    assert topk_jaccard(a, b, k=1) == 0.0  # {1} vs {0}
    assert topk_jaccard(a, b, k=1, absolute=True) == 1.0
    # ties are broken by feature order: top-2 of all-equal scores is {0, 1}
    assert topk_jaccard([1.0, 1.0, 1.0], [1.0, 1.0, 0.0], k=2) == 1.0


def test_topk_jaccard_rankings_of_names():
    assert topk_jaccard(["A", "B", "C", "D"], ["B", "A", "D", "C"], k=2) == 1.0
    assert topk_jaccard(["A", "B", "C"], ["C", "D", "A", "E"], k=3) == pytest.approx(2 / 4)
    assert topk_jaccard(pd.Index(["A", "B"]), ["B", "C"], k=1) == 0.0


def test_topk_jaccard_aligns_series():
    a = pd.Series([3.0, 2.0, 1.0], index=["x", "y", "z"])
    b = pd.Series([1.0, 2.0, 3.0], index=["z", "y", "x"])
    assert topk_jaccard(a, b, k=1) == 1.0


def test_topk_jaccard_bad_input():
    with pytest.raises(ValueError, match=r"k=5 exceeds the number of features \(4\)"):
        topk_jaccard([1.0, 2, 3, 4], [1.0, 2, 3, 4], k=5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        topk_jaccard([1.0, 2], [1.0, 2], k=0)
    with pytest.raises(ValueError, match="a has 3 features but b has 4"):
        topk_jaccard([1.0, 2, 3], [1.0, 2, 3, 4], k=2)
    with pytest.raises(ValueError, match=r"a has shape \(3, 2\) but b has shape \(3, 3\)"):
        topk_jaccard(np.ones((3, 2)), np.ones((3, 3)), k=2)
    with pytest.raises(ValueError, match="both be numeric scores or both"):
        topk_jaccard(["A", "B"], [1.0, 2.0], k=1)
    with pytest.raises(ValueError, match="duplicate"):
        topk_jaccard(["A", "A", "B"], ["A", "B", "C"], k=2)
    with pytest.raises(ValueError, match="a is empty"):
        topk_jaccard([], [], k=1)


# ---------------------------------------------------------------- rank_correlation


def test_rank_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(50, 3)).astype(float)  # many ties
    b = a + rng.integers(0, 3, size=a.shape)
    rho = rank_correlation(a, b)
    for j in range(3):
        assert rho[j] == pytest.approx(spearmanr(a[:, j], b[:, j])[0])


def test_rank_correlation_known_values():
    assert rank_correlation([1.0, 2, 3, 4], [10.0, 20, 30, 1000]) == pytest.approx(1.0)
    assert rank_correlation([1.0, 2, 3], [3.0, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([-3.0, 1, 2], [3.0, 1, 2], absolute=True) == pytest.approx(1.0)
    r = rank_correlation(np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]), np.eye(3)[:, :2])
    assert np.isnan(r[1])


def test_rank_correlation_bad_input():
    with pytest.raises(ValueError, match="a has 2 features but b has 3"):
        rank_correlation([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 features"):
        rank_correlation([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        rank_correlation([1.0, np.nan], [1.0, 2.0])


# ---------------------------------------------------------------- stability


def test_stability_identical_and_independent_runs():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 4))
    same = stability([base, base.copy(), base.copy()], k=20)
    assert same.shape == (4, 3)
    np.testing.assert_allclose(same["topk_rank_correlation"], 1.0)
    np.testing.assert_allclose(same["topk_jaccard"], 1.0)
    np.testing.assert_allclose(same["rank_correlation"], 1.0)
    indep = stability([rng.normal(size=(300, 4)) for _ in range(3)], k=20)
    assert (indep["rank_correlation"].abs() < 0.2).all()
    assert (indep["topk_jaccard"] < 0.3).all()


def test_stability_per_pair_known_values():
    a = np.array([4.0, 3.0, 2.0, 1.0])
    b = np.array([4.0, 1.0, 3.0, 2.0])
    table = stability({"seed0": a, "seed1": a, "seed2": b}, k=2, per_pair=True)
    assert list(table.columns) == [
        "run_a",
        "run_b",
        "target",
        "topk_jaccard",
        "rank_correlation",
        "topk_rank_correlation",
    ]
    assert list(zip(table["run_a"], table["run_b"])) == [
        ("seed0", "seed1"),
        ("seed0", "seed2"),
        ("seed1", "seed2"),
    ]
    np.testing.assert_allclose(table["topk_jaccard"], [1.0, 1 / 3, 1 / 3])
    rho_ab = spearmanr(a, b)[0]
    np.testing.assert_allclose(table["rank_correlation"], [1.0, rho_ab, rho_ab])
    # union of the top 2 of a and b is features 0, 1, 2: ranks (3, 2, 1) against (3, 1, 2)
    np.testing.assert_allclose(table["topk_rank_correlation"], [1.0, 0.5, 0.5])
    summary = stability({"seed0": a, "seed1": a, "seed2": b}, k=2)
    assert summary.loc[0, "topk_jaccard"] == pytest.approx((1 + 2 / 3) / 3)


def test_stability_labels_targets_from_dataframes():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(30, 2)), columns=["prog_a", "prog_b"])
    shuffled = df.sample(frac=1.0, random_state=0)[["prog_b", "prog_a"]]
    table = stability([df, shuffled], k=5)
    assert list(table.index) == ["prog_a", "prog_b"]
    np.testing.assert_allclose(table["rank_correlation"], 1.0)


def test_stability_bad_input():
    with pytest.raises(ValueError, match="at least 2 score matrices, got 1"):
        stability([np.ones((5, 2))], k=2)
    with pytest.raises(ValueError, match="has shape"):
        stability([np.ones((5, 2)), np.ones((6, 2))], k=2)
    with pytest.raises(ValueError, match="exceeds"):
        stability([np.ones((5, 2)), np.ones((5, 2))], k=6)


def test_topk_rank_correlation_ignores_the_tail():
    rng = np.random.default_rng(3)
    head = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    a = np.concatenate([head, rng.normal(size=200)])
    b = np.concatenate([head, rng.normal(size=200)])
    # the long noisy tail drags the full correlation down, not the top-k one
    assert rank_correlation(a, b) < 0.3
    assert topk_rank_correlation(a, b, k=5) == pytest.approx(1.0)
    assert topk_rank_correlation(a, -b, k=5) < 0
    both = topk_rank_correlation(np.c_[a, a], np.c_[b, a], k=5)
    np.testing.assert_allclose(both, [1.0, 1.0])


def test_stability_against_direction_ranks_negative_scores():
    a = np.array([3.0, 2.0, -5.0, -4.0, 0.0])
    b = np.array([0.0, 1.0, -5.0, -4.0, 2.0])
    for_ = stability([a, b], k=2)
    against = stability([a, b], k=2, direction="against")
    assert for_.loc[0, "topk_jaccard"] == pytest.approx(1 / 3)
    assert against.loc[0, "topk_jaccard"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="direction"):
        stability([a, b], k=2, direction="up")
