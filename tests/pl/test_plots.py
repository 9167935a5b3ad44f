import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import glassvi

from .conftest import assert_png_not_blank


def _snapshot(adata):
    return (
        list(adata.obs.columns),
        sorted(adata.obsm.keys()),
        sorted(adata.varm.keys()),
        sorted(adata.uns.keys()),
    )


# ----------------------------------------------------------------------------- activity
def test_activity_renders_and_leaves_adata_untouched(rna_trained, tmp_path):
    adata, _ = rna_trained
    before = _snapshot(adata)
    path = tmp_path / "activity.png"
    axes = glassvi.pl.activity(
        adata, ["factor_0", "factor_1"], color="cell_type", show=False, save=path
    )
    assert_png_not_blank(path)
    assert [ax.get_title() for ax in axes] == ["factor_0", "factor_1", "cell_type"]
    # the colors of the first panel are the factor's values, in the user's cell order
    values = axes[0].collections[0].get_array()
    expected = adata.obsm["X_linearvi"][
        :, list(adata.uns["linearvi"]["columns"]).index("factor_0")
    ]
    np.testing.assert_allclose(np.sort(np.asarray(values)), np.sort(expected), rtol=1e-6)
    assert _snapshot(adata) == before


def test_activity_program_key_and_single_panel(rna_trained, tmp_path):
    adata, _ = rna_trained
    name = adata.uns["programvi"]["columns"][0]
    ax = glassvi.pl.activity(adata, name, key="X_programvi", show=False, save=tmp_path / "a")
    assert (tmp_path / "a.png").exists()
    assert ax.get_title() == name


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"programs": "factor_0", "key": "X_nope"}, "X_nope"),
        ({"programs": "factor_99"}, "factor_99"),
        ({"programs": "factor_0", "basis": "tsne"}, "X_tsne"),
        ({"programs": "factor_0", "color": "no_column"}, "no_column"),
    ],
)
def test_activity_bad_keys(rna_trained, kwargs, missing):
    adata, _ = rna_trained
    with pytest.raises(KeyError, match=re.escape(missing)) as err:
        glassvi.pl.activity(adata, show=False, **kwargs)
    assert "available" in str(err.value)


def test_activity_of_label_attributions_names_the_latent_units():
    """The obsm entry's names are its cell_columns, even when its varm table (classes) has as
    many columns as there are latent units."""
    key = "linearvi_integrated_gradients_labels"
    adata = ad.AnnData(np.zeros((4, 3), dtype=np.float32))
    adata.obsm["X_umap"] = np.arange(8, dtype=float).reshape(4, 2)
    adata.obsm[key] = np.arange(8, dtype=np.float32).reshape(4, 2)
    adata.varm[key] = np.zeros((3, 2), dtype=np.float32)
    adata.uns[key] = {
        "varm_keys": {"mean": key},
        "columns": ["B cells", "NK/NKT"],
        "cell_columns": ["factor_0", "factor_1"],
    }
    ax = glassvi.pl.activity(adata, "factor_1", key=key, show=False)
    np.testing.assert_array_equal(ax.collections[0].get_array(), [1, 3, 5, 7])
    assert list(glassvi.tl.varm_df(adata, key).columns) == ["B cells", "NK/NKT"]


# ----------------------------------------------------------------------------- top features
def test_top_features_orders_by_magnitude(rna_trained, tmp_path):
    adata, _ = rna_trained
    path = tmp_path / "top.png"
    ax = glassvi.pl.top_features(
        adata, "factor_2", key="linearvi_loadings", n=7, show=False, save=path
    )
    assert_png_not_blank(path)
    expected = glassvi.tl.varm_df(adata, "linearvi_loadings")["factor_2"].abs().nlargest(7).index
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(expected)  # first tick (drawn at the top) is the largest
    y = [t.get_position()[1] for t in ax.get_yticklabels()]
    assert y == sorted(y, reverse=True)


def test_top_features_marks_mask_members(rna_trained, tmp_path):
    adata, _ = rna_trained
    weights = adata.varm["programvi_weights"]
    program = weights.columns[weights.abs().sum().argmax()]
    ax = glassvi.pl.top_features(
        adata, program, key="programvi_weights", n=10, sort_by="positive", show=False
    )
    labels = [t.get_text() for t in ax.get_yticklabels()]
    colors = ax.collections[-1].get_facecolors()  # the dots, in the order of the labels
    member = adata.varm["programs"].loc[labels, program].to_numpy()
    red = colors[:, 0] > 0.6
    np.testing.assert_array_equal(red, member)
    assert member.any()


