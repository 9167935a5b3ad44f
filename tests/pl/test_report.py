import base64
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
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
    csvs = {"programs", "program_by_group", "differential_programvi_differential"}
    assert set(paths) == expected | {f"csv:{name}" for name in csvs}
    for path in paths.values():
        assert path.parent == tmp_path / "out"
        if path.suffix == ".png":
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
    loadings = glassvi.tl.varm_df(adata, "linearvi_loadings")
    latent = pd.DataFrame(adata.obsm["X_linearvi"], columns=adata.uns["linearvi"]["columns"])
    most_variable = latent.std().idxmax()
    top_gene = loadings[most_variable].idxmax()
    first_row = page.split("<td>" + most_variable + "</td>", 1)[1].split("</tr>", 1)[0]
    assert top_gene in first_row
    # attributions: signed evidence for each group and against it, in separate columns
    attribution = adata.varm["linearvi_ig_cell_type"]
    group = attribution.columns[0]
    row = page.split("evidence against</th>", 1)[1].split(f"<td>{group}</td>", 1)[1]
    evidence_for, evidence_against = row.split("</tr>", 1)[0].split("</td>")[:2]
    assert attribution[group].idxmax() in evidence_for
    assert attribution[group].idxmax() not in evidence_against
    assert attribution[group].idxmin() in evidence_against


def test_report_is_a_record(rna_trained, tmp_path):
    import scvi

    adata, model = rna_trained
    data = adata.copy()
    names = list(data.uns["linearvi"]["columns"])
    evidence = pd.DataFrame(
        {
            "pvalue": np.linspace(0.001, 0.5, len(names)),
            "fdr": np.linspace(0.01, 0.6, len(names)),
            "significant": [True] + [False] * (len(names) - 1),
            "effective_genes": np.arange(len(names)) + 3.0,
            "n_genes": np.arange(len(names)) + 10,
        },
        index=names[::-1],
    )
    data.uns["linearvi"]["evidence"] = evidence
    data.uns["linearvi_ig_cell_type"] = {
        "method": "integrated_gradients",
        "target": "labels",
        "baseline": "zeros",
        "n_steps": 20,
        "convergence": {"mean_abs_delta": 0.0123, "relative_delta": 0.004},
    }
    run_info = {"command": "glassvi run sim.h5ad --epochs 4", "input": "sim.h5ad", "seed": 7}
    paths = glassvi.pl.write_report(data, model, tmp_path, run_info=run_info)
    page = paths["report"].read_text()
    # versions, seed, command and input
    assert f"<td>scvi-tools</td><td>{scvi.__version__}</td>" in page
    assert "<td>seed</td><td>7</td>" in page
    assert "glassvi run sim.h5ad --epochs 4" in page and "<td>input</td><td>sim.h5ad</td>" in page
    # evidence, sorted by p-value, and attribution settings with convergence
    section = page.split('id="evidence"', 1)[1].split("</section>", 1)[0]
    assert section.index(f"<td>{names[-1]}</td>") < section.index(f"<td>{names[0]}</td>")
    assert "effective_genes" in section and "program_evidence.csv" in section
    section = page.split('id="attr-linearvi_ig_cell_type"', 1)[1].split("</section>", 1)[0]
    assert "<td>n_steps</td><td>20</td>" in section and "0.0123" in section
    # figures sit in their sections
    training = page.split('id="training"', 1)[1].split("</section>", 1)[0]
    assert training.count("<img") == 1
    programs = page.split('id="programs"', 1)[1].split("</section>", 1)[0]
    assert programs.count("<img") == 2  # embedding and top features
    # the CSVs hold the full tables
    by_group = pd.read_csv(paths["csv:program_by_group"], index_col=0)
    assert by_group.shape == (len(names), data.obs["cell_type"].nunique())
    assert list(pd.read_csv(paths["csv:program_evidence"], index_col=0).index) == names[::-1]
    programs_csv = pd.read_csv(paths["csv:programs"], index_col=0)
    assert set(programs_csv.index) == set(names) and "top_rna" in programs_csv.columns


def test_rankings_of_a_shown_attribution_are_not_repeated(rna_trained, tmp_path):
    adata, model = rna_trained
    data = adata.copy()
    glassvi.tl.rank_features(data, "linearvi_ig_cell_type")
    glassvi.tl.rank_features(data, "linearvi_ig_cell_type", direction="against")
    glassvi.tl.rank_features(data, "linearvi_ig_cell_type", absolute=True, key_added="by_size")
    paths = glassvi.pl.write_report(data, model, tmp_path)
    page = paths["report"].read_text()
    # the attribution's section already lists evidence for and against each group: its
    # rankings are downloads there, not sections of their own
    section = page.split('id="attr-linearvi_ig_cell_type"', 1)[1].split("</section>", 1)[0]
    assert "ranking_rank_features.csv" in section
    assert "ranking_rank_features_against.csv" in section
    assert 'id="rank-rank_features' not in page
    # a ranking that the section does not show (by absolute value) keeps its own section
    assert 'id="rank-by_size"' in page
    ranked = pd.read_csv(paths["csv:ranking_rank_features"])
    assert set(ranked["group"]) == set(data.varm["linearvi_ig_cell_type"].columns)


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
