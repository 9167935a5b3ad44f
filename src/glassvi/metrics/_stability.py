"""Agreement between feature rankings: top-k overlap and rank correlation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ._utils import (
    align_frames,
    check_k,
    check_same_shape,
    column_names,
    pearson_columns,
    to_array,
)


def _is_ranking(x: Any) -> bool:
    """Whether ``x`` is an ordered list of feature names rather than numeric scores."""
    if isinstance(x, pd.DataFrame):
        return False
    if isinstance(x, pd.Series | pd.Index):
        return x.dtype.kind in "OSU" or isinstance(x.dtype, pd.StringDtype)
    arr = np.asarray(x) if isinstance(x, Sequence | np.ndarray) else None
    return arr is not None and arr.ndim == 1 and arr.dtype.kind in "OSU"


def _ranking_topk(ranking: Any, k: int, name: str) -> set:
    names = list(ranking)
    if len(names) == 0:
        raise ValueError(f"{name} is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} contains duplicate features")
    check_k(k, len(names), what=f"features ranked in {name}")
    return set(names[:k])


def _paired_scores(a: Any, b: Any, absolute: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two score arrays as features x targets, and whether the input was 1-D."""
    b = align_frames(a, b, "a", "b")
    a_arr = to_array(a, "a", ndim=(1, 2))
    b_arr = to_array(b, "b", ndim=(1, 2))
    if a_arr.ndim == 1 and b_arr.ndim == 1 and a_arr.shape[0] != b_arr.shape[0]:
        raise ValueError(f"a has {a_arr.shape[0]} features but b has {b_arr.shape[0]}")
    check_same_shape(a_arr, b_arr, "a", "b")
    vector = a_arr.ndim == 1
    if vector:
        a_arr, b_arr = a_arr[:, None], b_arr[:, None]
    if absolute:
        a_arr, b_arr = np.abs(a_arr), np.abs(b_arr)
    return a_arr, b_arr, vector


def _topk_sets_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    # stable sort on the negated scores: ties are broken by feature order
    top_a = np.argsort(-a, axis=0, kind="stable")[:k]
    top_b = np.argsort(-b, axis=0, kind="stable")[:k]
    in_a = np.zeros(a.shape, dtype=bool)
    in_b = np.zeros(b.shape, dtype=bool)
    cols = np.arange(a.shape[1])
    in_a[top_a, cols] = True
    in_b[top_b, cols] = True
    inter = (in_a & in_b).sum(axis=0)
    return inter / (2 * k - inter)


def topk_jaccard(a: Any, b: Any, k: int, absolute: bool = False) -> float | np.ndarray:
    """Jaccard index of the top-``k`` features of two rankings.

    Parameters
    ----------
    a, b
        Either numeric scores (higher = more important), as vectors over features or as matrices
        features x targets (compared column by column), or 1-D sequences of feature names ordered
        best first. Labelled inputs (two DataFrames or two Series) are aligned by label;
        arrays are matched by position.
    k
        Number of top features to compare; at most the number of features.
    absolute
        Rank numeric scores by their absolute value (e.g. for signed attributions).

    Returns
    -------
    float or numpy.ndarray
        ``|top_k(a) & top_k(b)| / |top_k(a) | top_k(b)|`` in [0, 1]: a float for vectors and
        rankings, an array with one value per column for matrices. Ties at the ``k``-th position
        are broken by feature order.

    Examples
    --------
    >>> from glassvi.metrics import topk_jaccard
    >>> topk_jaccard([4.0, 3.0, 2.0, 1.0], [4.0, 1.0, 3.0, 2.0], k=2)
    0.3333333333333333
    >>> topk_jaccard(["CD3E", "CD4", "MS4A1"], ["CD4", "CD3E", "LYZ"], k=2)
    1.0
    """
    ranking_a, ranking_b = _is_ranking(a), _is_ranking(b)
    if ranking_a != ranking_b:
        raise ValueError("a and b must both be numeric scores or both be lists of feature names")
    if ranking_a:
        set_a = _ranking_topk(a, k, "a")
        set_b = _ranking_topk(b, k, "b")
        return len(set_a & set_b) / len(set_a | set_b)
    a_arr, b_arr, vector = _paired_scores(a, b, absolute)
    k = check_k(k, a_arr.shape[0])
    jac = _topk_sets_jaccard(a_arr, b_arr, k)
    return float(jac[0]) if vector else jac


def rank_correlation(a: Any, b: Any, absolute: bool = False) -> float | np.ndarray:
    """Spearman rank correlation between two score vectors, or column by column for matrices.

    Parameters
    ----------
    a, b
        Numeric scores, vectors over features or matrices features x targets of the same shape.
        Two DataFrames (or two Series) are aligned by label; arrays are matched by position.
    absolute
        Correlate the absolute values (e.g. for signed attributions).

    Returns
    -------
    float or numpy.ndarray
        Spearman correlation (average ranks for ties): a float for vectors, one value per column
        for matrices. NaN where a column is constant.

    Examples
    --------
    >>> from glassvi.metrics import rank_correlation
    >>> rank_correlation([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 100.0])
    1.0
    >>> rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    -1.0
    """
    a_arr, b_arr, vector = _paired_scores(a, b, absolute)
    if a_arr.shape[0] < 2:
        raise ValueError("at least 2 features are needed to compute a rank correlation")
    # Spearman's rho is the Pearson correlation of the (average) ranks
    rho = pearson_columns(rankdata(a_arr, axis=0), rankdata(b_arr, axis=0))
    return float(rho[0]) if vector else rho


