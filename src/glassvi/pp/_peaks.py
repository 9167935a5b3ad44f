"""ATAC: link peaks to genes by genomic distance and turn gene programs into peak programs."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from ._programs import GeneSets, LongGeneSets, as_long_gene_sets, membership_matrix
from ._utils import (
    check_anndata,
    dense_columns,
    examples,
    h5ad_safe,
    to_bool_values,
    write_varm_mask,
)

logger = logging.getLogger(__name__)

__all__ = ["add_peak_programs", "add_peak_sets", "link_peaks"]

# accepted spellings of the coordinate columns, compared case-insensitively
_COLUMN_ALIASES = {
    "chrom": ("chrom", "chr", "chromosome", "seqnames", "seqname", "seqid"),
    "start": ("start", "chromstart"),
    "end": ("end", "chromend"),
    "strand": ("strand",),
}
_GENE_NAME_COLUMNS = ("gene", "gene_name", "name")
# chr1:100-600, chr1-100-600, chr1_100_600; the greedy chromosome part keeps contig names
# with separators in them (chrUn_KI270742v1_100_600) whole
_PEAK_NAME_PATTERN = r"^(?P<chrom>.+)[:_-](?P<start>\d+)[_-](?P<end>\d+)$"


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


def parse_peak_names(names: Sequence[str] | pd.Index) -> pd.DataFrame:
    """Parse peak names such as ``chr1:100-600``, ``chr1-100-600`` or ``chr1_100_600``.

    Returns a DataFrame with columns ``chrom`` (object), ``start`` and ``end`` (float, NaN
    where a name does not parse).
    """
    parsed = pd.Series(np.asarray(names, dtype=object)).astype(str).str.extract(_PEAK_NAME_PATTERN)
    return pd.DataFrame(
        {
            "chrom": parsed["chrom"].to_numpy(dtype=object),
            "start": pd.to_numeric(parsed["start"]).to_numpy(dtype=float),
            "end": pd.to_numeric(parsed["end"]).to_numpy(dtype=float),
        }
    )


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
        from ..data import gene_positions

        return gene_positions()
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


def _resolve_modality(data: MuData, name: str) -> AnnData:
    if name not in data.mod:
        raise ValueError(f"the MuData has no modality {name!r}; it has {examples(list(data.mod))}")
    return data.mod[name]


def _programs_from_varm(rna: AnnData, key: str, where: str) -> LongGeneSets:
    """Long-form gene sets from a genes x programs mask stored by :func:`add_programs`."""
    if key not in rna.varm:
        raise ValueError(
            f"{where}.varm has no {key!r}; run glassvi.pp.add_programs({where}, gene_sets) "
            "first, or pass `programs`"
        )
    stored = rna.varm[key]
    provenance = rna.uns.get(key, {})
    if isinstance(stored, pd.DataFrame):
        names = [str(name) for name in stored.columns]
        values = stored.to_numpy()
    else:
        names = [str(name) for name in provenance.get("names", [])]
        values = stored
        if len(names) != values.shape[1]:
            raise ValueError(
                f"{where}.varm[{key!r}] is not a DataFrame and {where}.uns[{key!r}]['names'] "
                "does not name its columns"
            )
    mask = to_bool_values(values, names, f"{where}.varm[{key!r}]")
    rows, cols = mask.nonzero()
    # with add_programs(var_names_column=...) the programs were matched by, e.g., symbols
    column = provenance.get("params", {}).get("var_names_column")
    gene_names = rna.var[column] if column in rna.var.columns else rna.var_names
    gene_names = np.asarray(gene_names.astype(str), dtype=object)
    return LongGeneSets(
        names, gene_names[rows], np.asarray(cols, dtype=np.int64), f"{where}.varm[{key!r}]"
    )


def peak_program_matrix(
    peak_names: pd.Index,
    link_peaks: np.ndarray,
    link_genes: np.ndarray,
    programs: LongGeneSets,
    case_insensitive: bool = False,
) -> tuple[sparse.csc_matrix, np.ndarray, np.ndarray, int]:
    """Peaks x programs membership: a peak joins every program of the genes it is linked to.

    Returns
    -------
    membership
        Sparse peaks x programs matrix, nonzero where the peak belongs to the program.
    n_genes
        Distinct genes per program.
    n_genes_linked
        Of them, genes linked to at least one peak.
    n_links_used
        Links whose peak is in ``peak_names``.
    """
    peak_index = peak_names.get_indexer(np.asarray(link_peaks, dtype=object))
    used = peak_index >= 0
    gene_codes, gene_vocabulary = pd.factorize(pd.Series(link_genes[used], dtype=object))
    has_gene = gene_codes >= 0
    peak_to_gene = sparse.csr_matrix(
        (
            np.ones(int(has_gene.sum()), dtype=np.int32),
            (peak_index[used][has_gene], gene_codes[has_gene]),
        ),
        shape=(len(peak_names), len(gene_vocabulary)),
    )
    gene_to_program, n_genes, n_linked = membership_matrix(
        np.asarray(gene_vocabulary, dtype=object), programs, case_insensitive
    )
    membership = sparse.csc_matrix(peak_to_gene @ gene_to_program)
    return membership, n_genes, n_linked, int(used.sum())


def add_peak_programs(
    data: MuData | AnnData,
    programs: GeneSets | str | None = None,
    links: pd.DataFrame | str | None = None,
    *,
    key_added: str = "programs",
    rna_key: str = "programs",
    min_peaks: int = 1,
    case_insensitive: bool = False,
    atac_mod: str = "atac",
    rna_mod: str = "rna",
    inplace: bool = True,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Turn gene programs into peak programs through peak-gene links.

    A peak belongs to program ``k`` when it is linked to at least one member gene of
    ``k``. The peak mask has the same programs, in the same order, as the gene programs, so
    each program gets weights in both modalities of a multiome model.

    Parameters
    ----------
    data
        A MuData with ATAC (``data[atac_mod]``) and, to read the gene programs from it, RNA
        (``data[rna_mod]``) modalities; or an ATAC AnnData, with ``programs`` given.
    programs
        The gene programs. ``None`` (MuData only) reads the mask that
        :func:`~glassvi.pp.add_programs` wrote to ``data[rna_mod].varm[rna_key]``; with a
        MuData a ``str`` is such a ``varm`` key. Otherwise anything
        :func:`~glassvi.pp.add_programs` accepts: a dict of name -> genes, a GMT path, a
        long-form ``source``/``target`` DataFrame or a boolean genes x programs DataFrame.
    links
        Peak-gene links with columns ``peak`` and ``gene`` (as returned by
        :func:`~glassvi.pp.link_peaks`), or the ``atac.uns`` key where they are stored.
        Required.
    key_added
        Key of the peak mask in ``atac.varm`` and of its provenance in ``atac.uns``.
    rna_key
        ``varm`` key of the gene programs in the RNA modality, used when ``programs`` is
        ``None``.
    min_peaks
        Programs linked to fewer peaks keep their column, left empty (all ``False``), so the
        program order still matches the gene programs; they are logged and flagged in the
        summary.
    case_insensitive
        Ignore case when matching link genes to program genes.
    atac_mod, rna_mod
        Modality names in a MuData.
    inplace
        Write to the ATAC modality; otherwise leave it untouched and return the mask.

    Returns
    -------
    With ``inplace=True`` a summary DataFrame indexed by program, with columns
    ``n_genes``, ``n_genes_linked`` (member genes with at least one linked peak),
    ``n_peaks``, ``kept`` (``n_peaks >= min_peaks``) and ``reason``; with
    ``inplace=False`` the tuple ``(mask, summary)``. When writing, sets

    - ``atac.varm[key_added]``: boolean peaks x programs DataFrame, index
      ``atac.var_names``, columns the program names;
    - ``atac.uns[key_added]``: dict with ``names``, ``n_peaks`` and ``n_genes_linked``
      (aligned with ``names``), ``below_min_peaks`` (names of emptied programs),
      ``source`` (where the gene programs came from), ``n_links`` and ``params``.

    Raises
    ------
    ValueError
        If ``links`` is missing or lacks ``peak``/``gene`` columns, if no link names a peak
        of ``atac``, or if no program gets any peak (the message shows example gene names
        on each side).

    Examples
    --------
    >>> import glassvi
    >>> glassvi.pp.add_programs(mdata["rna"], "hallmark.gmt")  # doctest: +SKIP
    >>> links = glassvi.pp.link_peaks(mdata["atac"], "hg38")  # doctest: +SKIP
    >>> glassvi.pp.add_peak_programs(mdata, links=links)  # doctest: +SKIP
    >>> mdata["atac"].varm["programs"].columns.equals(
    ...     mdata["rna"].varm["programs"].columns
    ... )  # doctest: +SKIP
    True
    """
    if min_peaks < 0:
        raise ValueError(f"min_peaks must be >= 0, got {min_peaks}")
    if isinstance(data, MuData):
        atac = _resolve_modality(data, atac_mod)
        if programs is None or isinstance(programs, str):
            key = rna_key if programs is None else programs
            rna = _resolve_modality(data, rna_mod)
            long = _programs_from_varm(rna, key, f"mdata[{rna_mod!r}]")
        else:
            long = as_long_gene_sets(programs)
    else:
        check_anndata(data, "data", "atac")
        atac = data
        if programs is None:
            raise ValueError(
                "with an AnnData, `programs` is required (a dict, GMT path or DataFrame of "
                "gene programs); pass a MuData to read them from its RNA modality"
            )
        long = as_long_gene_sets(programs)

    if links is None:
        raise ValueError(
            "`links` is required: the DataFrame returned by glassvi.pp.link_peaks, or the "
            "atac.uns key where it was stored"
        )
    links_source = "DataFrame"
    if isinstance(links, str):
        if links not in atac.uns:
            raise ValueError(f"atac.uns has no {links!r}; run glassvi.pp.link_peaks first")
        links_source, links = f"atac.uns[{links!r}]", atac.uns[links]
    if not isinstance(links, pd.DataFrame):
        raise TypeError(f"links must be a DataFrame, got {type(links).__name__}")
    missing = [column for column in ("peak", "gene") if column not in links.columns]
    if missing:
        raise ValueError(
            f"links lack the columns {', '.join(missing)}; they have {examples(links.columns)}"
        )
    if not atac.var_names.is_unique:
        raise ValueError("atac.var_names must be unique; call atac.var_names_make_unique()")

    link_peak_names = links["peak"].astype(str).to_numpy(dtype=object)
    membership, n_genes, n_linked, n_used = peak_program_matrix(
        atac.var_names,
        link_peak_names,
        links["gene"].to_numpy(dtype=object),
        long,
        case_insensitive,
    )
    if n_used == 0 and len(links):
        raise ValueError(
            f"no link names a peak of atac.var_names: links use {examples(link_peak_names)}, "
            f"atac has {examples(atac.var_names)}"
        )
    if n_used < len(links):
        logger.info("ignored %d links to peaks absent from atac", len(links) - n_used)

    n_peaks = np.diff(membership.indptr)
    if n_peaks.sum() == 0:
        raise ValueError(
            "no program got any peak: no program gene appears in the links. Link genes: "
            f"{examples(pd.unique(links['gene']))}; program genes: "
            f"{examples(pd.unique(long.genes))}"
        )
    kept = n_peaks >= min_peaks
    names = long.names
    reason = np.where(kept, "", f"< {min_peaks} peaks linked").astype(object)
    summary = pd.DataFrame(
        {
            "n_genes": n_genes,
            "n_genes_linked": n_linked,
            "n_peaks": n_peaks,
            "kept": kept,
            "reason": reason,
        },
        index=pd.Index(names, name="program"),
    )
    dense = dense_columns(membership, np.arange(len(names)))
    if not kept.all():
        dense[:, ~kept] = False
        logger.info(
            "%d of %d programs have < %d linked peaks; their peak columns are left empty",
            int((~kept).sum()),
            len(names),
            min_peaks,
        )
    mask = pd.DataFrame(dense, index=atac.var_names.copy(), columns=pd.Index(names, dtype=object))
    logger.info(
        "built %d peak programs from %s: %d peaks in at least one program",
        len(names),
        long.source,
        int(dense.any(axis=1).sum()),
    )
    if not inplace:
        return mask, summary

    provenance: dict[str, Any] = {
        "names": np.asarray(names, dtype=object),
        "n_peaks": np.where(kept, n_peaks, 0).astype(np.int64),
        "n_genes_linked": n_linked.astype(np.int64),
        "below_min_peaks": np.asarray([names[i] for i in np.flatnonzero(~kept)], dtype=object),
        "source": long.source,
        "links": links_source,
        "n_links": int(n_used),
        "params": h5ad_safe(
            {"min_peaks": int(min_peaks), "case_insensitive": bool(case_insensitive)}
        ),
    }
    write_varm_mask(atac, key_added, mask, provenance)
    return summary


