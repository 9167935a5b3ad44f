import logging

import numpy as np
import pandas as pd
import pytest

from glassvi.metrics import (
    deletion_curve,
    faithfulness,
    insertion_curve,
    randomization_check,
)


def _linear_problem(seed=0, n_cells=40, n_features=30):
    rng = np.random.default_rng(seed)
    X = rng.random((n_cells, n_features)) + 0.1
    w = rng.normal(size=n_features) + 0.3  # mixed signs, positive on average
    return X, w, (lambda x: x @ w)


# ---------------------------------------------------------------- known answers


def test_all_features_equal_gives_straight_line():
    X = np.ones((3, 20))
    attributions = np.random.default_rng(0).normal(size=(3, 20))
    for curve_fn, start, end in ((deletion_curve, 1.0, 0.0), (insertion_curve, 0.0, 1.0)):
        res = curve_fn(lambda x: x.sum(axis=1), X, attributions, 0.0, steps=20)
        np.testing.assert_allclose(res["fraction"], np.arange(21) / 20)
        np.testing.assert_allclose(res["value"], np.linspace(start, end, 21))
        assert res["auc"] == pytest.approx(0.5)


def test_single_informative_feature():
    X = np.ones((4, 10))
    w = np.zeros(10)
    w[3] = 5.0
    attributions = X * w
    deletion = deletion_curve(lambda x: x @ w, X, attributions, steps=10)
    insertion = insertion_curve(lambda x: x @ w, X, attributions, steps=10)
    np.testing.assert_allclose(deletion["value"], [1.0] + [0.0] * 10)
    np.testing.assert_allclose(insertion["value"], [0.0] + [1.0] * 10)
    assert deletion["auc"] == pytest.approx(0.05)
    assert insertion["auc"] == pytest.approx(0.95)
    # the worst ordering puts the informative feature last
    worst = deletion_curve(lambda x: x @ w, X, -attributions, steps=10)
    assert worst["auc"] == pytest.approx(0.95)


def test_unnormalised_curve_has_raw_targets():
    X, w, f = _linear_problem()
    res = deletion_curve(f, X, X * w, normalize=False, steps=5)
    assert res["value"][0] == pytest.approx(f(X).mean())
    assert res["value"][-1] == pytest.approx(0.0)


# ---------------------------------------------------------------- faithful vs random


def test_exact_attributions_beat_random_and_inverse_loses():
    X, w, f = _linear_problem()
    exact = X * w  # exact attributions of a linear model against a zero baseline
    good = faithfulness(f, X, exact, 0.0, n_random=5, seed=0)
    assert good["deletion_auc"] < good["random_deletion_auc"] - 0.2
    assert good["insertion_auc"] > good["random_insertion_auc"] + 0.2
    assert good["deletion_gain"] > 0.2 and good["insertion_gain"] > 0.2
    # random orderings of a linear model give a roughly straight line
    assert good["random_deletion_auc"] == pytest.approx(0.5, abs=0.05)
    assert good["random_insertion_auc"] == pytest.approx(0.5, abs=0.05)

    bad = faithfulness(f, X, -exact, 0.0, n_random=5, seed=0)
    assert bad["deletion_auc"] > bad["random_deletion_auc"] + 0.2
    assert bad["insertion_auc"] < bad["random_insertion_auc"] - 0.2
    assert bad["deletion_gain"] < 0 and bad["insertion_gain"] < 0
    # same seed -> the same random orderings
    assert bad["random_deletion_auc"] == good["random_deletion_auc"]


def test_faithfulness_matches_curves():
    X, w, f = _linear_problem(1)
    res = faithfulness(f, X, X * w, steps=8, n_random=1)
    assert res["deletion_auc"] == pytest.approx(deletion_curve(f, X, X * w, steps=8)["auc"])
    assert res["insertion_auc"] == pytest.approx(insertion_curve(f, X, X * w, steps=8)["auc"])
    assert res["random_deletion_auc_std"] == 0.0


