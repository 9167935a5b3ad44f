import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

import glassvi
from glassvi.model import LinearVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def rna():
    return glassvi.data.simulate(n_cells=400, n_genes=200, modality="rna", seed=1)


@pytest.fixture(scope="module")
def multiome():
    return glassvi.data.simulate(
        n_cells=300, n_genes=150, n_peaks=300, modality="multiome", seed=2
    )


def _elbo_drops(model):
    elbo = model.history["elbo_train"].to_numpy().ravel()
    return elbo[-1] < elbo[0]


def test_rna_real_data_trains_and_explains():
    adata = glassvi.data.immune1k()[:600].copy()
    LinearVI.setup_anndata(adata, layer="counts", labels_key="cell_type_annotations")
    model = LinearVI(adata, n_latent=8)
    model.train(max_epochs=4, batch_size=128, **TRAIN_KW)
    assert _elbo_drops(model)
    model.explain()
    latent = adata.obsm["X_linearvi"]
    loadings = glassvi.tl.varm_df(adata, "linearvi_loadings")
    # a plain array, names in uns, as scanpy stores embeddings: scanpy plots it directly
    assert type(latent) is np.ndarray and latent.shape == (adata.n_obs, 8)
    assert list(adata.uns["linearvi"]["columns"]) == [f"factor_{i}" for i in range(8)]
    sc.pl.embedding(adata, basis="X_linearvi", color="cell_type_annotations", show=False)
    assert loadings.index.equals(adata.var_names)
    np.testing.assert_allclose(
        loadings.to_numpy(), model.module.decoders["rna"].weight.detach().numpy()
    )
    np.testing.assert_allclose(latent, model.get_latent_representation(), rtol=1e-5)
    meta = adata.uns["linearvi"]
    assert meta["latent_key"] == "X_linearvi" and meta["weights_key"] == "linearvi_loadings"
    assert meta["params"]["likelihoods"] == {"rna": "nb"}
    pd.testing.assert_frame_equal(model.get_loadings(), loadings)


def test_latent_is_deterministic(rna):
    adata = rna.copy()
    LinearVI.setup_anndata(adata, batch_key="batch")
    model = LinearVI(adata, n_latent=5)
    model.train(max_epochs=2, **TRAIN_KW)
    np.testing.assert_array_equal(
        model.get_latent_representation(), model.get_latent_representation()
    )


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_rna_likelihoods(rna, likelihood):
    adata = rna.copy()
    LinearVI.setup_anndata(adata, batch_key="batch")
    model = LinearVI(adata, n_latent=4, likelihood=likelihood)
    model.train(max_epochs=3, **TRAIN_KW)
    assert model.module.likelihoods == {"rna": likelihood}
    assert _elbo_drops(model)
    assert np.isfinite(sum(model.get_reconstruction_error().values()))


def test_atac_anndata_bernoulli_and_poisson(multiome):
    atac = multiome["atac"].copy()
    LinearVI.setup_anndata(atac, modality="atac")
    model = LinearVI(atac, n_latent=4)
    assert model.module.likelihoods == {"atac": "bernoulli"}
    model.train(max_epochs=3, **TRAIN_KW)
    assert _elbo_drops(model)
    model.explain()
    assert atac.varm["linearvi_loadings"].shape == (atac.n_vars, 4)
    poisson = LinearVI(atac, n_latent=4, likelihood="poisson")
    poisson.train(max_epochs=1, **TRAIN_KW)
    assert poisson.module.likelihoods == {"atac": "poisson"}


def test_multiome_writes_per_modality_keys(multiome):
    mdata = multiome.copy()
    LinearVI.setup_mudata(mdata, batch_key="batch")
    model = LinearVI(mdata, n_latent=6)
    assert model.module.likelihoods == {"rna": "nb", "atac": "bernoulli"}
    model.train(max_epochs=3, **TRAIN_KW)
    assert _elbo_drops(model)
    rec = model.get_reconstruction_error()
    assert set(rec) == {"rna", "atac"} and np.isfinite(sum(rec.values()))
    model.explain()
    assert mdata.obsm["X_linearvi"].shape == (mdata.n_obs, 6)
    assert mdata["rna"].varm["linearvi_loadings"].shape == (mdata["rna"].n_vars, 6)
    assert mdata["atac"].varm["linearvi_loadings"].shape == (mdata["atac"].n_vars, 6)
    assert "linearvi_loadings" not in mdata.varm
    assert mdata.uns["linearvi"]["modalities"] == {"rna": "rna", "atac": "atac"}
    stacked = model.get_loadings()
    assert stacked.shape == (mdata["rna"].n_vars + mdata["atac"].n_vars, 6)
    pd.testing.assert_frame_equal(
        model.get_loadings("atac"), glassvi.tl.varm_df(mdata, "linearvi_loadings", modality="atac")
    )
    with pytest.raises(KeyError, match="protein"):
        model.get_loadings("protein")


