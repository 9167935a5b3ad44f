import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import glassvi
from glassvi import metrics
from glassvi.model import ProgramVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


def noisy_mask(truth, names, seed=0, drop=0.3, add=0.1):
    """Drop ~30% of each program's members and add ~10% wrong features (decoys kept)."""
    rng = np.random.default_rng(seed)
    dropped = truth & (rng.random(truth.shape) < drop)
    n_wrong = add * truth.sum(0) / (~truth).sum(0)
    wrong = ~truth & (rng.random(truth.shape) < n_wrong)
    given = (truth & ~dropped) | wrong
    return pd.DataFrame(given, columns=names), dropped


@pytest.fixture(scope="module")
def sim():
    adata = glassvi.data.simulate(n_cells=500, n_genes=200, n_programs=8, seed=3)
    names = adata.uns["simulation"]["program_names"]
    mask, dropped = noisy_mask(adata.varm["true_programs"], names, seed=3)
    mask.index = adata.var_names
    adata.varm["programs"] = mask
    adata.uns["held_out"] = dropped
    return adata


@pytest.fixture(scope="module")
def trained(sim):
    adata = sim.copy()
    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = ProgramVI(adata, n_denovo=1)
    model.train(max_epochs=3, **TRAIN_KW)
    return model, adata


def test_hard_mask_exact_zeros_nonnegative_and_explain(trained):
    model, adata = trained
    elbo = model.history["elbo_train"].to_numpy().ravel()
    assert elbo[-1] < elbo[0]
    weights = model.get_program_weights()
    names = list(adata.varm["programs"].columns)
    assert list(weights.columns) == names + ["denovo_0"]
    given = adata.varm["programs"].to_numpy()
    w_prog = weights[names].to_numpy()
    assert np.all(w_prog[~given] == 0.0)  # exactly zero outside the hard mask
    assert np.count_nonzero(w_prog[given]) > 0.9 * given.sum()
    assert (weights.to_numpy() >= 0).all()
    assert np.count_nonzero(weights["denovo_0"]) > 0.9 * adata.n_vars  # de novo: any feature
    # indexed weights: only the mask's nonzeros (programs, then hidden decoys) are parameters
    decoder = model.module.decoders["rna"]
    full_mask = decoder.mask.numpy()
    assert decoder.program_values.numel() == full_mask.sum()
    np.testing.assert_array_equal(full_mask[:, : len(names)], given)

    model.explain()
    latent = adata.obsm["X_programvi"]
    assert type(latent) is np.ndarray and latent.shape == (adata.n_obs, len(names) + 1)
    assert list(adata.uns["programvi"]["columns"]) == names + ["denovo_0"]
    import scanpy as sc

    sc.pl.embedding(adata, basis="X_programvi", color="cell_type", show=False)
    sc.pl.embedding(adata, basis="programvi", components="1,2", show=False)
    assert type(adata.varm["programvi_weights"]) is np.ndarray  # names in uns (h5ad-safe)
    pd.testing.assert_frame_equal(glassvi.tl.varm_df(adata, "programvi_weights"), weights)
    meta = adata.uns["programvi"]
    assert meta["weights_key"] == "programvi_weights" and list(meta["programs"]) == names
    assert meta["params"]["n_denovo"] == 1 and meta["params"]["mask_mode"] == "hard"
    activity = model.get_program_activity()
    np.testing.assert_allclose(activity.to_numpy(), latent, rtol=1e-5)
    pd.testing.assert_frame_equal(activity, model.get_program_activity())  # deterministic

    genes = model.get_program_genes(names[0])
    assert list(genes.columns) == ["weight", "in_mask", "modality"]
    assert genes["in_mask"].all() and set(genes.index) == set(adata.var_names[given[:, 0]])
    assert genes["weight"].is_monotonic_decreasing
    assert model.get_program_genes(0).equals(genes)
    with pytest.raises(KeyError, match="not a latent unit"):
        model.get_program_genes("no_such_program")
    active = model.active_programs()
    assert active.dtype == bool and active.all()
    assert list(active.index) == list(adata.uns["programvi"]["columns"])
    # inference paths load only per-cell tensors (the varm mask is never sliced by cell)
    assert np.isfinite(model.get_elbo()) and np.isfinite(model.get_reconstruction_error()["rna"])


def test_save_load_round_trip(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)
    loaded = ProgramVI.load(tmp_path / "m", adata=adata)
    pd.testing.assert_frame_equal(loaded.get_program_activity(), model.get_program_activity())
    pd.testing.assert_frame_equal(loaded.get_program_weights(), model.get_program_weights())
    assert loaded.program_names == model.program_names


