import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import glassvi
from glassvi.data import simulate

GENE_TABLE = Path(glassvi.data.__file__).parent / "_files" / "genes_hg38.tsv.gz"
SMALL = {"n_cells": 1500, "n_genes": 500, "n_peaks": 1500, "n_programs": 12, "seed": 3}


@pytest.fixture(scope="module")
def rna():
    return simulate(**SMALL)


@pytest.fixture(scope="module")
def multiome():
    return simulate(**SMALL, modality="multiome")


def _log_normalized(adata):
    counts = adata.X.toarray()
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


def _activity_expression_corr(adata, activity):
    """Correlation, per active program, of activity with the mean of its members."""
    logx = _log_normalized(adata)
    mask = adata.varm["true_programs"]
    out = {}
    for k in np.flatnonzero(activity.std(axis=0) > 0):
        out[k] = np.corrcoef(activity[:, k], logx[:, mask[:, k]].mean(axis=1))[0, 1]
    return out


def test_same_seed_same_output_and_different_seed_differs():
    kwargs = {"n_cells": 300, "n_genes": 200, "n_peaks": 400, "modality": "multiome"}
    a, b = simulate(**kwargs, seed=7), simulate(**kwargs, seed=7)
    c = simulate(**kwargs, seed=8)
    for mod in ("rna", "atac"):
        assert (a[mod].X != b[mod].X).nnz == 0
        assert list(a[mod].var_names) == list(b[mod].var_names)
        np.testing.assert_array_equal(a[mod].varm["true_programs"], b[mod].varm["true_programs"])
        assert a[mod].X.shape == c[mod].X.shape
        assert (a[mod].X != c[mod].X).nnz > 0
    np.testing.assert_array_equal(a.obsm["true_activity"], b.obsm["true_activity"])
    assert list(a["rna"].var_names) != list(c["rna"].var_names)
    assert not np.array_equal(a.obsm["true_activity"], c.obsm["true_activity"])


def test_output_does_not_depend_on_threads():
    a = simulate(n_cells=2000, n_genes=3000, n_jobs=1)
    b = simulate(n_cells=2000, n_genes=3000, n_jobs=3)
    assert (a.X != b.X).nnz == 0


def test_counts_are_sparse_nonnegative_integers(rna, multiome):
    for adata in (rna, multiome["rna"], multiome["atac"]):
        assert isinstance(adata.X, sparse.csr_matrix)
        assert adata.X.dtype == np.float32
        assert adata.X.data.min() >= 1  # only nonzero counts are stored
        np.testing.assert_array_equal(adata.X.data, np.round(adata.X.data))
        assert (adata.layers["counts"] != adata.X).nnz == 0
        assert adata.layers["counts"] is not adata.X
    # ATAC insertion counts are mostly 0/1/2 and sparse.
    atac = multiome["atac"].X
    assert 0.02 < atac.nnz / np.prod(atac.shape) < 0.5
    assert np.mean(atac.data <= 2) > 0.8


def test_library_size(rna):
    totals = np.asarray(rna.X.sum(axis=1)).ravel()
    assert abs(totals.mean() / 3000 - 1) < 0.1
    assert totals.std() / totals.mean() > 0.15  # lognormal variation between cells
    assert np.corrcoef(totals, rna.obs["true_library_size"])[0, 1] > 0.9


def test_ground_truth_shapes_and_consistency(rna):
    n_cells, n_genes, n_programs = SMALL["n_cells"], SMALL["n_genes"], SMALL["n_programs"]
    info = rna.uns["simulation"]
    mask = rna.varm["true_programs"]
    weights = rna.varm["true_weights"]
    activity = rna.obsm["true_activity"]
    active = np.asarray(info["active_programs"])

    assert rna.shape == (n_cells, n_genes)
    assert mask.shape == weights.shape == (n_genes, n_programs)
    assert mask.dtype == bool
    assert activity.shape == (n_cells, n_programs)
    assert rna.varm["true_batch_effect"].shape == (n_genes, 2)
    assert info["program_names"] == [f"program_{k:02d}" for k in range(n_programs)]
    assert active.dtype == bool and active.shape == (n_programs,)
    assert active.sum() == info["n_active"] == 9  # default: 3/4 of the programs
    assert info["seed"] == 3 and info["modality"] == "rna"

    sizes = mask.sum(axis=0)
    assert sizes.min() >= 15 and sizes.max() <= 40
    assert np.all(weights[~mask] == 0) and np.all(weights[mask] > 0)
    # Inactive programs are decoys: members in the mask, no activity anywhere.
    assert np.all(activity[:, ~active] == 0)
    assert np.all(activity >= 0)
    assert np.all(activity[:, active].max(axis=0) > 1)
    # Activities are sparse and vary within cell types.
    assert 0.05 < np.mean(activity[:, active] > 0) < 0.7
    k = np.flatnonzero(active)[0]
    by_type = pd.Series(activity[:, k]).groupby(rna.obs["cell_type"].to_numpy()).std()
    assert by_type.max() > 0.2

    assert list(rna.obs["cell_type"].cat.categories) == [f"type_{i}" for i in range(5)]
    assert list(rna.obs["batch"].cat.categories) == ["batch_0", "batch_1"]
    assert rna.obs_names[0] == "cell_0000"
    assert rna.var_names.is_unique
    assert set(rna.var["chrom"]) <= {f"chr{i}" for i in range(1, 23)} | {"chrX"}