def test_multiome_single_modality_via_setup_mudata(multiome):
    for role in ("rna", "atac"):
        mdata = multiome.copy()
        LinearVI.setup_mudata(mdata, modalities={f"{role}_layer": role})
        model = LinearVI(mdata, n_latent=3)
        assert model.modalities == [role]
        model.train(max_epochs=1, **TRAIN_KW)
        model.explain()
        assert "linearvi_loadings" in mdata[role].varm
        other = "atac" if role == "rna" else "rna"
        assert "linearvi_loadings" not in mdata[other].varm


def test_multiome_custom_modality_names(multiome):
    mdata = md.MuData({"gex": multiome["rna"].copy(), "peaks": multiome["atac"].copy()})
    mdata.obs["batch"] = multiome.obs["batch"].to_numpy()
    LinearVI.setup_mudata(
        mdata, batch_key="batch", modalities={"rna_layer": "gex", "atac_layer": "peaks"}
    )
    model = LinearVI(mdata, n_latent=3)
    model.train(max_epochs=1, **TRAIN_KW)
    model.explain(key_added="lv")
    assert "lv_loadings" in mdata["gex"].varm and "lv_loadings" in mdata["peaks"].varm
    assert "X_lv" in mdata.obsm


def test_save_load_round_trip(multiome, tmp_path):
    mdata = multiome.copy()
    LinearVI.setup_mudata(mdata, batch_key="batch")
    model = LinearVI(mdata, n_latent=4, likelihood={"atac": "poisson"})
    model.train(max_epochs=2, **TRAIN_KW)
    model.save(tmp_path / "m", overwrite=True)
    loaded = LinearVI.load(tmp_path / "m", adata=mdata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    pd.testing.assert_frame_equal(loaded.get_loadings(), model.get_loadings())
    assert loaded.module.likelihoods == {"rna": "nb", "atac": "poisson"}


@pytest.mark.parametrize("n_ref_batches", [1, 2])
def test_query_mapping_keeps_reference_fixed(rna, n_ref_batches):
    is_query = (rna.obs_names.str[-1].astype(int) % 3) == 0
    ref = rna[~is_query].copy()
    query = rna[is_query].copy()
    query.obs["batch"] = "query_batch"
    if n_ref_batches == 1:
        ref.obs["batch"] = "batch_0"
    LinearVI.setup_anndata(ref, batch_key="batch")
    model = LinearVI(ref, n_latent=4)
    model.train(max_epochs=3, **TRAIN_KW)
    ref_latent = model.get_latent_representation()
    qmodel = LinearVI.load_query_data(query, model)
    dec_before = {k: v.clone() for k, v in qmodel.module.decoders["rna"].state_dict().items()}
    qmodel.train(max_epochs=3, **TRAIN_KW)
    dec_after = qmodel.module.decoders["rna"].state_dict()
    torch.testing.assert_close(dec_after["weight"], dec_before["weight"])
    torch.testing.assert_close(dec_after["bias"], dec_before["bias"])
    # the reference batch's offsets are fixed, the new batch's are learned
    n_ref = n_ref_batches
    torch.testing.assert_close(
        dec_after["batch_offset"][:n_ref], dec_before["batch_offset"][:n_ref]
    )
    assert not torch.allclose(dec_after["batch_offset"][n_ref], dec_before["batch_offset"][n_ref])
    # the reference cells keep their latent representation under the query model
    ref.obs["batch"] = ref.obs["batch"].astype(str)
    np.testing.assert_allclose(
        qmodel.get_latent_representation(qmodel._validate_anndata(ref)), ref_latent, atol=1e-5
    )
    assert qmodel.get_latent_representation().shape == (query.n_obs, 4)


def test_explain_key_added_inplace_and_overwrite(rna):
    adata = rna.copy()
    LinearVI.setup_anndata(adata)
    model = LinearVI(adata, n_latent=3)
    model.train(max_epochs=1, **TRAIN_KW)
    before = set(adata.obsm) | set(adata.varm) | set(adata.uns)
    result = model.explain(inplace=False)
    assert set(adata.obsm) | set(adata.varm) | set(adata.uns) == before
    assert set(result["obsm"]) == {"X_linearvi"}
    assert set(result["varm"]["rna"]) == {"linearvi_loadings"}
    model.explain(key_added="mine")
    assert "X_mine" in adata.obsm and "mine_loadings" in adata.varm and "mine" in adata.uns
    with pytest.warns(UserWarning, match="Overwriting"):
        model.explain(key_added="mine")
    with pytest.raises(ValueError, match="Unknown explain method"):
        model.explain(method="telepathy")


def test_nonnegative_loadings(rna):
    adata = rna.copy()
    LinearVI.setup_anndata(adata)
    model = LinearVI(adata, n_latent=3, nonnegative=True)
    model.train(max_epochs=2, **TRAIN_KW)
    assert (model.get_loadings().to_numpy() >= 0).all()
    assert (model.get_loadings().to_numpy() > 0).any()


# ------------------------------------------------------------------------------- bad input
def _counts(n=30, g=20, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2, (n, g)).astype(np.float32)))
    a.obs["batch"] = rng.choice(["a", "b"], n)
    return a