def test_differential_programs(trained):
    model, adata = trained
    sim_info = adata.uns["simulation"]
    res = model.differential_programs("cell_type", "type_0", n_samples=2000)
    assert list(res.columns[:3]) == ["proba", "proba_not", "bayes_factor"]
    assert {"effect_size", "is_significant", "mean1", "mean2"} <= set(res.columns)
    assert res["proba"].is_monotonic_decreasing
    np.testing.assert_allclose(
        res["bayes_factor"], np.log(res.proba + 1e-8) - np.log(1 - res.proba + 1e-8)
    )
    assert (res["comparison"] == "type_0 vs rest").all()
    # de novo units are flagged by position, not by name
    expected = [name not in model.program_names for name in res.index]
    assert res["denovo"].tolist() == expected
    assert res["denovo"].sum() == model.module.n_denovo > 0
    stored = adata.uns["programvi_differential"]
    assert stored["params"]["groupby"] == "cell_type" and stored["params"]["reference"] == "rest"
    pd.testing.assert_frame_equal(stored["results"], res)
    again = model.differential_programs("cell_type", "type_0", n_samples=2000, key_added=None)
    pd.testing.assert_frame_equal(again, res)  # deterministic for a given seed
    # vanilla: probability of the more likely direction, Bayes factor signed by direction
    van = model.differential_programs(
        "cell_type", "type_0", ["type_1"], mode="vanilla", key_added="vd"
    )
    assert (van["proba"] >= 0.5).all()
    assert (np.sign(van["bayes_factor"]) == np.sign(van["frac_up"] - 0.5)).all()
    assert "vd" in adata.uns
    # the program whose true level differs most between type_0 and the rest ranks high
    profiles = sim_info["cell_type_profiles"]
    assert profiles.shape[0] >= 2
    with pytest.raises(KeyError, match="donor"):
        model.differential_programs("donor", "a")
    with pytest.raises(KeyError, match="group1"):
        model.differential_programs("cell_type", "type_99")


def test_differential_programs_in_scanpy_layout_and_plotted(trained, tmp_path):
    import anndata as ad
    import scanpy as sc

    model, adata = trained
    res = model.differential_programs("cell_type", n_samples=1000, key_added="dp_all")
    groups = sorted(adata.obs["cell_type"].astype(str).unique())
    assert sorted(res["group1"].unique()) == groups
    assert (res["group2"] == "rest").all()
    # every group against the rest, readable by scanpy's own getter
    for group in groups[:2]:
        table = sc.get.rank_genes_groups_df(adata, group, key="dp_all")
        mine = res[res["group1"] == group]
        assert list(table["names"]) == list(mine.index)
        np.testing.assert_allclose(table["scores"], mine["bayes_factor"], rtol=1e-5)
        np.testing.assert_allclose(table["logfoldchanges"], mine["effect_size"], rtol=1e-4)
        np.testing.assert_allclose(table["pvals_adj"], mine["expected_fdr"], rtol=1e-4)
    significant = sc.get.rank_genes_groups_df(adata, groups[0], key="dp_all", pval_cutoff=0.05)
    assert set(significant["names"]) <= set(res.index[res["group1"] == groups[0]])
    sc.pl.rank_genes_groups(adata, key="dp_all", n_genes=3, show=False)
    # the plot reads the record just written, and the record survives h5ad
    glassvi.pl.differential(adata, key="dp_all", show=False, save=tmp_path / "all.png")
    glassvi.pl.differential(adata, show=False, save=tmp_path / "one.png")
    path = tmp_path / "dp.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert sc.get.rank_genes_groups_df(back, groups[0], key="dp_all").shape[0] == res.shape[
        0
    ] / len(groups)
    axes = glassvi.pl.differential(back, key="dp_all", show=False)
    assert axes is not None
    table = glassvi.pl.differential_table(back, "dp_all")
    assert table["comparison"].nunique() == len(groups)


