"""Peak-gene links from what users have: annotation files, var columns and link tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._genome import parse_peak_names
from ._utils import check_anndata, examples

logger = logging.getLogger(__name__)

__all__ = ["peak_gene_links", "read_peak_annotation"]

#: accepted spellings of the two columns of a peak-gene table, compared case-insensitively
_LINK_COLUMNS = {
    "peak": ("peak", "peak_id", "peak_name", "region", "feature", "interval"),
    "gene": ("gene", "gene_name", "gene_symbol", "symbol", "target", "linked_gene"),
}
#: values of a gene field that mean "no gene"
_NO_GENE = {"", "nan", "none", "na", "n/a", ".", ";", "-"}
_LIST_SEPARATORS = (";", ",", "|")


def _canonical_peak(names) -> np.ndarray:
    """``chrom:start-end`` for names that parse as peaks (any separator), else the name."""
    names = np.asarray(names, dtype=object).astype(str)
    parsed = parse_peak_names(names)
    ok = parsed["chrom"].notna().to_numpy()
    out = names.astype(object).copy()
    if ok.any():
        out[ok] = (
            parsed.loc[ok, "chrom"].astype(str)
            + ":"
            + parsed.loc[ok, "start"].astype(np.int64).astype(str)
            + "-"
            + parsed.loc[ok, "end"].astype(np.int64).astype(str)
        ).to_numpy()
    return out


def _split_genes(values: pd.Series, sep: str | None) -> pd.Series:
    """Explode gene fields (lists, or strings with separators) to one gene per row."""
    if sep is None:
        text = values.dropna().astype(str)
        sep = next((s for s in _LIST_SEPARATORS if text.str.contains(s, regex=False).any()), None)

    def as_list(value) -> list[str]:
        if isinstance(value, list | tuple | set | np.ndarray):
            items = [str(v) for v in value]
        elif value is None or (isinstance(value, float) and np.isnan(value)):
            return []
        else:
            items = str(value).split(sep) if sep else [str(value)]
        return [v.strip() for v in items if v.strip().lower() not in _NO_GENE]

    return values.map(as_list).explode().dropna()


def _standard_links(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """Links with columns ``peak`` and ``gene`` first (other columns kept), one gene per row."""
    by_lower = {str(c).lower(): c for c in table.columns}
    found = {}
    for canonical, aliases in _LINK_COLUMNS.items():
        column = next((by_lower[a] for a in aliases if a in by_lower), None)
        if column is None and canonical == "peak":
            if all(c in by_lower for c in ("chrom", "start", "end")):
                table = table.assign(
                    peak=table[by_lower["chrom"]].astype(str)
                    + ":"
                    + table[by_lower["start"]].astype(str)
                    + "-"
                    + table[by_lower["end"]].astype(str)
                )
                column = "peak"
        if column is None:
            raise ValueError(
                f"links lack the columns {canonical} ({what}; accepted names: "
                f"{', '.join(aliases)}{', or chrom/start/end' if canonical == 'peak' else ''}); "
                f"they have {examples(table.columns, 20)}"
            )
        found[canonical] = column
    rest = [c for c in table.columns if c not in found.values() and str(c).lower() != "peak"]
    out = pd.DataFrame(
        {"peak": table[found["peak"]].astype(str).to_numpy(), "gene": table[found["gene"]]}
    )
    for column in rest:
        out[str(column)] = table[column].to_numpy()
    return out


def read_peak_annotation(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Cell Ranger (ARC or ATAC) ``atac_peak_annotation.tsv`` as peak-gene links.

    Both layouts that Cell Ranger writes are read: Cell Ranger ARC's (columns ``chrom``,
    ``start``, ``end``, ``gene``, ``distance``, ``peak_type``, one row per peak-gene pair)
    and Cell Ranger ATAC's (columns ``peak``, ``gene``, ``distance``, ``peak_type``, genes of
    one peak joined by ``;``). Peaks without a gene (intergenic) are left out.

    Parameters
    ----------
    path
        The annotation file (tab-separated; ``.gz`` is read too).

    Returns
    -------
    DataFrame with one row per (peak, gene) pair and columns ``peak`` (``chrom:start-end``,
    the naming of Cell Ranger ARC's feature matrix), ``gene``, ``distance`` (bp from the
    gene's TSS as Cell Ranger reports it; ``<NA>`` if absent) and ``peak_type``
    (``promoter``, ``distal``, ...). Ready for :func:`~glassvi.pp.add_peak_programs`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it has no gene column, or no peak column nor ``chrom``/``start``/``end``.

    Examples
    --------
    >>> links = glassvi.pp.read_peak_annotation("outs/atac_peak_annotation.tsv")  # doctest: +SKIP
    >>> glassvi.pp.add_peak_programs(mdata, links=links)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"peak annotation not found: '{path}'")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    if len(table.columns) and str(table.columns[0]).startswith("#"):
        table = table.rename(columns={table.columns[0]: str(table.columns[0]).lstrip("# ")})
    links = _standard_links(table, f"'{path}'")
    n_peaks = links["peak"].nunique()
    listed = {}
    for column in ("gene", "distance", "peak_type"):
        if column in links.columns:
            listed[column] = links[column].astype(str).str.split(";")
    if "distance" in listed and (listed["gene"].str.len() == listed["distance"].str.len()).all():
        # Cell Ranger ATAC: parallel ;-separated lists of genes, distances and peak types
        frame = pd.DataFrame({"peak": links["peak"], **listed})
        frame = frame.explode(list(listed), ignore_index=True)
    else:
        frame = pd.DataFrame({"peak": links["peak"], "gene": links["gene"].astype(str)})
        for column in ("distance", "peak_type"):
            if column in links.columns:
                frame[column] = links[column].to_numpy()
        frame["gene"] = frame["gene"].str.split(";")
        frame = frame.explode("gene", ignore_index=True)
    frame["gene"] = frame["gene"].astype(str).str.strip()
    frame = frame[~frame["gene"].str.lower().isin(_NO_GENE)].reset_index(drop=True)
    frame["peak"] = _canonical_peak(frame["peak"])
    if "distance" not in frame.columns:
        frame["distance"] = pd.NA
    frame["distance"] = pd.to_numeric(frame["distance"], errors="coerce").astype("Int64")
    if "peak_type" not in frame.columns:
        frame["peak_type"] = ""
    frame["peak_type"] = frame["peak_type"].astype(str).str.strip()
    frame = frame[["peak", "gene", "distance", "peak_type"]].drop_duplicates(["peak", "gene"])
    logger.info(
        "read %d peak-gene links for %d of %d annotated peaks from %s",
        len(frame),
        frame["peak"].nunique(),
        n_peaks,
        path.name,
    )
    return frame.reset_index(drop=True)


def _links_from_var(atac: AnnData, column: str, sep: str | None) -> pd.DataFrame:
    genes = _split_genes(pd.Series(atac.var[column].to_numpy(), index=atac.var_names), sep)
    return pd.DataFrame(
        {"peak": genes.index.to_numpy(dtype=object), "gene": genes.to_numpy(dtype=object)}
    )


def _links_from_table(table: pd.DataFrame, what: str, sep: str | None) -> pd.DataFrame:
    links = _standard_links(table, what)
    genes = _split_genes(links["gene"], sep)
    links = links.loc[genes.index].assign(gene=genes.to_numpy(dtype=object))
    return links.reset_index(drop=True)


# each kind of link source: (test on the source and the ATAC data, reader, description)
_SOURCES: list[tuple[str, Callable, Callable]] = [
    (
        "table",
        lambda src, atac: isinstance(src, pd.DataFrame),
        lambda src, atac, sep: _links_from_table(src, "the link table", sep),
    ),
    (
        "uns",
        lambda src, atac: isinstance(src, str) and src in atac.uns,
        lambda src, atac, sep: _links_from_table(
            pd.DataFrame(atac.uns[src]), f"atac.uns[{src!r}]", sep
        ),
    ),
    (
        "var",
        lambda src, atac: isinstance(src, str) and src in atac.var.columns,
        lambda src, atac, sep: _links_from_var(atac, src, sep),
    ),
    (
        "file",
        lambda src, atac: isinstance(src, str | os.PathLike) and os.path.isfile(src),
        lambda src, atac, sep: read_peak_annotation(src),
    ),
]


def peak_gene_links(
    atac: AnnData,
    source: pd.DataFrame | str | os.PathLike,
    *,
    sep: str | None = None,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Peak-gene links from a table, an ``atac.var`` column, an ``atac.uns`` entry or a file.

    Use it when the links already exist, for example from Cell Ranger ARC, from the authors of
    a data set, or from a co-accessibility or peak-to-gene correlation analysis. To link peaks
    by genomic distance from gene positions, use :func:`~glassvi.pp.link_peaks` instead.

    Parameters
    ----------
    atac
        ATAC AnnData, peaks in ``var`` (for MuData, pass ``mdata["atac"]``).
    source
        Where the links are, tried in this order:

        - a DataFrame with a peak column (``peak``, ``peak_id``, ``region``, ...; or
          ``chrom``/``start``/``end``) and a gene column (``gene``, ``gene_name``,
          ``symbol``, ``target``, ...); other columns are kept;
        - the key of such a table in ``atac.uns``;
        - the name of an ``atac.var`` column holding each peak's linked gene(s): one name,
          names joined by ``;``, ``,`` or ``|``, or a list; empty values mean no link;
        - the path of a Cell Ranger (ARC) ``atac_peak_annotation.tsv``, read with
          :func:`~glassvi.pp.read_peak_annotation`.
    sep
        Separator of several genes in one field; by default ``;``, ``,`` or ``|``, whichever
        occurs.
    key_added
        If given, also store the links in ``atac.uns[key_added]``.

    Returns
    -------
    DataFrame with one row per (peak, gene) pair and columns ``peak`` and ``gene`` (then any
    other columns of the source). Peak names that are written differently from
    ``atac.var_names`` but denote the same interval (``chr1_100_600`` vs ``chr1:100-600``)
    are renamed to the ``var_names`` spelling; links to peaks absent from ``atac`` are kept
    here and ignored by :func:`~glassvi.pp.add_peak_programs`.

    Raises
    ------
    ValueError
        If ``source`` is none of the above (the message lists what was tried) or a table lacks
        a peak or gene column.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> import glassvi
    >>> var = pd.DataFrame(
    ...     {"linked_genes": ["Gad1", "Gad1;Gad2", ""]},
    ...     index=["chr2:70000-70500", "chr2:71000-71400", "chr3:500-900"],
    ... )
    >>> atac = ad.AnnData(np.zeros((1, 3)), var=var)
    >>> glassvi.pp.peak_gene_links(atac, "linked_genes")
                   peak  gene
    0  chr2:70000-70500  Gad1
    1  chr2:71000-71400  Gad1
    2  chr2:71000-71400  Gad2
    """
    check_anndata(atac, "atac", "atac")
    match = next(((kind, read) for kind, applies, read in _SOURCES if applies(source, atac)), None)
    if match is None:
        hint = (
            f"not a key of atac.uns ({examples(list(atac.uns))}), not a column of atac.var "
            f"({examples(atac.var.columns)}) and not an existing file"
            if isinstance(source, str | os.PathLike)
            else f"got {type(source).__name__}"
        )
        raise ValueError(
            "source must be a peak-gene DataFrame, an atac.uns key, an atac.var column or the "
            f"path of a peak annotation file: {source!r} is {hint}"
        )
    kind, read = match
    links = read(source, atac, sep)
    links = links[links["gene"].astype(str).str.len() > 0].reset_index(drop=True)
    known = pd.Index(links["peak"]).isin(atac.var_names)
    if not known.all():
        canonical = pd.Series(atac.var_names.to_numpy(), index=_canonical_peak(atac.var_names))
        canonical = canonical[~canonical.index.duplicated()]
        renamed = pd.Series(_canonical_peak(links["peak"][~known])).map(canonical)
        links.loc[~known, "peak"] = np.where(
            renamed.notna(), renamed.to_numpy(dtype=object), links["peak"][~known].to_numpy()
        )
    n_used = int(pd.Index(links["peak"]).isin(atac.var_names).sum())
    logger.info(
        "%d peak-gene links from %s (%s); %d name a peak of atac",
        len(links),
        kind,
        source if isinstance(source, str) else type(source).__name__,
        n_used,
    )
    if key_added is not None:
        atac.uns[key_added] = links
        logger.info("added atac.uns[%r]", key_added)
    return links
