"""Reading 10x Genomics Multiome output into MuData, with parsed peak coordinates."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_INTERVAL = re.compile(r"^(?P<chrom>[^:\-_]+)[:\-_](?P<start>\d+)[\-_](?P<end>\d+)$")
_TYPES = {"Gene Expression": "rna", "Peaks": "atac"}


def parse_intervals(names) -> pd.DataFrame:
    """Parse peak names like ``chr1:100-600``, ``chr1-100-600`` or ``chr1_100_600``.

    Parameters
    ----------
    names
        Iterable of peak names.

    Returns
    -------
    DataFrame with columns ``chrom`` (str), ``start`` and ``end`` (int), indexed like ``names``;
    unparseable names get missing values.

    Examples
    --------
    >>> glassvi.data.parse_intervals(["chr1:100-600"])
    """
    names = pd.Index(names).astype(str)
    parts = names.str.extract(_INTERVAL)
    parts.index = names
    out = pd.DataFrame(index=names)
    out["chrom"] = parts["chrom"]
    out["start"] = pd.to_numeric(parts["start"]).astype("Int64")
    out["end"] = pd.to_numeric(parts["end"]).astype("Int64")
    return out


def read_10x_multiome(path: str | Path):
    """Read a 10x Genomics Multiome (RNA+ATAC) ``.h5`` feature-barcode matrix as MuData.

    Gene expression goes to modality ``"rna"`` and peaks to ``"atac"``, both with integer counts
    and the same cells. Peak coordinates are taken from the file's ``interval`` field when present,
    otherwise parsed from the peak names, and stored in ``mdata["atac"].var`` as ``chrom``,
    ``start``, ``end``. A file with only one feature type gives a MuData with that modality.

    Parameters
    ----------
    path
        ``filtered_feature_bc_matrix.h5`` written by Cell Ranger ARC (or Cell Ranger for RNA).

    Returns
    -------
    MuData with modalities ``"rna"`` and/or ``"atac"``.

    Examples
    --------
    >>> mdata = glassvi.data.read_10x_multiome("filtered_feature_bc_matrix.h5")
    >>> glassvi.model.LinearVI.setup_mudata(mdata)
    """
    import h5py
    import mudata as md
    import scanpy as sc

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    adata = sc.read_10x_h5(path, gex_only=False)
    with h5py.File(path, "r") as fh:
        features = fh["matrix"]["features"]
        intervals = (
            np.asarray(features["interval"]).astype(str) if "interval" in features else None
        )
    adata.var_names_make_unique()
    types = adata.var["feature_types"].astype(str)
    unknown = sorted(set(types) - set(_TYPES))
    if unknown:
        n_dropped = int(types.isin(unknown).sum())
        logger.warning("Ignoring %d features of types %s.", n_dropped, unknown)
    mods = {}
    for ftype, role in _TYPES.items():
        sel = (types == ftype).to_numpy()
        if not sel.any():
            continue
        sub = adata[:, sel].copy()
        if role == "atac":
            names = intervals[sel] if intervals is not None else sub.var_names
            coords = parse_intervals(names)
            n_bad = int(coords["chrom"].isna().sum())
            if n_bad:
                logger.warning("%d peaks have no parseable coordinates.", n_bad)
            for col in ("chrom", "start", "end"):
                sub.var[col] = coords[col].to_numpy()
        mods[role] = sub
    if not mods:
        raise ValueError(f"{str(path)!r} holds no 'Gene Expression' or 'Peaks' features.")
    return md.MuData(mods)