def _topk_union_spearman(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    out = np.full(a.shape[1], np.nan)
    top_a = np.argsort(-a, axis=0, kind="stable")[:k]
    top_b = np.argsort(-b, axis=0, kind="stable")[:k]
    for t in range(a.shape[1]):
        rows = np.union1d(top_a[:, t], top_b[:, t])
        if rows.size >= 2:
            out[t] = pearson_columns(rankdata(a[rows, t])[:, None], rankdata(b[rows, t])[:, None])[
                0
            ]
    return out


def topk_rank_correlation(a: Any, b: Any, k: int, absolute: bool = False) -> float | np.ndarray:
    """Spearman correlation of two rankings over the features in either top ``k``.

    Unlike :func:`rank_correlation` over all features, which the many unimportant features
    dominate, this asks whether the features that lead either ranking are ordered alike.

    Parameters
    ----------
    a, b
        Numeric scores (higher = more important), vectors over features or matrices features
        x targets (compared column by column). Labelled inputs are aligned by label.
    k
        Number of top features of each ranking; the correlation runs over the union of the
        two top-``k`` sets (between ``k`` and ``2k`` features).
    absolute
        Rank by absolute values.

    Returns
    -------
    float or numpy.ndarray
        Spearman correlation in [-1, 1]: a float for vectors, one value per column for
        matrices.

    Examples
    --------
    >>> from glassvi.metrics import topk_rank_correlation
    >>> topk_rank_correlation([5.0, 4.0, 3.0, 0.0, 0.1], [5.0, 4.0, 3.0, 0.1, 0.0], k=3)
    1.0
    >>> topk_rank_correlation([3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 0.0], k=2)
    -1.0
    """
    a_arr, b_arr, vector = _paired_scores(a, b, absolute)
    k = check_k(k, a_arr.shape[0])
    rho = _topk_union_spearman(a_arr, b_arr, k)
    return float(rho[0]) if vector else rho


def stability(
    scores: Sequence[Any] | Mapping[str, Any],
    k: int = 50,
    absolute: bool = False,
    per_pair: bool = False,
    direction: str = "for",
) -> pd.DataFrame:
    """Agreement of feature scores across repeated runs (training seeds, subsamples).

    Every pair of runs is compared with :func:`topk_jaccard`, :func:`rank_correlation` and
    :func:`topk_rank_correlation`, per target (column). Use it for the top-k agreement of
    attributions across training seeds: one matrix features x classes per seed.

    Parameters
    ----------
    scores
        At least two score matrices of the same shape, features x targets (or vectors over
        features), e.g. attributions or decoder weights from models trained with different
        seeds. A mapping ``{run name: matrix}`` names the runs.
    k
        Number of top features for the Jaccard index.
    absolute
        Compare absolute values.
    per_pair
        Return one row per pair of runs and target instead of the mean over pairs.
    direction
        ``"for"`` (default): higher scores rank first (signed evidence for a class).
        ``"against"``: lower scores rank first (the evidence against it).

    Returns
    -------
    pandas.DataFrame
        By default, indexed by target (column labels of the first DataFrame, else ``0..m-1``)
        with columns ``"topk_jaccard"`` and ``"rank_correlation"``: means over all pairs of
        with columns ``"topk_jaccard"``, ``"rank_correlation"`` (all features) and
        ``"topk_rank_correlation"`` (features in either top ``k``): means over all pairs of
        runs. ``.mean()`` of it gives overall values. With ``per_pair=True``, one row per
        pair and target with ``"run_a"``, ``"run_b"``, ``"target"`` and the three measures.

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import stability
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(200, 3))
    >>> runs = [base + 0.01 * rng.normal(size=base.shape) for _ in range(3)]
    >>> table = stability(runs, k=20)
    >>> table.shape, bool((table["rank_correlation"] > 0.99).all())
    ((3, 3), True)
    """
    if isinstance(scores, Mapping):
        names = list(scores.keys())
        mats = list(scores.values())
    else:
        mats = list(scores)
        names = list(range(len(mats)))
    if len(mats) < 2:
        raise ValueError(f"stability needs at least 2 score matrices, got {len(mats)}")
    ref = mats[0]
    aligned = [ref] + [
        align_frames(ref, m, f"scores[{names[0]!r}]", f"scores[{n!r}]")
        for n, m in zip(names[1:], mats[1:])
    ]
    arrays = []
    for name, m in zip(names, aligned):
        arr = to_array(m, f"scores[{name!r}]", ndim=(1, 2))
        arrays.append(arr[:, None] if arr.ndim == 1 else arr)
    for name, arr in zip(names[1:], arrays[1:]):
        check_same_shape(arrays[0], arr, f"scores[{names[0]!r}]", f"scores[{name!r}]")
    n_features, n_targets = arrays[0].shape
    k = check_k(k, n_features)
    if direction not in ("for", "against"):
        raise ValueError(f"direction must be 'for' or 'against', got {direction!r}")
    if absolute:
        arrays = [np.abs(a) for a in arrays]
    elif direction == "against":
        arrays = [-a for a in arrays]
    targets = column_names(ref, n_targets)
    rows = []
    for i, j in combinations(range(len(arrays)), 2):
        jac = _topk_sets_jaccard(arrays[i], arrays[j], k)
        rho = rank_correlation(arrays[i], arrays[j])
        top_rho = _topk_union_spearman(arrays[i], arrays[j], k)
        for t, target in enumerate(targets):
            rows.append((names[i], names[j], target, jac[t], rho[t], top_rho[t]))
    measures = ["topk_jaccard", "rank_correlation", "topk_rank_correlation"]
    table = pd.DataFrame(rows, columns=["run_a", "run_b", "target", *measures])
    if per_pair:
        return table
    summary = table.groupby("target", sort=False)[measures].mean()
    summary.index.name = None
    return summary.reindex(targets)
