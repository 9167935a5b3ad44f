"""ATAC: gene programs -> peak programs through peak-gene links, and user peak sets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from .._validation import to_bool_values
from ._annotation import peak_gene_links
from ._programs import GeneSets, LongGeneSets, as_long_gene_sets, membership_matrix
from ._utils import (
    check_anndata,
    dense_columns,
    examples,
    h5ad_safe,
    write_varm_mask,
)

logger = logging.getLogger(__name__)

__all__ = ["add_peak_programs", "add_peak_sets"]


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
        Peak-gene links: a DataFrame with peak and gene columns (as returned by
        :func:`~glassvi.pp.link_peaks` or :func:`~glassvi.pp.read_peak_annotation`, or any
        peak-gene table), the ``atac.uns`` key where such a table is stored, an ``atac.var``
        column of linked genes, or the path of a Cell Ranger (ARC) ``atac_peak_annotation.tsv``;
        see :func:`~glassvi.pp.peak_gene_links`. Required.
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

    - ``atac.varm[key_added]``: boolean peaks x programs array (the program names in
      ``atac.uns[key_added]["names"]``; :func:`glassvi.tl.varm_df` returns a DataFrame);
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
    >>> list(mdata["atac"].uns["programs"]["names"]) == list(
    ...     mdata["rna"].uns["programs"]["names"]
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
    links_source = links if isinstance(links, str) else type(links).__name__
    links = peak_gene_links(atac, links)
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
    writing, sets ``atac.varm[key_added]`` (boolean peaks x kept sets array) and
    ``atac.uns[key_added]`` (``names``, the kept sets in column order, ``n_peaks``,
    ``dropped_names``, ``dropped_reasons``, ``source``, ``params``).

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