def test_programs_overlap(rna):
    n_memberships = rna.varm["true_programs"].sum(axis=1)
    assert (n_memberships > 1).sum() >= 5


def test_cell_types_use_different_programs(rna):
    activity = rna.obsm["true_activity"]
    means = pd.DataFrame(activity).groupby(rna.obs["cell_type"].to_numpy()).mean().to_numpy()
    # Each active program is high in some cell type and low in another.
    active = rna.uns["simulation"]["active_programs"]
    spread = means[:, active].max(axis=0) - means[:, active].min(axis=0)
    assert np.all(spread > 0.5)


def test_member_expression_follows_activity(rna):
    corr = _activity_expression_corr(rna, rna.obsm["true_activity"])
    assert len(corr) == rna.uns["simulation"]["n_active"]
    assert min(corr.values()) > 0.3
    assert np.median(list(corr.values())) > 0.7


def test_non_members_do_not_follow_activity(rna):
    logx = _log_normalized(rna)
    activity = rna.obsm["true_activity"]
    mask = rna.varm["true_programs"]
    outside = ~mask.any(axis=1)
    k = int(np.argmax(activity.std(axis=0)))
    members = np.corrcoef(activity[:, k], logx[:, mask[:, k]].mean(axis=1))[0, 1]
    others = np.corrcoef(activity[:, k], logx[:, outside].mean(axis=1))[0, 1]
    # Non-members may fall as members take a larger share of the library, but never follow.
    assert members > 0.7
    assert members > others + 0.3


def test_batch_effects(rna):
    logx = _log_normalized(rna)
    in_b0 = (rna.obs["batch"] == "batch_0").to_numpy()
    observed = logx[in_b0].mean(axis=0) - logx[~in_b0].mean(axis=0)
    effect = rna.varm["true_batch_effect"]
    expected = effect[:, 0] - effect[:, 1]
    expressed = np.asarray(rna.X.mean(axis=0)).ravel() > 1
    assert np.corrcoef(observed[expressed], expected[expressed])[0, 1] > 0.5

    no_batch = simulate(**{**SMALL, "batch_effect": 0.0})
    assert np.all(no_batch.varm["true_batch_effect"] == 0)
    logx0 = _log_normalized(no_batch)
    in_b0 = (no_batch.obs["batch"] == "batch_0").to_numpy()
    observed0 = logx0[in_b0].mean(axis=0) - logx0[~in_b0].mean(axis=0)
    assert np.abs(observed0[expressed]).mean() < 0.5 * np.abs(observed[expressed]).mean()


def test_peaks_lie_near_their_genes(multiome):
    atac = multiome["atac"]
    var = atac.var
    info = multiome.uns["simulation"]
    window, width = info["peak_window"], info["peak_width"]
    assert var["start"].dtype.kind == "i" and var["end"].dtype.kind == "i"
    assert np.all(var["end"] - var["start"] == width)
    names = var["chrom"] + ":" + var["start"].astype(str) + "-" + var["end"].astype(str)
    assert list(names) == list(atac.var_names)

    table = pd.read_csv(GENE_TABLE, sep="\t").set_index("gene")
    linked = var[var["gene"] != ""]
    assert abs((var["gene"] == "").mean() - 0.2) < 0.01
    assert set(linked["gene"]) <= set(multiome["rna"].var_names)
    genes = table.loc[linked["gene"]]
    tss = np.where(genes["strand"] == "+", genes["start"], genes["end"])
    np.testing.assert_array_equal(linked["chrom"].to_numpy(), genes["chrom"].to_numpy())
    assert np.all(linked["start"].to_numpy() >= tss - window)
    assert np.all(linked["end"].to_numpy() <= tss + window)
    # Peaks cluster near the promoter rather than spreading evenly over the window.
    distance = np.abs((linked["start"] + linked["end"]).to_numpy() / 2 - tss)
    assert np.median(distance) < window / 3

    # Peaks are sorted and do not overlap.
    for _, peaks in var.groupby("chrom", observed=True):
        starts = peaks["start"].to_numpy()
        assert np.all(np.diff(starts) >= width)


