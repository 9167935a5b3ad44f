"""Bad obs values, batch sizes and tiny data are refused early, with one-line errors."""

import logging

import numpy as np
import pandas as pd
import pytest

import glassvi
from glassvi.model import LinearVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
N = 60


@pytest.fixture(scope="module")
def base():
    return glassvi.data.simulate(n_cells=N, n_genes=40, seed=3)


def _with(base, column, values):
    adata = base.copy()
    adata.obs[column] = values
    return adata


def _labels(n_missing=0):
    values = pd.Series([f"type_{i % 3}" for i in range(N)], dtype=object)
    values[:n_missing] = np.nan
    return values.to_numpy()


CASES = [
    ("NaN labels", "lab", _labels(5), {"labels_key": "lab"}, r"labels_key='lab'.*NaN.*5 of 60"),
    ("integer labels", "lab", np.arange(N) % 3, {"labels_key": "lab"}, "must be strings"),
    (
        "NaN batch",
        "b",
        pd.Categorical(np.where(np.arange(N) % 4 == 0, None, "x")),
        {"batch_key": "b"},
        r"batch_key='b'.*NaN.*15 of 60",
    ),
    (
        "mixed batch",
        "b",
        np.array([1 if i % 2 else "a" for i in range(N)], dtype=object),
        {"batch_key": "b"},
        "mixes number and string",
    ),
    (
        "NaN covariate",
        "c",
        pd.Categorical(np.where(np.arange(N) % 5 == 0, None, "a")),
        {"categorical_covariate_keys": ["c"]},
        r"categorical_covariate_keys='c'.*NaN",
    ),
    (
        "NaN continuous",
        "c",
        np.where(np.arange(N) % 5 == 0, np.nan, 1.0),
        {"continuous_covariate_keys": ["c"]},
        r"continuous_covariate_keys='c'.*12 NaN or infinite",
    ),
    (
        "text continuous",
        "c",
        np.array(["a"] * N),
        {"continuous_covariate_keys": ["c"]},
        "must hold numbers",
    ),
    (
        "infinite size factor",
        "s",
        np.where(np.arange(N) == 0, np.inf, 1.0),
        {"size_factor_key": "s"},
        r"size_factor_key='s'.*1 NaN or infinite",
    ),
    (
        "zero size factor",
        "s",
        np.where(np.arange(N) % 6 == 0, 0.0, 1.0),
        {"size_factor_key": "s"},
        r"size_factor_key='s'.*10 values <= 0",
    ),
    (
        "negative size factor",
        "s",
        np.where(np.arange(N) == 1, -2.0, 1.0),
        {"size_factor_key": "s"},
        "greater than 0",
    ),
]


@pytest.mark.parametrize(("case", "column", "values", "keys", "message"), CASES)
def test_bad_obs_values_refused_before_registration(base, case, column, values, keys, message):
    adata = _with(base, column, values)
    before_obs, before_uns = list(adata.obs.columns), set(adata.uns)
    with pytest.raises(ValueError, match=message) as info:
        LinearVI.setup_anndata(adata, layer="counts", **keys)
    assert "\n" not in str(info.value), case
    assert list(adata.obs.columns) == before_obs
    assert set(adata.uns) == before_uns


def test_integer_and_boolean_batches_still_work(base):
    for values in (np.arange(N) % 2, np.arange(N) % 2 == 0):
        adata = _with(base, "b", values)
        LinearVI.setup_anndata(adata, layer="counts", batch_key="b")
        assert LinearVI(adata, n_latent=2).summary_stats.n_batch == 2


def test_mudata_obs_values_are_checked():
    mdata = glassvi.data.simulate(n_cells=N, n_genes=60, n_peaks=40, modality="multiome", seed=1)
    mdata.obs["sf"] = np.where(np.arange(N) == 0, 0.0, 1.0)
    before = list(mdata.obs.columns)
    with pytest.raises(ValueError, match=r"size_factor_key='sf' \(mdata.obs\['sf'\]\)"):
        LinearVI.setup_mudata(mdata, size_factor_key="sf")
    mdata["rna"].obs["lab"] = np.arange(N) % 2
    with pytest.raises(ValueError, match=r"mdata\['rna'\].obs\['lab'\].*must be strings"):
        LinearVI.setup_mudata(
            mdata, labels_key="lab", modalities={"rna_layer": "rna", "labels_key": "rna"}
        )
    assert list(mdata.obs.columns) == before
    assert not any(c.startswith("_scvi") for c in mdata["rna"].obs.columns)


def test_failed_registration_leaves_nothing_behind(base, monkeypatch):
    adata = base.copy()
    before_obs, before_uns = list(adata.obs.columns), set(adata.uns)
    from scvi.data import fields

    def fail(self, adata):
        raise RuntimeError("late failure")

    # fail after the batch field has written its _scvi_batch column
    monkeypatch.setattr(fields.LabelsWithUnlabeledObsField, "register_field", fail)
    with pytest.raises(RuntimeError, match="late failure"):
        LinearVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    assert list(adata.obs.columns) == before_obs
    assert set(adata.uns) == before_uns


def test_batch_size_must_be_positive(base):
    adata = base.copy()
    LinearVI.setup_anndata(adata, layer="counts")
    model = LinearVI(adata, n_latent=2)
    model.is_trained_ = True
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
            model.train(max_epochs=1, batch_size=bad, **TRAIN_KW)
        with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
            model.get_latent_representation(batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
            model.explain(batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
            model.explain(method="saliency", batch_size=bad)


@pytest.mark.parametrize("n_cells", [1, 2])
def test_too_few_cells_to_train(base, n_cells):
    adata = base[:n_cells].copy()
    LinearVI.setup_anndata(adata, layer="counts")
    model = LinearVI(adata, n_latent=2)
    with pytest.raises(ValueError, match=f"{n_cells} cells.*at least 3 cells"):
        model.train(max_epochs=1, **TRAIN_KW)


def test_one_label_is_announced(base, caplog):
    adata = _with(base, "lab", "only")
    LinearVI.setup_anndata(adata, layer="counts", labels_key="lab")
    with caplog.at_level(logging.WARNING, logger="glassvi"):
        model = LinearVI(adata, n_latent=2)
    assert not model.has_classifier
    assert "labels_key='lab' has 1 label" in caplog.text


def test_weights_explanation_refuses_post_hoc_arguments(base):
    adata = base.copy()
    LinearVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    model = LinearVI(adata, n_latent=2)
    model.is_trained_ = True
    with pytest.raises(ValueError, match="target only apply to post-hoc methods"):
        model.explain(target="labels")
    with pytest.raises(ValueError, match="target, groupby only apply"):
        model.explain(method="weights", target=lambda z: z[:, 0], groupby="batch")
    assert "X_linearvi" not in adata.obsm
    model.explain(target="latent")  # the default is accepted when spelt out
    assert "X_linearvi" in adata.obsm