def test_baseline_vector_and_per_cell():
    X, w, f = _linear_problem(2)
    baseline = X.mean(axis=0)
    exact = (X - baseline) * w
    res_vec = deletion_curve(f, X, exact, baseline, steps=10, normalize=False)
    assert res_vec["value"][-1] == pytest.approx(f(baseline[None, :])[0])
    per_cell = np.tile(baseline, (X.shape[0], 1))
    res_cell = deletion_curve(f, X, exact, per_cell, steps=10, normalize=False)
    np.testing.assert_allclose(res_cell["value"], res_vec["value"])


def test_shared_attribution_vector_equals_repeated_rows():
    X, w, f = _linear_problem(3)
    shared = np.abs(w)
    a = insertion_curve(f, X, shared, steps=6)
    b = insertion_curve(f, X, np.tile(shared, (X.shape[0], 1)), steps=6)
    np.testing.assert_allclose(a["value"], b["value"])


def test_absolute_ordering():
    X = np.ones((2, 5))
    w = np.array([0.0, -4.0, 0.0, 0.0, 0.0])
    attributions = X * w
    f = lambda x: x @ w  # noqa: E731
    signed = deletion_curve(f, X, attributions, steps=5, normalize=False)
    absolute = deletion_curve(f, X, attributions, steps=5, absolute=True, normalize=False)
    # signed: the negative feature is removed last; absolute: first
    np.testing.assert_allclose(signed["value"], [-4, -4, -4, -4, -4, 0])
    np.testing.assert_allclose(absolute["value"], [-4, 0, 0, 0, 0, 0])


def test_max_fraction_and_step_rounding():
    X, w, f = _linear_problem(4, n_features=10)
    res = deletion_curve(f, X, X * w, max_fraction=0.5, steps=20)
    # 21 fractions rounded to whole features: 0..5 of 10
    np.testing.assert_allclose(res["fraction"], np.arange(6) / 10)
    manual = np.trapezoid(res["value"], res["fraction"]) / 0.5
    assert res["auc"] == pytest.approx(manual)


def test_batching_bounds_calls_and_keeps_results():
    X, w, _ = _linear_problem(5, n_cells=25, n_features=12)
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return x @ w

    default = deletion_curve(f, X, X * w, steps=4)
    calls.clear()
    small = deletion_curve(f, X, X * w, steps=4, batch_size=10)
    np.testing.assert_allclose(small["value"], default["value"])
    # 5 steps per cell, 2 cells per chunk of at most 10 rows
    assert max(calls) <= 10
    assert sum(c for c in calls) == 25 * 5 + 25 + 1  # curve rows, f(X), f(baseline)
    calls.clear()
    tiny = deletion_curve(f, X, X * w, steps=4, batch_size=1)  # still one cell at a time
    np.testing.assert_allclose(tiny["value"], default["value"])
    assert max(calls) == 5


def test_accepts_torch_and_column_outputs():
    torch = pytest.importorskip("torch")
    X, w, f = _linear_problem(6)
    wt = torch.tensor(w, requires_grad=True)

    def f_torch(x):
        return torch.as_tensor(x) @ wt  # output still requires grad

    res = deletion_curve(f_torch, X, X * w, steps=5)
    ref = deletion_curve(f, X, X * w, steps=5)
    np.testing.assert_allclose(res["value"], ref["value"])
    col = deletion_curve(lambda x: (x @ w)[:, None], X, X * w, steps=5)
    np.testing.assert_allclose(col["value"], ref["value"])


def test_float32_input_stays_float32():
    X, w, _ = _linear_problem(7)
    X32 = X.astype(np.float32)
    seen = []

    def f(x):
        seen.append(x.dtype)
        return x @ w

    deletion_curve(f, X32, X32 * w, steps=3)
    assert set(seen) == {np.dtype(np.float32)}


def test_dataframe_attributions_are_aligned():
    X, w, f = _linear_problem(8, n_features=6)
    cols = [f"g{i}" for i in range(6)]
    X_df = pd.DataFrame(X, columns=cols)
    attr_df = pd.DataFrame(X * w, columns=cols)[cols[::-1]]
    res = deletion_curve(lambda x: x @ w, X_df, attr_df, steps=6)
    ref = deletion_curve(f, X, X * w, steps=6)
    np.testing.assert_allclose(res["value"], ref["value"])


