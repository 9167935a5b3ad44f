import logging

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from glassvi.metrics import (
    activity_correlation,
    member_recovery,
    program_activity_auroc,
    program_recovery,
)

# ---------------------------------------------------------------- program_activity_auroc


def test_activity_auroc_perfect_and_reversed():
    active = np.array([True] * 5 + [False] * 7)
    scores = np.where(active, 2.0, 1.0) + np.linspace(0, 0.1, 12)
    perfect = program_activity_auroc(scores, active)
    assert perfect == {"auroc": 1.0, "auprc": 1.0, "auprc_chance": 5 / 12}
    reversed_ = program_activity_auroc(-scores, active)
    assert reversed_["auroc"] == 0.0
    assert reversed_["auprc"] < 5 / 12


def test_activity_auroc_known_intermediate_value():
    # one of the four active/inactive pairs is ordered wrongly -> 3/4
    res = program_activity_auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    assert res["auroc"] == pytest.approx(0.75)
    # ranking: 0.8 (+), 0.4 (-), 0.35 (+) -> AP = (1 + 2/3) / 2
    assert res["auprc"] == pytest.approx((1 + 2 / 3) / 2)


def test_activity_auroc_random_is_chance():
    rng = np.random.default_rng(0)
    active = rng.random(5000) < 0.3
    res = program_activity_auroc(rng.normal(size=5000), active)
    assert res["auroc"] == pytest.approx(0.5, abs=0.03)
    assert res["auprc"] == pytest.approx(active.mean(), abs=0.03)


def test_activity_auroc_aligns_series():
    scores = pd.Series([3.0, 2.0, 1.0], index=["a", "b", "c"])
    active = pd.Series([False, True, True], index=["c", "b", "a"])
    assert program_activity_auroc(scores, active)["auroc"] == 1.0
    with pytest.raises(KeyError, match="missing from active"):
        program_activity_auroc(scores, active.drop("a"))


def test_activity_auroc_bad_input():
    with pytest.raises(ValueError, match="scores has 10 programs but active has 12"):
        program_activity_auroc(np.zeros(10), np.ones(12, dtype=bool))
    with pytest.raises(ValueError, match="both active and inactive"):
        program_activity_auroc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="scores is empty"):
        program_activity_auroc([], [])
    with pytest.raises(ValueError, match="NaN"):
        program_activity_auroc([1.0, np.nan], [True, False])
    with pytest.raises(ValueError, match="active must be boolean"):
        program_activity_auroc([1.0, 2.0], [0.5, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        program_activity_auroc(np.zeros((2, 2)), [True, False])


# ---------------------------------------------------------------- activity_correlation


def test_activity_correlation_linear_transform_is_exact():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(200, 4))
    estimated = true * np.array([2.0, -3.0, 0.5, 10.0]) + np.array([1.0, 0.0, -5.0, 2.0])
    for method in ("pearson", "spearman"):
        r = activity_correlation(estimated, true, method=method)
        np.testing.assert_allclose(r, [1.0, -1.0, 1.0, 1.0], atol=1e-12)


def test_activity_correlation_matches_scipy_and_monotone():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(100, 3))
    estimated = true + rng.normal(size=true.shape)
    pear = activity_correlation(estimated, true)
    spear = activity_correlation(estimated, true, method="spearman")
    for j in range(3):
        assert pear[j] == pytest.approx(pearsonr(estimated[:, j], true[:, j])[0])
        assert spear[j] == pytest.approx(spearmanr(estimated[:, j], true[:, j])[0])
    # a monotone, non-linear transform: spearman exactly 1, pearson below 1
    mono = np.exp(3 * true)
    assert activity_correlation(mono, true, method="spearman") == pytest.approx(np.ones(3))
    assert (activity_correlation(mono, true) < 0.95).all()


def test_activity_correlation_constant_column_is_nan():
    true = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [2.0, 1.0, 1.0]])
    estimated = true.copy()
    estimated[:, 2] = 0.1  # constant estimate
    r = activity_correlation(estimated, true)
    assert r[0] == pytest.approx(1.0)
    assert np.isnan(r[1]) and np.isnan(r[2])


def test_activity_correlation_aligns_dataframes():
    rng = np.random.default_rng(3)
    true = pd.DataFrame(rng.normal(size=(50, 3)), columns=["p1", "p2", "p3"])
    estimated = true[["p3", "p1", "p2"]] * 2
    np.testing.assert_allclose(activity_correlation(estimated, true), 1.0)
    with pytest.raises(KeyError, match="missing from estimated"):
        activity_correlation(estimated.drop(columns="p2"), true)


