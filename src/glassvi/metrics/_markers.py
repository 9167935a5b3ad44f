"""Recovery of known marker genes from per-group feature rankings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def _as_k_list(k: int | Iterable[int]) -> list[int]:
    ks = [k] if isinstance(k, int | np.integer) else list(k)
    if len(ks) == 0:
        raise ValueError("k is empty; give at least one cutoff")
    out = []
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"every k must be a positive integer, got {value!r}")
        if int(value) not in out:
            out.append(int(value))
    return out


def _rankings(ranked: Any, groups: Sequence[Any]) -> tuple[dict[Any, list], set]:
    """Ordered feature lists for the requested groups, and the default feature universe."""
    if isinstance(ranked, pd.DataFrame):
        if ranked.empty:
            raise ValueError("ranked is an empty DataFrame")
        if not ranked.index.is_unique:
            dup = ranked.index[ranked.index.duplicated()].unique()
            raise ValueError(f"ranked has duplicate feature names, e.g. {list(dup[:5])}")
        out = {}
        for group in groups:
            if group not in ranked.columns:
                raise KeyError(
                    f"group {group!r} is in markers but not a column of ranked "
                    f"(columns: {list(ranked.columns[:10])})"
                )
            try:
                column = pd.to_numeric(ranked[group], errors="raise")
            except (TypeError, ValueError) as err:
                raise ValueError(f"the scores of group {group!r} are not numeric: {err}") from err
            order = column.sort_values(ascending=False, kind="stable", na_position="last")
            out[group] = list(order.index)
        return out, set(ranked.index)
    if isinstance(ranked, Mapping):
        if len(ranked) == 0:
            raise ValueError("ranked is empty")
        universe: set = set()
        for group, features in ranked.items():
            if isinstance(features, str):
                raise ValueError(
                    f"ranked[{group!r}] is a single string; give an ordered list of features"
                )
            universe.update(features)
        out = {}
        for group in groups:
            if group not in ranked:
                raise KeyError(
                    f"group {group!r} is in markers but not in ranked "
                    f"(groups: {list(ranked)[:10]})"
                )
            features = list(ranked[group])
            if len(features) == 0:
                raise ValueError(f"the ranking for group {group!r} is empty")
            if len(set(features)) != len(features):
                raise ValueError(f"the ranking for group {group!r} contains duplicate features")
            out[group] = features
        return out, universe
    raise TypeError(
        "ranked must be a dict {group: ordered features} or a DataFrame features x groups, "
        f"got {type(ranked).__name__}"
    )


def marker_recovery(
    ranked: Mapping[Any, Sequence[str]] | pd.DataFrame,
    markers: Mapping[Any, Sequence[str]],
    k: int | Iterable[int] = (10, 50),
    universe: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Precision and recall of known markers among the top-``k`` features of each group.

    Parameters
    ----------
    ranked
        Per-group feature rankings: either a dict ``{group: features ordered best first}``, or
        a DataFrame features x groups of scores where higher is more important (ranked per
        column; NaN scores rank last).
    markers
        Known markers, ``{group: [feature, ...]}``. Every group must be in ``ranked``.
    k
        One or more cutoffs.
    universe
        All features that could have been ranked, e.g. ``adata.var_names``. Defaults to the
        index of a DataFrame ``ranked``, or the union of all lists of a dict ``ranked``.
        Markers outside it cannot be recovered: they are counted, logged as a warning, listed
        in ``result.attrs["missing_markers"]`` and left out of the recall denominator.

    Returns
    -------
    pandas.DataFrame
        One row per group and cutoff with columns ``"group"``, ``"k"``, ``"precision"``
        (markers in the top ``k``, divided by ``k``), ``"recall"`` (divided by the markers in
        the universe), ``"n_hits"``, ``"n_markers"`` and ``"n_markers_found_in_universe"``.

    Raises
    ------
    KeyError
        If a group of ``markers`` is not in ``ranked``.
    ValueError
        If a group has no markers, or none of its markers is in the universe, or its ranking
        is shorter than the largest ``k``.

    Examples
    --------
    >>> from glassvi.metrics import marker_recovery
    >>> ranked = {"T": ["CD3E", "LYZ", "CD3D", "MS4A1"], "B": ["MS4A1", "CD79A", "CD3E", "LYZ"]}
    >>> markers = {"T": ["CD3E", "CD3D"], "B": ["MS4A1", "CD19"]}
    >>> table = marker_recovery(ranked, markers, k=2)
    >>> table[["group", "k", "precision", "recall", "n_markers_found_in_universe"]]
      group  k  precision  recall  n_markers_found_in_universe
    0     T  2        0.5     0.5                            2
    1     B  2        0.5     1.0                            1
    >>> table.attrs["missing_markers"]
    {'B': ['CD19']}
    """
    if not isinstance(markers, Mapping):
        raise TypeError(f"markers must be a dict {{group: [features]}}, got {type(markers)}")
    if len(markers) == 0:
        raise ValueError("markers is empty")
    ks = _as_k_list(k)
    groups = list(markers)
    rankings, default_universe = _rankings(ranked, groups)
    if universe is None:
        universe_set = default_universe
    else:
        universe_set = set(universe)
        if len(universe_set) == 0:
            raise ValueError("universe is empty")

    rows = []
    missing_markers: dict[Any, list] = {}
    for group in groups:
        group_markers = markers[group]
        if isinstance(group_markers, str):
            group_markers = [group_markers]
        group_markers = list(dict.fromkeys(group_markers))
        if len(group_markers) == 0:
            raise ValueError(f"the marker list for group {group!r} is empty")
        found = [m for m in group_markers if m in universe_set]
        missing = [m for m in group_markers if m not in universe_set]
        if missing:
            missing_markers[group] = missing
            logger.warning(
                "marker_recovery: %d of %d markers of group %r are not in the feature "
                "universe and cannot be recovered: %s",
                len(missing),
                len(group_markers),
                group,
                ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else ""),
            )
        if not found:
            raise ValueError(
                f"none of the {len(group_markers)} markers of group {group!r} is in the feature "
                f"universe (e.g. {group_markers[:3]}); check that marker names match the "
                "feature names"
            )
        ranking = rankings[group]
        if len(ranking) < max(ks):
            raise ValueError(
                f"the ranking for group {group!r} has {len(ranking)} features, fewer than "
                f"k={max(ks)}"
            )
        found_set = set(found)
        for cutoff in ks:
            n_hits = len(found_set.intersection(ranking[:cutoff]))
            rows.append(
                {
                    "group": group,
                    "k": cutoff,
                    "precision": n_hits / cutoff,
                    "recall": n_hits / len(found),
                    "n_hits": n_hits,
                    "n_markers": len(group_markers),
                    "n_markers_found_in_universe": len(found),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["missing_markers"] = missing_markers
    return table
