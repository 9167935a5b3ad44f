"""get_normalized_expression and differential_expression in scvi-tools' form."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import glassvi
from glassvi.model import LinearVI, ProgramVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def linear():
    adata = glassvi.data.simulate(n_cells=400, n_genes=150, n_programs=6, seed=1)
    LinearVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = LinearVI(adata, n_latent=4)
    model.train(max_epochs=100, batch_size=128, plan_kwargs={"lr": 1e-2}, **TRAIN_KW)
    return model, adata


def test_normalized_expression_is_a_deterministic_share_of_counts(linear):
    model, adata = linear
    expr = model.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame)
    assert list(expr.index) == list(adata.obs_names)
    assert list(expr.columns) == list(adata.var_names)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)
    pd.testing.assert_frame_equal(expr, model.get_normalized_expression())
    scaled = model.get_normalized_expression(library_size=1e4, gene_list=adata.var_names[:5])
    np.testing.assert_allclose(scaled.to_numpy(), 1e4 * expr.iloc[:, :5].to_numpy(), rtol=1e-4)
    # expected counts at the observed library size: the shares times each cell's total
    counts = adata.layers["counts"]
    totals = np.asarray(counts.sum(1)).ravel()
    latent = model.get_normalized_expression(library_size="latent")
    np.testing.assert_allclose(latent.to_numpy(), expr.to_numpy() * totals[:, None], rtol=1e-3)


def test_normalized_expression_samples_and_batches(linear):
    model, adata = linear
    draws = model.get_normalized_expression(indices=np.arange(10), n_samples=4, return_mean=False)
    assert draws.shape == (4, 10, adata.n_vars)
    assert not np.allclose(draws[0], draws[1])  # posterior draws differ
    pooled = model.get_normalized_expression(n_samples_overall=50)
    assert pooled.shape == (50, adata.n_vars)
    batches = list(adata.obs["batch"].cat.categories)
    one = model.get_normalized_expression(indices=np.arange(20), transform_batch=batches[0])
    other = model.get_normalized_expression(indices=np.arange(20), transform_batch=batches[1])
    both = model.get_normalized_expression(indices=np.arange(20), transform_batch=batches)
    assert not np.allclose(one, other)
    np.testing.assert_allclose(both, (one + other) / 2, rtol=1e-5)
    with pytest.raises(ValueError, match="not a batch category"):
        model.get_normalized_expression(transform_batch="nope")


def test_differential_expression_has_scvi_columns_and_finds_markers(linear):
    model, adata = linear
    group = str(adata.obs["cell_type"].cat.categories[0])
    de = model.differential_expression(
        groupby="cell_type", group1=group, mode="change", silent=True
    )
    expected = ["proba_de", "proba_not_de", "bayes_factor", "scale1", "scale2", "lfc_mean"]
    expected += ["lfc_median", "lfc_std", "raw_mean1", "raw_normalized_mean2", "is_de_fdr_0.05"]
    expected += ["comparison", "group1", "group2"]
    assert set(expected) <= set(de.columns)
    assert set(de.index) == set(adata.var_names)
    assert (de["comparison"] == f"{group} vs Rest").all()
    assert de["proba_de"].is_monotonic_decreasing
    # the model's fold changes follow the simulation's true log-rate differences
    in_group = (adata.obs["cell_type"] == group).to_numpy()
    activity, weights = adata.obsm["true_activity"], adata.varm["true_weights"]
    truth = weights @ (activity[in_group].mean(0) - activity[~in_group].mean(0))
    truth = pd.Series(truth, index=adata.var_names).loc[de.index]
    assert spearmanr(de["lfc_mean"], truth).statistic > 0.8
    called = de["is_de_fdr_0.05"]
    assert called.any()
    assert truth[called].abs().mean() > 2 * truth[~called].abs().mean()
    # all groups, vanilla mode (scvi-tools' proba_m1 / proba_m2 columns)
    everything = model.differential_expression(groupby="cell_type", silent=True)
    assert everything["comparison"].nunique() == adata.obs["cell_type"].nunique()
    assert {"proba_m1", "proba_m2", "bayes_factor"} <= set(everything.columns)
    assert "_scvi_raw_norm_scaling" not in adata.obs
    with pytest.raises(ValueError, match="groupby"):
        model.differential_expression()


def test_multiome_expression_per_modality():
    mdata = glassvi.data.simulate(
        n_cells=200, n_genes=80, n_peaks=120, n_programs=4, modality="multiome", seed=2
    )
    LinearVI.setup_mudata(mdata)
    model = LinearVI(mdata, n_latent=3)
    model.train(max_epochs=2, **TRAIN_KW)
    rna_expr = model.get_normalized_expression()
    assert list(rna_expr.columns) == list(mdata["rna"].var_names)
    np.testing.assert_allclose(rna_expr.sum(1), 1.0, rtol=1e-4)
    access = model.get_normalized_expression(modality="atac")
    assert list(access.columns) == list(mdata["atac"].var_names)
    assert ((access.to_numpy() > 0) & (access.to_numpy() < 1)).all()
    group = str(mdata.obs["cell_type"].iloc[0])
    de = model.differential_expression(
        groupby="cell_type", group1=group, modality="atac", silent=True
    )
    assert set(de.index) == set(mdata["atac"].var_names)


def test_programvi_differential_expression():
    adata = glassvi.data.simulate(n_cells=200, n_genes=100, n_programs=5, seed=4)
    names = list(adata.uns["simulation"]["program_names"])
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    ProgramVI.setup_anndata(adata, layer="counts")
    model = ProgramVI(adata)
    model.train(max_epochs=2, **TRAIN_KW)
    expr = model.get_normalized_expression(indices=[0, 1, 2])
    assert expr.shape == (3, adata.n_vars)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)
    de = model.differential_expression(
        groupby="cell_type",
        group1=str(adata.obs["cell_type"].iloc[0]),
        mode="change",
        silent=True,
    )
    assert "lfc_mean" in de.columns and len(de) == adata.n_vars
