import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import glassvi
from glassvi.model import LinearVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
EXPLAIN_KW = {"progress_bar": False}
IG = "integrated_gradients"


@pytest.fixture(scope="module")
def trained():
    """Cell types defined by planted programs; a LinearVI with a label head trained on them."""
    glassvi_seed = 0
    import scvi

    scvi.settings.seed = glassvi_seed
    adata = glassvi.data.simulate(
        n_cells=800,
        n_genes=300,
        n_programs=8,
        n_cell_types=4,
        genes_per_program=(15, 25),
        n_batches=2,
        seed=3,
    )
    LinearVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    model = LinearVI(adata, n_latent=8)
    model.train(max_epochs=30, batch_size=128, **TRAIN_KW)
    return adata, model


def _frame(adata, results, key):
    """A varm entry of an ``inplace=False`` results dict, with its column names."""
    columns = results["uns"][key]["columns"]
    return pd.DataFrame(results["varm"]["rna"][key], index=adata.var_names, columns=columns)


def _precision_at_k(adata, scores, k=20):
    """Precision at k of the top genes of each label among its type's own planted programs."""
    sim = adata.uns["simulation"]
    profiles = np.asarray(sim["cell_type_profiles"])
    truth = adata.varm["true_programs"]
    out = {}
    for i, name in enumerate(sim["cell_type_names"]):
        others = np.delete(profiles, i, axis=0).max(axis=0)
        members = truth[:, (profiles[i] > 0) & (others == 0)].any(axis=1)
        kk = min(k, int(members.sum()))
        top = np.argsort(-scores[name].to_numpy())[:kk]
        out[name] = float(members[top].mean())
    return out


def test_classifier_head_predicts_labels(trained):
    adata, model = trained
    assert model.has_classifier
    assert model.module.classifier.weight.shape == (4, 8)
    assert "classification_loss_train" in model.history
    pred = model.predict()
    assert pred.index.equals(adata.obs_names)
    assert (pred.to_numpy() == adata.obs["cell_type"].to_numpy()).mean() > 0.9
    probs = model.predict(soft=True, indices=np.arange(10))
    assert list(probs.columns) == ["type_0", "type_1", "type_2", "type_3"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.idxmax(axis=1) == pred.iloc[:10]).all()


def test_semi_supervised_unlabelled_cells():
    adata = glassvi.data.simulate(n_cells=200, n_genes=60, n_cell_types=3, seed=5)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[::2] = "unknown"
    adata.obs["partial"] = labels
    LinearVI.setup_anndata(adata, labels_key="partial", unlabeled_category="unknown")
    model = LinearVI(adata, n_latent=3)
    assert model._label_names() == ["type_0", "type_1", "type_2"]
    model.train(max_epochs=2, **TRAIN_KW)
    assert set(model.predict().unique()) <= {"type_0", "type_1", "type_2"}
    no_head = LinearVI(adata, n_latent=3, classifier=False)
    assert not no_head.has_classifier


def test_labels_attributions_recover_planted_programs(trained):
    adata, model = trained
    # from no counts, the evidence for a type is what its cells express: its own programs
    # (the default background baseline also ranks the absence of the other types' programs
    # as evidence for a type, see test_markers_real.py for real markers)
    model.explain(
        method=IG,
        target="labels",
        n_steps=20,
        baseline="zeros",
        label_contrast="none",
        label_target="predicted",
        **EXPLAIN_KW,
    )
    key = "linearvi_integrated_gradients_labels"
    scores = glassvi.tl.varm_df(adata, key)
    # a plain array (h5ad-safe for any class name), its column names in uns[key]["columns"]
    assert type(adata.varm[key]) is np.ndarray and scores.index.equals(adata.var_names)
    prec = _precision_at_k(adata, scores)
    print("precision@20 (integrated gradients, labels):", prec)
    # chance is about 0.1; every label's top genes are mostly its own program's genes
    assert np.mean(list(prec.values())) >= 0.75
    assert min(prec.values()) >= 0.5
    table = glassvi.tl.rank_features(adata, key, "type_0", n_top=5, inplace=False)
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    assert table["names"].iloc[0] == scores["type_0"].idxmax()
    # exact decomposition of the predicted logit into per-factor contributions
    contrib = adata.obsm[key]
    assert type(contrib) is np.ndarray
    assert list(adata.uns[key]["cell_columns"]) == [f"factor_{i}" for i in range(8)]
    logits = model.get_latent_representation() @ model.module.classifier.weight.detach().numpy().T
    pred = logits.argmax(1)
    np.testing.assert_allclose(contrib.sum(axis=1), logits[np.arange(len(pred)), pred], rtol=1e-4)
    meta = adata.uns[key]
    assert meta["method"] == IG and meta["target"] == "labels" and meta["baseline"] == "zeros"
    assert meta["label_contrast"] == "none" and meta["labels_key"] == "cell_type"
    assert meta["n_steps"] == 20 and meta["columns"] == ["type_0", "type_1", "type_2", "type_3"]
    assert sum(meta["n_cells_per_target"]) == adata.n_obs
    # a broken attribution (random scores) fails the same threshold
    random_scores = pd.DataFrame(
        np.random.default_rng(0).normal(size=scores.shape),
        index=adata.var_names,
        columns=scores.columns,
    )
    assert np.mean(list(_precision_at_k(adata, random_scores).values())) < 0.75