def test_curve_bad_input():
    X, w, f = _linear_problem()
    with pytest.raises(ValueError, match=r"X has shape \(40, 30\) but attributions has shape"):
        deletion_curve(f, X, np.zeros((40, 29)))
    with pytest.raises(ValueError, match="attributions has 29 features but X has 30"):
        deletion_curve(f, X, np.zeros(29))
    with pytest.raises(ValueError, match="baseline has 3 features but X has 30"):
        deletion_curve(f, X, X * w, np.zeros(3))
    with pytest.raises(ValueError, match="one target value per row"):
        deletion_curve(lambda x: x, X, X * w)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        insertion_curve(f, X, X * w, steps=0)
    with pytest.raises(ValueError, match="max_fraction"):
        insertion_curve(f, X, X * w, max_fraction=1.5)
    with pytest.raises(ValueError, match="removes no feature"):
        insertion_curve(f, X, X * w, max_fraction=0.001)
    with pytest.raises(ValueError, match="cannot be normalised"):
        deletion_curve(lambda x: np.ones(len(x)), X, X * w)
    with pytest.raises(ValueError, match="n_random"):
        faithfulness(f, X, X * w, n_random=0)
    with pytest.raises(ValueError, match="f must be callable"):
        deletion_curve(None, X, X * w)
    with pytest.raises(ValueError, match="X is empty"):
        deletion_curve(f, np.zeros((0, 30)), np.zeros((0, 30)))
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(lambda x: np.full(len(x), np.nan), X, X * w)


# ---------------------------------------------------------------- randomization_check


def test_randomization_check_independent_passes():
    rng = np.random.default_rng(0)
    trained = rng.normal(size=(300, 5))
    res = randomization_check(trained, rng.normal(size=(300, 5)), k=30)
    assert res["passed"] is True
    assert abs(res["rank_correlation"]) < 0.15
    assert res["topk_jaccard"] < 0.25
    assert res["threshold"] == 0.5
    assert res["per_target"].shape == (5, 2)


def test_randomization_check_identical_fails():
    rng = np.random.default_rng(1)
    trained = rng.normal(size=(300, 5))
    same = randomization_check(trained, trained.copy(), k=30)
    assert same["passed"] is False
    assert same["rank_correlation"] == pytest.approx(1.0)
    assert same["topk_jaccard"] == 1.0
    # a rescaled, sign-flipped copy has the same |attribution| ranking: still fails
    flipped = randomization_check(trained, -3 * trained, k=30)
    assert flipped["passed"] is False and flipped["rank_correlation"] == pytest.approx(1.0)


def test_randomization_check_threshold_and_labels():
    rng = np.random.default_rng(2)
    trained = pd.DataFrame(rng.normal(size=(400, 2)), columns=["B cell", "T cell"])
    noisy = trained + 0.7 * rng.normal(size=trained.shape)
    loose = randomization_check(trained, noisy, k=50)
    assert 0.3 < loose["rank_correlation"] < 0.9
    strict = randomization_check(trained, noisy, k=50, threshold=0.95)
    assert strict["passed"] is True
    assert randomization_check(trained, noisy, k=50, threshold=0.1)["passed"] is False
    assert list(loose["per_target"].index) == ["B cell", "T cell"]


def test_randomization_check_constant_and_bad_input(caplog):
    trained = np.random.default_rng(3).normal(size=(60, 2))
    with caplog.at_level(logging.WARNING):
        res = randomization_check(trained, np.zeros((60, 2)), k=10)
    assert res["passed"] is False and np.isnan(res["rank_correlation"])
    assert "undefined" in caplog.text
    with pytest.raises(ValueError, match=r"k=50 exceeds the number of features \(30\)"):
        randomization_check(np.ones((30, 2)), np.ones((30, 2)))
    with pytest.raises(ValueError, match="trained has shape"):
        randomization_check(np.ones((30, 2)), np.ones((30, 3)), k=5)