def test_top_features_several_programs(rna_trained, tmp_path):
    adata, _ = rna_trained
    path = tmp_path / "many.png"
    axes = glassvi.pl.top_features(
        adata, ["factor_0", "factor_1", "factor_2"], n=5, ncols=2, show=False, save=path
    )
    assert_png_not_blank(path)
    assert [ax.get_title() for ax in axes] == ["factor_0", "factor_1", "factor_2"]


def test_top_features_long_names_do_not_overlap(rna_trained, tmp_path):
    adata, _ = rna_trained
    data = adata.copy()
    weights = data.varm["programvi_weights"]
    long = [f"HALLMARK_INTERFERON_GAMMA_RESPONSE_VARIANT_{i}" for i in range(weights.shape[1])]
    data.varm["programvi_weights"] = weights.set_axis(long, axis=1)
    data.varm["programs"] = data.varm["programs"].set_axis(long, axis=1)
    axes = glassvi.pl.top_features(
        data, long[:6], key="programvi_weights", n=6, ncols=3, show=False, save=tmp_path / "t"
    )
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in axes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    # nothing of a name is lost
    assert all(ax.get_title().replace("\n", "") == name for ax, name in zip(axes, long))
    # titles stay clear of the tick labels of the panel below them
    for top, below in zip(axes[:3], axes[3:]):
        labels = [t.get_window_extent(renderer) for t in top.get_xticklabels() if t.get_text()]
        assert all(not below.title.get_window_extent(renderer).overlaps(lb) for lb in labels)


def test_top_features_bad_keys(rna_trained):
    adata, _ = rna_trained
    with pytest.raises(KeyError, match="nope_weights") as err:
        glassvi.pl.top_features(adata, "factor_0", key="nope_weights", show=False)
    assert "linearvi_loadings" in str(err.value)  # lists what is available
    with pytest.raises(KeyError, match="factor_42"):
        glassvi.pl.top_features(adata, "factor_42", key="linearvi_loadings", show=False)
    with pytest.raises(KeyError, match="my_mask"):
        glassvi.pl.top_features(adata, "factor_0", mask_key="my_mask", show=False)


# ----------------------------------------------------------------------------- heatmap
@pytest.mark.parametrize("kind", ["heatmap", "dotplot"])
def test_attribution_heatmap(rna_trained, tmp_path, kind):
    adata, _ = rna_trained
    path = tmp_path / f"{kind}.png"
    key = "linearvi_ig_cell_type"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's about grid() line properties
        ax = glassvi.pl.attribution_heatmap(adata, key, n_top=3, kind=kind, show=False, save=path)
    assert_png_not_blank(path)
    table = adata.varm[key]
    groups = [t.get_text() for t in ax.get_yticklabels()]
    assert groups == list(table.columns)
    features = [t.get_text() for t in ax.get_xticklabels()]
    # each group's features are its evidence for it: the largest signed values
    first = table[groups[0]].nlargest(3).index
    assert features[:3] == list(first)
    assert len(features) <= 3 * len(groups) and len(set(features)) == len(features)


def test_attribution_heatmap_signed_and_absolute():
    adata = ad.AnnData(np.zeros((2, 4), dtype=np.float32))
    adata.var_names = ["marker", "against", "small", "other"]
    adata.varm["attr"] = pd.DataFrame(
        {"A": [1.0, -5.0, 0.5, 0.1], "B": [0.0, 2.0, -0.1, 0.3]}, index=adata.var_names
    )

    def drawn(**kw):
        ax = glassvi.pl.attribution_heatmap(adata, "attr", n_top=1, show=False, **kw)
        return [t.get_text() for t in ax.get_xticklabels()]

    assert drawn() == ["marker", "against"]
    # by magnitude, the strongest evidence against A leads A's features
    assert drawn(absolute=True) == ["against", "other"]


def test_attribution_heatmap_bad_keys(rna_trained):
    adata, _ = rna_trained
    with pytest.raises(KeyError, match="linearvi_ig_batch") as err:
        glassvi.pl.attribution_heatmap(adata, "linearvi_ig_batch", show=False)
    assert "linearvi_ig_cell_type" in str(err.value)
    with pytest.raises(KeyError, match="type_99"):
        glassvi.pl.attribution_heatmap(
            adata, "linearvi_ig_cell_type", groups=["type_99"], show=False
        )


# ----------------------------------------------------------------------------- differential
def test_differential_from_adata_and_frame(rna_trained, tmp_path):
    adata, _ = rna_trained
    path = tmp_path / "volcano.png"
    ax = glassvi.pl.differential(adata, n_labels=3, show=False, save=path)
    assert_png_not_blank(path)
    table = adata.uns["programvi_differential"]
    labelled = {t.get_text() for t in ax.texts}
    significant = set(table.loc[table["is_significant"], "program"])
    assert len(labelled) == 3 and labelled <= significant

    as_dict = {c: table[c].tolist() for c in table.columns}  # as read back from .h5ad
    ax2 = glassvi.pl.differential(pd.DataFrame(as_dict), show=False, save=tmp_path / "v2.png")
    assert_png_not_blank(tmp_path / "v2.png")
    assert len(ax2.collections) == 2


