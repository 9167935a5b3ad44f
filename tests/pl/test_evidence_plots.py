"""Program evidence in the titles of pl.top_features and pl.activity."""

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pandas as pd

import glassvi


def _adata():
    rng = np.random.default_rng(0)
    names = ["GOOD", "ONE_GENE", "WEAK", "denovo_0"]
    genes = [f"g{i}" for i in range(20)]
    adata = ad.AnnData(np.zeros((30, 20), dtype=np.float32), var=pd.DataFrame(index=genes))
    adata.obs_names = [f"c{i}" for i in range(30)]
    adata.obsm["X_programvi"] = pd.DataFrame(
        rng.random((30, 4)), index=adata.obs_names, columns=names
    )
    adata.obsm["X_umap"] = rng.normal(size=(30, 2))
    adata.varm["programvi_weights"] = pd.DataFrame(rng.random((20, 4)), index=genes, columns=names)
    evidence = pd.DataFrame(
        {
            "fdr": [0.004, 0.03, 0.8],
            "significant": [True, True, False],
            "effective_genes": [11.2, 1.1, 6.0],
            "top_gene": ["g1", "g2", "g3"],
        },
        index=pd.Index(names[:3], name="program"),
    )
    adata.uns["programvi"] = {
        "latent_key": "X_programvi",
        "weights_key": "programvi_weights",
        "evidence": evidence,
    }
    return adata


def test_top_features_and_activity_show_evidence():
    adata = _adata()
    axes = glassvi.pl.top_features(
        adata, ["GOOD", "ONE_GENE", "WEAK", "denovo_0"], show=False, show_evidence=True
    )
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "GOOD\nq 0.004, 11.2 effective genes"
    assert titles[1] == "ONE_GENE\nq 0.03, 1.1 effective genes (1-2 genes: g2)"
    assert titles[2].endswith("(not supported)")
    assert titles[3] == "denovo_0"  # no evidence for de novo units
    plain = glassvi.pl.top_features(adata, "GOOD", show=False)
    assert plain.get_title() == "GOOD"
    axes = glassvi.pl.activity(adata, ["GOOD", "WEAK"], show=False, show_evidence=True)
    assert axes[0].get_title() == "GOOD\nq 0.004, 11.2 effective genes"
    assert "not supported" in axes[1].get_title()
    # without a stored evidence table the titles stay as they are
    del adata.uns["programvi"]["evidence"]
    ax = glassvi.pl.activity(adata, "GOOD", show=False, show_evidence=True)
    assert ax.get_title() == "GOOD"


def test_report_lists_programs_by_evidence(tmp_path):
    from glassvi.pl._report import _program_rows, _rank_by_evidence

    adata = _adata()
    evidence = adata.uns["programvi"]["evidence"].assign(pvalue=[0.001, 0.01, 0.7])
    latent = adata.obsm["X_programvi"]
    by_spread = ["WEAK", "denovo_0", "ONE_GENE", "GOOD"]
    order = _rank_by_evidence(by_spread, evidence)
    assert order == ["GOOD", "ONE_GENE", "WEAK", "denovo_0"]
    weights = {"rna": adata.varm["programvi_weights"]}
    header, rows = _program_rows(latent, weights, order, None, 3, evidence)
    assert header[:5] == ["program", "activity SD", "FDR q", "effective genes", "note"]
    notes = {row[0]: row[4] for row in rows}
    assert notes["GOOD"] == "" and notes["ONE_GENE"] == "1-2 genes (g2)"
    assert notes["WEAK"] == "not supported"
    assert notes["denovo_0"] == "de novo unit (no gene set, not tested)"