def _align_peak_frame(frame: pd.DataFrame, var_names: pd.Index) -> pd.DataFrame:
    if frame.index.equals(var_names):
        return frame
    if frame.index.has_duplicates:
        raise ValueError("the peak-set DataFrame index has duplicated peak names")
    missing = var_names.difference(frame.index, sort=False)
    if len(missing):
        hint = (
            " (its index is a default RangeIndex: set it to the peak names)"
            if isinstance(frame.index, pd.RangeIndex)
            else ""
        )
        raise ValueError(
            f"{len(missing)} of {len(var_names)} peaks of atac.var_names are missing from the "
            f"peak-set DataFrame index{hint}, e.g. {examples(missing)}"
        )
    n_extra = len(frame) - len(var_names)
    if n_extra:
        logger.info("ignored %d peak-set rows for peaks absent from atac", n_extra)
    return frame.reindex(var_names)


def add_peak_sets(
    atac: AnnData,
    peak_sets: pd.DataFrame | np.ndarray | sparse.spmatrix | sparse.sparray,
    *,
    names: Sequence[str] | None = None,
    key_added: str = "peak_sets",
    min_peaks: int = 1,
    inplace: bool = True,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Add user-defined peak sets (e.g. TF motif hits) as a boolean peaks x programs mask.

    Parameters
    ----------
    atac
        ATAC AnnData (for MuData, pass ``mdata["atac"]``).
    peak_sets
        Peaks x sets membership, boolean or 0/1: a DataFrame indexed by peak name (rows are
        aligned to ``atac.var_names``; extra rows are ignored, missing peaks are an error),
        or a dense array / scipy sparse matrix with one row per peak in ``var`` order. Sets
        given as peak-name lists can instead go through :func:`~glassvi.pp.add_programs`.
    names
        Set names, required for array and sparse input (a DataFrame's columns are its
        names).
    key_added
        Key of the mask in ``atac.varm`` and of its provenance in ``atac.uns``. Use
        ``"programs"`` to make the sets the programs a model reads.
    min_peaks
        Drop sets with fewer peaks.
    inplace
        Write to ``atac``; otherwise leave it untouched and return the mask.

    Returns
    -------
    With ``inplace=True`` a summary DataFrame indexed by set, with columns ``n_peaks``,
    ``kept`` and ``reason``; with ``inplace=False`` the tuple ``(mask, summary)``. When
    writing, sets ``atac.varm[key_added]`` (boolean DataFrame, index ``var_names``, columns
    the kept sets) and ``atac.uns[key_added]`` (``names``, ``n_peaks``, ``dropped_names``,
    ``dropped_reasons``, ``source``, ``params``).

    Raises
    ------
    ValueError
        If the shape or index does not match ``atac.var_names``, if values are not boolean
        or 0/1 (the message names a column holding such a value), if names are missing or
        not unique, or if no set has ``min_peaks`` peaks.

    Examples
    --------
    >>> import glassvi
    >>> motif_hits = scipy.sparse.random(atac.n_vars, 3, density=0.1) > 0  # doctest: +SKIP
    >>> glassvi.pp.add_peak_sets(
    ...     atac, motif_hits, names=["SPI1", "CEBPA", "GATA1"]
    ... )  # doctest: +SKIP
    """
    check_anndata(atac, "atac", "atac")
    if isinstance(peak_sets, pd.DataFrame):
        if names is not None:
            raise ValueError("names is only for array input; a DataFrame's columns name its sets")
        frame = _align_peak_frame(peak_sets, atac.var_names)
        set_names = [str(name) for name in frame.columns]
        values = to_bool_values(frame.to_numpy(), set_names, "peak_sets")
        source = "DataFrame"
    elif sparse.issparse(peak_sets) or isinstance(peak_sets, np.ndarray):
        if peak_sets.ndim != 2 or peak_sets.shape[0] != atac.n_vars:
            raise ValueError(
                f"peak_sets has shape {peak_sets.shape}, expected ({atac.n_vars}, n_sets): one "
                "row per peak of atac"
            )
        if names is None:
            raise ValueError("names is required for array or sparse peak_sets")
        set_names = [str(name) for name in names]
        if len(set_names) != peak_sets.shape[1]:
            raise ValueError(f"{len(set_names)} names for {peak_sets.shape[1]} peak-set columns")
        values = to_bool_values(peak_sets, set_names, "peak_sets")
        source = "sparse matrix" if sparse.issparse(peak_sets) else "array"
    else:
        raise TypeError(
            f"peak_sets must be a DataFrame, numpy array or scipy sparse matrix, got "
            f"{type(peak_sets).__name__}"
        )
    if pd.Index(set_names).has_duplicates:
        duplicated = pd.Index(set_names)[pd.Index(set_names).duplicated()]
        raise ValueError(f"peak set names must be unique; duplicated: {examples(duplicated)}")

    membership = sparse.csc_matrix(values)
    n_peaks = np.diff(membership.indptr)
    kept = n_peaks >= min_peaks
    summary = pd.DataFrame(
        {
            "n_peaks": n_peaks,
            "kept": kept,
            "reason": np.where(kept, "", f"< {min_peaks} peaks").astype(object),
        },
        index=pd.Index(set_names, name="program"),
    )
    if not kept.any():
        raise ValueError(f"no peak set has at least min_peaks={min_peaks} peaks")
    if not kept.all():
        logger.info(
            "dropped %d of %d peak sets with < %d peaks", int((~kept).sum()), len(kept), min_peaks
        )
    kept_index = np.flatnonzero(kept)
    kept_names = [set_names[i] for i in kept_index]
    mask = pd.DataFrame(
        dense_columns(membership, kept_index),
        index=atac.var_names.copy(),
        columns=pd.Index(kept_names, dtype=object),
    )
    if not inplace:
        return mask, summary
    provenance: dict[str, Any] = {
        "names": np.asarray(kept_names, dtype=object),
        "n_peaks": n_peaks[kept].astype(np.int64),
        "dropped_names": np.asarray([set_names[i] for i in np.flatnonzero(~kept)], dtype=object),
        "dropped_reasons": summary["reason"].to_numpy()[~kept].astype(object),
        "source": f"peak sets ({source})",
        "params": {"min_peaks": int(min_peaks)},
    }
    write_varm_mask(atac, key_added, mask, provenance)
    return summary
