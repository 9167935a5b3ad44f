"""Multiome: a program's gene weights beside the weights of the peaks linked to those genes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._features import _lollipop, select_top
from ._utils import (
    available,
    check_columns,
    default_weights_key,
    finish,
    is_mudata,
    plot_docs,
    resolve_varm,
)

logger = logging.getLogger(__name__)


def _modality_names(mdata: Any, key: str) -> dict[str, str]:
    """Role -> modality name, from the glassvi record that wrote ``key`` when there is one."""
    for record in mdata.uns.values():
        if isinstance(record, Mapping) and record.get("weights_key") == key:
            mods = {r: m for r, m in dict(record.get("modalities", {})).items() if m}
            if "rna" in mods and "atac" in mods:
                return mods
    return {"rna": "rna", "atac": "atac"}


def _n_peaks(n: int) -> str:
    return f"{n} peak" if n == 1 else f"{n} peaks"


def _resolve_links(atac, links) -> pd.DataFrame | None:
    """Peak-gene links as a DataFrame with ``peak``, ``gene`` (and maybe ``distance``)."""
    if isinstance(links, str):
        if links not in atac.uns:
            raise KeyError(
                f"links {links!r} is not in the ATAC modality's .uns (available uns keys: "
                f"{available(atac.uns)}); run glassvi.pp.link_peaks(..., key_added=...) first."
            )
        links = atac.uns[links]
        links = links if isinstance(links, pd.DataFrame) else pd.DataFrame(dict(links))
    if isinstance(links, pd.DataFrame):
        check_columns(links, ["peak", "gene"], "links")
        return links
    if links is not None:
        raise TypeError(f"links must be a DataFrame or an uns key, got {type(links).__name__}.")
    if "gene" in atac.var.columns:
        frame = pd.DataFrame({"peak": atac.var_names, "gene": atac.var["gene"].astype(str)})
        return frame[atac.var["gene"].notna().to_numpy()]
    for value in atac.uns.values():
        if isinstance(value, pd.DataFrame) and {"peak", "gene"} <= set(value.columns):
            return value
    return None


@plot_docs
def multiome_program(
    mdata: Any,
    program: str,
    *,
    key: str | None = None,
    links: pd.DataFrame | str | None = None,
    n_genes: int = 12,
    rna_modality: str | None = None,
    atac_modality: str | None = None,
    sort_by: Literal["abs", "positive", "negative"] = "abs",
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
):
    """Plot a program's top gene weights beside the weights of the peaks linked to them.

    The left panel is a lollipop chart of the program's ``n_genes`` top genes; the right panel
    shows, on each gene's row, the program's weight of every peak linked to that gene, colored
    by the distance to the gene's TSS when the links have one. Agreement between both panels
    says that a program's genes and their regulatory regions move together.

    Parameters
    ----------
    mdata
        MuData with RNA and ATAC modalities holding the weights in ``varm[key]``.
    program
        Program or factor name (a column of the weights).
    key
        ``varm`` key of the weights in both modalities; by default the weights
        ``model.explain()`` wrote.
    links
        Peak-gene links: the DataFrame returned by :func:`glassvi.pp.link_peaks` (columns
        ``peak``, ``gene``, optional ``distance``) or the ATAC ``uns`` key where it was stored.
        By default a ``gene`` column of the ATAC ``var`` or links found in its ``uns`` are used;
        without any links the right panel shows the program's top peaks.
    n_genes
        Number of top genes shown.
    rna_modality
        Name of the RNA modality; by default read from the model's record, else ``"rna"``.
    atac_modality
        Name of the ATAC modality; by default read from the model's record, else ``"atac"``.
    sort_by
        ``"abs"`` (largest magnitude), ``"positive"`` or ``"negative"`` gene weights first.
    %(show_save)s

    Returns
    -------
    The two Axes ``[genes, peaks]`` when the figure is not shown, else ``None``.

    Raises
    ------
    KeyError
        If a modality, the weights key, the program or the ``links`` key is missing.

    Examples
    --------
    >>> links = glassvi.pp.link_peaks(mdata["atac"], "hg38")
    >>> glassvi.pl.multiome_program(mdata, "factor_3", links=links)
    """
    import matplotlib.pyplot as plt

    if not is_mudata(mdata):
        raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}.")
    if n_genes < 1:
        raise ValueError(f"n_genes must be at least 1, got {n_genes}.")
    key = key or default_weights_key(mdata)
    roles = _modality_names(mdata, key)
    rna_mod = rna_modality or roles["rna"]
    atac_mod = atac_modality or roles["atac"]
    gene_weights, _, _ = resolve_varm(mdata, key, rna_mod)
    peak_weights, atac, _ = resolve_varm(mdata, key, atac_mod)
    check_columns(gene_weights, [program], f"mdata[{rna_mod!r}].varm[{key!r}]")
    check_columns(peak_weights, [program], f"mdata[{atac_mod!r}].varm[{key!r}]")
    link_table = _resolve_links(atac, links)

    genes = select_top(gene_weights[program].astype(float), n_genes, sort_by)
    peaks = peak_weights[program].astype(float)
    height = 1.0 + 0.3 * len(genes)
    fig, (ax_genes, ax_peaks) = plt.subplots(
        1,
        2,
        figsize=(8.0, height),
        layout="constrained",
        gridspec_kw={"width_ratios": [1, 1.2]},
    )
    _lollipop(ax_genes, genes, None, f"{program}: genes ({rna_mod})", "gene weight")
    limit = float(np.nanmax(np.abs(peaks.to_numpy()))) if len(peaks) else 0.0
    if not limit > 0:  # no peak weights: any symmetric axis around zero
        limit = 1.0

    if link_table is None:
        logger.info("no peak-gene links found; showing the top peaks of %r", program)
        top_peaks = select_top(peaks, len(genes), sort_by)
        _lollipop(ax_peaks, top_peaks, None, f"top peaks ({atac_mod}), no links", "peak weight")
        return finish(fig, [ax_genes, ax_peaks], show, save, dpi)

    table = link_table[link_table["gene"].astype(str).isin(genes.index.astype(str))]
    table = table[table["peak"].astype(str).isin(peaks.index.astype(str))]
    rows = {gene: y for gene, y in zip(genes.index.astype(str), np.arange(len(genes))[::-1])}
    y = table["gene"].astype(str).map(rows).to_numpy(dtype=float)
    x = peaks.reindex(table["peak"].astype(str)).to_numpy()
    if "distance" in table.columns:
        color = np.abs(table["distance"].to_numpy(dtype=float)) / 1000
        points = ax_peaks.scatter(
            x, y, c=color, cmap="viridis_r", s=28, edgecolors="white", linewidths=0.4, zorder=3
        )
        fig.colorbar(points, ax=ax_peaks, label="distance to TSS (kb)", shrink=0.8)
    else:
        ax_peaks.scatter(x, y, color="#16a085", s=28, edgecolors="white", linewidths=0.4, zorder=3)
    counts = table["gene"].astype(str).value_counts()
    ax_peaks.set_yticks(
        list(rows.values()), [_n_peaks(counts.get(g, 0)) for g in rows], fontsize=7
    )
    ax_peaks.set_ylim(ax_genes.get_ylim())
    ax_peaks.axvline(0, color="black", linewidth=0.6)
    ax_peaks.set_xlim(-1.08 * limit, 1.08 * limit)
    ax_peaks.set_xlabel("peak weight", fontsize=9)
    ax_peaks.tick_params(axis="x", labelsize=8)
    ax_peaks.set_title(f"linked peaks ({atac_mod})", fontsize=10)
    ax_peaks.spines[["top", "right"]].set_visible(False)
    ax_peaks.grid(axis="x", linewidth=0.3, alpha=0.5)
    return finish(fig, [ax_genes, ax_peaks], show, save, dpi)