@pytest.mark.slow
def test_quality_on_planted_programs_with_noisy_mask():
    """Active vs decoy AUROC, activity correlation and soft-mask recovery of missing members."""
    adata = glassvi.data.simulate(n_cells=800, n_genes=300, n_programs=10, seed=0)
    info = adata.uns["simulation"]
    truth = adata.varm["true_programs"]
    mask, dropped = noisy_mask(truth, info["program_names"], seed=0)
    mask.index = adata.var_names
    adata.varm["programs"] = mask
    active = info["active_programs"]
    assert 0 < active.sum() < len(active)  # decoys are in the mask

    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
    hard = ProgramVI(adata)
    hard.train(max_epochs=40, batch_size=128, **TRAIN_KW)
    activity = hard.get_program_activity()[hard.program_names]  # without the de novo units
    auroc = metrics.program_activity_auroc(activity.var().to_numpy(), active)["auroc"]
    corr = metrics.activity_correlation(activity.to_numpy(), adata.obsm["true_activity"])
    assert auroc >= 0.8
    assert np.nanmean(corr[active]) >= 0.65  # measured 0.73 (a random model gives ~0)

    soft = ProgramVI(adata, mask_mode="soft", soft_penalty=0.5)
    soft.train(max_epochs=40, batch_size=128, **TRAIN_KW)
    weights = soft.get_program_weights()[soft.program_names].to_numpy()  # no de novo units
    outside = ~mask.to_numpy()
    assert (weights[outside] == 0).mean() > 0.5  # the proximal step gives exact zeros
    rec = metrics.member_recovery(weights, truth, held_out=dropped & truth)
    chance = np.nanmean(rec["auprc_chance"])
    assert rec["mean_auprc"] >= max(0.15, 5 * chance)


def test_group_lasso_zeroes_decoy_programs():
    adata = glassvi.data.simulate(n_cells=1000, n_genes=400, n_programs=12, seed=0)
    info = adata.uns["simulation"]
    truth = adata.varm["true_programs"]
    rng = np.random.default_rng(0)
    dropped = truth & (rng.random(truth.shape) < 0.3)
    wrong = ~truth & (rng.random(truth.shape) < 0.1 * truth.sum(0) / (~truth).sum(0))
    mask = (truth & ~dropped) | wrong
    adata.varm["programs"] = pd.DataFrame(
        mask, index=adata.var_names, columns=info["program_names"]
    )
    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
    # without hidden decoys or de novo units: this checks the group lasso alone, whose few
    # fast epochs leave only the strongest programs and are sensitive to every extra unit
    model = ProgramVI(adata, group_lasso=1.0, n_decoys=0, n_denovo=0)
    model.train(max_epochs=6, batch_size=128, plan_kwargs={"lr": 1e-2}, **TRAIN_KW)
    active = model.active_programs().to_numpy()
    decoys = ~info["active_programs"]
    assert not active[decoys].any()  # every decoy program is switched off
    assert active.any() and info["active_programs"][active].all()  # survivors are real
    weights = model.get_program_weights().to_numpy()
    assert (weights[:, ~active] == 0).all()  # exactly zero columns


def test_atac_only_and_multiome_aligned_by_name():
    mdata = glassvi.data.simulate(
        n_cells=250, n_genes=120, n_peaks=240, n_programs=6, modality="multiome", seed=2
    )
    names = mdata["rna"].uns["simulation"]["program_names"]
    rna_mask = pd.DataFrame(
        mdata["rna"].varm["true_programs"], index=mdata["rna"].var_names, columns=names
    )
    atac_mask = pd.DataFrame(
        mdata["atac"].varm["true_programs"], index=mdata["atac"].var_names, columns=names
    )
    mdata["rna"].varm["programs"] = rna_mask
    mdata["atac"].varm["programs"] = atac_mask.iloc[:, ::-1]  # other order: matched by name

    atac = mdata["atac"].copy()
    ProgramVI.setup_anndata(atac, modality="atac")
    model = ProgramVI(atac, n_denovo=0)
    assert model.module.likelihoods == {"atac": "bernoulli"}
    model.train(max_epochs=2, **TRAIN_KW)
    model.explain()
    assert atac.varm["programvi_weights"].shape == (atac.n_vars, 6)
    assert list(atac.uns["programvi"]["columns"]) == names[::-1]

    ProgramVI.setup_mudata(mdata, batch_key="batch")
    model = ProgramVI(mdata, n_denovo=1)
    model.train(max_epochs=2, **TRAIN_KW)
    assert model.program_names == names
    for role, truth in (("rna", rna_mask), ("atac", atac_mask)):
        w = model.get_program_weights(role)[names]
        assert (w.to_numpy()[~truth.to_numpy()] == 0).all()
        assert (w.to_numpy()[truth.to_numpy()] > 0).mean() > 0.9
    model.explain()
    assert mdata.obsm["X_programvi"].shape == (mdata.n_obs, 7)
    assert mdata["atac"].varm["programvi_weights"].shape == (mdata["atac"].n_vars, 7)
    genes = model.get_program_genes(names[0])
    assert set(genes["modality"]) == {"rna", "atac"}
    # group lasso acts on each program's weights in both modalities together
    both = ProgramVI(mdata, group_lasso=500.0)
    both.train(max_epochs=1, **TRAIN_KW)
    assert not both.active_programs()[names].any()
    assert (both.get_program_weights()[names].to_numpy() == 0).all()


