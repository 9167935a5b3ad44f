import base64
import re

import matplotlib.pyplot as plt
import pytest

import glassvi

from .conftest import assert_png_not_blank


def _snapshot(data):
    return (list(data.obs.columns), sorted(data.obsm.keys()), sorted(data.uns.keys()))


def test_write_report_anndata(rna_trained, tmp_path):
    adata, model = rna_trained
    before = _snapshot(adata)
    user_figure = plt.figure()
    paths = glassvi.pl.write_report(adata, model, tmp_path / "out", title="Simulated RNA")
    assert _snapshot(adata) == before
    assert plt.get_fignums() == [user_figure.number]  # only its own figures are closed
    expected = {
        "history",
        "embedding",
        "top_features_rna",
        "attribution_linearvi_ig_cell_type",
        "differential_programvi_differential",
        "report",
    }
    assert set(paths) == expected
    for name, path in paths.items():
        assert path.parent == tmp_path / "out"
        if name != "report":
            assert_png_not_blank(path)

    page = paths["report"].read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(expected) - 1
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    # self-contained: no external stylesheet, script or image
    assert not re.search(r'<(link|script)\b|src="(?!data:)', page)
    assert "<h1>Simulated RNA</h1>" in page
    # summary tables: data, model, training, top programs and top attributed features
    assert "<td>cells</td><td>300</td>" in page
    assert "<td>class</td><td>LinearVI</td>" in page
    assert f"<td>epochs</td><td>{len(model.history['elbo_train'])}</td>" in page
    loadings = adata.varm["linearvi_loadings"]
    most_variable = adata.obsm["X_linearvi"].std().idxmax()
    top_gene = loadings[most_variable].idxmax()
    first_row = page.split("<td>" + most_variable + "</td>", 1)[1].split("</tr>", 1)[0]
    assert top_gene in first_row
    attribution = adata.varm["linearvi_ig_cell_type_abs"]
    group = attribution.columns[0]
    assert f"<td>{group}</td>" in page and attribution[group].idxmax() in page


def test_write_report_multiome_computes_umap(multiome_trained, tmp_path):
    mdata, model = multiome_trained
    before = _snapshot(mdata)
    paths = glassvi.pl.write_report(mdata, model, tmp_path)
    assert _snapshot(mdata) == before and "X_umap" not in mdata.obsm
    for name in ("embedding", "top_features_rna", "top_features_atac", "history"):
        assert_png_not_blank(paths[name])
    multiome = [p for n, p in paths.items() if n.startswith("multiome_")]
    assert len(multiome) == 1
    assert_png_not_blank(multiome[0])
    page = paths["report"].read_text()
    assert "features (atac)" in page and "<td>MuData</td>" in page


def test_write_report_needs_explain(tmp_path):
    adata = glassvi.data.simulate(n_cells=60, n_genes=40, seed=5)
    glassvi.model.LinearVI.setup_anndata(adata, layer="counts")
    model = glassvi.model.LinearVI(adata, n_latent=2)
    with pytest.raises(KeyError, match="linearvi"):
        glassvi.pl.write_report(adata, model, tmp_path / "r")
    assert not (tmp_path / "r").exists()
