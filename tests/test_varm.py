"""Per-program tables in ``.varm`` are plain arrays with their names in ``.uns``.

h5ad writes a DataFrame's columns as h5 keys, which may not hold a "/" (anndata warns and will
refuse it), yet 68 of the bundled GO BP names hold one ("GO:0000082 G1/S transition of mitotic
cell cycle"). These tests train ProgramVI on such names, write everything glassvi stores with
warnings as errors, read it back and look programs up by name in the read-back object, and in
the DataFrame form that earlier versions wrote.
"""

import warnings

import anndata as ad
import matplotlib
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import glassvi
from glassvi import _varm
from glassvi.model import ProgramVI

matplotlib.use("Agg")

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
IG = {"method": "integrated_gradients", "n_steps": 4, "progress_bar": False}
CELL_TYPES = ["L2/3 IT", "L4/5 IT", "Pvalb"]


@pytest.fixture(scope="module")
def go_names():
    names = [name for name in glassvi.data.go_bp() if "/" in name]
    assert len(names) == 68 and "GO:0000082 G1/S transition of mitotic cell cycle" in names
    return names


def _without_registration(adata):
    """A copy scvi-tools has not seen (no ``_scvi_*`` keys), as another session reads it."""
    adata = adata.copy()
    for key in [k for k in adata.uns if k.startswith("_scvi")]:
        del adata.uns[key]
    return adata


