"""ProgramVI.program_evidence: calibrated against hidden decoys, effective genes, outputs."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

import glassvi
from glassvi.model import ProgramVI


def _data(seed: int = 0):
    """Planted programs (half of them used), random gene sets and a one-gene program."""
    rng = np.random.default_rng(seed)
    adata = glassvi.data.simulate(
        n_cells=500, n_genes=400, n_programs=10, n_active=5, seed=seed, n_batches=1
    )
    truth = adata.varm["true_programs"]
    active = np.asarray(adata.uns["simulation"]["active_programs"], dtype=bool)
    genes = adata.var_names
    counts = adata.layers["counts"].toarray()
    # one gene outside every program marks type_0 strongly; a program of it plus eight barely
    # expressed genes is carried by that one gene
    outside = np.flatnonzero(~truth.any(1))
    marker = outside[0]
    in_type = (adata.obs["cell_type"] == "type_0").to_numpy()
    counts[:, marker] = rng.poisson(np.where(in_type, 40.0, 0.2))
    low = [g for g in outside[1:9]]
    counts[:, low] = rng.poisson(0.01, size=(adata.n_obs, len(low)))
    adata.X = sparse.csr_matrix(counts.astype(np.float32))
    adata.layers["counts"] = adata.X.copy()
    columns = {f"planted_{k}": truth[:, k] for k in range(truth.shape[1])}
    for i in range(6):
        chosen = np.zeros(len(genes), dtype=bool)
        chosen[rng.choice(len(genes), rng.integers(15, 35), replace=False)] = True
        columns[f"random_{i}"] = chosen
    one = np.zeros(len(genes), dtype=bool)
    one[[marker, *low]] = True
    columns["ONE_GENE"] = one
    adata.varm["programs"] = pd.DataFrame(columns, index=genes)
    used = {f"planted_{k}" for k in np.flatnonzero(active)}
    unused = set(columns) - used - {"ONE_GENE"}
    return adata, used, unused, str(genes[marker])


@pytest.fixture(scope="module")
def trained():
    adata, used, unused, marker = _data()
    scvi.settings.seed = 0
    ProgramVI.setup_anndata(adata, layer="counts")
    model = ProgramVI(adata)  # default settings: decoys on
    model.train(max_epochs=60, batch_size=64, enable_progress_bar=False)
    return adata, model, used, unused, marker


def test_evidence_calls_used_programs_and_not_unused(trained):
    adata, model, used, unused, _ = trained
    evidence = model.program_evidence(fdr=0.1)
    assert evidence.index.name == "program"
    assert set(evidence.index) == set(model.program_names)
    for column in ("pvalue", "fdr", "significant", "effective_genes", "n_genes", "score"):
        assert column in evidence.columns
    # 10 per program, capped at 5.5 decoys per gene on average (17 programs, 400 genes)
    members = int(np.asarray(adata.varm["programs"]).sum())
    expected = min(170, int(5.5 * 400 * 17 / members))
    assert evidence.attrs["n_decoys"] == model.n_decoys == expected
    called = set(evidence.index[evidence["significant"]])
    assert len(called & used) >= len(used) - 1
    assert len(called & unused) <= 1
    # a broken null (e.g. decoys that never vary) would make every p-value tiny
    assert evidence.loc[sorted(unused), "pvalue"].median() > 0.2
    assert (evidence.loc[sorted(used), "pvalue"] <= 0.05).sum() >= len(used) - 1
    # sorted by evidence, q-values are BH of the p-values
    assert evidence["pvalue"].is_monotonic_increasing
    p = evidence["pvalue"].to_numpy()
    order = np.argsort(p, kind="stable")
    expected = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    np.testing.assert_allclose(evidence["fdr"].to_numpy()[order], np.minimum(expected, 1))
    np.testing.assert_array_equal(evidence["significant"], evidence["fdr"] <= 0.1)
    np.testing.assert_array_equal(
        evidence["n_genes"], adata.varm["programs"].sum(0).loc[evidence.index]
    )


def test_one_gene_program_has_about_one_effective_gene(trained, monkeypatch):
    adata, model, used, _, marker = trained
    evidence = model.program_evidence()
    one = evidence.loc["ONE_GENE"]
    # a program that its leading gene alone cannot make coherent is not called
    assert not one["significant"]
    assert (evidence.loc[sorted(used), "effective_genes"] > 3).all()
    # the state of a model in which this program is carried by its strong gene: its activity
    # follows that gene, and all nine members have the same weight
    decoder = model.module.decoders["rna"]
    k = model.program_names.index("ONE_GENE")
    members = decoder.program_cols == k
    saved = decoder.program_values.detach().clone()
    full = model._full_latent_representation()
    counts = adata.layers["counts"][:, adata.var_names.get_loc(marker)].toarray().ravel()
    full[:, k] = np.log1p(counts)
    with torch.no_grad():
        decoder.program_values[members] = 0.5
    monkeypatch.setattr(model, "_full_latent_representation", lambda *a, **kw: full)
    try:
        one = model.program_evidence().loc["ONE_GENE"]
    finally:
        with torch.no_grad():
            decoder.program_values.copy_(saved)
    # about one gene: the eight near-silent members add under one effective gene together
    assert one["effective_genes"] < 2
    assert one["top_gene"] == marker and one["top_gene_share"] > 0.8


def test_decoys_are_hidden_from_outputs(trained):
    adata, model, *_ = trained
    # the default hard mask adds two de novo units after the programs; decoys stay hidden
    names = model.program_names + ["denovo_0", "denovo_1"]
    assert model.module.n_programs == len(model.program_names) + model.n_decoys
    assert list(model.get_program_activity().columns) == names
    assert model.get_latent_representation().shape == (adata.n_obs, len(names))
    loc, var = model.get_latent_representation(return_dist=True)
    assert loc.shape == var.shape == (adata.n_obs, len(names))
    assert list(model.get_program_weights().columns) == names
    assert list(model.active_programs().index) == names
    out = model.explain(inplace=False)
    assert np.asarray(out["obsm"]["X_programvi"]).shape == (adata.n_obs, len(names))
    assert list(out["uns"]["programvi"]["columns"]) == names
    assert out["varm"]["rna"]["programvi_weights"].shape == (adata.n_vars, len(names))
    names = model.program_names
    evidence = out["uns"]["programvi"]["evidence"]
    assert isinstance(evidence, pd.DataFrame) and set(evidence.index) == set(names)
    assert not any(str(c).startswith("decoy") for c in out["uns"]["programvi"]["columns"])


def test_explain_writes_evidence_that_round_trips(trained, tmp_path):
    adata, model, *_ = trained
    model.explain()
    evidence = adata.uns["programvi"]["evidence"]
    assert evidence["significant"].dtype == bool
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["programvi"]["evidence"]
    pd.testing.assert_frame_equal(back, evidence, check_dtype=False)
    # a saved model keeps its decoys and gives the same evidence
    model.save(tmp_path / "m", overwrite=True)
    loaded = ProgramVI.load(tmp_path / "m", adata=adata)
    np.testing.assert_allclose(
        loaded.program_evidence()["pvalue"], model.program_evidence()["pvalue"]
    )


def test_no_decoys_opt_out():
    adata, *_ = _data(1)
    ProgramVI.setup_anndata(adata, layer="counts")
    model = ProgramVI(adata, n_decoys=0, n_denovo=1)
    assert model.module.n_programs == len(model.program_names)
    model.train(max_epochs=2, enable_progress_bar=False)
    with pytest.warns(UserWarning, match="no decoy programs"):
        evidence = model.program_evidence()
    assert evidence["pvalue"].isna().all() and not evidence["significant"].any()
    assert evidence["effective_genes"].notna().all()
    with pytest.raises(ValueError, match="n_decoys"):
        ProgramVI(adata, n_decoys=-1)
    with pytest.raises(ValueError, match="fdr"):
        model.program_evidence(fdr=1.5)