def test_peaks_inherit_gene_programs(multiome):
    atac, rna = multiome["atac"], multiome["rna"]
    peak_mask = atac.varm["true_programs"]
    gene_mask = pd.DataFrame(rna.varm["true_programs"], index=rna.var_names)
    linked = (atac.var["gene"] != "").to_numpy()
    np.testing.assert_array_equal(
        peak_mask[linked], gene_mask.loc[atac.var["gene"][linked]].to_numpy()
    )
    assert not peak_mask[~linked].any()
    assert np.all(atac.varm["true_weights"][~peak_mask] == 0)
    corr = _activity_expression_corr(atac, multiome.obsm["true_activity"])
    assert np.median(list(corr.values())) > 0.5


def test_atac_returns_anndata_sharing_cells_with_multiome(multiome):
    atac = simulate(**SMALL, modality="atac")
    assert isinstance(atac, ad.AnnData)
    assert atac.shape == (SMALL["n_cells"], SMALL["n_peaks"])
    assert atac.uns["simulation"]["modality"] == "atac"
    np.testing.assert_array_equal(atac.obsm["true_activity"], multiome.obsm["true_activity"])
    assert (atac.X != multiome["atac"].X).nnz == 0


def test_multiome_returns_aligned_mudata(rna, multiome):
    assert isinstance(multiome, md.MuData)
    assert set(multiome.mod) == {"rna", "atac"}
    assert multiome.n_obs == SMALL["n_cells"]
    for mod in ("rna", "atac"):
        assert list(multiome[mod].obs_names) == list(multiome.obs_names)
        for key in ("cell_type", "batch"):
            assert multiome[mod].obs[key].equals(multiome.obs[key])
    assert multiome.obsm["true_activity"].shape == (SMALL["n_cells"], SMALL["n_programs"])
    assert multiome.uns["simulation"]["modality"] == "multiome"
    assert "rna:cell_type" not in multiome.obs
    # The RNA of a multiome simulation is the RNA-only simulation with the same seed.
    assert (multiome["rna"].X != rna.X).nnz == 0
    assert multiome.obs["cell_type"].equals(rna.obs["cell_type"])


@pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")
def test_results_can_be_written(tmp_path):
    mdata = simulate(n_cells=100, n_genes=100, n_peaks=200, modality="multiome")
    mdata.write(tmp_path / "sim.h5mu")
    back = md.read_h5mu(tmp_path / "sim.h5mu")
    np.testing.assert_array_equal(
        back["atac"].varm["true_programs"], mdata["atac"].varm["true_programs"]
    )
    assert (
        list(back.uns["simulation"]["program_names"]) == mdata.uns["simulation"]["program_names"]
    )
    adata = simulate(n_cells=100, n_genes=100)
    adata.write_h5ad(tmp_path / "sim.h5ad")
    assert ad.read_h5ad(tmp_path / "sim.h5ad").uns["simulation"]["n_active"] == 15


def test_all_programs_inactive():
    adata = simulate(n_cells=200, n_genes=200, n_programs=4, n_active=0)
    assert not adata.uns["simulation"]["active_programs"].any()
    assert np.all(adata.obsm["true_activity"] == 0)
    assert adata.varm["true_programs"].any(axis=0).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_cells": 0},
        {"n_cells": 10.5},
        {"n_genes": 0},
        {"n_genes": 10**6},
        {"modality": "protein"},
        {"n_programs": 0},
        {"n_programs": 5, "n_active": 6},
        {"n_active": -1},
        {"genes_per_program": (40, 15)},
        {"genes_per_program": (15, 2000)},
        {"genes_per_program": (0, 5)},
        {"genes_per_program": (5,)},
        {"n_cell_types": 0},
        {"n_batches": 0},
        {"library_size": 0},
        {"dispersion": -1.0},
        {"batch_effect": -0.1},
        {"seed": -1},
        {"modality": "atac", "n_peaks": 0},
        {"modality": "atac", "background_peaks": 1.5},
        {"modality": "atac", "peak_window": 100, "peak_width": 500},
        {"modality": "atac", "n_genes": 20, "n_peaks": 20_000, "background_peaks": 0.0},
        {"n_jobs": 0},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        simulate(**{"n_cells": 50, "n_genes": 1000, "n_peaks": 100, **kwargs})


def test_fast_enough():
    start = time.perf_counter()
    adata = simulate(n_cells=5000, n_genes=2000)
    elapsed = time.perf_counter() - start
    print(f"simulate(n_cells=5000, n_genes=2000) took {elapsed:.2f} s")
    assert adata.shape == (5000, 2000)
    assert elapsed < 20