def test_query_mapping_keeps_reference_and_trains_new_denovo(sim, tmp_path):
    ref = sim[sim.obs["batch"] == "batch_0"].copy()
    query = sim[sim.obs["batch"] == "batch_1"].copy()
    query.obs["batch"] = "batch_q"
    ProgramVI.setup_anndata(ref, layer="counts", batch_key="batch")
    model = ProgramVI(ref, n_denovo=1)
    model.train(max_epochs=2, **TRAIN_KW)
    ref_weights = model.get_program_weights()
    ref_mean = model.module.z_encoder.mean_encoder.weight.detach().clone()

    del query.varm["programs"]  # copied from the reference model
    qmodel = ProgramVI.load_query_data(query, model, n_denovo_query=2)
    assert "programs" in query.varm
    assert qmodel._latent_names()[-3:] == ["denovo_0", "denovo_1", "denovo_2"]
    before = qmodel.get_program_weights()
    qmodel.train(max_epochs=3, **TRAIN_KW)
    after = qmodel.get_program_weights()
    pd.testing.assert_frame_equal(after[ref_weights.columns], ref_weights)
    new = ["denovo_1", "denovo_2"]
    assert not np.allclose(after[new].to_numpy(), before[new].to_numpy())
    assert (after.to_numpy() >= 0).all()
    mean_w = qmodel.module.z_encoder.mean_encoder.weight.detach()
    torch.testing.assert_close(mean_w[: ref_mean.shape[0]], ref_mean)
    assert qmodel.get_program_activity().shape == (query.n_obs, ref_weights.shape[1] + 2)
    qmodel.save(tmp_path / "q", overwrite=True)
    reloaded = ProgramVI.load(tmp_path / "q", adata=query)
    assert reloaded.module.n_denovo == 3

    other = query.copy()
    flipped = other.varm["programs"].copy()
    flipped.iloc[0, 0] = not flipped.iloc[0, 0]
    other.varm["programs"] = flipped
    with pytest.raises(ValueError, match="differs from the reference"):
        ProgramVI.load_query_data(other, model)


def _small():
    adata = glassvi.data.simulate(n_cells=60, n_genes=40, n_programs=3, genes_per_program=(5, 8))
    names = adata.uns["simulation"]["program_names"]
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    return adata


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        (lambda a: a.varm.pop("programs"), KeyError, "program mask 'programs' not found"),
        (
            lambda a: a.varm.__setitem__("programs", np.zeros((a.n_vars, 0), dtype=bool)),
            ValueError,
            "no programs",
        ),
        (
            lambda a: a.varm.__setitem__("programs", a.varm["programs"].astype(float) * 0.5),
            ValueError,
            "booleans or 0/1",
        ),
        (
            lambda a: a.varm.__setitem__("programs", a.varm["programs"] & False),
            ValueError,
            "no member",
        ),
    ],
    ids=["missing", "shape", "non-boolean", "no-overlap"],
)
def test_bad_masks_raise_before_registration(corrupt, error, message):
    adata = _small()
    corrupt(adata)
    with pytest.raises(error, match=message):
        ProgramVI.setup_anndata(adata)
    assert "_scvi_uuid" not in adata.uns and "_scvi_manager_uuid" not in adata.uns


def test_multiome_mask_checks():
    mdata = glassvi.data.simulate(
        n_cells=60,
        n_genes=40,
        n_peaks=80,
        n_programs=3,
        genes_per_program=(5, 8),
        modality="multiome",
    )
    names = mdata["rna"].uns["simulation"]["program_names"]
    mdata["rna"].varm["programs"] = pd.DataFrame(
        mdata["rna"].varm["true_programs"], index=mdata["rna"].var_names, columns=names
    )
    with pytest.raises(KeyError, match=r"mdata\['atac'\]"):
        ProgramVI.setup_mudata(mdata)
    dup = pd.DataFrame(
        mdata["atac"].varm["true_programs"],
        index=mdata["atac"].var_names,
        columns=[names[0]] * 3,
    )
    mdata["atac"].varm["programs"] = dup
    with pytest.raises(ValueError, match="duplicated program names"):
        ProgramVI.setup_mudata(mdata)
    assert isinstance(mdata, md.MuData)


