"""Differential programs: effect size against log Bayes factor (a volcano plot)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys
from ._utils import available, check_columns, finish, is_mudata, new_figure, plot_docs

#: where ``ProgramVI.differential_programs`` records its result by default
DEFAULT_KEY = _keys.differential(_keys.PROGRAMVI)

DIFFERENTIAL_COLUMNS = ("program", "bayes_factor", "effect_size", "is_significant")


def differential_table(data: Any, key: str = DEFAULT_KEY) -> pd.DataFrame:
    """Return the differential programs table of ``uns[key]`` (or ``data``) as a DataFrame.

    Parameters
    ----------
    data
        AnnData/MuData with the table in ``uns[key]``, or the table (DataFrame or dict of
        columns).
    key
        ``uns`` key of the table.

    Returns
    -------
    DataFrame with at least the columns ``program``, ``bayes_factor``, ``effect_size`` and
    ``is_significant``.

    Examples
    --------
    >>> glassvi.pl.differential_table(adata).sort_values("bayes_factor").tail()
    """
    if isinstance(data, pd.DataFrame):
        table, where = data, "the table"
    elif isinstance(data, Mapping) and not hasattr(data, "uns"):
        table, where = pd.DataFrame(dict(data)), "the table"
    elif hasattr(data, "uns"):
        if key not in data.uns:
            raise KeyError(f"{key!r} is not in .uns (available uns keys: {available(data.uns)}).")
        table = _record_table(data.uns[key])
        where = f"uns[{key!r}]"
    else:
        raise TypeError(f"expected an AnnData, MuData or DataFrame, got {type(data).__name__}.")
    if "program" not in table.columns:
        table = table.rename_axis("program").reset_index()
    check_columns(table, DIFFERENTIAL_COLUMNS, where)
    return table


def _record_table(record: Any) -> pd.DataFrame:
    """The table of an ``uns`` record of ``ProgramVI.differential_programs``.

    The record holds the table under ``"results"`` next to scanpy's ``rank_genes_groups``
    fields; a record with only those fields (``names``, ``scores``, ``logfoldchanges``,
    ``pvals_adj``) is read field by field.
    """
    if isinstance(record, pd.DataFrame):
        return record
    if not isinstance(record, Mapping):
        raise TypeError(f"expected a differential-programs record, got {type(record).__name__}.")
    if "results" in record:
        return pd.DataFrame(record["results"])
    if "names" in record and "scores" in record:
        params = dict(record.get("params") or {})
        reference = params.get("reference", "rest")
        fdr = float(params.get("fdr_target", 0.05))
        frames = []
        for group in record["names"].dtype.names:
            frame = pd.DataFrame(
                {
                    "program": np.asarray(record["names"][group]).astype(str),
                    "bayes_factor": np.asarray(record["scores"][group], dtype=float),
                }
            )
            if "logfoldchanges" in record:
                frame["effect_size"] = np.asarray(record["logfoldchanges"][group], dtype=float)
            if "is_significant" in record:
                frame["is_significant"] = np.asarray(record["is_significant"][group], dtype=bool)
            elif "pvals_adj" in record:
                frame["is_significant"] = np.asarray(record["pvals_adj"][group]) <= fdr
            frame["comparison"] = f"{group} vs {reference}"
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)
    return pd.DataFrame(dict(record))


@plot_docs
def differential(
    data: Any,
    key: str = DEFAULT_KEY,
    *,
    n_labels: int = 10,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
):
    """Volcano plot of differential programs: effect size against log Bayes factor.

    Each point is a program; significant programs (``is_significant``) are drawn in red and
    the ``n_labels`` strongest of them are named. The ``bayes_factor`` column is taken as the
    natural logarithm of the Bayes factor, as scvi-tools reports it. With a ``comparison``
    column holding several comparisons, each gets its own marker.

    Parameters
    ----------
    data
        AnnData or MuData holding the table in ``uns[key]``, or the table itself (a DataFrame
        with columns ``program``, ``bayes_factor``, ``effect_size``, ``is_significant``).
    key
        ``uns`` key of the table.
    n_labels
        Number of significant programs named, by descending ``|effect size| x log BF``.
    ax
        Axes to draw into.
    %(show_save)s

    Returns
    -------
    The Axes when the figure is not shown, else ``None``.

    Raises
    ------
    KeyError
        If ``uns[key]`` or a needed column is missing.

    Examples
    --------
    >>> glassvi.pl.differential(adata, key="programvi_differential")
    """
    if not (is_mudata(data) or hasattr(data, "uns") or isinstance(data, pd.DataFrame | Mapping)):
        raise TypeError(
            f"data must be an AnnData, MuData or DataFrame, got {type(data).__name__}."
        )
    table = differential_table(data, key)
    effect = table["effect_size"].to_numpy(dtype=float)
    log_bf = table["bayes_factor"].to_numpy(dtype=float)
    significant = table["is_significant"].to_numpy(dtype=bool)

    fig, ax = new_figure((5.0, 4.2), ax)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.axhline(0, color="black", linewidth=0.6)
    comparisons = (
        table["comparison"].astype(str).to_numpy()
        if "comparison" in table.columns
        else np.full(len(table), "")
    )
    markers = "os^Dv<>pP*"
    for j, comparison in enumerate(pd.unique(comparisons)):
        pick = comparisons == comparison
        marker = markers[j % len(markers)]
        suffix = f" ({comparison})" if comparison else ""
        ax.scatter(
            effect[pick & ~significant],
            log_bf[pick & ~significant],
            s=18,
            color="#95a5a6",
            marker=marker,
            alpha=0.7,
            label=f"not significant{suffix}",
        )
        ax.scatter(
            effect[pick & significant],
            log_bf[pick & significant],
            s=26,
            color="#c0392b",
            marker=marker,
            edgecolors="white",
            linewidths=0.4,
            label=f"significant{suffix}",
        )
    strength = np.abs(effect) * np.clip(log_bf, 0, None)
    order = [i for i in np.argsort(-strength, kind="stable") if significant[i]][:n_labels]
    for i in order:
        ax.annotate(
            str(table["program"].iloc[i]),
            (effect[i], log_bf[i]),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_xlabel("effect size", fontsize=9)
    ax.set_ylabel("log Bayes factor", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(False)
    ax.set_title(
        key if not isinstance(data, pd.DataFrame) else "differential programs", fontsize=10
    )
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return finish(fig, ax, show, save, dpi)
