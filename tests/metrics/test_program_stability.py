"""Seed stability of program activities."""

import numpy as np
import pandas as pd
import pytest

from glassvi.metrics import program_stability


def _runs(n_cells=200, n_programs=4, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n_cells, n_programs))
    names = [f"P{i}" for i in range(n_programs)]
    index = [f"c{i}" for i in range(n_cells)]
    return truth, [
        pd.DataFrame(truth + noise * rng.normal(size=truth.shape), index=index, columns=names)
        for _ in range(3)
    ]


def test_identical_runs_agree_perfectly():
    _, runs = _runs(noise=0.0)
    out = program_stability(runs)
    np.testing.assert_allclose(out["correlation"], 1.0)
    np.testing.assert_allclose(out["min_correlation"], 1.0)
    np.testing.assert_array_equal(out["sign_agreement"], 1.0)
    assert list(out.index) == ["P0", "P1", "P2", "P3"]


def test_noisy_runs_values_and_flip():
    truth, runs = _runs(noise=1.0)
    runs[2]["P1"] = -runs[2]["P1"]
    out = program_stability(runs)
    # two independent unit-noise copies of a unit-variance signal correlate about 0.5
    assert out.loc["P0", "correlation"] == pytest.approx(0.5, abs=0.12)
    # P1 flipped in one of three runs: two of the three pairs disagree
    assert out.loc["P1", "sign_agreement"] == pytest.approx(1 / 3)
    assert out.loc["P1", "min_correlation"] < -0.3
    assert out.loc["P0", "sign_agreement"] == 1.0


def test_matched_by_name_and_cells_by_index():
    _, runs = _runs(noise=0.0)
    shuffled = runs[1].iloc[::-1, ::-1]
    shuffled = shuffled.assign(extra=1.0)
    out = program_stability([runs[0], shuffled])
    assert list(out.index) == ["P0", "P1", "P2", "P3"]
    np.testing.assert_allclose(out["correlation"], 1.0)


def test_arrays_by_position_and_spearman():
    truth, _ = _runs(noise=0.0)
    out = program_stability([truth, np.exp(truth)], method="spearman")
    np.testing.assert_allclose(out["correlation"], 1.0)
    assert program_stability([truth, np.exp(truth)])["correlation"].max() < 1.0


def test_constant_program_is_nan_and_not_agreeing():
    truth, _ = _runs(noise=0.0)
    other = truth.copy()
    other[:, 0] = 0.0
    out = program_stability([truth, other])
    assert np.isnan(out.loc[0, "correlation"])
    assert out.loc[0, "sign_agreement"] == 0.0


def test_errors():
    truth, runs = _runs()
    with pytest.raises(ValueError, match="at least two"):
        program_stability([truth])
    with pytest.raises(ValueError, match="shape"):
        program_stability([truth, truth[:, :2]])
    with pytest.raises(ValueError, match="different cells"):
        program_stability([runs[0], runs[1].iloc[:10]])
    with pytest.raises(ValueError, match="share no program"):
        program_stability([runs[0], runs[1].set_axis(list("abcd"), axis=1)])
    with pytest.raises(ValueError, match="method"):
        program_stability(runs, method="kendall")
