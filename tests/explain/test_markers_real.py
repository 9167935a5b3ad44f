"""Marker recovery of label attributions on held-out real PBMCs, with markers of our own."""

import json
from pathlib import Path

import numpy as np
import pytest
import scvi

import glassvi
from glassvi.metrics import marker_recovery, stability

# canonical markers of the pbmc68k sorted populations, restricted to its 765 genes; the same
# lists as the marker benchmark's
MARKERS = json.loads(
    (Path(__file__).resolve().parents[2] / "benchmarks" / "markers.json").read_text()
)["pbmc68k"]
KEY = "linearvi_integrated_gradients_labels"


def _hits(adata, **rank_kw) -> dict:
    table = glassvi.tl.rank_features(adata, KEY, n_top=50, inplace=False, **rank_kw)
    ranked = {g: list(t["names"]) for g, t in table.groupby("group", sort=False)}
    recovery = marker_recovery(ranked, MARKERS, k=50, universe=adata.var_names)
    return dict(zip(recovery["group"], recovery["n_hits"]))


FORMER = {"label_contrast": "none", "label_target": "predicted", "baseline": "zeros"}


@pytest.fixture(scope="module")
def pbmc():
    """Held-out cells explained by LinearVI trained with two seeds, new and former defaults."""
    adata = glassvi.data.pbmc68k()
    adata = adata[adata.obs["bulk_labels"].isin(list(MARKERS))].copy()
    adata.obs["labels"] = adata.obs["bulk_labels"].astype(str)
    rng = np.random.default_rng(123)
    held = np.zeros(adata.n_obs, dtype=bool)
    for label in MARKERS:
        idx = np.flatnonzero(adata.obs["labels"].to_numpy() == label)
        held[rng.permutation(idx)[: max(3, idx.size // 4)]] = True
    runs = []
    for seed in (0, 1):
        train, test = adata[~held].copy(), adata[held].copy()
        scvi.settings.seed = seed
        glassvi.model.LinearVI.setup_anndata(train, labels_key="labels")
        model = glassvi.model.LinearVI(train, n_latent=10)
        model.train(max_epochs=100, enable_progress_bar=False, accelerator="cpu")
        out = {}
        for name, kw in (("new", {}), ("former", FORMER)):
            res = model.explain(
                test,
                method="integrated_gradients",
                target="labels",
                inplace=False,
                progress_bar=False,
                **kw,
            )
            copy = test.copy()
            copy.varm[KEY] = res["varm"]["rna"][KEY]
            copy.uns[KEY] = res["uns"][KEY]
            out[name] = copy
        runs.append(out)
    return runs


def test_signed_class_evidence_names_the_markers_of_held_out_pbmcs(pbmc):
    for run in pbmc:
        hits = _hits(run["new"])
        print("markers in the top 50 (defaults, signed for):", hits)
        assert sum(h >= 2 for h in hits.values()) >= 7
        assert np.mean(list(hits.values())) >= 3.5
        # the evidence against a class is not where its markers are
        assert np.mean(list(_hits(run["new"], direction="against").values())) < 1.0
        # the former defaults (raw logit of the predicted class from no counts) miss it
        former = _hits(run["former"])
        print("former defaults, signed:", former)
        assert np.mean(list(former.values())) < 3.5


def test_top_features_agree_across_training_seeds(pbmc):
    agreement = {}
    for name in ("new", "former"):
        scores = [glassvi.tl.varm_df(run[name], KEY)[list(MARKERS)].fillna(-1e30) for run in pbmc]
        agreement[name] = stability(scores, k=50)["topk_jaccard"].mean()
    print("top-50 Jaccard across two training seeds:", agreement)
    assert agreement["new"] >= 0.42
