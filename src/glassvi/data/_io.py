"""Reading 10x Genomics Multiome output into MuData, with parsed peak coordinates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .._genome import parse_peak_names

logger = logging.getLogger(__name__)

_TYPES = {"Gene Expression": "rna", "Peaks": "atac"}


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
            coords = parse_peak_names(names)
            n_bad = int(coords["chrom"].isna().sum())
            if n_bad:
                logger.warning("%d peaks have no parseable coordinates.", n_bad)
            sub.var["chrom"] = coords["chrom"].to_numpy()
            for col in ("start", "end"):
                sub.var[col] = pd.array(coords[col].to_numpy(), dtype="Int64")
        mods[role] = sub
    if not mods:
        raise ValueError(f"{str(path)!r} holds no 'Gene Expression' or 'Peaks' features.")
    return md.MuData(mods)