def _write(data, path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata: "Forward slashes will be disallowed ..."
        data.write(path)


def _named_tables(data, containers):
    """Every ``.varm`` entry glassvi wrote as a named DataFrame (not the simulated truth)."""
    return {
        (mod, key): glassvi.tl.varm_df(data, key, **({"modality": mod} if mod else {}))
        for mod, cont in containers.items()
        for key in cont.varm
        if not key.startswith("true_")
    }


@pytest.fixture(scope="module")
def go_trained(go_names):
    adata = glassvi.data.simulate(
        n_cells=160, n_genes=60, n_programs=4, n_cell_types=3, n_batches=2, seed=5
    )
    names = go_names[:4]
    truth = adata.varm["true_programs"]
    sets = {name: list(adata.var_names[truth[:, j]]) for j, name in enumerate(names)}
    glassvi.pp.add_programs(adata, sets, min_genes=1)
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.rename_categories(CELL_TYPES)
    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    model = ProgramVI(adata, classifier=True, n_denovo=0)  # only the named programs
    model.train(max_epochs=2, **TRAIN_KW)
    model.explain()
    model.explain(target="latent", groupby="cell_type", **IG)
    model.explain(target="labels", **IG)
    model.differential_programs("cell_type", n_samples=200)
    glassvi.tl.rank_features(adata, "programvi_integrated_gradients_labels", groupby="cell_type")
    return adata, model, names


def test_go_names_with_a_slash_round_trip_through_h5ad(go_trained, tmp_path):
    adata, model, names = go_trained
    # the masks and weights are arrays; their names are in .uns
    assert type(adata.varm["programs"]) is np.ndarray and adata.varm["programs"].dtype == bool
    assert type(adata.varm["programvi_weights"]) is np.ndarray
    before = _named_tables(adata, {None: adata})
    assert list(before[None, "programs"].columns) == names
    assert list(before[None, "programvi_weights"].columns) == names
    assert names[0] in before[None, "programvi_integrated_gradients_latent"].columns
    assert (
        f"L2/3 IT|{names[0]}" in before[None, "programvi_integrated_gradients_latent_by_cell_type"]
    )
    assert "L2/3 IT" in before[None, "programvi_integrated_gradients_labels"].columns

    path = tmp_path / "go.h5ad"
    _write(adata, path)
    back = ad.read_h5ad(path)
    assert _named_tables(back, {None: back}).keys() == before.keys()
    for (_, key), table in before.items():
        pd.testing.assert_frame_equal(glassvi.tl.varm_df(back, key), table, obj=key)
    pd.testing.assert_frame_equal(
        back.uns["programvi"]["evidence"], adata.uns["programvi"]["evidence"]
    )
    record = back.uns["programvi_differential"]
    pd.testing.assert_frame_equal(
        record["results"], adata.uns["programvi_differential"]["results"]
    )
    assert list(record["params"]["groups"]) == CELL_TYPES
    assert list(record["params"]["n_cells1"]) == [
        int((adata.obs["cell_type"] == c).sum()) for c in CELL_TYPES
    ]
    table = sc.get.rank_genes_groups_df(back, "L2/3 IT", key="programvi_differential")
    assert set(table["names"]) == set(names)

    # program-name lookups on the read-back object
    program = names[0]
    ax = glassvi.pl.top_features(back, program, n=5, show=False)
    assert ax.get_title().replace("\n", "") == program  # wrapped, never shortened
    member = before[None, "programs"].loc[[t.get_text() for t in ax.get_yticklabels()], program]
    np.testing.assert_array_equal(ax.collections[-1].get_facecolors()[:, 0] > 0.6, member)
    back.obsm["X_umap"] = np.asarray(back.obsm["X_programvi"])[:, :2]
    glassvi.pl.activity(back, [program], show=False)
    ranked = glassvi.tl.rank_features(
        back, "programvi_integrated_gradients_latent", program, n_top=3, inplace=False
    )
    assert (
        ranked["names"].tolist()
        == before[None, "programvi_integrated_gradients_latent"][program]
        .nlargest(3)
        .index.tolist()
    )
    paths = glassvi.pl.write_report(back, model, tmp_path / "report")
    assert "G1/S transition of mitotic cell cycle" in paths["report"].read_text()


def test_a_model_reads_the_mask_of_either_form(go_trained):
    adata, model, names = go_trained
    expected = model.get_latent_representation()
    # the array written by glassvi.pp, in data the model has not registered
    new = _without_registration(adata)
    np.testing.assert_allclose(model.get_latent_representation(new), expected, rtol=1e-5)
    # a DataFrame mask, as earlier versions wrote it and users may build it
    old = _without_registration(adata)
    old.varm["programs"] = glassvi.tl.varm_df(adata, "programs")
    del old.uns["programs"]
    np.testing.assert_allclose(model.get_latent_representation(old), expected, rtol=1e-5)
    pd.testing.assert_frame_equal(
        glassvi.tl.varm_df(old, "programs"), glassvi.tl.varm_df(adata, "programs")
    )
    # an array whose .uns record was dropped (e.g. anndata.concat without uns_merge): by position
    unnamed = _without_registration(adata)
    del unnamed.uns["programs"]
    np.testing.assert_allclose(model.get_latent_representation(unnamed), expected, rtol=1e-5)
    renamed = _without_registration(adata)
    renamed.uns["programs"]["names"] = np.asarray(names[::-1], dtype=object)
    with pytest.raises(ValueError, match="do not match the model's"):
        model.get_latent_representation(renamed)
    # registering the array form warns about nothing and gives the same names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProgramVI.setup_anndata(new, layer="counts")
    assert ProgramVI(new).program_names == names


def test_a_dataframe_mask_with_slash_names_is_accepted_with_a_warning(go_trained):
    adata, _, names = go_trained
    data = _without_registration(adata)
    data.varm["programs"] = glassvi.tl.varm_df(adata, "programs")
    with pytest.warns(UserWarning, match=r"4 program names holding a '/' \(e.g. 'GO:"):
        ProgramVI.setup_anndata(data, layer="counts")
    assert ProgramVI(data).program_names == names


def test_an_array_mask_without_names_is_numbered_with_a_warning(go_trained, caplog):
    adata, *_ = go_trained
    data = _without_registration(adata)
    del data.uns["programs"]
    ProgramVI.setup_anndata(data, layer="counts")
    assert "does not name its columns" in caplog.text
    assert ProgramVI(data).program_names == [f"program_{i}" for i in range(4)]


def test_query_copies_the_reference_mask_and_its_names(go_trained):
    adata, model, names = go_trained
    query = _without_registration(adata[adata.obs["batch"] == "batch_1"])
    query.obs["batch"] = "batch_q"
    del query.varm["programs"], query.uns["programs"]
    qmodel = ProgramVI.load_query_data(query, model)
    assert type(query.varm["programs"]) is np.ndarray
    assert list(query.uns["programs"]["names"]) == names
    assert qmodel.program_names == names


def test_go_names_with_a_slash_round_trip_through_h5mu(go_names, tmp_path):
    mdata = glassvi.data.simulate(
        n_cells=120, n_genes=80, n_peaks=160, n_programs=3, modality="multiome", seed=4
    )
    names = go_names[4:7]
    truth = mdata["rna"].varm["true_programs"]
    sets = {n: list(mdata["rna"].var_names[truth[:, i]]) for i, n in enumerate(names)}
    glassvi.pp.add_programs(mdata["rna"], sets, min_genes=1)
    glassvi.pp.add_peak_programs(mdata, links="gene")
    ProgramVI.setup_mudata(mdata, batch_key="batch")
    model = ProgramVI(mdata, n_denovo=0)  # only the named programs
    model.train(max_epochs=1, **TRAIN_KW)
    model.explain()
    model.explain(target="latent", **IG)
    before = _named_tables(mdata, dict(mdata.mod))
    assert list(before["atac", "programs"].columns) == names
    assert list(before["atac", "programvi_weights"].columns) == names

    path = tmp_path / "go.h5mu"
    with md.set_options(pull_on_update=False):
        _write(mdata, path)
        back = md.read_h5mu(path)
    for (mod, key), table in before.items():
        pd.testing.assert_frame_equal(glassvi.tl.varm_df(back, key, modality=mod), table)
    atac = before["atac", "programvi_weights"][names[0]]
    _, ax_peaks = glassvi.pl.multiome_program(back, names[0], show=False)
    if len(ax_peaks.collections):
        shown = np.sort(ax_peaks.collections[0].get_offsets()[:, 0])
        assert np.isin(shown, atac.to_numpy()).all()
    assert glassvi.tl.varm_df(back, "programvi_weights", modality="rna").shape[1] == 3


def test_stored_columns_find_every_kind_of_record():
    uns = {
        "programs": {"names": ["G1/S transition", "apoptosis"]},
        "programvi": {"weights_key": "programvi_weights", "columns": ["a/b", "c"]},
        "ig": {"varm_keys": {"mean": "ig", "group_mean": "ig_by_g"}, "columns": ["x"]},
    }
    uns["ig"]["group_columns"] = ["g1|x", "g2|x"]
    assert _varm.stored_columns(uns, "programs", 2) == ["G1/S transition", "apoptosis"]
    assert _varm.stored_columns(uns, "programs", 3) is None  # another length: not its names
    assert _varm.stored_columns(uns, "programvi_weights", 2) == ["a/b", "c"]
    assert _varm.stored_columns(uns, "ig", 1) == ["x"]
    assert _varm.stored_columns(uns, "ig_by_g", 2) == ["g1|x", "g2|x"]
    assert _varm.stored_columns(uns, "other", 2) is None
    assert _varm.has_slash(["G1/S", "S"]) == ["G1/S"]
