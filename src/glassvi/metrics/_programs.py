"""Recovery of simulated gene programs: which are active, their activity, their members."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from ._utils import align_frames, check_same_shape, pearson_columns, to_array, to_bool

logger = logging.getLogger(__name__)


def program_activity_auroc(scores: Any, active: Any) -> dict[str, float]:
    """Separate active programs from inactive (decoy) programs by a per-program score.

    Parameters
    ----------
    scores
        One score per program, higher meaning "more likely active", e.g. the variance of the
        inferred activity across cells or the norm of the program's decoder column.
    active
        Boolean, one per program: whether the program is active in the ground truth. Must contain
        both active and inactive programs. If ``scores`` and ``active`` are both
        :class:`pandas.Series`, ``active`` is aligned to the index of ``scores``.

    Returns
    -------
    dict
        ``"auroc"``: area under the ROC curve (1 = perfect, 0.5 = chance, 0 = reversed);
        ``"auprc"``: average precision; ``"auprc_chance"``: the fraction of active programs, i.e.
        the average precision of a random score.

    Examples
    --------
    >>> from glassvi.metrics import program_activity_auroc
    >>> program_activity_auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
    {'auroc': 1.0, 'auprc': 1.0, 'auprc_chance': 0.5}
    """
    active = align_frames(scores, active, "scores", "active")
    scores_arr = to_array(scores, "scores", ndim=1)
    active_arr = to_bool(active, "active", ndim=1)
    if scores_arr.shape[0] != active_arr.shape[0]:
        raise ValueError(
            f"scores has {scores_arr.shape[0]} programs but active has {active_arr.shape[0]}"
        )
    n_active = int(active_arr.sum())
    if n_active == 0 or n_active == active_arr.size:
        raise ValueError(
            "active must contain both active and inactive programs "
            f"(got {n_active} active of {active_arr.size})"
        )
    return {
        "auroc": float(roc_auc_score(active_arr, scores_arr)),
        "auprc": float(average_precision_score(active_arr, scores_arr)),
        "auprc_chance": n_active / active_arr.size,
    }


def activity_correlation(
    estimated: Any,
    true: Any,
    method: Literal["pearson", "spearman"] = "pearson",
) -> np.ndarray:
    """Correlation between estimated and true program activity, one value per program.

    Column ``j`` of ``estimated`` is compared with column ``j`` of ``true``. If both are
    :class:`pandas.DataFrame`, ``estimated`` is first aligned to the rows (cells) and columns
    (programs) of ``true`` by label.

    Parameters
    ----------
    estimated
        Inferred activity, cells x programs (e.g. ``model.get_program_activity()``). Drop extra
        latent dimensions (e.g. de novo programs) that have no ground truth first.
    true
        Ground-truth activity, cells x programs.
    method
        ``"pearson"`` (linear) or ``"spearman"`` (monotone, computed as the Pearson
        correlation of ranks).

    Returns
    -------
    numpy.ndarray
        Signed correlation per program, in the column order of ``true``. The value is NaN for a
        program whose estimated or true activity is constant across cells (e.g. an inactive decoy
        program), where the correlation is undefined.

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import activity_correlation
    >>> true = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    >>> estimated = 3 * true + 1
    >>> activity_correlation(estimated, true)
    array([ 1., nan])
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    estimated = align_frames(true, estimated, "true", "estimated")
    est = to_array(estimated, "estimated", ndim=2)
    tru = to_array(true, "true", ndim=2)
    if est.shape[1] != tru.shape[1]:
        raise ValueError(
            f"estimated has {est.shape[1]} programs but true has {tru.shape[1]}; "
            "columns must correspond one to one"
        )
    if est.shape[0] != tru.shape[0]:
        raise ValueError(f"estimated has {est.shape[0]} cells but true has {tru.shape[0]}")
    if est.shape[0] < 2:
        raise ValueError("at least 2 cells are needed to compute a correlation")
    if method == "spearman":
        est = rankdata(est, axis=0)
        tru = rankdata(tru, axis=0)
    return pearson_columns(est, tru)


