"""ATAC: link peaks to genes by genomic distance."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._genome import parse_peak_names, read_gene_positions
from ._utils import (
    check_anndata,
    examples,
)

logger = logging.getLogger(__name__)

__all__ = ["link_peaks"]

# accepted spellings of the coordinate columns, compared case-insensitively
_COLUMN_ALIASES = {
    "chrom": ("chrom", "chr", "chromosome", "seqnames", "seqname", "seqid"),
    "start": ("start", "chromstart"),
    "end": ("end", "chromend"),
    "strand": ("strand",),
}
_GENE_NAME_COLUMNS = ("gene", "gene_name", "name")


def _find_columns(frame: pd.DataFrame, wanted: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Map canonical coordinate names to columns of ``frame``; return the missing ones too."""
    by_lower = {str(column).lower(): column for column in frame.columns}
    found, missing = {}, []
    for canonical in wanted:
        column = next(
            (by_lower[alias] for alias in _COLUMN_ALIASES[canonical] if alias in by_lower), None
        )
        if column is None:
            missing.append(canonical)
        else:
            found[canonical] = column
    return found, missing


def _as_chrom(values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy()
    chrom = values.astype(object).to_numpy()
    chrom[~missing] = [str(value) for value in chrom[~missing]]
    chrom[missing] = None
    return chrom


def _peak_coordinates(
    atac: AnnData, coordinates: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Chromosome, start, end and a validity flag for every peak, and where they came from."""
    var = atac.var
    columns: dict[str, str] | None = None
    if coordinates is not None:
        if isinstance(coordinates, str) or len(coordinates) != 3:
            raise ValueError(
                "coordinates must name three adata.var columns: (chrom, start, end), got "
                f"{coordinates!r}"
            )
        missing = [column for column in coordinates if column not in var.columns]
        if missing:
            raise ValueError(
                f"coordinate columns missing from atac.var: {examples(missing)}; available: "
                f"{examples(var.columns, 20)}"
            )
        columns = dict(zip(("chrom", "start", "end"), coordinates, strict=True))
    else:
        found, missing = _find_columns(var, ("chrom", "start", "end"))
        if not missing:
            columns = found

    if columns is not None:
        chrom = _as_chrom(var[columns["chrom"]])
        start = pd.to_numeric(var[columns["start"]], errors="coerce").to_numpy(dtype=float)
        end = pd.to_numeric(var[columns["end"]], errors="coerce").to_numpy(dtype=float)
        source = f"atac.var columns {tuple(columns.values())}"
    else:
        parsed = parse_peak_names(atac.var_names)
        chrom = parsed["chrom"].to_numpy()
        start, end = parsed["start"].to_numpy(), parsed["end"].to_numpy()
        source = "atac.var_names"
    valid = pd.notna(chrom) & np.isfinite(start) & np.isfinite(end) & (start <= end)
    start = np.where(valid, start, 0).astype(np.int64)
    end = np.where(valid, end, 0).astype(np.int64)
    return chrom, start, end, valid, source


def _read_gene_table(genes: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    if isinstance(genes, pd.DataFrame):
        return genes
    if isinstance(genes, str) and genes == "hg38":
        return read_gene_positions()
    if isinstance(genes, str | os.PathLike):
        if not os.path.isfile(genes):
            raise FileNotFoundError(f"gene table not found: '{genes}'")
        return pd.read_csv(genes, sep="\t")
    raise TypeError(
        f"genes must be a DataFrame, a path to a tab-separated table or 'hg38', got "
        f"{type(genes).__name__}"
    )


def _gene_coordinates(genes: pd.DataFrame) -> pd.DataFrame:
    """Standardise a gene table to columns name, chrom, start, end, strand (valid rows only)."""
    found, missing = _find_columns(genes, ("chrom", "start", "end", "strand"))
    name_column = next((c for c in _GENE_NAME_COLUMNS if c in genes.columns), None)
    if name_column is None and isinstance(genes.index, pd.RangeIndex):
        missing = ["gene (or gene_name, or gene names as the index)", *missing]
    if missing:
        raise ValueError(
            f"the gene table lacks the columns {', '.join(missing)}; it has "
            f"{examples(genes.columns, 20) or 'no columns'}"
        )
    names = genes[name_column] if name_column is not None else genes.index.to_series()
    table = pd.DataFrame(
        {
            "name": _as_chrom(pd.Series(names.to_numpy())),
            "chrom": _as_chrom(genes[found["chrom"]].reset_index(drop=True)),
            "start": pd.to_numeric(genes[found["start"]], errors="coerce").to_numpy(),
            "end": pd.to_numeric(genes[found["end"]], errors="coerce").to_numpy(),
            "strand": genes[found["strand"]].astype(str).to_numpy(),
        }
    )
    valid = (
        table["name"].notna()
        & table["chrom"].notna()
        & table["start"].notna()
        & table["end"].notna()
        & (table["start"] <= table["end"])
    )
    if not valid.all():
        logger.warning(
            "ignored %d genes with a missing name or invalid coordinates", int((~valid).sum())
        )
        table = table[valid].reset_index(drop=True)
    table["start"] = table["start"].astype(np.int64)
    table["end"] = table["end"].astype(np.int64)
    unknown = ~table["strand"].isin(["+", "-"])
    if unknown.any():
        logger.warning(
            "%d genes have a strand other than '+' or '-' (e.g. %s); they are treated as '+'",
            int(unknown.sum()),
            examples(table.loc[unknown, "strand"].unique()),
        )
    return table


def _window(window: int | tuple[int, int]) -> tuple[int, int]:
    if np.ndim(window) == 0:
        upstream = downstream = window
    elif len(window) == 2:
        upstream, downstream = window
    else:
        raise ValueError(f"window must be an int or an (upstream, downstream) pair, got {window}")
    if upstream < 0 or downstream < 0:
        raise ValueError(f"window sizes must be >= 0, got {window}")
    return int(upstream), int(downstream)


def link_intervals(
    peak_chrom: np.ndarray,
    peak_start: np.ndarray,
    peak_end: np.ndarray,
    region_chrom: np.ndarray,
    region_start: np.ndarray,
    region_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Find all (peak, region) pairs whose closed intervals overlap on the same chromosome.

    Per chromosome, peaks are sorted by start and each region's candidate peaks are found
    with two binary searches, so the cost grows with the number of pairs, not with
    peaks x regions.

    Returns
    -------
    Peak and region indices of the overlapping pairs.
    """
    codes, _ = pd.factorize(np.concatenate([peak_chrom, region_chrom]))
    peak_codes, region_codes = codes[: len(peak_chrom)], codes[len(peak_chrom) :]
    n_codes = int(codes.max()) + 1 if len(codes) else 0
    peak_order = np.lexsort((peak_start, peak_codes))
    region_order = np.argsort(region_codes, kind="stable")
    peak_bounds = np.searchsorted(peak_codes[peak_order], np.arange(n_codes + 1))
    region_bounds = np.searchsorted(region_codes[region_order], np.arange(n_codes + 1))

    peak_pairs, region_pairs = [], []
    for code in range(n_codes):
        peaks = peak_order[peak_bounds[code] : peak_bounds[code + 1]]
        regions = region_order[region_bounds[code] : region_bounds[code + 1]]
        if len(peaks) == 0 or len(regions) == 0:
            continue
        starts = peak_start[peaks]
        longest = int((peak_end[peaks] - starts).max())
        # a peak starting more than `longest` before the region cannot reach it
        left = np.searchsorted(starts, region_start[regions] - longest, side="left")
        right = np.searchsorted(starts, region_end[regions], side="right")
        counts = right - left
        total = int(counts.sum())
        if total == 0:
            continue
        first = np.cumsum(counts) - counts
        within = np.arange(total) - np.repeat(first, counts)
        candidate_peaks = peaks[np.repeat(left, counts) + within]
        candidate_regions = np.repeat(regions, counts)
        overlaps = peak_end[candidate_peaks] >= region_start[candidate_regions]
        peak_pairs.append(candidate_peaks[overlaps])
        region_pairs.append(candidate_regions[overlaps])
    if not peak_pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(peak_pairs), np.concatenate(region_pairs)


def link_peaks(
    atac: AnnData,
    genes: pd.DataFrame | str | os.PathLike,
    *,
    window: int | tuple[int, int] = 50_000,
    use_gene_body: bool = True,
    coordinates: Sequence[str] | None = None,
    max_links_per_peak: int | None = None,
    errors: Literal["raise", "drop"] = "raise",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Link ATAC peaks to genes by genomic distance.

    A peak is linked to a gene when the peak overlaps the gene's regulatory region: the
    window around its transcription start site (TSS) and, with ``use_gene_body``, the gene
    body. The TSS is ``start`` for genes on the ``+`` strand and ``end`` for genes on the
    ``-`` strand. Coordinates are compared as given (no 0/1-based conversion): peaks and
    genes must use the same genome assembly and chromosome names.

    Parameters
    ----------
    atac
        ATAC AnnData, peaks in ``var`` (for MuData, pass ``mdata["atac"]``).
    genes
        Gene positions: a DataFrame with a gene name column (``gene``, ``gene_name`` or
        ``name``; otherwise the index) and columns ``chrom``, ``start``, ``end`` and
        ``strand`` (matched case-insensitively; ``chr``, ``seqnames`` and ``chromosome`` are
        accepted for ``chrom``), a path to such a tab-separated table, or ``"hg38"`` for
        the human hg38 gene positions bundled with glassvi.
    window
        Base pairs around the TSS: one number for both sides, or an ``(upstream,
        downstream)`` pair, taken in the gene's orientation.
    use_gene_body
        Also link peaks overlapping the gene body, however far from the TSS.
    coordinates
        Names of the ``(chrom, start, end)`` columns of ``atac.var``. By default columns
        named ``chrom``/``chr``/``seqnames``, ``start`` and ``end`` are used when present,
        otherwise the peak names are parsed (``chr1:100-600``, ``chr1-100-600`` or
        ``chr1_100_600``).
    max_links_per_peak
        Keep only the genes whose TSS is nearest to each peak (ties broken by gene table
        order); ``None`` keeps every link.
    errors
        What to do with peaks whose coordinates cannot be read: ``"raise"`` a ValueError or
        ``"drop"`` them (the count is logged).
    key_added
        If given, also store the links in ``atac.uns[key_added]``.

    Returns
    -------
    Links, one row per (peak, gene) pair, ordered by peak (in ``var`` order) then by
    absolute distance, with columns ``peak`` (a name in ``atac.var_names``), ``gene`` and
    ``distance``: the signed distance in bp from the TSS to the peak center
    (``(start + end) // 2``), in the gene's orientation, so that positive values lie
    downstream of the TSS (towards and into the gene body) and negative values upstream.
    Use ``links["distance"].abs()`` for the absolute distance.

    Raises
    ------
    ValueError
        If peaks have unreadable coordinates (with ``errors="raise"``; the message gives
        the count and examples), if the gene table lacks needed columns (named), or if no
        chromosome name is shared between peaks and genes.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> import glassvi
    >>> peaks = ["chr12:6534266-6534766", "chr17:7690000-7690600"]
    >>> atac = ad.AnnData(np.zeros((1, 2)), var=pd.DataFrame(index=peaks))
    >>> glassvi.pp.link_peaks(atac, "hg38", window=10_000)
                        peak    gene  distance
    0  chr12:6534266-6534766   GAPDH         0
    1  chr17:7690000-7690600    TP53     -2750
    2  chr17:7690000-7690600  WRAP53      4230
    """
    check_anndata(atac, "atac", "atac")
    if errors not in ("raise", "drop"):
        raise ValueError(f"errors must be 'raise' or 'drop', got {errors!r}")
    if max_links_per_peak is not None and max_links_per_peak < 1:
        raise ValueError(f"max_links_per_peak must be >= 1, got {max_links_per_peak}")
    upstream, downstream = _window(window)

    chrom, peak_start, peak_end, valid, source = _peak_coordinates(atac, coordinates)
    if not valid.all():
        n_bad = int((~valid).sum())
        bad_names = atac.var_names[~valid]
        if errors == "raise":
            raise ValueError(
                f"{n_bad} of {atac.n_vars} peaks have no readable coordinates in {source} "
                f"(e.g. {examples(bad_names)}); expected names like 'chr1:100-600', "
                "'chr1-100-600' or 'chr1_100_600', or chrom/start/end columns (see "
                "`coordinates`). Pass errors='drop' to skip them."
            )
        logger.warning(
            "dropped %d of %d peaks with no readable coordinates (e.g. %s)",
            n_bad,
            atac.n_vars,
            examples(bad_names),
        )

    table = _gene_coordinates(_read_gene_table(genes))
    minus = (table["strand"] == "-").to_numpy()
    gene_start, gene_end = table["start"].to_numpy(), table["end"].to_numpy()
    tss = np.where(minus, gene_end, gene_start)
    region_start = np.where(minus, tss - downstream, tss - upstream)
    region_end = np.where(minus, tss + upstream, tss + downstream)
    if use_gene_body:
        region_start = np.minimum(region_start, gene_start)
        region_end = np.maximum(region_end, gene_end)

    gene_chrom = table["chrom"].to_numpy()
    peak_chroms = pd.unique(chrom[valid])
    if len(peak_chroms) and not np.isin(peak_chroms, pd.unique(gene_chrom)).any():
        raise ValueError(
            "peaks and genes share no chromosome name: peaks use "
            f"{examples(peak_chroms)}, genes use {examples(pd.unique(gene_chrom))}"
        )

    valid_peaks = np.flatnonzero(valid)
    pair_peak, pair_gene = link_intervals(
        chrom[valid_peaks],
        peak_start[valid_peaks],
        peak_end[valid_peaks],
        gene_chrom,
        region_start,
        region_end,
    )
    pair_peak = valid_peaks[pair_peak]
    center = (peak_start[pair_peak] + peak_end[pair_peak]) // 2
    distance = np.where(minus[pair_gene], tss[pair_gene] - center, center - tss[pair_gene])

    order = np.lexsort((pair_gene, np.abs(distance), pair_peak))
    pair_peak, pair_gene, distance = pair_peak[order], pair_gene[order], distance[order]
    gene_codes, gene_names = pd.factorize(table["name"])
    if len(gene_names) < len(table):
        # a name listed at several positions: keep its nearest one per peak
        key = pair_peak * len(gene_names) + gene_codes[pair_gene]
        _, first = np.unique(key, return_index=True)
        first.sort()
        pair_peak, pair_gene, distance = pair_peak[first], pair_gene[first], distance[first]
    if max_links_per_peak is not None and len(pair_peak):
        group_start = np.r_[0, np.flatnonzero(np.diff(pair_peak)) + 1]
        sizes = np.diff(np.r_[group_start, len(pair_peak)])
        rank = np.arange(len(pair_peak)) - np.repeat(group_start, sizes)
        keep = rank < max_links_per_peak
        pair_peak, pair_gene, distance = pair_peak[keep], pair_gene[keep], distance[keep]

    links = pd.DataFrame(
        {
            "peak": atac.var_names.to_numpy(dtype=object)[pair_peak],
            "gene": table["name"].to_numpy()[pair_gene],
            "distance": distance.astype(np.int64),
        }
    )
    logger.info(
        "linked %d of %d peaks to %d of %d genes (%d links)",
        len(pd.unique(pair_peak)),
        atac.n_vars,
        len(pd.unique(pair_gene)),
        len(table),
        len(links),
    )
    if key_added is not None:
        if key_added in atac.uns:
            warnings.warn(
                f"overwriting existing atac.uns[{key_added!r}]", UserWarning, stacklevel=2
            )
        atac.uns[key_added] = links
        logger.info("added atac.uns[%r] (%d links)", key_added, len(links))
    return links