def test_label_defaults_contrast_annotated_classes_against_a_background(trained):
    adata, model = trained
    out = model.explain(method=IG, target="labels", n_steps=20, inplace=False, **EXPLAIN_KW)
    key = "linearvi_integrated_gradients_labels"
    meta = out["uns"][key]
    assert meta["baseline"] == "background" and meta["baselines_per_cell"] == 5
    assert meta["label_contrast"] == "rest" and meta["label_target"] == "annotated"
    assert meta["n_background"] == 100
    # every cell is explained for its annotated type
    counts = adata.obs["cell_type"].value_counts()
    assert meta["n_cells_per_target"] == [int(counts[c]) for c in meta["columns"]]
    # the averaged paths keep completeness: sum of attributions = margin(x) - mean margin(b)
    assert meta["convergence"]["relative_delta"] < 0.05
    assert meta["above_baseline"] and "above its baseline" in meta["varm_definition"]
    # the evidence for a type comes from its own programs: counted only where a cell
    # expresses more than the background cell it is compared with, the absence of the other
    # types' programs no longer crowds them out
    default = np.mean(list(_precision_at_k(adata, _frame(adata, out, key)).values()))
    complete = model.explain(
        method=IG, target="labels", n_steps=20, above_baseline=False, inplace=False, **EXPLAIN_KW
    )
    assert not complete["uns"][key]["above_baseline"]
    both = np.mean(list(_precision_at_k(adata, _frame(adata, complete, key)).values()))
    print("precision@20, above the baseline / complete:", default, both)
    assert default >= 0.8 and default > both
    with pytest.raises(ValueError, match="above_baseline"):
        model.explain(method="shap", target="labels", above_baseline=True, **EXPLAIN_KW)
    # label_contrast="mean": the per-cell entry decomposes the margin exactly
    out = model.explain(
        method=IG, target="labels", n_steps=4, label_contrast="mean", inplace=False, **EXPLAIN_KW
    )
    W = model.module.classifier.weight.detach().numpy()
    b = model.module.classifier.bias.detach().numpy()
    logits = model.get_latent_representation() @ W.T + b
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    rows = np.arange(adata.n_obs)
    margin = logits[rows, codes] - (logits.sum(1) - logits[rows, codes]) / 3
    bias = b[codes] - (b.sum() - b[codes]) / 3
    np.testing.assert_allclose(out["obsm"][key].sum(axis=1) + bias, margin, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="label_contrast"):
        model.explain(method=IG, target="labels", label_contrast="max", **EXPLAIN_KW)


def test_integrated_gradients_completeness_on_the_model(trained):
    adata, model = trained
    cells = np.arange(0, 800, 40)
    out = model.explain(
        method=IG,
        target="latent",
        indices=cells,
        n_steps=64,
        return_per_cell=True,
        inplace=False,
        **EXPLAIN_KW,
    )
    attr = out["per_cell"]["attributions"]["rna"]  # cells x genes x factors
    X = torch.as_tensor(adata.layers["counts"][cells].toarray())
    batch = torch.as_tensor(adata.obs["batch"].cat.codes.to_numpy()[cells]).long()[:, None]
    with torch.no_grad():
        fx = model.module.posterior_mean({"rna": X}, batch).numpy()
        f0 = model.module.posterior_mean({"rna": torch.zeros_like(X)}, batch).numpy()
    gap = attr.sum(axis=1) - (fx - f0)
    delta = out["per_cell"]["delta"]
    np.testing.assert_allclose(gap, delta, atol=1e-4)  # reported delta is the true gap
    conv = out["uns"]["linearvi_integrated_gradients_latent"]["convergence"]
    print("IG completeness:", conv)
    assert conv["relative_delta"] < 0.05
    assert conv["max_abs_delta"] == pytest.approx(np.abs(delta).max())


