"""Per-modality encoders combined as a product of Gaussian experts (``encoder="experts"``)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from scvi import REGISTRY_KEYS

import glassvi
from glassvi.model import LinearVI, ProgramVI
from glassvi.module import GlassVAE, ModalityExpertsEncoder, ProgramVAE
from glassvi.module._sparse_input import SparseBlock

TRAIN_KW = {"enable_progress_bar": False, "early_stopping": False}


def _encoder(**kwargs):
    torch.manual_seed(0)
    return ModalityExpertsEncoder(
        {"rna": 5, "atac": 7},
        3,
        n_cat_list=[2],
        n_hidden=8,
        dropout_rate=0.0,
        use_batch_norm=False,
        use_layer_norm=True,
        feature_major=["atac"],
        **kwargs,
    ).eval()


def _inputs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    rna = torch.from_numpy(np.log1p(rng.poisson(2.0, (n, 5))).astype(np.float32))
    atac = torch.from_numpy((rng.random((n, 7)) < 0.3).astype(np.float32))
    batch = torch.from_numpy(rng.integers(0, 2, (n, 1)))
    return rna, atac, batch


def test_posterior_is_the_product_of_the_experts_and_the_prior():
    enc = _encoder()
    rna, atac, batch = _inputs()
    qz, _ = enc(torch.cat([rna, atac], dim=1), batch)
    own = enc.expert_posteriors(torch.cat([rna, atac], dim=1), batch)
    precision = 1.0 + sum(1.0 / q.variance for q in own.values())
    mean = sum(q.loc / q.variance for q in own.values()) / precision
    torch.testing.assert_close(qz.loc, mean)
    torch.testing.assert_close(qz.variance, 1.0 / precision)
    # a confident expert decides: shrinking one expert's variance pulls the mean to it
    mu = [torch.zeros(2, 3), torch.ones(2, 3)]
    loc, _ = ModalityExpertsEncoder.product(mu, [torch.ones(2, 3), torch.full((2, 3), 1e-4)])
    assert torch.all(loc > 0.999)
    loc, var = ModalityExpertsEncoder.product(
        mu, [torch.ones(2, 3), torch.ones(2, 3)], keep=[torch.ones(2, 1), torch.zeros(2, 1)]
    )
    torch.testing.assert_close(loc, torch.zeros(2, 3))  # the second expert left out
    torch.testing.assert_close(var, torch.full((2, 3), 0.5))


def test_sparse_blocks_give_the_dense_posterior():
    enc = _encoder()
    rna, atac, batch = _inputs()
    dense, _ = enc(torch.cat([rna, atac], dim=1), batch)
    positions = torch.nonzero(atac.reshape(-1)).reshape(-1)
    block = SparseBlock.from_positions(atac, positions, True)
    sparse, _ = enc([rna, block], batch)
    torch.testing.assert_close(sparse.loc, dense.loc)
    torch.testing.assert_close(sparse.scale, dense.scale)
    with pytest.raises(ValueError, match="modality blocks"):
        enc([rna], batch)


def test_expert_dropout_encodes_cells_from_one_modality_alone():
    enc = _encoder(expert_dropout=1.0)
    rna, atac, batch = _inputs(n=200)
    x = torch.cat([rna, atac], dim=1)
    own = enc.expert_posteriors(x, batch)
    alone = {
        mod: ModalityExpertsEncoder.product([q.loc], [q.variance])[0] for mod, q in own.items()
    }
    enc.train()
    torch.manual_seed(1)
    qz, _ = enc(x, batch)
    is_rna = torch.isclose(qz.loc, alone["rna"], atol=1e-6).all(1)
    is_atac = torch.isclose(qz.loc, alone["atac"], atol=1e-6).all(1)
    assert bool((is_rna ^ is_atac).all())  # every cell from exactly one expert
    assert 60 < int(is_rna.sum()) < 140  # drawn at random between the modalities
    enc.eval()  # no dropout outside training
    torch.testing.assert_close(
        enc(x, batch)[0].loc,
        enc.product([q.loc for q in own.values()], [q.variance for q in own.values()])[0],
    )


def test_bad_encoder_arguments_are_refused():
    with pytest.raises(ValueError, match="at least two modalities"):
        GlassVAE({"rna": 10}, {"rna": "X"}, {"rna": "nb"}, encoder="experts")
    with pytest.raises(ValueError, match="encoder must be one of"):
        GlassVAE({"rna": 10}, {"rna": "X"}, {"rna": "nb"}, encoder="shared")
    with pytest.raises(ValueError, match="expert_dropout"):
        GlassVAE(
            {"rna": 10, "atac": 20},
            {"rna": "rna", "atac": "atac"},
            {"rna": "nb", "atac": "bernoulli"},
            encoder="experts",
            expert_dropout=1.5,
        )


def _program_module(**kwargs):
    """A small RNA+ATAC ProgramVAE with random masks and the activity anchor."""
    rng = np.random.default_rng(0)
    masks = {
        "rna": torch.from_numpy(rng.random((12, 4)) < 0.4),
        "atac": torch.from_numpy(rng.random((20, 4)) < 0.3),
    }
    torch.manual_seed(0)
    return ProgramVAE(
        {"rna": 12, "atac": 20},
        {"rna": "rna", "atac": "atac"},
        {"rna": "nb", "atac": "bernoulli"},
        masks,
        activity_anchor=5.0,
        **kwargs,
    )


def _anchor_module(anchor_hidden):
    return _program_module(
        n_denovo=1,
        dropout_rate=0.0,
        anchor_hidden=anchor_hidden,
        encoder="experts",
        expert_dropout=0.0,
    )


@pytest.mark.parametrize("anchor_hidden", [True, False])
def test_output_layer_anchor_reaches_no_hidden_layer_of_any_expert(anchor_hidden):
    rng = np.random.default_rng(1)
    tensors = {
        "rna": torch.from_numpy(rng.poisson(3.0, (16, 12)).astype(np.float32)),
        "atac": torch.from_numpy((rng.random((16, 20)) < 0.3).astype(np.float32)),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(16, 1),
    }
    module = _anchor_module(anchor_hidden)
    module.train()
    inf = module.inference(**module._get_inference_input(tensors))
    gen = module.generative(**module._get_generative_input(tensors, inf))
    out = module.loss(tensors, inf, gen)
    elbo = torch.mean(
        torch.stack(list(out.reconstruction_loss.values())).sum(0)
        + out.kl_local["kl_divergence_z"]
    )
    module.zero_grad()
    (out.loss - elbo).backward()
    experts = module.z_encoder.experts.values()
    hidden = sum(
        float(p.grad.abs().sum())
        for e in experts
        for p in e.encoder.parameters()
        if p.grad is not None
    )
    heads = sum(float(e.mean_encoder.weight.grad.abs().sum()) for e in experts)
    assert out.extra_metrics["activity_anchor"] > 0
    assert heads > 0
    if anchor_hidden:
        assert hidden > 1e-3
    else:
        assert hidden < 1e-6
        assert "output_on_detached_input" not in module.z_encoder.__dict__
    # new de novo units (query mapping) get rows in every expert's output layers
    module.add_denovo_(1)
    for e in module.z_encoder.experts.values():
        assert e.mean_encoder.out_features == e.var_encoder.out_features == module.n_latent


def _multiome():
    sim = glassvi.data.simulate(
        n_cells=150, n_genes=60, n_peaks=200, n_programs=4, modality="multiome", seed=0
    )
    names = list(sim.uns["simulation"]["program_names"])
    for mod in ("rna", "atac"):
        sim[mod].X = sp.csr_matrix(sim[mod].X)
        sim[mod].varm["programs"] = sim[mod].varm["true_programs"]
        sim[mod].uns["programs"] = {"names": names}
    sim.obs["sample"] = np.where(np.arange(sim.n_obs) % 3 == 0, "a", "b")
    return sim


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
def test_models_train_save_load_and_map_queries_with_experts(cls, tmp_path):
    data = _multiome()
    cls.setup_mudata(data, batch_key="sample")
    kwargs = {"n_latent": 4} if cls is LinearVI else {}
    scvi.settings.seed = 0
    model = cls(data, encoder="experts", **kwargs)
    assert isinstance(model.module.z_encoder, ModalityExpertsEncoder)
    atac_weight = model.module.z_encoder.experts["atac"].first_linear.weight
    rna_weight = model.module.z_encoder.experts["rna"].first_linear.weight
    before = atac_weight.detach().clone(), rna_weight.detach().clone()
    model.train(max_epochs=3, batch_size=50, **TRAIN_KW)
    # the sparse expert's first layer is updated by rows (lazy Adam), the other densely
    assert type(model.trainer.optimizers[0]).__name__ == "RowSparseAdam"
    assert not torch.equal(atac_weight, before[0])
    assert not torch.equal(rna_weight, before[1])
    latent = model.get_latent_representation()
    assert np.isfinite(latent).all()
    model.save(tmp_path / "ref", overwrite=True)
    loaded = cls.load(tmp_path / "ref", adata=data)
    np.testing.assert_allclose(loaded.get_latent_representation(), latent, atol=1e-5)
    # a query from a new sample maps onto the reference
    query = _multiome()[:60].copy()
    query.obs["sample"] = "c"
    mapped = cls.load_query_data(query, loaded)
    frozen = {
        mod: e.first_linear.weight.detach().clone()
        for mod, e in mapped.module.z_encoder.experts.items()
    }
    mapped.train(max_epochs=2, batch_size=50, **TRAIN_KW)
    assert np.isfinite(mapped.get_latent_representation()).all()
    for mod, e in mapped.module.z_encoder.experts.items():
        weight = e.first_linear.weight.detach()
        n_features = data[mod].n_vars
        # the reference's feature weights stay; the new sample's column learns
        torch.testing.assert_close(weight[:, :n_features], frozen[mod][:, :n_features])
        assert not torch.equal(weight[:, -1], frozen[mod][:, -1])


def test_linearvi_passes_modality_weights_and_encoder_to_its_module():
    data = _multiome()
    LinearVI.setup_mudata(data, batch_key="sample")
    model = LinearVI(data, n_latent=3, modality_weights={"atac": 0.3}, encoder="experts")
    torch.testing.assert_close(model.module.modality_weights, torch.tensor([1.0, 0.3]))
    assert model.module.encoder_kind == "experts"
    assert LinearVI(data, n_latent=3).module.encoder_kind == "joint"


def test_anchor_target_reads_the_modalities_asked_for():
    rng = np.random.default_rng(2)
    x = {
        "rna": torch.from_numpy(rng.poisson(3.0, (10, 12)).astype(np.float32)),
        "atac": torch.from_numpy((rng.random((10, 20)) < 0.3).astype(np.float32)),
    }
    other_atac = dict(x, atac=1.0 - x["atac"])

    module = _program_module
    default = module()
    assert default.anchor_modalities == ["rna", "atac"]
    assert not torch.allclose(default.anchor_score(x), default.anchor_score(other_atac))
    rna = module(anchor_modalities=["rna"])
    # the target then ignores the accessibility: the same for other ATAC counts
    torch.testing.assert_close(rna.anchor_score(x), rna.anchor_score(other_atac))
    torch.testing.assert_close(
        rna.anchor_score(x), module(modality_weights={"atac": 0.0}).anchor_score(x)
    )
    with pytest.raises(ValueError, match="anchor_modalities"):
        module(anchor_modalities=["protein"])
    alone = ProgramVAE(
        {"atac": 20}, {"atac": "atac"}, {"atac": "bernoulli"}, {"atac": torch.ones(20, 2)}
    )
    assert alone.anchor_modalities == ["atac"]


def test_programvi_defaults_to_experts_with_several_modalities_only():
    data = _multiome()
    ProgramVI.setup_mudata(data, batch_key="sample")
    assert isinstance(ProgramVI(data).module.z_encoder, ModalityExpertsEncoder)
    assert ProgramVI(data, encoder="joint").module.encoder_kind == "joint"
    rna = data["rna"].copy()
    ProgramVI.setup_anndata(rna)
    assert ProgramVI(rna).module.encoder_kind == "joint"


def test_models_saved_without_an_encoder_parameter_load_with_the_joint_encoder(tmp_path):
    data = _multiome()
    ProgramVI.setup_mudata(data, batch_key="sample")
    model = ProgramVI(data, encoder="joint")
    assert model.init_params_["non_kwargs"]["encoder"] == "joint"
    assert ProgramVI(data).init_params_["non_kwargs"]["encoder"] == "experts"  # resolved
    model.train(max_epochs=1, batch_size=50, **TRAIN_KW)
    model.save(tmp_path / "m", overwrite=True)
    # as saved before the encoder was a parameter
    path = tmp_path / "m" / "model.pt"
    content = torch.load(path, weights_only=False)
    del content["attr_dict"]["init_params_"]["non_kwargs"]["encoder"]
    torch.save(content, path)
    loaded = ProgramVI.load(tmp_path / "m", adata=data)
    assert loaded.module.encoder_kind == "joint"
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-5
    )
    query = _multiome()[:60].copy()
    query.obs["sample"] = "c"
    assert ProgramVI.load_query_data(query, tmp_path / "m").module.encoder_kind == "joint"


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_attributions_flow_through_the_product_of_experts(method):
    data = _multiome()
    ProgramVI.setup_mudata(data, batch_key="sample")
    scvi.settings.seed = 0
    model = ProgramVI(data)  # experts by default with two modalities
    model.train(max_epochs=2, batch_size=50, **TRAIN_KW)
    model.explain(method=method, target="latent")
    for mod in ("rna", "atac"):
        key = next(k for k in data[mod].varm if k.endswith(f"{method}_latent"))
        values = np.asarray(data[mod].varm[key])
        assert values.shape[0] == data[mod].n_vars
        assert np.isfinite(values).all()
        assert np.abs(values).sum() > 0  # both experts pass attribution to their inputs