def test_constructor_arguments_are_checked(sim):
    adata = sim.copy()
    ProgramVI.setup_anndata(adata)
    with pytest.raises(ValueError, match="mask_mode"):
        ProgramVI(adata, mask_mode="medium")
    with pytest.raises(ValueError, match="group_lasso"):
        ProgramVI(adata, group_lasso=-1)
    with pytest.raises(ValueError, match="n_denovo"):
        ProgramVI(adata, n_denovo=-1)
    with pytest.raises(ValueError, match="anchor_hidden"):
        ProgramVI(adata, anchor_hidden=2.0)


def test_default_de_novo_units_with_either_mask(sim, tmp_path):
    # both masks get two de novo units (signal no program explains goes there, not into the
    # programs that list the gene); an explicit value wins and is saved
    adata = sim.copy()
    ProgramVI.setup_anndata(adata)
    hard = ProgramVI(adata)
    assert hard.module.n_denovo == 2 and hard.init_params_["non_kwargs"]["n_denovo"] == 2
    assert ProgramVI(adata, mask_mode="soft").module.n_denovo == 2
    assert ProgramVI(adata, mask_mode="soft", n_denovo=1).module.n_denovo == 1
    hard.train(max_epochs=1, **TRAIN_KW)
    # latent attributions cover the de novo units too (each may use every gene)
    out = hard.explain(
        target="latent",
        method="integrated_gradients",
        n_steps=4,
        progress_bar=False,
        inplace=False,
    )
    key = "programvi_integrated_gradients_latent"
    assert np.asarray(out["varm"]["rna"][key]).shape == (adata.n_vars, len(hard.program_names) + 2)
    hard.save(tmp_path / "m", overwrite=True)
    assert ProgramVI.load(tmp_path / "m", adata=adata).module.n_denovo == 2


def test_label_head_with_unlabeled_category():
    import pandas as pd

    adata = glassvi.data.simulate(n_cells=300, n_genes=150, seed=0)
    names = adata.uns["simulation"]["program_names"]
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    adata.obs["ct"] = adata.obs["cell_type"].astype(str)
    adata.obs.loc[adata.obs_names[:50], "ct"] = "unk"
    ProgramVI.setup_anndata(adata, labels_key="ct", unlabeled_category="unk")
    model = ProgramVI(adata, classifier=True)
    model.train(max_epochs=2, enable_progress_bar=False, accelerator="cpu")
    predicted = model.predict()
    assert "unk" not in set(predicted)
    assert set(predicted) <= set(adata.obs["cell_type"].astype(str))
    assert not ProgramVI(adata, classifier=False).has_classifier


def test_anchor_targets_computed_once_before_training_equal_the_per_minibatch_ones(
    sim, monkeypatch
):
    import scvi

    import glassvi.model._programvi as programvi
    from glassvi.train import MinibatchDataset

    adata = sim.copy()
    ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
    states, anchors = [], []
    for cached in (False, True):
        # the targets are cached from this many programs on (1000 by default)
        monkeypatch.setattr(programvi, "CACHED_TARGET_MIN_PROGRAMS", 1 if cached else 10**9)
        scvi.settings.seed = 0
        model = ProgramVI(adata, n_hidden=16)
        keys = model._loader_keys()
        targets = model._anchor_targets(keys)
        assert (targets is None) != cached
        if cached:
            # the rows the loader passes are the targets the minibatch itself gives
            module, rows = model.module, np.arange(100, 164)
            batch = MinibatchDataset(model.adata_manager, keys=keys)[rows]
            expected = module.anchor_score(*module.anchor_inputs(batch))
            np.testing.assert_allclose(targets[rows], expected.numpy(), rtol=1e-5, atol=1e-6)
        model.train(max_epochs=2, batch_size=64, **TRAIN_KW)
        # with cached targets, training never builds the joint fit's (k + 1) x (k + 1) inverse
        assert (model.module._joint_design_cache is None) == cached
        states.append(model.module.state_dict())
        anchors.append(model.history["activity_anchor_train"].to_numpy(dtype=float).ravel())
    np.testing.assert_allclose(anchors[1], anchors[0], rtol=1e-4)
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-3, atol=1e-4, msg=key)