def _untouched(a):
    return "_scvi_uuid" not in a.uns and not any(c.startswith("_scvi") for c in a.obs)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda a: a.X.data.__setitem__(0, -1.0), ValueError, "negative"),
        (lambda a: a.X.data.__setitem__(0, 1.5), ValueError, "non-integer"),
        (lambda a: a.X.data.__setitem__(0, np.nan), ValueError, "NaN"),
        (lambda a: a.X.data.__setitem__(0, np.inf), ValueError, "infinite"),
    ],
)
def test_bad_counts_raise_before_registration(mutate, exc, match):
    a = _counts()
    mutate(a)
    with pytest.raises(exc, match=match):
        LinearVI.setup_anndata(a)
    assert _untouched(a)


def test_bad_keys_and_layers():
    a = _counts()
    with pytest.raises(KeyError, match="layer 'counts'"):
        LinearVI.setup_anndata(a, layer="counts")
    with pytest.raises(KeyError, match="batch_key='donor'"):
        LinearVI.setup_anndata(a, batch_key="donor")
    with pytest.raises(KeyError, match="continuous_covariate_keys='pct_mito'"):
        LinearVI.setup_anndata(a, continuous_covariate_keys=["pct_mito"])
    with pytest.raises(ValueError, match="modality"):
        LinearVI.setup_anndata(a, modality="protein")
    assert _untouched(a)


def test_empty_data():
    a = _counts()[:0].copy()
    with pytest.raises(ValueError, match="empty"):
        LinearVI.setup_anndata(a)


def test_dense_and_layer_counts_accepted():
    a = _counts()
    a.layers["counts"] = a.X.toarray()
    a.X = np.log1p(a.layers["counts"])
    with pytest.raises(ValueError, match="non-integer"):
        LinearVI.setup_anndata(a)
    LinearVI.setup_anndata(a, layer="counts")
    LinearVI(a, n_latent=2).train(max_epochs=1, **TRAIN_KW)


def test_bad_likelihood_and_mudata_inputs(multiome):
    a = _counts()
    LinearVI.setup_anndata(a)
    with pytest.raises(ValueError, match="Unknown likelihood"):
        LinearVI(a, likelihood="gaussian")
    with pytest.raises(TypeError, match="setup_mudata"):
        LinearVI.setup_anndata(multiome)
    mdata = multiome.copy()
    with pytest.raises(KeyError, match="'protein'"):
        LinearVI.setup_mudata(mdata, modalities={"rna_layer": "protein"})
    with pytest.raises(KeyError, match="layer 'counts_x'"):
        LinearVI.setup_mudata(mdata, rna_layer="counts_x")
    misaligned = md.MuData({"rna": multiome["rna"][:200].copy(), "atac": multiome["atac"].copy()})
    with pytest.raises(ValueError, match="not aligned"):
        LinearVI.setup_mudata(misaligned)
    assert "_scvi_uuid" not in misaligned.uns


def test_cells_without_counts_warn(caplog):
    a = _counts()
    dense = a.X.toarray()
    dense[0] = 0
    a.X = sp.csr_matrix(dense)
    LinearVI.setup_anndata(a)
    with caplog.at_level("WARNING"):
        model = LinearVI(a, n_latent=2)
    assert "1 cells have no counts" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(model.get_latent_representation()).all()
