"""Faithfulness and sanity checks of feature attributions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._docs import fill_docs
from ._stability import _topk_sets_jaccard, rank_correlation
from ._utils import align_frames, check_k, check_same_shape, column_names, to_array

logger = logging.getLogger(__name__)

# Upper bound on the number of matrix entries passed to ``f`` in one call, when the caller
# does not set ``batch_size``: 2**22 float64 entries is 32 MiB per perturbed batch.
_MAX_BATCH_ENTRIES = 2**22

#: parameters and result of the deletion and insertion curves
_curve_docs = fill_docs(
    {
        "curve": """
        f
            Function of a 2-D numpy array (cells x features) returning one target value per row,
            e.g. a class logit or a program's latent activity. Any array-like output works,
            including torch tensors. It is called on batches of perturbed cells.
        X
            Cells x features, the inputs to explain.
        attributions
            Attribution scores, cells x features, or one vector over features shared by all cells.
            Features are ordered by decreasing attribution: with signed attributions, the features
            that push the target up most come first.
        baseline
            Value standing for a removed feature: a scalar, a vector over features, or an array of
            the shape of ``X``. Use the baseline the attributions were computed against.
        steps
            Number of steps between 0 and ``max_fraction`` of the features; ``k`` is rounded to
            whole features, so the curve has at most ``steps + 1`` points.
        max_fraction
            Largest fraction of features removed (inserted), in (0, 1].
        absolute
            Order features by absolute attribution instead of signed attribution.
        normalize
            Rescale the curve so that the mean target on ``X`` is 1 and on the baseline is 0. This
            makes areas comparable across targets. Raises if the two means are equal.
        batch_size
            Maximum number of rows per call to ``f`` (at least one cell's ``steps + 1`` rows).
            By default about 4 million matrix entries per call.

        Returns
        -------
        dict
            ``"fraction"``: fraction of features perturbed at each step; ``"value"``: mean target
            over cells at each step (normalised if ``normalize``); ``"auc"``: the area under the
            curve divided by the largest fraction, i.e. the average height of the curve.
        """
    }
)


class _Setup:
    """Checked inputs shared by the deletion, insertion and random curves."""

    def __init__(
        self,
        f: Callable[[np.ndarray], Any],
        X: Any,
        baseline: Any,
        steps: int,
        max_fraction: float,
        batch_size: int | None,
    ):
        if not callable(f):
            raise ValueError(f"f must be callable, got {type(f).__name__}")
        X_arr = to_array(X, "X", ndim=2, dtype=None)
        if X_arr.dtype.kind not in "biuf":
            raise ValueError(f"X must be numeric, got dtype {X_arr.dtype}")
        dtype = X_arr.dtype if X_arr.dtype.kind == "f" else np.dtype(np.float64)
        X_arr = X_arr.astype(dtype, copy=False)
        if not np.isfinite(X_arr).all():
            raise ValueError("X contains NaN or infinite values")
        n_cells, n_features = X_arr.shape

        base = to_array(baseline, "baseline", ndim=(0, 1, 2)).astype(dtype)
        if base.ndim == 0:
            base = np.full((1, n_features), base, dtype=dtype)
        elif base.ndim == 1:
            if base.shape[0] != n_features:
                raise ValueError(f"baseline has {base.shape[0]} features but X has {n_features}")
            base = base[None, :]
        else:
            check_same_shape(X_arr, base, "X", "baseline")

        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not 0 < max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        fractions = np.linspace(0.0, max_fraction, int(steps) + 1)
        ks = np.unique(np.round(fractions * n_features).astype(int))
        if ks[-1] == 0:
            raise ValueError(
                f"max_fraction={max_fraction} removes no feature out of {n_features}; increase it"
            )
        if batch_size is None:
            batch_size = max(len(ks), _MAX_BATCH_ENTRIES // n_features)
        elif isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

        self.f = f
        self._X_input = X
        self.X = X_arr
        self.baseline = base
        self.ks = ks
        self.batch_size = int(batch_size)
        self.n_cells = n_cells
        self.n_features = n_features
        self._references: tuple[float, float] | None = None

    def call(self, rows: np.ndarray) -> np.ndarray:
        out = self.f(rows)
        out = to_array(out, "the output of f", ndim=None)
        if out.size != rows.shape[0]:
            raise ValueError(
                f"f returned an output of shape {out.shape} for {rows.shape[0]} input rows; "
                "it must return one target value per row"
            )
        return out.reshape(-1)

    def mean_output(self, rows: np.ndarray) -> float:
        total = 0.0
        for start in range(0, rows.shape[0], self.batch_size):
            total += float(self.call(rows[start : start + self.batch_size]).sum())
        return total / rows.shape[0]

    def references(self) -> tuple[float, float]:
        """Mean target on the original cells and on the baseline."""
        if self._references is None:
            self._references = (self.mean_output(self.X), self.mean_output(self.baseline))
        return self._references

    def ranks(self, attributions: Any, absolute: bool) -> np.ndarray:
        """Position of each feature in each cell's ordering (0 = highest attribution)."""
        attributions = align_frames(self._X_input, attributions, "X", "attributions")
        attr = to_array(attributions, "attributions", ndim=(1, 2))
        if attr.ndim == 1:
            if attr.shape[0] != self.n_features:
                raise ValueError(
                    f"attributions has {attr.shape[0]} features but X has {self.n_features}"
                )
            attr = attr[None, :]
        else:
            check_same_shape(self.X, attr, "X", "attributions")
        return _ranks(np.abs(attr) if absolute else attr)

    def mean_curve(self, ranks: np.ndarray, mode: Literal["deletion", "insertion"]) -> np.ndarray:
        """Mean target over cells after removing (or inserting) the top ``k`` features."""
        n_steps = len(self.ks)
        cells_per_chunk = max(1, self.batch_size // n_steps)
        sums = np.zeros(n_steps)
        ks = self.ks[None, :, None]
        for start in range(0, self.n_cells, cells_per_chunk):
            stop = min(start + cells_per_chunk, self.n_cells)
            x = self.X[start:stop, None, :]
            r = ranks[start:stop] if ranks.shape[0] > 1 else ranks
            b = self.baseline[start:stop] if self.baseline.shape[0] > 1 else self.baseline
            top = r[:, None, :] < ks  # cells x steps x features
            if mode == "deletion":
                rows = np.where(top, b[:, None, :], x)
            else:
                rows = np.where(top, x, b[:, None, :])
            rows = rows.reshape(-1, self.n_features)
            sums += self.call(rows).reshape(stop - start, n_steps).sum(axis=0)
        return sums / self.n_cells

    def result(self, curve: np.ndarray, normalize: bool) -> dict[str, Any]:
        fraction = self.ks / self.n_features
        if normalize:
            full, base = self.references()
            scale = full - base
            if abs(scale) <= 1e-8 * max(1.0, abs(full), abs(base)):
                raise ValueError(
                    f"the mean target on X ({full:.6g}) and on the baseline ({base:.6g}) are "
                    "equal, so the curve cannot be normalised; choose another target or "
                    "baseline, or pass normalize=False"
                )
            curve = (curve - base) / scale
        auc = float(np.trapezoid(curve, fraction) / fraction[-1])
        return {"fraction": fraction, "value": curve, "auc": auc}


def _ranks(scores: np.ndarray) -> np.ndarray:
    # stable sort on the negated scores: ties keep feature order
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks


@_curve_docs
def deletion_curve(
    f: Callable[[np.ndarray], Any],
    X: Any,
    attributions: Any,
    baseline: Any = 0.0,
    *,
    steps: int = 20,
    max_fraction: float = 1.0,
    absolute: bool = False,
    normalize: bool = True,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Track the target as the most attributed features are replaced by the baseline.

    For ``k`` from 0 to ``max_fraction`` of the features, the ``k`` features with the highest
    attribution in each cell are set to the baseline and the target is averaged over cells.
    A faithful attribution makes the target fall fast: a lower area than a random ordering
    (see :func:`faithfulness`).

    Parameters
    ----------
    %(curve)s

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import deletion_curve
    >>> X = np.ones((5, 10))
    >>> w = np.array([10.0] + [0.0] * 9)
    >>> curve = deletion_curve(lambda x: x @ w, X, X * w, baseline=0.0, steps=10)
    >>> curve["value"][:3], round(curve["auc"], 3)
    (array([1., 0., 0.]), 0.05)
    """
    setup = _Setup(f, X, baseline, steps, max_fraction, batch_size)
    curve = setup.mean_curve(setup.ranks(attributions, absolute), "deletion")
    return setup.result(curve, normalize)


@_curve_docs
def insertion_curve(
    f: Callable[[np.ndarray], Any],
    X: Any,
    attributions: Any,
    baseline: Any = 0.0,
    *,
    steps: int = 20,
    max_fraction: float = 1.0,
    absolute: bool = False,
    normalize: bool = True,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Track the target as the most attributed features are inserted into the baseline.

    Starting from the baseline, the ``k`` features with the highest attribution in each cell
    are set to their values in ``X`` and the target is averaged over cells. A faithful
    attribution makes the target rise fast: a higher area than a random ordering (see
    :func:`faithfulness`).

    Parameters
    ----------
    %(curve)s

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import insertion_curve
    >>> X = np.ones((5, 10))
    >>> w = np.array([10.0] + [0.0] * 9)
    >>> curve = insertion_curve(lambda x: x @ w, X, X * w, baseline=0.0, steps=10)
    >>> curve["value"][:3], round(curve["auc"], 3)
    (array([0., 1., 1.]), 0.95)
    """
    setup = _Setup(f, X, baseline, steps, max_fraction, batch_size)
    curve = setup.mean_curve(setup.ranks(attributions, absolute), "insertion")
    return setup.result(curve, normalize)


def faithfulness(
    f: Callable[[np.ndarray], Any],
    X: Any,
    attributions: Any,
    baseline: Any = 0.0,
    *,
    n_random: int = 5,
    seed: int = 0,
    steps: int = 20,
    max_fraction: float = 1.0,
    absolute: bool = False,
    normalize: bool = True,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Compare the deletion and insertion areas of an attribution with random orderings.

    Runs :func:`deletion_curve` and :func:`insertion_curve` for ``attributions`` and for
    ``n_random`` random feature orderings (drawn independently per cell). A faithful attribution
    has a lower deletion area and a higher insertion area than random.

    Parameters
    ----------
    f, X, attributions, baseline, steps, max_fraction, absolute, normalize, batch_size
        As in :func:`deletion_curve`.
    n_random
        Number of random orderings to average over.
    seed
        Seed of the random orderings.

    Returns
    -------
    dict
        ``"deletion_auc"``, ``"insertion_auc"``; ``"random_deletion_auc"``,
        ``"random_insertion_auc"`` (means over random orderings) and their ``"_std"``;
        ``"deletion_gain"`` (random minus attribution deletion area) and
        ``"insertion_gain"`` (attribution minus random insertion area): positive when the
        attribution beats random.

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import faithfulness
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((50, 30))
    >>> w = rng.random(30)
    >>> res = faithfulness(lambda x: x @ w, X, X * w, baseline=0.0)
    >>> res["deletion_gain"] > 0, res["insertion_gain"] > 0
    (True, True)
    """
    if isinstance(n_random, bool) or not isinstance(n_random, int | np.integer) or n_random < 1:
        raise ValueError(f"n_random must be a positive integer, got {n_random!r}")
    setup = _Setup(f, X, baseline, steps, max_fraction, batch_size)
    ranks = setup.ranks(attributions, absolute)
    deletion = setup.result(setup.mean_curve(ranks, "deletion"), normalize)["auc"]
    insertion = setup.result(setup.mean_curve(ranks, "insertion"), normalize)["auc"]
    rng = np.random.default_rng(seed)
    random_del, random_ins = [], []
    for _ in range(n_random):
        random_ranks = _ranks(rng.random((setup.n_cells, setup.n_features)))
        random_del.append(setup.result(setup.mean_curve(random_ranks, "deletion"), normalize))
        random_ins.append(setup.result(setup.mean_curve(random_ranks, "insertion"), normalize))
    rd = np.array([r["auc"] for r in random_del])
    ri = np.array([r["auc"] for r in random_ins])
    return {
        "deletion_auc": deletion,
        "insertion_auc": insertion,
        "random_deletion_auc": float(rd.mean()),
        "random_insertion_auc": float(ri.mean()),
        "random_deletion_auc_std": float(rd.std()),
        "random_insertion_auc_std": float(ri.std()),
        "deletion_gain": float(rd.mean() - deletion),
        "insertion_gain": float(insertion - ri.mean()),
    }


def randomization_check(
    trained: Any,
    randomized: Any,
    k: int = 50,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Check that attributions change when the model's weights are randomised.

    Attributions computed on a trained model are compared with those computed, on the same
    cells and targets, on a model with re-initialised weights. An attribution method that
    explains the model (rather than the input alone) gives dissimilar rankings. Rankings use
    the absolute attribution.

    Parameters
    ----------
    trained
        Attributions from the trained model, features x targets (or a vector over features),
        e.g. mean absolute attribution per feature and program.
    randomized
        Attributions from the randomised model, same shape. Two DataFrames are aligned by label.
    k
        Number of top features for the Jaccard index.
    threshold
        The check passes when the mean Spearman correlation of ``|attribution|`` over targets
        is below this value. 0.5 is a lenient default; stricter checks use lower values.

    Returns
    -------
    dict
        ``"rank_correlation"``: mean Spearman correlation over targets; ``"topk_jaccard"``: mean
        top-``k`` Jaccard index; ``"passed"``: whether ``rank_correlation < threshold``;
        ``"threshold"``; ``"per_target"``: DataFrame with both values per target. If all
        correlations are undefined (constant attributions), ``"passed"`` is False and a
        warning is logged.

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import randomization_check
    >>> rng = np.random.default_rng(0)
    >>> trained = rng.normal(size=(500, 4))
    >>> randomization_check(trained, rng.normal(size=(500, 4)))["passed"]
    True
    >>> randomization_check(trained, trained.copy())["passed"]
    False
    """
    randomized = align_frames(trained, randomized, "trained", "randomized")
    a = to_array(trained, "trained", ndim=(1, 2))
    b = to_array(randomized, "randomized", ndim=(1, 2))
    check_same_shape(a, b, "trained", "randomized")
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    k = check_k(k, a.shape[0])
    a, b = np.abs(a), np.abs(b)
    rho = rank_correlation(a, b)
    jac = _topk_sets_jaccard(a, b, k)
    per_target = pd.DataFrame(
        {"rank_correlation": rho, "topk_jaccard": jac}, index=column_names(trained, a.shape[1])
    )
    finite = rho[np.isfinite(rho)]
    if finite.size == 0:
        logger.warning(
            "randomization_check: the rank correlation is undefined for every target "
            "(constant attributions); the check is not passed"
        )
        mean_rho = float("nan")
    else:
        mean_rho = float(finite.mean())
    return {
        "rank_correlation": mean_rho,
        "topk_jaccard": float(jac.mean()),
        "passed": bool(finite.size > 0 and mean_rho < threshold),
        "threshold": float(threshold),
        "per_target": per_target,
    }