def test_randomised_model_gives_other_attributions(trained):
    adata, model = trained
    cells = np.arange(0, 800, 8)
    # a mean-cell baseline: with zero counts as baseline, |x * gradient| follows each gene's
    # expression level whatever the weights (rank correlation about 0.5 with a random model)
    kw = {
        "method": IG,
        "target": "latent",
        "baseline": "mean",
        "indices": cells,
        "n_steps": 8,
        "inplace": False,
    }
    ours = model.explain(**kw, **EXPLAIN_KW)["varm"]["rna"][
        "linearvi_integrated_gradients_latent_abs"
    ]
    random_model = LinearVI(adata, n_latent=8)
    random_model.is_trained_ = True
    theirs = random_model.explain(**kw, **EXPLAIN_KW)["varm"]["rna"][
        "linearvi_integrated_gradients_latent_abs"
    ]
    check = glassvi.metrics.randomization_check(ours, theirs, k=20, threshold=0.3)
    assert check["passed"], check
    again = model.explain(**kw, **EXPLAIN_KW)["varm"]["rna"][
        "linearvi_integrated_gradients_latent_abs"
    ]
    assert not glassvi.metrics.randomization_check(ours, again, k=20)["passed"]


def test_latent_groupby_and_other_methods(trained):
    adata, model = trained
    cells = np.arange(0, 800, 20)
    for method in ["deeplift", "gradient_shap", "input_x_gradient", "saliency", "shap"]:
        res = model.explain(
            method=method,
            target="latent",
            indices=cells,
            n_samples=10,
            groupby="batch",
            inplace=False,
            **EXPLAIN_KW,
        )
        key = f"linearvi_{method}_latent"
        varm = res["varm"]["rna"]
        assert varm[key].shape == (300, 8) and np.isfinite(varm[key]).all()
        assert (varm[f"{key}_abs"] >= np.abs(varm[key]) - 1e-6).all()
        names = res["uns"][key]["group_columns"]
        assert names[:2] == ["batch_0|factor_0", "batch_0|factor_1"]
        by = pd.DataFrame(varm[f"{key}_by_batch"], columns=names)
        overall_mean = pd.DataFrame(varm[key], columns=res["uns"][key]["columns"])
        counts = np.asarray(res["uns"][key]["n_cells_per_group_target"])[:, 0]
        # the overall mean is the count-weighted mean of the group means
        overall = (
            counts[0] * by["batch_0|factor_3"] + counts[1] * by["batch_1|factor_3"]
        ) / counts.sum()
        np.testing.assert_allclose(overall, overall_mean["factor_3"], rtol=1e-4, atol=1e-7)
        obsm = res["obsm"][key]
        assert type(obsm) is np.ndarray and obsm.shape[0] == adata.n_obs
        others = np.setdiff1d(np.arange(adata.n_obs), cells)
        assert np.isfinite(obsm[cells]).all() and np.isnan(obsm[others]).all()
        # without an annotation mask the cell score is the total |attribution| per factor
        assert (obsm[cells] >= 0).all()


def test_callable_target_and_overwrite_warning(trained):
    adata, model = trained

    def factor_contrast(z):
        return z[:, 0] - z[:, 1]

    kw = {"method": "input_x_gradient", "target": factor_contrast, "indices": np.arange(50)}
    model.explain(**kw, **EXPLAIN_KW)
    key = "linearvi_input_x_gradient_factor_contrast"
    assert glassvi.tl.varm_df(adata, key).columns.tolist() == ["factor_contrast"]
    with pytest.warns(UserWarning, match="Overwriting"):
        model.explain(**kw, **EXPLAIN_KW)


