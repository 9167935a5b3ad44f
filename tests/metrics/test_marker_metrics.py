import logging

import numpy as np
import pandas as pd
import pytest

from glassvi.metrics import marker_recovery

RANKED = {
    "T": ["CD3E", "LYZ", "CD3D", "MS4A1", "CD79A", "NKG7"],
    "B": ["MS4A1", "CD79A", "CD3E", "LYZ", "NKG7", "CD3D"],
    "NK": ["NKG7", "CD3E", "LYZ", "CD3D", "MS4A1", "CD79A"],
}


def test_marker_recovery_exact_values():
    markers = {"T": ["CD3E", "CD3D", "NKG7"], "B": ["MS4A1", "CD79A"]}
    table = marker_recovery(RANKED, markers, k=(1, 3))
    assert list(table.columns) == [
        "group",
        "k",
        "precision",
        "recall",
        "n_hits",
        "n_markers",
        "n_markers_found_in_universe",
    ]
    t = table.set_index(["group", "k"])
    # T top-1 {CD3E}: 1 hit; top-3 {CD3E, LYZ, CD3D}: 2 hits of 3 markers
    assert t.loc[("T", 1), "precision"] == 1.0 and t.loc[("T", 1), "recall"] == pytest.approx(
        1 / 3
    )
    assert t.loc[("T", 3), "precision"] == pytest.approx(2 / 3)
    assert t.loc[("T", 3), "recall"] == pytest.approx(2 / 3)
    # B top-3 {MS4A1, CD79A, CD3E}: both markers
    assert t.loc[("B", 3), "precision"] == pytest.approx(2 / 3)
    assert t.loc[("B", 3), "recall"] == 1.0
    assert t.loc[("B", 3), "n_hits"] == 2
    assert set(table["group"]) == {"T", "B"}  # NK has no markers: not evaluated
    assert table.attrs["missing_markers"] == {}


def test_marker_recovery_from_score_dataframe():
    genes = ["CD3E", "LYZ", "CD3D", "MS4A1", "CD79A", "NKG7"]
    scores = pd.DataFrame(
        {"T": [5.0, 1.0, 4.0, 0.0, np.nan, 2.0], "B": [0.0, 0.0, 0.0, 9.0, 8.0, 0.0]},
        index=genes,
    )
    table = marker_recovery(scores, {"T": ["CD3D", "NKG7"], "B": ["CD79A"]}, k=2)
    t = table.set_index("group")
    # T ranking: CD3E, CD3D, NKG7, ... -> top-2 has CD3D only
    assert t.loc["T", "precision"] == 0.5 and t.loc["T", "recall"] == 0.5
    assert t.loc["B", "precision"] == 0.5 and t.loc["B", "recall"] == 1.0
    # NaN ranks last
    last = marker_recovery(scores, {"T": ["CD79A"]}, k=5)
    assert last.loc[0, "n_hits"] == 0


def test_marker_recovery_reports_missing_markers(caplog):
    markers = {"B": ["MS4A1", "CD19", "CD79A", "PAX5"]}
    with caplog.at_level(logging.WARNING, logger="glassvi.metrics"):
        table = marker_recovery(RANKED, markers, k=2)
    assert "2 of 4 markers of group 'B'" in caplog.text and "CD19" in caplog.text
    assert table.attrs["missing_markers"] == {"B": ["CD19", "PAX5"]}
    row = table.iloc[0]
    assert row["n_markers"] == 4 and row["n_markers_found_in_universe"] == 2
    assert row["recall"] == 1.0  # both recoverable markers are in the top 2
    assert row["precision"] == 1.0
    # an explicit universe makes CD19 recoverable (but unranked here)
    with_universe = marker_recovery(RANKED, markers, k=2, universe=[*RANKED["B"], "CD19"])
    assert with_universe.loc[0, "recall"] == pytest.approx(2 / 3)
    assert with_universe.attrs["missing_markers"] == {"B": ["PAX5"]}


def test_marker_recovery_duplicate_markers_counted_once():
    table = marker_recovery(RANKED, {"NK": ["NKG7", "NKG7"]}, k=1)
    assert table.loc[0, "n_markers"] == 1 and table.loc[0, "recall"] == 1.0


def test_marker_recovery_bad_input():
    with pytest.raises(ValueError, match="group 'T' is empty"):
        marker_recovery(RANKED, {"T": []})
    with pytest.raises(KeyError, match="'Mono'"):
        marker_recovery(RANKED, {"Mono": ["LYZ"]}, k=2)
    with pytest.raises(KeyError, match="'Mono'"):
        marker_recovery(pd.DataFrame({"T": [1.0, 2.0, 3.0]}), {"Mono": ["LYZ"]}, k=2)
    with pytest.raises(ValueError, match="none of the 2 markers of group 'T'"):
        marker_recovery(RANKED, {"T": ["ENSG1", "ENSG2"]}, k=2)
    with pytest.raises(ValueError, match="group 'T' has 6 features, fewer than k=10"):
        marker_recovery(RANKED, {"T": ["CD3E"]}, k=(2, 10))
    with pytest.raises(ValueError, match="every k must be a positive integer"):
        marker_recovery(RANKED, {"T": ["CD3E"]}, k=0)
    with pytest.raises(ValueError, match="markers is empty"):
        marker_recovery(RANKED, {})
    with pytest.raises(ValueError, match="duplicate"):
        marker_recovery({"T": ["A", "A", "B"]}, {"T": ["A"]}, k=1)
    with pytest.raises(ValueError, match="duplicate feature names"):
        marker_recovery(pd.DataFrame({"T": [1.0, 2.0]}, index=["A", "A"]), {"T": ["A"]}, k=1)
    with pytest.raises(TypeError, match="ranked must be"):
        marker_recovery([["A", "B"]], {"T": ["A"]}, k=1)
