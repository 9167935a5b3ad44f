"""Top features (genes or peaks) of programs or factors, as lollipop charts."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._varm import entry_frame
from ._evidence import find_evidence, with_evidence
from ._utils import (
    as_list,
    check_columns,
    check_data,
    default_weights_key,
    finish,
    plot_docs,
    resolve_varm,
)

logger = logging.getLogger(__name__)

_DEFAULT_MASK = "programs"
IN_MASK_COLOR = "#c0392b"
OUT_MASK_COLOR = "#7f8c8d"


def select_top(
    weights: pd.Series, n: int, sort_by: Literal["abs", "positive", "negative"]
) -> pd.Series:
    """Return the ``n`` features with the largest weights, largest first."""
    if sort_by not in ("abs", "positive", "negative"):
        raise ValueError(f"sort_by must be 'abs', 'positive' or 'negative', got {sort_by!r}.")
    weights = weights.dropna()
    if sort_by == "abs":
        order = weights.abs().sort_values(ascending=False, kind="stable").index
    else:
        order = weights.sort_values(ascending=sort_by == "negative", kind="stable").index
    return weights.loc[order[:n]]


def _mask_membership(container, mask_key: str | None, program: str, index: pd.Index):
    """Boolean Series of mask membership for ``index``, or None when there is no mask column."""
    if mask_key is None:
        return None
    if mask_key not in container.varm:
        if mask_key == _DEFAULT_MASK:
            return None
        raise KeyError(
            f"mask_key {mask_key!r} is not in .varm (available varm keys: "
            f"{', '.join(map(repr, container.varm.keys())) or 'none'})."
        )
    mask = entry_frame(container, container, mask_key)  # names in uns[mask_key]["names"]
    if mask is None:
        return None
    if program not in mask.columns:
        logger.info("%r is not a column of varm[%r]; members are not marked", program, mask_key)
        return None
    return mask[program].reindex(index).fillna(False).astype(bool)


def _wrap_title(name: str, width: int = 26) -> str:
    """Break a long program name into lines at underscores (or anywhere), never shortening it."""
    if "\n" in name:  # a name, then annotation lines (the evidence) that stay as they are
        first, rest = name.split("\n", 1)
        return _wrap_title(first, width) + "\n" + rest
    if len(name) <= width:
        return name
    parts = name.split("_")
    tokens = [p + "_" for p in parts[:-1]] + [parts[-1]]
    lines, line = [], ""
    for token in tokens:
        while len(token) > width:  # a single over-long token is cut into pieces
            if line:
                lines.append(line)
                line = ""
            lines.append(token[:width])
            token = token[width:]
        if len(line) + len(token) > width and line:
            lines.append(line)
            line = ""
        line += token
    if line:
        lines.append(line)
    return "\n".join(lines)


def _lollipop(ax, top: pd.Series, member: pd.Series | None, title: str, xlabel: str) -> None:
    y = np.arange(len(top))[::-1]
    colors = (
        [IN_MASK_COLOR if m else OUT_MASK_COLOR for m in member]
        if member is not None
        else ["#2c3e50"] * len(top)
    )
    ax.hlines(y, 0, top.to_numpy(), color=colors, linewidth=1.5, alpha=0.8)
    ax.scatter(top.to_numpy(), y, c=colors, s=36, zorder=3, edgecolors="white", linewidths=0.5)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(y, [str(i) for i in top.index], fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylim(-0.7, len(top) - 0.3)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(_wrap_title(title), fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(False)
    ax.grid(axis="x", linewidth=0.3, alpha=0.5)


@plot_docs
def top_features(
    adata: Any,
    program: str | Sequence[str],
    *,
    key: str | None = None,
    n: int = 15,
    mask_key: str | None = _DEFAULT_MASK,
    modality: str | None = None,
    sort_by: Literal["abs", "positive", "negative"] = "abs",
    ncols: int = 4,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
    show_evidence: bool = False,
):
    """Lollipop chart of the features with the largest weights in a program or factor.

    Reads a features x programs table from ``.varm`` (decoder weights such as
    ``varm["programvi_weights"]`` or ``varm["linearvi_loadings"]``, or per-target attributions
    written by :mod:`glassvi.explain`). Members of the program's gene set (``varm[mask_key]``)
    are drawn in red, other features in grey.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality holds the weights.
    program
        Column(s) of ``varm[key]``: program, factor or target names. Several names give one
        panel each.
    key
        ``varm`` key of the weights; by default the weights ``model.explain()`` wrote.
    n
        Number of features shown per program.
    mask_key
        ``varm`` key of the boolean features x programs mask used to mark members; ``None``
        marks nothing. The default ``"programs"`` is skipped silently when absent.
    modality
        With a MuData, the modality to read (default: the first one with ``key``).
    sort_by
        ``"abs"`` (largest magnitude), ``"positive"`` or ``"negative"`` weights first.
    ncols
        Panels per row with several programs.
    ax
        Axes to draw into (one program only).
    %(show_save)s
    show_evidence
        Add each program's evidence to its title: the FDR q-value and effective number of
        genes from ``uns[...]["evidence"]`` (written by ProgramVI's ``explain()``, see
        :meth:`~glassvi.model.ProgramVI.program_evidence`), marking programs the data do not
        support or that one or two genes carry.

    Returns
    -------
    The Axes (a list of Axes for several programs) when the figure is not shown, else ``None``.

    Raises
    ------
    KeyError
        If ``key``, ``mask_key`` (other than the default) or a program is missing.

    Examples
    --------
    >>> glassvi.pl.top_features(adata, "factor_0", key="linearvi_loadings", n=10)
    >>> glassvi.pl.top_features(adata, ["HALLMARK_HYPOXIA", "HALLMARK_APOPTOSIS"])
    >>> glassvi.pl.top_features(adata, "HALLMARK_HYPOXIA", show_evidence=True)
    """
    import matplotlib.pyplot as plt

    check_data(adata)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    key = key or default_weights_key(adata)
    weights, container, mod = resolve_varm(adata, key, modality)
    names = as_list(program)
    if not names:
        raise ValueError("program is empty; name at least one column of varm[key].")
    where = f"varm[{key!r}]" if mod is None else f"mdata[{mod!r}].varm[{key!r}]"
    check_columns(weights, names, where)
    if ax is not None and len(names) > 1:
        raise ValueError("ax= can be used with one program only.")

    n_shown = min(n, weights.shape[0])
    if ax is None:
        n_cols = min(ncols, len(names))
        n_rows = math.ceil(len(names) / n_cols)
        n_title_lines = max(_wrap_title(str(name)).count("\n") + 1 for name in names)
        n_title_lines += int(show_evidence)  # the evidence line under the name
        height = 0.5 + 0.24 * n_shown + 0.16 * n_title_lines
        fig, grid = plt.subplots(
            n_rows,
            n_cols,
            figsize=(3.5 * n_cols, height * n_rows),
            layout="constrained",
            squeeze=False,
        )
        axes = list(grid.ravel())
        for extra in axes[len(names) :]:
            extra.set_visible(False)
    else:
        fig, axes = ax.figure, [ax]
    evidence = find_evidence(adata, weights_key=key) if show_evidence else None
    any_mask = False
    for name, panel in zip(names, axes):
        top = select_top(weights[name].astype(float), n, sort_by)
        member = _mask_membership(container, mask_key, name, top.index)
        any_mask = any_mask or member is not None
        _lollipop(panel, top, member, with_evidence(str(name), evidence, name), "weight")
    if any_mask:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color=IN_MASK_COLOR, label=f"in {mask_key}"),
            Line2D([], [], marker="o", ls="", color=OUT_MASK_COLOR, label="not in mask"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    result = axes[: len(names)] if len(names) > 1 else axes[0]
    return finish(fig, result, show, save, dpi)
