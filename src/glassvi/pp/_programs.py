"""Gene programs: from gene sets to a boolean features x programs mask."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._validation import to_bool_values
from ._gmt import read_gmt
from ._utils import (
    check_anndata,
    dense_columns,
    examples,
    h5ad_safe,
    write_varm_mask,
)

logger = logging.getLogger(__name__)

__all__ = ["add_programs"]

GeneSets = Mapping[str, Iterable[str]] | str | os.PathLike | pd.DataFrame


@dataclass
class LongGeneSets:
    """Gene sets in long form: one entry per (set, gene) pair."""

    names: list[str]
    genes: np.ndarray  # gene name of each pair (object)
    set_index: np.ndarray  # position in ``names`` of each pair (int64)
    source: str


def _long_from_mapping(gene_sets: Mapping[str, Iterable[str]], source: str) -> LongGeneSets:
    names, members = [], []
    for name, genes in gene_sets.items():
        if isinstance(genes, str):
            raise TypeError(
                f"the genes of set {name!r} are a single string; pass a list of gene names"
            )
        names.append(str(name))
        members.append([str(gene) for gene in genes if gene is not None])
    sizes = np.fromiter((len(genes) for genes in members), dtype=np.int64, count=len(members))
    flat = np.empty(int(sizes.sum()), dtype=object)
    flat[:] = [gene for genes in members for gene in genes]
    set_index = np.repeat(np.arange(len(names), dtype=np.int64), sizes)
    return LongGeneSets(names, flat, set_index, source)


def _long_from_frame(frame: pd.DataFrame) -> LongGeneSets:
    if {"source", "target"} <= set(frame.columns):
        table = frame.dropna(subset=["source", "target"])
        if len(table) < len(frame):
            logger.info("ignored %d rows with a missing source or target", len(frame) - len(table))
        if "weight" in table.columns:
            weight = pd.to_numeric(table["weight"], errors="coerce")
            logger.info(
                "the weight column is ignored for the boolean mask (%d of %d weights negative)",
                int((weight < 0).sum()),
                len(weight),
            )
        codes, uniques = pd.factorize(table["source"].astype(str), sort=False)
        genes = table["target"].astype(str).to_numpy(dtype=object)
        return LongGeneSets(
            [str(name) for name in uniques],
            genes,
            codes.astype(np.int64),
            "DataFrame (source, target)",
        )
    if not all(
        pd.api.types.is_bool_dtype(d) or pd.api.types.is_numeric_dtype(d) for d in frame.dtypes
    ):
        raise ValueError(
            "a gene-set DataFrame must either be long form with columns 'source' and 'target' "
            f"(as in decoupler) or a boolean genes x sets matrix; got columns "
            f"{examples(frame.columns)}"
        )
    values = to_bool_values(frame.to_numpy(), frame.columns, "the gene-set matrix")
    rows, cols = np.nonzero(values)
    genes = frame.index.astype(str).to_numpy(dtype=object)[rows]
    return LongGeneSets(
        [str(name) for name in frame.columns],
        genes,
        cols.astype(np.int64),
        "DataFrame (genes x sets)",
    )


def as_long_gene_sets(gene_sets: GeneSets) -> LongGeneSets:
    """Convert any supported gene-set input into long form."""
    if isinstance(gene_sets, str | os.PathLike):
        long = _long_from_mapping(read_gmt(gene_sets), str(Path(gene_sets)))
    elif isinstance(gene_sets, pd.DataFrame):
        long = _long_from_frame(gene_sets)
    elif isinstance(gene_sets, Mapping):
        long = _long_from_mapping(gene_sets, "dict")
    else:
        raise TypeError(
            "gene_sets must be a dict of name -> genes, a path to a GMT file or a DataFrame, "
            f"got {type(gene_sets).__name__}"
        )
    if not long.names:
        raise ValueError("gene_sets holds no gene set")
    duplicated = pd.Index(long.names).duplicated()
    if duplicated.any():
        raise ValueError(
            f"gene set names must be unique; duplicated: "
            f"{examples(np.asarray(long.names, dtype=object)[duplicated])}"
        )
    return long


def membership_matrix(
    features: np.ndarray,
    gene_sets: LongGeneSets,
    case_insensitive: bool = False,
) -> tuple[sparse.csc_matrix, np.ndarray, np.ndarray]:
    """Match gene sets against feature names.

    Parameters
    ----------
    features
        Name of each feature (missing values never match). Names may repeat: every feature
        with a matching name joins the set.
    gene_sets
        Gene sets in long form.
    case_insensitive
        Compare names after upper-casing them.

    Returns
    -------
    membership
        Sparse features x sets matrix, nonzero where the feature belongs to the set.
    n_genes
        Number of distinct genes in each set.
    n_found
        Number of distinct genes of each set that match at least one feature.
    """
    n_features, n_sets = len(features), len(gene_sets.names)
    names = pd.Series(np.concatenate([np.asarray(features, dtype=object), gene_sets.genes]))
    if case_insensitive:
        names = names.str.upper()
    # one shared code per distinct name turns matching into integer indexing
    codes, uniques = pd.factorize(names)
    n_names = len(uniques)
    feature_codes, gene_codes = codes[:n_features], codes[n_features:]

    valid = gene_codes >= 0
    pairs = np.unique(gene_sets.set_index[valid] * n_names + gene_codes[valid])
    pair_set, pair_gene = pairs // n_names, pairs % n_names
    n_genes = np.bincount(pair_set, minlength=n_sets)

    has_feature = np.zeros(n_names, dtype=bool)
    has_feature[feature_codes[feature_codes >= 0]] = True
    found = has_feature[pair_gene]
    n_found = np.bincount(pair_set[found], minlength=n_sets)

    feature_rows = np.flatnonzero(feature_codes >= 0)
    feature_to_name = sparse.csr_matrix(
        (np.ones(len(feature_rows), dtype=np.int32), (feature_rows, feature_codes[feature_rows])),
        shape=(n_features, n_names),
    )
    name_to_set = sparse.csr_matrix(
        (np.ones(int(found.sum()), dtype=np.int32), (pair_gene[found], pair_set[found])),
        shape=(n_names, n_sets),
    )
    membership = sparse.csc_matrix(feature_to_name @ name_to_set)
    return membership, n_genes, n_found


def _feature_names(adata: AnnData, var_names_column: str | None) -> np.ndarray:
    if var_names_column is None:
        return adata.var_names.astype(str).to_numpy(dtype=object)
    if var_names_column not in adata.var.columns:
        raise KeyError(
            f"var_names_column {var_names_column!r} is not a column of adata.var; available: "
            f"{examples(adata.var.columns, 20)}"
        )
    column = adata.var[var_names_column]
    names = column.astype(object).to_numpy()
    missing = column.isna().to_numpy()
    names[~missing] = [str(name) for name in names[~missing]]
    names[missing] = None
    return names


def _no_overlap_message(
    features: np.ndarray, gene_sets: LongGeneSets, where: str, adata: AnnData, case: bool
) -> str:
    feature_names = pd.Index(pd.unique(features[pd.notna(features)]))
    set_genes = pd.Index(pd.unique(gene_sets.genes))
    lines = [
        f"no overlap between the gene sets and {where}.",
        f"Examples from {where}: {examples(feature_names)}.",
        f"Examples of gene-set genes: {examples(set_genes)}.",
    ]
    if len(set_genes) == 0:
        return "the gene sets contain no gene."

    def looks_ensembl(index: pd.Index) -> bool:
        return len(index) > 0 and index.str.upper().str.startswith("ENS").mean() > 0.5

    if looks_ensembl(feature_names) and not looks_ensembl(set_genes):
        columns = examples(adata.var.columns, 10) or "none"
        lines.append(
            "The features look like Ensembl IDs while the gene sets use other names; pass "
            f"var_names_column= a column of gene symbols (adata.var columns: {columns})."
        )
    elif looks_ensembl(set_genes) and not looks_ensembl(feature_names):
        lines.append("The gene sets look like Ensembl IDs while the features do not.")
    if not case:
        n_case = len(feature_names.str.upper().intersection(set_genes.str.upper()))
        if n_case:
            lines.append(
                f"{n_case} genes match when case is ignored; pass case_insensitive=True "
                "(e.g. mouse symbols against human gene sets)."
            )
    return " ".join(lines)


def _summarise(
    names: list[str],
    n_genes: np.ndarray,
    n_found: np.ndarray,
    n_features: np.ndarray,
    min_genes: int,
    max_genes: int | None,
) -> pd.DataFrame:
    too_small = n_found < min_genes
    too_large = (n_found > max_genes) if max_genes is not None else np.zeros_like(too_small)
    reason = np.full(len(names), "", dtype=object)
    reason[too_small] = f"< {min_genes} genes found"
    reason[too_large] = f"> {max_genes} genes found"
    summary = pd.DataFrame(
        {
            "n_genes": n_genes,
            "n_found": n_found,
            "n_features": n_features,
            "fraction": np.divide(n_found, n_genes, out=np.zeros(len(names)), where=n_genes > 0),
            "kept": ~(too_small | too_large),
            "reason": reason,
        },
        index=pd.Index(names, name="program"),
    )
    return summary


def add_programs(
    adata: AnnData,
    gene_sets: GeneSets,
    *,
    min_genes: int = 5,
    max_genes: int | None = None,
    key_added: str = "programs",
    var_names_column: str | None = None,
    case_insensitive: bool = False,
    inplace: bool = True,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Add gene sets to an AnnData as a boolean features x programs mask.

    Each gene set becomes a program: a column of the mask, ``True`` for the features whose
    name is in the set. Sets with too few (or too many) genes among the features are
    dropped, with a logged count. The mask is what :class:`glassvi.model.ProgramVI` reads.

    Parameters
    ----------
    adata
        Annotated data, features in ``var`` (for MuData, pass a modality, e.g.
        ``mdata["rna"]``).
    gene_sets
        The gene sets, as one of

        - a dict: set name -> iterable of gene names;
        - a path (``str`` or :class:`~pathlib.Path`) to a GMT file, read with
          :func:`~glassvi.pp.read_gmt`;
        - a long-form DataFrame with columns ``source`` (set name) and ``target`` (gene),
          as used by decoupler; a ``weight`` column is accepted and ignored;
        - a boolean (or 0/1) genes x sets DataFrame.

        Sets keep their input order. Any feature names work, e.g. peak names for ATAC.
    min_genes
        Drop sets with fewer than this many genes found among the features.
    max_genes
        Drop sets with more than this many genes found; ``None`` keeps all.
    key_added
        Key of the mask in ``adata.varm`` and of its provenance in ``adata.uns``.
    var_names_column
        Match gene names against this column of ``adata.var`` (e.g. gene symbols when
        ``var_names`` are Ensembl IDs) instead of ``var_names``. Several features with the
        same name all join the set.
    case_insensitive
        Ignore case when matching names.
    inplace
        Write to ``adata``; otherwise leave it untouched and return the mask.

    Returns
    -------
    With ``inplace=True``, a summary DataFrame indexed by set name (every input set, in
    input order) with columns ``n_genes`` (distinct genes in the set), ``n_found`` (of
    them, found among the features), ``n_features`` (features in the program; larger than
    ``n_found`` when names repeat), ``fraction`` (``n_found / n_genes``), ``kept`` and
    ``reason`` (why a set was dropped, empty if kept). With ``inplace=False``, the tuple
    ``(mask, summary)``. When writing, sets

    - ``adata.varm[key_added]``: boolean array, features x kept sets, in the order of
      ``names`` below (a plain array: h5ad cannot write a "/", as in GO's "G1/S
      transition", in the column names of a DataFrame; :func:`glassvi.tl.varm_df` returns
      it as a DataFrame named by the sets, never truncated);
    - ``adata.uns[key_added]``: dict with ``names`` (kept set names, in mask order),
      ``n_genes_total`` and ``n_genes_found`` (arrays aligned with ``names``),
      ``dropped_names`` and ``dropped_reasons`` (aligned arrays), ``source`` (where the
      sets came from) and ``params`` (the matching options).

    Raises
    ------
    ValueError
        If no gene-set gene matches a feature (the message shows example names on each
        side and hints at Ensembl IDs or case), or if no set passes the size filters.

    Examples
    --------
    >>> import glassvi
    >>> adata = glassvi.data.pbmc68k()  # doctest: +SKIP
    >>> summary = glassvi.pp.add_programs(adata, "hallmark.gmt", min_genes=10)  # doctest: +SKIP
    >>> adata.varm["programs"].shape  # doctest: +SKIP
    (765, 31)
    >>> glassvi.tl.varm_df(adata, "programs")["HALLMARK_HYPOXIA"].sum()  # doctest: +SKIP
    >>> mask, summary = glassvi.pp.add_programs(
    ...     adata, {"T cell": ["CD3E", "CD3D", "CD2"]}, min_genes=2, inplace=False
    ... )  # doctest: +SKIP
    """
    check_anndata(adata)
    if min_genes < 0:
        raise ValueError(f"min_genes must be >= 0, got {min_genes}")
    if max_genes is not None and max_genes < min_genes:
        raise ValueError(f"max_genes ({max_genes}) must be >= min_genes ({min_genes})")

    long = as_long_gene_sets(gene_sets)
    features = _feature_names(adata, var_names_column)
    membership, n_genes, n_found = membership_matrix(features, long, case_insensitive)
    where = "adata.var_names" if var_names_column is None else f"adata.var[{var_names_column!r}]"
    if n_found.sum() == 0:
        raise ValueError(_no_overlap_message(features, long, where, adata, case_insensitive))

    n_features = np.diff(membership.indptr)
    summary = _summarise(long.names, n_genes, n_found, n_features, min_genes, max_genes)
    kept = summary["kept"].to_numpy()
    n_small = int((n_found < min_genes).sum())
    n_large = int((~kept).sum()) - n_small
    if not kept.all():
        parts = [f"{n_small} with < {min_genes} genes found"] if n_small else []
        if n_large:
            parts.append(f"{n_large} with > {max_genes}")
        logger.info("dropped %d of %d sets: %s", int((~kept).sum()), len(kept), ", ".join(parts))
    if not kept.any():
        raise ValueError(
            f"no gene set passed the size filters: {n_small} of {len(kept)} sets have fewer "
            f"than min_genes={min_genes} genes in {where}"
            + (f" and {n_large} more than max_genes={max_genes}" if n_large else "")
            + f"; the largest set has {int(n_found.max())} genes found"
        )

    kept_index = np.flatnonzero(kept)
    kept_names = [long.names[i] for i in kept_index]
    mask = pd.DataFrame(
        dense_columns(membership, kept_index),
        index=adata.var_names.copy(),
        columns=pd.Index(kept_names, dtype=object),
    )
    logger.info(
        "built %d programs over %d features from %d gene sets (%s)",
        len(kept_names),
        adata.n_vars,
        len(kept),
        long.source,
    )
    if not inplace:
        return mask, summary

    dropped = ~kept
    provenance: dict[str, Any] = {
        "names": np.asarray(kept_names, dtype=object),
        "n_genes_total": n_genes[kept].astype(np.int64),
        "n_genes_found": n_found[kept].astype(np.int64),
        "dropped_names": np.asarray(
            [long.names[i] for i in np.flatnonzero(dropped)], dtype=object
        ),
        "dropped_reasons": summary["reason"].to_numpy()[dropped].astype(object),
        "source": long.source,
        "params": h5ad_safe(
            {
                "min_genes": int(min_genes),
                "max_genes": None if max_genes is None else int(max_genes),
                "case_insensitive": bool(case_insensitive),
                "var_names_column": var_names_column,
            }
        ),
    }
    write_varm_mask(adata, key_added, mask, provenance)
    return summary