def member_recovery(
    weights: Any,
    true_mask: Any,
    held_out: Any | None = None,
    given_mask: Any | None = None,
    absolute: bool = True,
) -> dict[str, Any]:
    """Recover the member features of each program from decoder weights.

    For each program (column), features are scored by their decoder weight and compared with the
    true membership by AUROC and average precision (AUPRC).

    With neither ``held_out`` nor ``given_mask``, every feature is a candidate. To test whether a
    soft mask recovers members that were removed from the input mask, pass the removed members as
    ``held_out`` (or the mask the model was given as ``given_mask``). Features in the given mask
    are then excluded: positives are the held-out members, negatives are the non-members outside
    the given mask.

    Parameters
    ----------
    weights
        Decoder weights, features x programs (e.g. ``adata.varm["programvi_weights"]``).
    true_mask
        Boolean ground-truth membership, features x programs.
    held_out
        Boolean, features x programs: true members removed from the model's input mask. Must be
        a subset of ``true_mask``. The given mask is then ``true_mask & ~held_out``.
    given_mask
        Boolean, features x programs: the mask the model was given. Alternative to
        ``held_out`` (``held_out = true_mask & ~given_mask``); it may also contain non-members.
    absolute
        Score features by ``|weight|`` (default), since a member can act through a negative
        weight. With ``False`` the signed weight is used.

    Returns
    -------
    dict
        ``"auroc"`` and ``"auprc"``: arrays with one value per program, NaN for programs without
        both positive and negative candidates; ``"auprc_chance"``: array of the fraction of
        positives among candidates per program; ``"mean_auroc"`` and ``"mean_auprc"``: means over
        the programs that could be evaluated; ``"n_evaluated"``: how many programs that is.

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import member_recovery
    >>> true_mask = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)
    >>> weights = np.array([[2.0, 0.0], [0.5, 0.1], [0.1, -3.0], [0.0, 1.0]])
    >>> res = member_recovery(weights, true_mask)
    >>> res["auroc"], res["mean_auroc"]
    (array([1., 1.]), 1.0)
    >>> held_out = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=bool)
    >>> member_recovery(weights, true_mask, held_out=held_out)["auroc"]
    array([1., 1.])
    """
    true_mask = align_frames(weights, true_mask, "weights", "true_mask")
    w = to_array(weights, "weights", ndim=2)
    truth = to_bool(true_mask, "true_mask", ndim=2)
    check_same_shape(w, truth, "weights", "true_mask")
    if held_out is not None and given_mask is not None:
        raise ValueError("pass held_out or given_mask, not both")
    if held_out is not None:
        held_out = align_frames(weights, held_out, "weights", "held_out")
        held = to_bool(held_out, "held_out", ndim=2)
        check_same_shape(w, held, "weights", "held_out")
        outside = held & ~truth
        if outside.any():
            raise ValueError(
                f"held_out marks {int(outside.sum())} feature-program pairs that are not in "
                "true_mask; held-out members must be true members"
            )
        given = truth & ~held
    elif given_mask is not None:
        given_mask = align_frames(weights, given_mask, "weights", "given_mask")
        given = to_bool(given_mask, "given_mask", ndim=2)
        check_same_shape(w, given, "weights", "given_mask")
    else:
        given = np.zeros_like(truth)

    scores = np.abs(w) if absolute else w
    n_programs = w.shape[1]
    auroc = np.full(n_programs, np.nan)
    auprc = np.full(n_programs, np.nan)
    chance = np.full(n_programs, np.nan)
    for j in range(n_programs):
        candidates = ~given[:, j]
        y = truth[candidates, j]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            continue
        s = scores[candidates, j]
        auroc[j] = roc_auc_score(y, s)
        auprc[j] = average_precision_score(y, s)
        chance[j] = n_pos / y.size
    n_evaluated = int(np.isfinite(auroc).sum())
    if n_evaluated == 0:
        logger.warning(
            "member_recovery: no program has both member and non-member candidates; returning NaN"
        )
        mean_auroc = mean_auprc = float("nan")
    else:
        mean_auroc = float(np.nanmean(auroc))
        mean_auprc = float(np.nanmean(auprc))
    return {
        "auroc": auroc,
        "auprc": auprc,
        "auprc_chance": chance,
        "mean_auroc": mean_auroc,
        "mean_auprc": mean_auprc,
        "n_evaluated": n_evaluated,
    }


