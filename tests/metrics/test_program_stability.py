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


def test_de_novo_units_left_out_unless_asked(caplog):
    """De novo units are not the same unit across seeds: they would dilute sign agreement."""
    _, runs = _runs(noise=0.0)
    rng = np.random.default_rng(1)
    # two seeds' de novo units: unrelated signals under the same names
    for run in runs:
        run["denovo_0"] = rng.normal(size=len(run))
        run["denovo_1"] = rng.normal(size=len(run))
    # the second seed's denovo_1 is the first seed's, flipped (the units swap and flip freely)
    runs[1]["denovo_1"] = -runs[0]["denovo_1"]
    with caplog.at_level("INFO", logger="glassvi.metrics._program_stability"):
        out = program_stability(runs)
    assert list(out.index) == ["P0", "P1", "P2", "P3"]
    np.testing.assert_array_equal(out["sign_agreement"], 1.0)
    assert "left out 2 de novo units (denovo_0, denovo_1)" in caplog.text
    every = program_stability(runs, include_denovo=True)
    assert list(every.index) == ["P0", "P1", "P2", "P3", "denovo_0", "denovo_1"]
    assert every["sign_agreement"].mean() < 1.0
    assert every.loc["denovo_1", "min_correlation"] == pytest.approx(-1.0)
    # a program that only looks like a de novo name is kept
    named = [r.rename(columns={"P0": "denovo_x"}) for r in runs]
    assert "denovo_x" in program_stability(named).index
    with pytest.raises(ValueError, match="only de novo units"):
        program_stability([r[["denovo_0", "denovo_1"]] for r in runs])
    np.testing.assert_allclose(
        program_stability([r[["denovo_1"]] for r in runs], include_denovo=True)["sign_agreement"],
        1 / 3,
    )
