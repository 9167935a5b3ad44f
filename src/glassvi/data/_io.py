"""Reading 10x Genomics Multiome output into MuData, with peak coordinates and annotation."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._genome import parse_peak_names

logger = logging.getLogger(__name__)

#: modalities glassvi models, as muon names the feature types of a 10x matrix
_MODALITIES = ("rna", "atac")
_ANNOTATION_FILE = "atac_peak_annotation.tsv"
_FRAGMENTS_FILE = "atac_fragments.tsv.gz"


def _read_intervals(path: Path) -> np.ndarray | None:
    import h5py

    with h5py.File(path, "r") as fh:
        features = fh["matrix"]["features"]
        if "interval" not in features:
            return None
        return np.asarray(features["interval"]).astype(str)


def _add_coordinates(atac, intervals: np.ndarray | None) -> None:
    """``chrom``/``start``/``end`` in ``atac.var`` from the intervals, else from the names."""
    names = intervals if intervals is not None else atac.var_names
    coords = parse_peak_names(names)
    n_bad = int(coords["chrom"].isna().sum())
    if n_bad:
        logger.warning("%d peaks have no parseable coordinates.", n_bad)
    atac.var["chrom"] = coords["chrom"].to_numpy()
    for col in ("start", "end"):
        atac.var[col] = pd.array(coords[col].to_numpy(), dtype="Int64")


def _add_annotation(atac, path: Path) -> None:
    """Peak-gene links into ``atac.uns["peak_annotation"]``; genes and type into ``var``."""
    from ..pp import peak_gene_links, read_peak_annotation

    links = peak_gene_links(atac, read_peak_annotation(path))
    links = links[links["peak"].isin(atac.var_names)].reset_index(drop=True)
    atac.uns["peak_annotation"] = links
    grouped = links.groupby("peak", sort=False)
    genes = grouped["gene"].agg(";".join)
    types = grouped["peak_type"].agg(lambda t: ";".join(pd.unique(t)))
    atac.var["linked_genes"] = genes.reindex(atac.var_names).fillna("").to_numpy(dtype=object)
    atac.var["peak_type"] = types.reindex(atac.var_names).fillna("").to_numpy(dtype=object)
    logger.info(
        "peak annotation %s: %d links for %d of %d peaks (atac.uns['peak_annotation'], "
        "atac.var['linked_genes'], atac.var['peak_type'])",
        path.name,
        len(links),
        links["peak"].nunique(),
        atac.n_vars,
    )


def read_10x_multiome(
    path: str | os.PathLike,
    peak_annotation: str | os.PathLike | bool | None = None,
):
    """Read a 10x Genomics Multiome (RNA+ATAC) ``.h5`` feature-barcode matrix as MuData.

    The matrix is read with :func:`muon.read_10x_h5`, which puts gene expression into
    modality ``"rna"`` and peaks into ``"atac"`` (other feature types, such as antibody
    capture, get their own modalities), with integer counts of the same cells. Peak
    coordinates come from the file's ``interval`` field when present, otherwise from the peak
    names, and are stored in ``mdata["atac"].var`` as ``chrom``, ``start``, ``end``.

    Cell Ranger ARC's peak annotation (``atac_peak_annotation.tsv``, found next to the
    matrix by default) is read with :func:`glassvi.pp.read_peak_annotation`: the peak-gene
    links go to ``mdata["atac"].uns["peak_annotation"]`` (columns ``peak``, ``gene``,
    ``distance``, ``peak_type``) and, per peak, the linked genes (joined by ``;``) and peak
    types to ``mdata["atac"].var["linked_genes"]`` and ``var["peak_type"]``. The links can
    be passed on directly: ``glassvi.pp.add_peak_programs(mdata, links="peak_annotation")``.
    The path of ``atac_fragments.tsv.gz``, when it lies next to the matrix, is recorded in
    ``mdata["atac"].uns["files"]["fragments"]``, as muon does.

    Parameters
    ----------
    path
        ``filtered_feature_bc_matrix.h5`` written by Cell Ranger ARC (or Cell Ranger for RNA).
    peak_annotation
        Path of the peak annotation; ``None`` (default) uses ``atac_peak_annotation.tsv``
        next to ``path`` if it exists; ``False`` reads none.

    Returns
    -------
    MuData with modalities ``"rna"`` and/or ``"atac"`` (and any other feature types).

    Raises
    ------
    FileNotFoundError
        If ``path`` or an explicitly given ``peak_annotation`` does not exist.
    ValueError
        If the file holds neither gene expression nor peaks.

    Examples
    --------
    >>> mdata = glassvi.data.read_10x_multiome("outs/filtered_feature_bc_matrix.h5")
    >>> glassvi.pp.add_programs(mdata["rna"], gene_sets)
    >>> glassvi.pp.add_peak_programs(mdata, links="peak_annotation")
    >>> glassvi.model.ProgramVI.setup_mudata(mdata)
    """
    import muon

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    if peak_annotation not in (None, False, True):
        annotation = Path(peak_annotation)
        if not annotation.is_file():
            raise FileNotFoundError(f"peak annotation not found: {str(annotation)!r}")
    elif peak_annotation is False:
        annotation = None
    else:
        annotation = path.parent / _ANNOTATION_FILE
        if not annotation.is_file():
            if peak_annotation is True:
                raise FileNotFoundError(f"peak annotation not found: {str(annotation)!r}")
            annotation = None
    # muon's own file discovery prints to stdout; glassvi reads the annotation itself
    with contextlib.redirect_stdout(io.StringIO()):
        mdata = muon.read_10x_h5(str(path), extended=False)
    if not any(m in mdata.mod for m in _MODALITIES):
        raise ValueError(f"{str(path)!r} holds no 'Gene Expression' or 'Peaks' features.")
    for mod in mdata.mod.values():
        mod.var_names_make_unique()
    if "atac" in mdata.mod:
        atac = mdata["atac"]
        intervals = _read_intervals(path)
        if intervals is not None:
            # muon orders features by type; keep the intervals of the peaks, in that order
            intervals = _peak_intervals(path, intervals, atac)
        _add_coordinates(atac, intervals)
        if annotation is not None:
            _add_annotation(atac, annotation)
        fragments = path.parent / _FRAGMENTS_FILE
        if fragments.is_file():
            atac.uns.setdefault("files", {})["fragments"] = str(fragments)
    mdata.update()
    return mdata


def _peak_intervals(path: Path, intervals: np.ndarray, atac) -> np.ndarray:
    """Intervals of the file's features, aligned to the peaks of ``atac``."""
    import h5py

    with h5py.File(path, "r") as fh:
        ids = np.asarray(fh["matrix"]["features"]["id"]).astype(str)
    by_id = pd.Series(intervals, index=ids)
    by_id = by_id[~by_id.index.duplicated()]
    keys = atac.var["gene_ids"].astype(str) if "gene_ids" in atac.var else atac.var_names
    return by_id.reindex(keys).fillna("").to_numpy(dtype=str)