def program_recovery(
    estimated_activity: Any,
    true_activity: Any,
    active: Any,
    weights: Any | None = None,
    true_mask: Any | None = None,
    given_mask: Any | None = None,
    method: Literal["pearson", "spearman"] = "pearson",
) -> dict[str, float]:
    """Summarise how well a model recovers simulated programs, as a flat dict of floats.

    Combines :func:`program_activity_auroc` (scored by the variance of the estimated activity
    and, with ``weights``, by the decoder column norm), :func:`activity_correlation` over the
    active programs, and, with ``weights`` and ``true_mask``, :func:`member_recovery` over the
    active programs.

    Parameters
    ----------
    estimated_activity
        Inferred activity, cells x programs.
    true_activity
        Ground-truth activity, cells x programs (same columns as ``estimated_activity``).
        Arrays are matched by position. When ``true_activity`` is a
        :class:`~pandas.DataFrame`, labelled inputs (DataFrames for activity and weights, a
        Series for ``active``) are put in its program order.
    active
        Boolean, one per program: active in the ground truth.
    weights
        Optional decoder weights, features x programs.
    true_mask
        Boolean ground-truth membership, features x programs; required with ``weights``.
    given_mask
        Boolean mask the model was given, features x programs. If set, member recovery is
        evaluated on the held-out members only (see :func:`member_recovery`).
    method
        Correlation method for :func:`activity_correlation`.

    Returns
    -------
    dict
        ``"n_programs"``, ``"n_active"``; ``"activity_auroc"``, ``"activity_auprc"`` (active vs
        inactive by activity variance); ``"activity_corr_mean"``, ``"activity_corr_median"``,
        ``"activity_corr_min"`` (over active programs, NaN correlations ignored). With
        ``weights``: ``"weight_norm_auroc"``, ``"weight_norm_auprc"`` (active vs inactive by
        decoder column norm), ``"member_auroc"`` and ``"member_auprc"`` (means over active
        programs).

    Examples
    --------
    >>> import numpy as np
    >>> from glassvi.metrics import program_recovery
    >>> rng = np.random.default_rng(0)
    >>> true = rng.normal(size=(100, 3)) * np.array([1.0, 1.0, 0.0])
    >>> estimated = 2 * true + 0.01 * rng.normal(size=true.shape)
    >>> report = program_recovery(estimated, true, active=[True, True, False])
    >>> report["activity_auroc"], round(report["activity_corr_mean"], 3)
    (1.0, 1.0)
    """
    # labelled inputs are put in the program order of true_activity; arrays match by position
    estimated_activity = align_frames(
        true_activity, estimated_activity, "true_activity", "estimated_activity"
    )
    if isinstance(true_activity, pd.DataFrame):
        if isinstance(active, pd.Series):
            active = align_frames(true_activity.columns.to_series(), active, "programs", "active")
        if isinstance(weights, pd.DataFrame):
            missing = true_activity.columns.difference(weights.columns)
            if len(missing):
                raise KeyError(
                    f"{len(missing)} programs of true_activity are missing from weights, "
                    f"e.g. {list(missing[:5])}"
                )
            weights = weights.loc[:, true_activity.columns]
    if isinstance(weights, pd.DataFrame):
        true_mask = align_frames(weights, true_mask, "weights", "true_mask")
        given_mask = align_frames(weights, given_mask, "weights", "given_mask")
    active_arr = to_bool(active, "active", ndim=1)
    est = to_array(estimated_activity, "estimated_activity", ndim=2)
    if est.shape[1] != active_arr.size:
        raise ValueError(
            f"estimated_activity has {est.shape[1]} programs but active has {active_arr.size}"
        )
    corr = activity_correlation(estimated_activity, true_activity, method=method)
    activity = program_activity_auroc(est.var(axis=0), active_arr)
    corr_active = corr[active_arr]
    finite = corr_active[np.isfinite(corr_active)]
    if finite.size < corr_active.size:
        logger.warning(
            "program_recovery: %d active programs have constant estimated or true activity; "
            "their correlation is undefined and ignored",
            corr_active.size - finite.size,
        )
    report: dict[str, float] = {
        "n_programs": float(active_arr.size),
        "n_active": float(active_arr.sum()),
        "activity_auroc": activity["auroc"],
        "activity_auprc": activity["auprc"],
        "activity_corr_mean": float(finite.mean()) if finite.size else float("nan"),
        "activity_corr_median": float(np.median(finite)) if finite.size else float("nan"),
        "activity_corr_min": float(finite.min()) if finite.size else float("nan"),
    }
    if weights is None:
        if true_mask is not None or given_mask is not None:
            raise ValueError("true_mask and given_mask need weights")
        return report
    if true_mask is None:
        raise ValueError("weights were given without true_mask; both are needed")
    w = to_array(weights, "weights", ndim=2)
    if w.shape[1] != active_arr.size:
        raise ValueError(f"weights has {w.shape[1]} programs but active has {active_arr.size}")
    norm = program_activity_auroc(np.linalg.norm(w, axis=0), active_arr)
    report["weight_norm_auroc"] = norm["auroc"]
    report["weight_norm_auprc"] = norm["auprc"]
    truth = to_bool(true_mask, "true_mask", ndim=2)
    check_same_shape(w, truth, "weights", "true_mask")
    given = None
    if given_mask is not None:
        given = to_bool(given_mask, "given_mask", ndim=2)
        check_same_shape(w, given, "weights", "given_mask")
        given = given[:, active_arr]
    members = member_recovery(w[:, active_arr], truth[:, active_arr], given_mask=given)
    report["member_auroc"] = members["mean_auroc"]
    report["member_auprc"] = members["mean_auprc"]
    return report
