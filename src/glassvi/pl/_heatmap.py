"""Attributions of features to groups (cell types, classes, programs) as a heatmap or dotplot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._utils import check_columns, check_data, finish, new_figure, plot_docs, resolve_varm


def top_per_group(
    table: pd.DataFrame, n_top: int, groups: Sequence[str], by_abs: bool
) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Union of each group's top features, in group order, and each group's span in it."""
    features: list[str] = []
    spans = []
    for group in groups:
        column = table[group].astype(float).dropna()
        column = column.abs() if by_abs else column
        best = column.sort_values(ascending=False, kind="stable").index
        start = len(features)
        for feature in best:
            if len(features) - start >= n_top:
                break
            if feature not in features:
                features.append(feature)
        spans.append((group, start, len(features)))
    return features, spans


def _scale(values: pd.DataFrame, standard_scale: str | None) -> pd.DataFrame:
    if standard_scale is None:
        return values
    if standard_scale not in ("feature", "group"):
        raise ValueError(
            f"standard_scale must be None, 'feature' or 'group', got {standard_scale!r}."
        )
    axis = 0 if standard_scale == "feature" else 1
    low = values.min(axis=axis)
    span = (values.max(axis=axis) - low).replace(0, 1)
    return values.sub(low, axis=1 - axis).div(span, axis=1 - axis)


@plot_docs
def attribution_heatmap(
    adata: Any,
    key: str,
    *,
    n_top: int = 5,
    groups: Sequence[str] | None = None,
    modality: str | None = None,
    kind: Literal["heatmap", "dotplot"] = "heatmap",
    absolute: bool = False,
    standard_scale: Literal["feature", "group"] | None = None,
    cmap: str | None = None,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
):
    """Heatmap or dotplot of the top attributed features of each group.

    Reads a features x groups table from ``.varm``, such as the per-target attributions
    ``varm[f"{prefix}_{method}_{target}"]`` (signed mean) or its ``_abs`` companion (mean
    absolute attribution) written by :mod:`glassvi.explain`, or decoder weights (features x
    programs). The ``n_top`` features of every group are collected and drawn for every group; a
    box marks the features each group selected. By default a group's features are those with
    the largest signed values, the evidence *for* the group (as in
    :func:`glassvi.tl.rank_features`): a feature that counts strongly against a group is not
    taken for one of its markers. ``absolute=True`` selects by magnitude instead.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality holds ``varm[key]``.
    key
        ``varm`` key of the features x groups table.
    n_top
        Features taken from each group.
    groups
        Columns (groups) to show, in this order; default all.
    modality
        With a MuData, the modality to read (default: the first one with ``key``).
    kind
        ``"heatmap"`` (colored cells) or ``"dotplot"`` (dot size = magnitude relative to the
        largest, color = value).
    absolute
        Select each group's features by magnitude (either sign) rather than by signed value.
    standard_scale
        Rescale values to [0, 1] per ``"feature"`` or per ``"group"``; default none.
    cmap
        Colormap; default ``"RdBu_r"`` centred on zero for signed values, ``"Reds"`` otherwise.
    ax
        Axes to draw into.
    %(show_save)s

    Returns
    -------
    The Axes when the figure is not shown, else ``None``.

    Raises
    ------
    KeyError
        If ``key`` or a group is missing; the message lists what is available.

    Examples
    --------
    >>> glassvi.pl.attribution_heatmap(adata, "linearvi_integrated_gradients_labels", n_top=5)
    >>> glassvi.pl.attribution_heatmap(adata, "programvi_ig_cell_type", absolute=True)
    """
    check_data(adata)
    if n_top < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}.")
    if kind not in ("heatmap", "dotplot"):
        raise ValueError(f"kind must be 'heatmap' or 'dotplot', got {kind!r}.")
    table, _, mod = resolve_varm(adata, key, modality)
    where = f"varm[{key!r}]" if mod is None else f"mdata[{mod!r}].varm[{key!r}]"
    groups = [str(c) for c in table.columns] if groups is None else list(groups)
    table = table.set_axis([str(c) for c in table.columns], axis=1)
    check_columns(table, groups, where)
    if not groups:
        raise ValueError(f"{where} has no columns to draw.")
    table = table[groups].astype(float)
    features, spans = top_per_group(table, n_top, groups, by_abs=absolute)
    values = _scale(table.loc[features].T, standard_scale)  # groups x features

    signed = standard_scale is None and bool((values.to_numpy() < 0).any())
    if signed:
        limit = float(np.nanmax(np.abs(values.to_numpy()))) or 1.0
        vmin, vmax, cmap = -limit, limit, cmap or "RdBu_r"
    else:
        vmin, vmax, cmap = None, None, cmap or "Reds"
    width = 2.2 + 0.28 * len(features)
    fig, ax = new_figure((min(max(width, 4.0), 24.0), 1.6 + 0.32 * len(groups)), ax)
    matrix = values.to_numpy()
    if kind == "heatmap":
        image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    else:
        yy, xx = np.mgrid[0 : matrix.shape[0], 0 : matrix.shape[1]]
        magnitude = np.abs(matrix)
        sizes = 200 * magnitude / (np.nanmax(magnitude) or 1.0)
        image = ax.scatter(
            xx.ravel(),
            yy.ravel(),
            s=sizes.ravel(),
            c=matrix.ravel(),
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            edgecolors="grey",
            linewidths=0.3,
        )
        ax.set_xlim(-0.5, matrix.shape[1] - 0.5)
        ax.set_ylim(matrix.shape[0] - 0.5, -0.5)
        ax.set_axisbelow(True)
    ax.set_xticks(np.arange(len(features)), [str(f) for f in features], rotation=90, fontsize=8)
    ax.set_yticks(np.arange(len(groups)), groups, fontsize=8)
    # outline each group's own block of features: a block diagonal when groups differ
    from matplotlib.patches import Rectangle

    for i, (_, begin, stop) in enumerate(spans):
        if stop > begin:
            ax.add_patch(
                Rectangle(
                    (begin - 0.5, i - 0.5),
                    stop - begin,
                    1,
                    fill=False,
                    edgecolor="black",
                    linewidth=1.0,
                )
            )
    label = "scaled value" if standard_scale else "attribution"
    fig.colorbar(image, ax=ax, label=label, shrink=0.8, pad=0.01)
    if kind == "dotplot":
        ax.grid(True, linewidth=0.3, alpha=0.4)
    else:
        ax.grid(False)  # line properties with False would switch the grid on (and warn)
    ax.set_title(key, fontsize=10)
    return finish(fig, ax, show, save, dpi)
