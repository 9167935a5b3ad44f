"""Saved models load without running code; features are matched by name."""

import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import glassvi
from glassvi.model import LinearVI, ProgramVI, UnsafeModelFileError

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


class _Payload:
    """Unpickling this writes a marker file: proof that loading ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    adata = glassvi.data.simulate(n_cells=150, n_genes=60, seed=5)
    LinearVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    model = LinearVI(adata, n_latent=3)
    model.train(max_epochs=2, **TRAIN_KW)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(path)
    return adata, model, path


def _query(adata, perm=None):
    query = adata.copy()
    for key in [k for k in query.uns if k.startswith("_scvi")]:
        del query.uns[key]
    query.obs = query.obs[["cell_type", "batch"]].copy()
    query.obs["batch"] = "query_batch"
    return query if perm is None else query[:, perm].copy()


def _crafted(saved_path, tmp_path, marker):
    content = torch.load(saved_path / "model.pt", weights_only=False)
    content["attr_dict"]["payload_"] = _Payload(marker)
    evil = tmp_path / "evil"
    shutil.copytree(saved_path, evil)
    torch.save(content, evil / "model.pt")
    return evil


def test_saved_file_needs_only_allowed_types(saved):
    _, _, path = saved
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path / "model.pt")
    assert set(unsafe) <= {
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
        "builtins.bytes",
    }
    assert not any(name.startswith(("pandas", "collections")) for name in unsafe)


def test_round_trip_restores_history_and_latent(saved):
    adata, model, path = saved
    loaded = LinearVI.load(path, adata=adata.copy())
    assert isinstance(loaded.history["elbo_train"], pd.DataFrame)
    pd.testing.assert_frame_equal(loaded.history["elbo_train"], model.history["elbo_train"])
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )
    assert LinearVI.load_registry(path)["setup_args"]["labels_key"] == "cell_type"


def test_crafted_file_is_refused_and_runs_nothing(saved, tmp_path):
    adata, _, path = saved
    marker = tmp_path / "payload_ran"
    evil = _crafted(path, tmp_path, marker)
    query = _query(adata)
    attempts = {
        "load": lambda: LinearVI.load(evil, adata=adata.copy()),
        "load_query_data": lambda: LinearVI.load_query_data(query, str(evil)),
        "load_query_data (Path)": lambda: LinearVI.load_query_data(query, evil),
        "prepare_query_anndata": lambda: LinearVI.prepare_query_anndata(query.copy(), str(evil)),
        "load_registry": lambda: LinearVI.load_registry(evil),
    }
    for name, attempt in attempts.items():
        with pytest.raises(UnsafeModelFileError, match=r"model\.pt.*needs io\.open") as info:
            attempt()
        assert "trusted=True" in str(info.value), name
        assert not marker.exists(), f"{name} ran the payload"
    # the user can opt in for files they trust
    LinearVI.load(evil, adata=adata.copy(), trusted=True)
    assert marker.exists()


def test_programvi_query_from_directory_is_refused(tmp_path):
    adata = glassvi.data.simulate(n_cells=120, n_genes=60, n_programs=4, seed=2)
    names = adata.uns["simulation"]["program_names"]
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = ProgramVI(adata)
    model.train(max_epochs=1, **TRAIN_KW)
    model.save(tmp_path / "ref")
    marker = tmp_path / "payload_ran"
    evil = _crafted(tmp_path / "ref", tmp_path, marker)
    query = adata.copy()
    query.obs["batch"] = "q"
    with pytest.raises(UnsafeModelFileError):
        ProgramVI.load_query_data(query, str(evil))
    assert not marker.exists()


def test_empty_truncated_and_foreign_files_get_clear_errors(saved, tmp_path):
    adata, _, path = saved
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    model_file = broken / "model.pt"
    data = (path / "model.pt").read_bytes()
    model_file.write_bytes(b"")
    with pytest.raises(ValueError, match=r"model\.pt' is empty \(0 bytes\)"):
        LinearVI.load(broken, adata=adata.copy())
    model_file.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated, damaged or not a model file"):
        LinearVI.load(broken, adata=adata.copy())
    torch.save({"weights": torch.zeros(2)}, model_file)
    with pytest.raises(ValueError, match="not a saved scvi-tools/glassvi model"):
        LinearVI.load(broken, adata=adata.copy())
    with open(model_file, "wb") as handle:
        pickle.dump([1, 2, 3], handle, protocol=4)
    with pytest.raises(UnsafeModelFileError, match="content it cannot check"):
        LinearVI.load(broken, adata=adata.copy())
    with pytest.raises(FileNotFoundError, match="not found"):
        LinearVI.load(tmp_path / "nowhere", adata=adata.copy())


def test_reordered_features_give_identical_correctly_labelled_results(saved):
    adata, model, _ = saved
    perm = np.random.default_rng(0).permutation(adata.n_vars)
    shuffled = adata[:, perm].copy()
    for key in [k for k in shuffled.uns if k.startswith("_scvi")]:
        del shuffled.uns[key]
    before = shuffled.copy()
    np.testing.assert_allclose(
        model.get_latent_representation(shuffled), model.get_latent_representation(), rtol=1e-5
    )
    # the object passed in is not changed (no reordering, no registration columns)
    assert shuffled.var_names.equals(before.var_names)
    assert list(shuffled.obs.columns) == list(before.obs.columns)
    model.explain(shuffled)
    loadings = glassvi.tl.varm_df(shuffled, "linearvi_loadings")
    assert loadings.index.equals(shuffled.var_names)
    pd.testing.assert_frame_equal(loadings.loc[adata.var_names], model.get_loadings())
    result = model.explain(shuffled, method="saliency", inplace=False, progress_bar=False)
    reference = model.explain(method="saliency", inplace=False, progress_bar=False)
    key = "linearvi_saliency_latent"
    # computed in the model's feature order; written in the order of the object passed in
    np.testing.assert_allclose(result["varm"]["rna"][key], reference["varm"]["rna"][key])
    model.explain(shuffled, method="saliency", progress_bar=False)
    written = glassvi.tl.varm_df(shuffled, key)
    assert written.index.equals(shuffled.var_names)
    expected = pd.DataFrame(
        reference["varm"]["rna"][key],
        index=adata.var_names,
        columns=reference["uns"][key]["columns"],
    )
    pd.testing.assert_frame_equal(written.loc[adata.var_names], expected)
    # a copy with extra features is matched too; missing ones are named
    with pytest.raises(ValueError, match=r"lacks 3 of the model's 60 features: '"):
        model.get_latent_representation(adata[:, 3:].copy())


def test_load_and_query_with_reordered_features(saved):
    adata, model, path = saved
    perm = np.random.default_rng(1).permutation(adata.n_vars)
    shuffled = adata[:, perm].copy()
    for key in [k for k in shuffled.uns if k.startswith("_scvi")]:
        del shuffled.uns[key]
    loaded = LinearVI.load(path, adata=shuffled)
    assert loaded.adata.var_names.equals(adata.var_names)
    assert not shuffled.var_names.equals(adata.var_names)  # the user's object is untouched
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )
    query = _query(adata, perm)
    qmodel = LinearVI.load_query_data(query, str(path))
    assert qmodel.adata.var_names.equals(adata.var_names)
    with pytest.raises(ValueError, match="lacks 2 of the model's"):
        LinearVI.load_query_data(_query(adata)[:, 2:].copy(), str(path))


def test_programvi_activity_on_reordered_data():
    adata = glassvi.data.simulate(n_cells=120, n_genes=60, n_programs=4, seed=2)
    names = adata.uns["simulation"]["program_names"]
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    ProgramVI.setup_anndata(adata, layer="counts")
    model = ProgramVI(adata)
    model.train(max_epochs=1, **TRAIN_KW)
    shuffled = adata[:, ::-1].copy()
    for key in [k for k in shuffled.uns if k.startswith("_scvi")]:
        del shuffled.uns[key]
    pd.testing.assert_frame_equal(
        model.get_program_activity(shuffled), model.get_program_activity(), rtol=1e-5
    )
    model.explain(shuffled)
    weights = glassvi.tl.varm_df(shuffled, "programvi_weights")
    pd.testing.assert_frame_equal(weights.loc[adata.var_names], model.get_program_weights())


def test_save_is_atomic(saved, tmp_path, monkeypatch):
    _, model, _ = saved
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.pt").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "model.pt").read_bytes() == before
    assert os.listdir(tmp_path / "m") == ["model.pt"]
