import warnings

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from mudata import MuData  # noqa: E402

import glassvi  # noqa: E402

KEY = "linearvi_integrated_gradients_labels"
GROUPS = ["B cells", "CD4+/CD25 T", "NK"]


@pytest.fixture
def adata():
    rng = np.random.default_rng(0)
    data = ad.AnnData(rng.poisson(2.0, (60, 8)).astype(np.float32))
    data.var_names = ["MS4A1", "CD79A", "EEF1A1", "CD3E", "IL7R", "GNLY", "NKG7", "ACTB"]
    data.obs["cell_type"] = pd.Categorical(np.repeat(GROUPS, 20))
    # EEF1A1 and ACTB count strongly *against* B cells: large |attribution|, negative sign
    data.varm[KEY] = pd.DataFrame(
        {
            "B cells": [2.0, 1.5, -4.0, -0.5, -0.2, -0.1, 0.0, -3.0],
            "CD4+/CD25 T": [-1.0, -0.8, 0.3, 2.5, 1.8, -0.2, 0.1, np.nan],
            "NK": [-0.5, -0.6, 0.2, 0.1, -0.3, 3.0, 2.2, 0.4],
        },
        index=data.var_names,
    )
    data.uns[KEY] = {"method": "integrated_gradients", "target": "labels"}
    return data


def test_signed_for_ranking_leaves_out_features_that_count_against(adata):
    glassvi.tl.rank_features(adata, KEY, n_top=3, groupby="cell_type")
    top_b = list(adata.uns["rank_features"]["names"]["B cells"])
    assert top_b[:2] == ["MS4A1", "CD79A"]
    assert "EEF1A1" not in top_b and "ACTB" not in top_b
    # by |attribution| the housekeeping genes that count against B cells lead
    glassvi.tl.rank_features(adata, KEY, absolute=True, n_top=3, groupby="cell_type")
    assert list(adata.uns["rank_features_abs"]["names"]["B cells"])[:2] == ["EEF1A1", "ACTB"]
    glassvi.tl.rank_features(adata, KEY, direction="against", n_top=2, groupby="cell_type")
    against = adata.uns["rank_features_against"]
    assert list(against["names"]["B cells"]) == ["EEF1A1", "ACTB"]
    np.testing.assert_allclose(against["scores"]["B cells"], [-4.0, -3.0])
    assert against["params"]["direction"] == "against"


def test_scanpy_getters_and_plots_read_the_layout(adata):
    glassvi.tl.rank_features(adata, KEY, groupby="cell_type")
    params = adata.uns["rank_features"]["params"]
    assert params["groupby"] == "cell_type" and params["reference"] == "rest"
    assert params["method"] == "integrated_gradients" and params["key"] == KEY
    one = sc.get.rank_genes_groups_df(adata, "NK", key="rank_features")
    assert one["names"].tolist()[:2] == ["GNLY", "NKG7"]
    np.testing.assert_allclose(one["scores"].to_numpy()[:2], [3.0, 2.2])
    every = sc.get.rank_genes_groups_df(adata, None, key="rank_features")
    assert list(every["group"].cat.categories) == GROUPS and len(every) == 3 * 8
    # the missing score ranks last
    t_cells = every[every["group"] == "CD4+/CD25 T"]
    assert t_cells["names"].iloc[-1] == "ACTB" and np.isnan(t_cells["scores"].iloc[-1])
    sc.pl.rank_genes_groups(adata, key="rank_features", n_genes=3, show=False)
    sc.pl.rank_genes_groups_dotplot(adata, key="rank_features", n_genes=2, show=False)
    sc.pl.rank_genes_groups_heatmap(adata, key="rank_features", n_genes=2, show=False)
    plt.close("all")


def test_layout_survives_h5ad_and_groupby_comes_from_explain(adata, tmp_path):
    adata.uns[KEY]["labels_key"] = "cell_type"
    glassvi.tl.rank_features(adata, KEY, "NK", n_top=4)
    assert adata.uns["rank_features"]["params"]["groupby"] == "cell_type"
    table = adata.varm[KEY]  # stored as explain() stores it, so that h5ad takes the "/"
    adata.varm[KEY] = table.to_numpy()
    adata.uns[KEY].update(varm_keys={"mean": KEY}, columns=list(table.columns))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    table = sc.get.rank_genes_groups_df(back, "NK", key="rank_features")
    assert table["names"].tolist() == ["GNLY", "NKG7", "ACTB", "EEF1A1"]


def test_inplace_false_returns_a_table_and_writes_nothing(adata):
    table = glassvi.tl.rank_features(adata, KEY, ("B cells"), n_top=2, inplace=False)
    assert table.columns.tolist() == ["group", "names", "scores", "rank"]
    assert table["names"].tolist() == ["MS4A1", "CD79A"] and table["rank"].tolist() == [1, 2]
    assert "rank_features" not in adata.uns


def test_bad_arguments(adata):
    with pytest.raises(KeyError, match="not a column"):
        glassvi.tl.rank_features(adata, KEY, "Mono")
    with pytest.raises(KeyError, match="not in .varm"):
        glassvi.tl.rank_features(adata, "missing")
    with pytest.raises(ValueError, match="direction"):
        glassvi.tl.rank_features(adata, KEY, direction="up")
    with pytest.raises(ValueError, match="absolute"):
        glassvi.tl.rank_features(adata, KEY, absolute=True, direction="against")
    with pytest.raises(ValueError, match="n_top"):
        glassvi.tl.rank_features(adata, KEY, n_top=0)


def test_mudata_ranks_modalities_together_or_one(adata):
    atac = ad.AnnData(np.zeros((60, 2), np.float32))
    atac.var_names = ["chr1:1-10", "chr1:20-30"]
    atac.varm[KEY] = pd.DataFrame(
        {"B cells": [5.0, -1.0], "CD4+/CD25 T": [0.0, 0.0], "NK": [0.0, 9.0]},
        index=atac.var_names,
    )
    mdata = MuData({"rna": adata, "atac": atac})
    glassvi.tl.rank_features(mdata, KEY, n_top=2)
    ranked = mdata.uns["rank_features"]
    assert list(ranked["names"]["B cells"]) == ["chr1:1-10", "MS4A1"]
    assert list(ranked["modality"]["B cells"]) == ["atac", "rna"]
    glassvi.tl.rank_features(mdata, KEY, modality="rna", n_top=1)
    assert list(mdata["rna"].uns["rank_features"]["names"]["NK"]) == ["GNLY"]


def test_varm_df_names_the_columns_of_an_array_from_uns(adata):
    table = adata.varm[KEY]
    adata.varm[KEY] = table.to_numpy()
    with pytest.raises(TypeError, match="column names are not recorded"):
        glassvi.tl.varm_df(adata, KEY)
    adata.uns[KEY].update(varm_keys={"mean": KEY}, columns=list(table.columns))
    pd.testing.assert_frame_equal(glassvi.tl.varm_df(adata, KEY), table)
    ranked = glassvi.tl.rank_features(adata, KEY, "CD4+/CD25 T", n_top=2, inplace=False)
    assert ranked["names"].tolist() == ["CD3E", "IL7R"]
    with pytest.raises(KeyError, match="not in .varm"):
        glassvi.tl.varm_df(adata, "absent")