def test_activity_correlation_bad_input():
    with pytest.raises(ValueError, match="estimated has 3 programs but true has 4"):
        activity_correlation(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="estimated has 5 cells but true has 6"):
        activity_correlation(np.zeros((5, 3)), np.zeros((6, 3)))
    with pytest.raises(ValueError, match="method"):
        activity_correlation(np.zeros((5, 3)), np.zeros((5, 3)), method="kendall")
    with pytest.raises(ValueError, match="2-D"):
        activity_correlation(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 cells"):
        activity_correlation(np.zeros((1, 3)), np.zeros((1, 3)))


# ---------------------------------------------------------------- member_recovery


def test_member_recovery_perfect_and_absolute():
    true_mask = np.zeros((8, 2), dtype=bool)
    true_mask[:3, 0] = True
    true_mask[3:6, 1] = True
    weights = np.where(true_mask, 1.0, 0.1)
    weights[0, 0] = -2.0  # a member acting through a negative weight
    res = member_recovery(weights, true_mask)
    np.testing.assert_array_equal(res["auroc"], [1.0, 1.0])
    assert res["mean_auroc"] == 1.0 and res["mean_auprc"] == 1.0
    assert res["n_evaluated"] == 2
    np.testing.assert_allclose(res["auprc_chance"], [3 / 8, 3 / 8])
    signed = member_recovery(weights, true_mask, absolute=False)
    # the negative member now ranks last of 8: beaten by all 5 non-members
    assert signed["auroc"][0] == pytest.approx(2 / 3)
    assert signed["auroc"][1] == 1.0


def test_member_recovery_held_out_known_answer():
    # members 0, 1, 2; member 2 was removed from the input mask (held out)
    true_mask = np.array([[1], [1], [1], [0], [0], [0]], dtype=bool)
    held_out = np.array([[0], [0], [1], [0], [0], [0]], dtype=bool)
    # the given members 0 and 1 carry the largest weights; they must not count
    weights = np.array([[5.0], [4.0], [0.5], [0.9], [0.1], [0.2]])
    res = member_recovery(weights, true_mask, held_out=held_out)
    # candidates 2 (+), 3, 4, 5 (-): the positive beats 2 of 3 negatives
    assert res["auroc"][0] == pytest.approx(2 / 3)
    # ranking 3 (-), 2 (+): precision 1/2 at the only positive
    assert res["auprc"][0] == pytest.approx(0.5)
    assert res["auprc_chance"][0] == pytest.approx(0.25)
    # without held_out the given members dominate and the answer differs
    assert member_recovery(weights, true_mask)["auroc"][0] == pytest.approx(8 / 9)
    # the same split expressed as the given mask
    given = true_mask & ~held_out
    same = member_recovery(weights, true_mask, given_mask=given)
    np.testing.assert_allclose(same["auroc"], res["auroc"])


def test_member_recovery_given_mask_with_false_members():
    # the given mask contains a non-member (3) that is then not a candidate negative
    true_mask = np.array([[1], [1], [0], [0], [0]], dtype=bool)
    given = np.array([[1], [0], [0], [1], [0]], dtype=bool)
    weights = np.array([[1.0], [0.5], [0.2], [0.9], [0.6]])
    res = member_recovery(weights, true_mask, given_mask=given)
    # candidates 1 (+), 2, 4 (-): 0.5 beats 0.2 only
    assert res["auroc"][0] == pytest.approx(0.5)


def test_member_recovery_unevaluable_program_is_nan(caplog):
    true_mask = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    res = member_recovery(weights, true_mask)
    assert res["auroc"][0] == 1.0 and np.isnan(res["auroc"][1])
    assert res["n_evaluated"] == 1 and res["mean_auroc"] == 1.0
    with caplog.at_level(logging.WARNING):
        none = member_recovery(weights[:, 1:], true_mask[:, 1:])
    assert np.isnan(none["mean_auroc"]) and none["n_evaluated"] == 0
    assert "no program" in caplog.text


def test_member_recovery_dataframe_alignment():
    genes, programs = ["g1", "g2", "g3", "g4"], ["A", "B"]
    mask = pd.DataFrame([[1, 0], [1, 0], [0, 1], [0, 1]], index=genes, columns=programs) == 1
    weights = pd.DataFrame(np.where(mask, 1.0, 0.0), index=genes, columns=programs)
    shuffled = mask.loc[genes[::-1], programs[::-1]]
    np.testing.assert_array_equal(member_recovery(weights, shuffled)["auroc"], [1.0, 1.0])


def test_member_recovery_bad_input():
    w = np.zeros((4, 2))
    mask = np.zeros((4, 2), dtype=bool)
    with pytest.raises(ValueError, match=r"weights has shape \(4, 2\) but true_mask has shape"):
        member_recovery(w, np.zeros((5, 2), dtype=bool))
    with pytest.raises(ValueError, match="not both"):
        member_recovery(w, mask, held_out=mask, given_mask=mask)
    held = mask.copy()
    held[0, 0] = True
    with pytest.raises(ValueError, match="held-out members must be true members"):
        member_recovery(w, mask, held_out=held)
    with pytest.raises(ValueError, match="held_out has shape"):
        member_recovery(w, mask, held_out=np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="weights is empty"):
        member_recovery(np.zeros((0, 2)), np.zeros((0, 2), dtype=bool))


# ---------------------------------------------------------------- program_recovery


def _simulated_programs(seed=0):
    rng = np.random.default_rng(seed)
    n_cells, n_genes, n_programs = 300, 40, 6
    active = np.array([True, True, True, True, False, False])
    true_activity = rng.normal(size=(n_cells, n_programs)) * active
    true_mask = np.zeros((n_genes, n_programs), dtype=bool)
    for j in range(n_programs):
        true_mask[j * 6 : j * 6 + 6, j] = True
    held_out = np.zeros_like(true_mask)
    held_out[np.arange(0, 36, 6) + 5, np.arange(6)] = True  # last member of each program
    return rng, active, true_activity, true_mask, held_out


def test_program_recovery_good_model():
    rng, active, true_activity, true_mask, held_out = _simulated_programs()
    estimated = 2 * true_activity + 0.05 * rng.normal(size=true_activity.shape)
    weights = np.where(true_mask, 1.0, 0.0) * active + 0.01 * rng.random(true_mask.shape)
    report = program_recovery(
        estimated, true_activity, active, weights, true_mask, given_mask=true_mask & ~held_out
    )
    assert set(report) == {
        "n_programs",
        "n_active",
        "activity_auroc",
        "activity_auprc",
        "activity_corr_mean",
        "activity_corr_median",
        "activity_corr_min",
        "weight_norm_auroc",
        "weight_norm_auprc",
        "member_auroc",
        "member_auprc",
    }
    assert all(isinstance(v, float) for v in report.values())
    assert report["n_programs"] == 6 and report["n_active"] == 4
    assert report["activity_auroc"] == 1.0 and report["weight_norm_auroc"] == 1.0
    assert report["activity_corr_min"] > 0.99
    assert report["member_auroc"] == 1.0 and report["member_auprc"] == 1.0


def test_program_recovery_bad_model():
    rng, active, true_activity, true_mask, _ = _simulated_programs(1)
    estimated = rng.normal(size=true_activity.shape) * ~active  # decoys vary, actives don't
    estimated[:, active] += 0.01 * rng.normal(size=(true_activity.shape[0], active.sum()))
    weights = rng.random(true_mask.shape)
    report = program_recovery(estimated, true_activity, active, weights, true_mask)
    assert report["activity_auroc"] == 0.0
    assert abs(report["activity_corr_mean"]) < 0.2
    assert 0.2 < report["member_auroc"] < 0.8


def test_program_recovery_dataframes_and_errors():
    rng, active, true_activity, true_mask, _ = _simulated_programs(2)
    names = [f"prog{j}" for j in range(6)]
    true_df = pd.DataFrame(true_activity, columns=names)
    est_df = (true_df * 3)[names[::-1]]
    active_s = pd.Series(active, index=names)[names[::-1]]
    report = program_recovery(est_df, true_df, active_s)
    assert report["activity_auroc"] == 1.0
    assert report["activity_corr_mean"] == pytest.approx(1.0)
    assert "member_auroc" not in report
    with pytest.raises(ValueError, match="estimated_activity has 6 programs but active has 5"):
        program_recovery(true_activity, true_activity, active[:5])
    with pytest.raises(ValueError, match="without true_mask"):
        program_recovery(true_activity, true_activity, active, weights=np.ones((40, 6)))
    with pytest.raises(ValueError, match="weights has 5 programs but active has 6"):
        program_recovery(true_activity, true_activity, active, np.ones((40, 5)), true_mask)
    with pytest.raises(ValueError, match="need weights"):
        program_recovery(true_activity, true_activity, active, true_mask=true_mask)