def test_mudata_keys_per_modality():
    mdata = glassvi.data.simulate(
        n_cells=200, n_genes=80, n_peaks=160, n_cell_types=3, modality="multiome", seed=2
    )
    LinearVI.setup_mudata(mdata, batch_key="batch", labels_key="cell_type")
    model = LinearVI(mdata, n_latent=4)
    model.train(max_epochs=2, **TRAIN_KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.explain(method=IG, target="labels", n_steps=100, groupby="batch", **EXPLAIN_KW)
    key = "linearvi_integrated_gradients_labels"
    for mod, n in (("rna", 80), ("atac", 160)):
        assert mdata[mod].varm[key].shape == (n, 3)
        table = glassvi.tl.varm_df(mdata, key, modality=mod)
        assert table.index.equals(mdata[mod].var_names)
        assert table.columns.tolist() == ["type_0", "type_1", "type_2"]
        assert f"{key}_abs" in mdata[mod].varm and f"{key}_by_batch" in mdata[mod].varm
    assert mdata.obsm[key].shape == (200, 4)
    assert mdata.uns[key]["modalities"] == {"rna": "rna", "atac": "atac"}
    table = glassvi.tl.rank_features(mdata, key, "type_0", n_top=10, inplace=False)
    assert set(table["modality"]) <= {"rna", "atac"} and table["rank"].iloc[-1] == 10
    # completeness holds across both modalities together (log1p of counts is steep near
    # zero, so the straight path from zero counts needs many steps)
    conv = mdata.uns[key]["convergence"]
    assert conv["relative_delta"] < 0.1


def test_inplace_false_leaves_adata_untouched(trained):
    adata, model = trained
    before = (set(adata.varm.keys()), set(adata.obsm.keys()), set(adata.uns.keys()))
    res = model.explain(method="saliency", target="labels", inplace=False, **EXPLAIN_KW)
    assert (set(adata.varm.keys()), set(adata.obsm.keys()), set(adata.uns.keys())) == before
    assert set(res) == {"obsm", "varm", "uns"}
    assert res["varm"]["rna"]["linearvi_saliency_labels"].shape == (300, 4)


def test_bad_input_fails_before_computing(trained, monkeypatch):
    adata, model = trained

    def boom(*args, **kwargs):
        raise AssertionError("attribution ran")

    monkeypatch.setattr("glassvi.explain._explain.attribute", boom)
    with pytest.raises(ValueError, match="Unknown explain method"):
        model.explain(method="lime")
    with pytest.raises(ValueError, match="Unknown explain target"):
        model.explain(method=IG, target="genes")
    with pytest.raises(KeyError, match="groupby='tissue'"):
        model.explain(method=IG, groupby="tissue")
    with pytest.raises(ValueError, match="Unknown baseline"):
        model.explain(method=IG, baseline="median")
    with pytest.raises(ValueError, match="deeplift_shap"):
        model.explain(method="deeplift_shap", baseline="zeros")
    with pytest.raises(ValueError, match="n_steps"):
        model.explain(method=IG, n_steps=0)
    with pytest.raises(ValueError, match="out of range"):
        model.explain(method=IG, indices=[0, 10_000])
    other = adata[:, 5:].copy()
    with pytest.raises(ValueError, match="lacks 5 of the model's"):
        model.explain(other, method=IG)
    no_labels = glassvi.data.simulate(n_cells=100, n_genes=40, seed=4)
    LinearVI.setup_anndata(no_labels)
    bare = LinearVI(no_labels, n_latent=3)
    bare.is_trained_ = True
    with pytest.raises(ValueError, match="no cell-label head"):
        bare.explain(method=IG, target="labels")
    with pytest.raises(ValueError, match="no cell-label head"):
        bare.predict()
    with pytest.raises(ValueError, match="classifier=True"):
        LinearVI(no_labels, classifier=True)


def test_class_names_with_a_slash_round_trip_through_h5ad(tmp_path):
    """Per-class tables are plain arrays (names in uns), so h5ad takes any class name."""
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    adata = glassvi.data.simulate(n_cells=120, n_genes=40, n_cell_types=3, n_batches=2, seed=1)
    names = {"type_0": "CD4+/CD25 T Reg", "type_1": "B cells", "type_2": "NK/NKT"}
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.rename_categories(names)
    LinearVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    model = LinearVI(adata, n_latent=3)
    model.train(max_epochs=2, **TRAIN_KW)
    model.explain(method=IG, target="labels", n_steps=5, groupby="batch", **EXPLAIN_KW)
    key = "linearvi_integrated_gradients_labels"
    before = {k: glassvi.tl.varm_df(adata, k) for k in adata.uns[key]["varm_keys"].values()}
    path = tmp_path / "slash.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for k, table in before.items():
        got = glassvi.tl.varm_df(back, k)
        pd.testing.assert_frame_equal(got, table, check_dtype=False)
    assert "CD4+/CD25 T Reg" in before[key].columns
    assert "batch_0|NK/NKT" in before[f"{key}_by_batch"].columns
    ranked = glassvi.tl.rank_features(back, key, "CD4+/CD25 T Reg", n_top=3, inplace=False)
    top = before[key]["CD4+/CD25 T Reg"].nlargest(3).index.tolist()
    assert ranked["names"].tolist() == top
    ax = glassvi.pl.attribution_heatmap(back, key, n_top=2, show=False)
    assert "CD4+/CD25 T Reg" in [t.get_text() for t in ax.get_yticklabels()]
