"""Write small files in the 10x Genomics HDF5 feature-barcode format for tests."""

import h5py
import numpy as np
import scipy.sparse as sp


def write_10x_h5(path, counts, barcodes, ids, names, feature_types, intervals=None):
    """Write cells x features counts as a Cell Ranger (ARC) ``filtered_feature_bc_matrix.h5``."""
    m = sp.csc_matrix(np.asarray(counts).T.astype(np.int32))  # stored features x cells
    with h5py.File(path, "w") as fh:
        g = fh.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data)
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
        f = g.create_group("features")
        f.create_dataset("id", data=np.array(ids, dtype="S"))
        f.create_dataset("name", data=np.array(names, dtype="S"))
        f.create_dataset("feature_type", data=np.array(feature_types, dtype="S"))
        f.create_dataset("genome", data=np.array(["GRCh38"] * len(ids), dtype="S"))
        keys = ["genome"]
        if intervals is not None:
            f.create_dataset("interval", data=np.array(intervals, dtype="S"))
            keys.append("interval")
        f.create_dataset("_all_tag_keys", data=np.array(keys, dtype="S"))


def multiome_h5(path, n_cells=40, n_genes=12, n_peaks=20, seed=0, with_interval=True):
    rng = np.random.default_rng(seed)
    counts = np.hstack([rng.poisson(2, (n_cells, n_genes)), rng.poisson(0.5, (n_cells, n_peaks))])
    genes = [f"GENE{i}" for i in range(n_genes)]
    peaks = [f"chr{1 + i % 3}:{1000 * (i + 1)}-{1000 * (i + 1) + 400}" for i in range(n_peaks)]
    ids = [f"ENSG{i:05d}" for i in range(n_genes)] + peaks
    types = ["Gene Expression"] * n_genes + ["Peaks"] * n_peaks
    intervals = (["NA"] * n_genes + peaks) if with_interval else None
    barcodes = [f"AAAC{i:04d}-1" for i in range(n_cells)]
    write_10x_h5(path, counts, barcodes, ids, genes + peaks, types, intervals)
    return counts, genes, peaks