def test_differential_bad_keys(rna_trained):
    adata, _ = rna_trained
    with pytest.raises(KeyError, match="programvi_de") as err:
        glassvi.pl.differential(adata, key="programvi_de", show=False)
    assert "programvi_differential" in str(err.value)
    broken = adata.uns["programvi_differential"].drop(columns="effect_size")
    with pytest.raises(KeyError, match="effect_size"):
        glassvi.pl.differential(broken, show=False)


# ----------------------------------------------------------------------------- history
def test_history(rna_trained, tmp_path):
    _, model = rna_trained
    path = tmp_path / "history.png"
    axes = glassvi.pl.history(model, show=False, save=path)
    assert_png_not_blank(path)
    assert [ax.get_title() for ax in axes][:3] == ["elbo", "reconstruction loss", "kl local"]
    train_line = axes[0].get_lines()[0]
    np.testing.assert_allclose(
        train_line.get_ydata(), model.history["elbo_train"].to_numpy(dtype=float).ravel()
    )
    assert [line.get_label() for line in axes[0].get_lines()] == ["train", "validation"]


def test_history_errors(rna_trained):
    _, model = rna_trained
    with pytest.raises(KeyError, match="accuracy"):
        glassvi.pl.history(model, ["elbo", "accuracy"], show=False)
    with pytest.raises(ValueError, match="train it first"):
        glassvi.pl.history({}, show=False)


# ----------------------------------------------------------------------------- multiome
def test_multiome_program(multiome_trained, tmp_path):
    mdata, _ = multiome_trained
    path = tmp_path / "multiome.png"
    ax_genes, ax_peaks = glassvi.pl.multiome_program(
        mdata, "factor_1", n_genes=8, show=False, save=path
    )
    assert_png_not_blank(path)
    genes = [t.get_text() for t in ax_genes.get_yticklabels()]
    atac = mdata["atac"]
    n_linked = int(atac.var["gene"].isin(genes).sum())
    points = ax_peaks.collections[0].get_offsets()
    assert len(points) == n_linked > 0
    weights = glassvi.tl.varm_df(mdata, "linearvi_loadings", modality="atac")["factor_1"]
    linked = weights[atac.var["gene"].isin(genes).to_numpy()]
    np.testing.assert_allclose(np.sort(points[:, 0]), np.sort(linked.to_numpy()), rtol=1e-6)


def test_multiome_program_with_links_frame(multiome_trained, tmp_path):
    mdata, _ = multiome_trained
    atac = mdata["atac"]
    links = pd.DataFrame({"peak": atac.var_names, "gene": atac.var["gene"], "distance": 1000})
    path = tmp_path / "links.png"
    glassvi.pl.multiome_program(mdata, "factor_0", links=links, show=False, save=path)
    assert_png_not_blank(path)


def test_multiome_program_without_peak_weights(multiome_trained, tmp_path):
    import warnings

    mdata, _ = multiome_trained
    data = mdata.copy()
    data["atac"].varm["linearvi_loadings"][:, 1] = 0.0  # factor_1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ax_peaks = glassvi.pl.multiome_program(data, "factor_1", show=False)
    low, high = ax_peaks.get_xlim()
    assert low < 0 < high


def test_multiome_program_bad_keys(multiome_trained, rna_trained):
    mdata, _ = multiome_trained
    with pytest.raises(KeyError, match="factor_9"):
        glassvi.pl.multiome_program(mdata, "factor_9", show=False)
    with pytest.raises(KeyError, match="peak_links"):
        glassvi.pl.multiome_program(mdata, "factor_0", links="peak_links", show=False)
    with pytest.raises(KeyError, match="'prot'"):
        glassvi.pl.multiome_program(mdata, "factor_0", atac_modality="prot", show=False)
    with pytest.raises(TypeError, match="MuData"):
        glassvi.pl.multiome_program(rna_trained[0], "factor_0", show=False)


def test_multiome_top_features_per_modality(multiome_trained, tmp_path):
    mdata, _ = multiome_trained
    ax = glassvi.pl.top_features(mdata, "factor_0", modality="atac", n=6, show=False)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert set(labels) <= set(mdata["atac"].var_names)
    with pytest.raises(KeyError, match="atac:linearvi_loadings"):
        glassvi.pl.top_features(mdata, "factor_0", key="programvi_weights", show=False)
