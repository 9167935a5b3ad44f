"""Sparse first encoder layer: same values and gradients as the dense layer."""

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from torch import nn

import glassvi
from glassvi.model import LinearVI, ProgramVI
from glassvi.module import GlassVAE, nonzero_key
from glassvi.module._sparse_input import (
    SparseBlock,
    SparseInputEncoder,
    block_linear,
    dense_input,
)
from glassvi.train import MinibatchDataset
from simulated import add_true_programs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice


def _counts(n_rows, n_cols, density, seed):
    gen = torch.Generator().manual_seed(seed)
    ones = torch.rand(n_rows, n_cols, generator=gen) < density
    return ones * torch.randint(1, 4, (n_rows, n_cols), generator=gen).float()


def _positions(counts, stored_zeros=0, seed=0):
    flat = counts.reshape(-1)
    pos = flat.nonzero().squeeze(1)
    if stored_zeros:
        gen = torch.Generator().manual_seed(seed)
        zeros = (flat == 0).nonzero().squeeze(1)
        extra = zeros[torch.randperm(zeros.numel(), generator=gen)[:stored_zeros]]
        pos = torch.sort(torch.cat([pos, extra])).values
    return pos


def test_sparse_block_reads_positions_and_drops_stored_zeros():
    counts = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    # position 0 is a stored zero
    block = SparseBlock.from_positions(counts, torch.tensor([0, 1, 3, 5]), binarise=True)
    assert block.rows.tolist() == [0, 1, 1] and block.cols.tolist() == [1, 0, 2]
    assert block.values is None
    np.testing.assert_array_equal(block.to_dense().numpy(), (counts > 0).float().numpy())
    raw = SparseBlock.from_positions(counts, torch.tensor([0, 1, 3, 5]), binarise=False)
    np.testing.assert_array_equal(raw.to_dense().numpy(), counts.numpy())
    assert raw.row_starts().tolist() == [0, 2]


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("binarise", [True, False])
def test_block_linear_equals_dense_linear_values_and_gradients(feature_major, binarise):
    torch.manual_seed(0)
    n_rows, n_dense, n_sparse, n_cats = 7, 5, 40, (3, 2)
    dense = torch.randn(n_rows, n_dense)
    counts = _counts(n_rows, n_sparse, 0.1, seed=1)
    counts[3] = 0.0  # a cell without any non-zero entry
    block = SparseBlock.from_positions(counts, _positions(counts, 6), binarise=binarise)
    empty = SparseBlock.from_positions(
        torch.zeros(n_rows, 4), torch.tensor([], dtype=torch.long), True
    )
    codes = [torch.randint(0, n, (n_rows,)) for n in n_cats]
    layer = nn.Linear(n_dense + n_sparse + 4 + sum(n_cats), 6)
    if feature_major:
        layer.weight = nn.Parameter(layer.weight.detach().t().contiguous().t())
    x = torch.cat(
        [dense, counts > 0 if binarise else counts, torch.zeros(n_rows, 4)]
        + [nn.functional.one_hot(c, n) for c, n in zip(codes, n_cats)],
        dim=-1,
    ).float()
    grad_out = torch.randn(n_rows, 6)

    expected = layer(x)
    expected.backward(grad_out)
    ref = (layer.weight.grad.clone(), layer.bias.grad.clone())
    layer.zero_grad()
    got = block_linear(layer, [dense, block, empty], list(zip(codes, n_cats)))
    got.backward(grad_out)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.weight.grad, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.bias.grad, ref[1], atol=1e-5, rtol=1e-5)
    # the gradient keeps the weight's layout, so the optimiser's state does too
    assert layer.weight.grad.stride() == layer.weight.stride()


def test_block_linear_checks_the_number_of_columns():
    layer = nn.Linear(10, 3)
    with pytest.raises(ValueError, match="cover 4 columns"):
        block_linear(layer, [torch.ones(2, 4)])


@pytest.mark.parametrize("n_layers", [1, 2])
def test_encoder_on_blocks_equals_dense_encoder_with_the_same_dropout(n_layers):
    torch.manual_seed(0)
    enc = SparseInputEncoder(
        3 + 50,
        4,
        n_cat_list=[3, 1, 2],
        n_layers=n_layers,
        return_dist=True,
        feature_major=True,
        use_layer_norm=True,
        use_batch_norm=False,
        dropout_rate=0.3,
    )
    assert enc.first_linear.weight.shape == (128, 53 + 3 + 2)
    assert enc.first_linear.weight.t().is_contiguous()
    enc.train()
    counts = _counts(9, 50, 0.08, seed=2)
    blocks = [torch.randn(9, 3), SparseBlock.from_positions(counts, _positions(counts), True)]
    cats = [torch.randint(0, 3, (9, 1)), torch.zeros(9, 1), torch.randint(0, 2, (9, 1))]
    outs = []
    for x in (blocks, dense_input(blocks)):
        enc.zero_grad()
        torch.manual_seed(5)
        qz, z = enc(x, *cats)
        (qz.loc.square().sum() + z.sum()).backward()
        outs.append((qz.loc, qz.scale, z, [p.grad.clone() for p in enc.parameters()]))
    for a, b in zip(outs[0][:3], outs[1][:3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(outs[0][3], outs[1][3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _module_and_tensors(stored_zeros):
    torch.manual_seed(0)
    module = GlassVAE(
        {"rna": 30, "atac": 200},
        {"rna": "X", "atac": "A"},
        {"rna": "nb", "atac": "bernoulli"},
        n_latent=4,
        n_batch=3,
        n_cats_per_cov=[2],
        n_continuous_cov=1,
        zero_sample_fraction=1.0,  # the exact likelihood: no random features drawn
    )
    atac = _counts(12, 200, 0.05, seed=3)
    tensors = {
        "X": torch.poisson(torch.full((12, 30), 2.0)),
        "A": atac,
        nonzero_key("A"): _positions(atac, stored_zeros),
        "batch": torch.randint(0, 3, (12, 1)),
        "extra_categorical_covs": torch.randint(0, 2, (12, 1)),
        "extra_continuous_covs": torch.randn(12, 1),
    }
    return module, tensors


@pytest.mark.parametrize("stored_zeros", [0, 10])
def test_module_inference_on_positions_equals_dense_inference(stored_zeros):
    module, tensors = _module_and_tensors(stored_zeros)
    inputs = module._get_inference_input(tensors)
    assert set(inputs["nonzero"]) == {"atac"}
    module.train()
    results = []
    for sparse in (True, False):
        module.zero_grad()
        kwargs = dict(inputs) if sparse else {k: v for k, v in inputs.items() if k != "nonzero"}
        torch.manual_seed(1)
        inf = module.inference(**kwargs)
        gen = module.generative(**module._get_generative_input(tensors, inf))
        loss = module.loss(tensors, inf, gen).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        results.append((inf["qz"].loc, inf["z"], inf["library"], loss, grads))
    (loc, z, lib, loss, grads), (loc_d, z_d, lib_d, loss_d, grads_d) = results
    torch.testing.assert_close(loc, loc_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, z_d, atol=1e-5, rtol=1e-5)
    for mod in lib:
        torch.testing.assert_close(lib[mod], lib_d[mod])
    torch.testing.assert_close(loss, loss_d, atol=1e-3, rtol=1e-5)
    assert grads.keys() == grads_d.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], grads_d[name], atol=1e-4, rtol=1e-4)


def test_rna_only_module_keeps_the_dense_encoder_layout():
    module = GlassVAE({"rna": 30}, {"rna": "X"}, {"rna": "nb"}, n_latent=4)
    assert module.z_encoder.first_linear.weight.is_contiguous()
    assert "nonzero" not in module._get_inference_input({"X": torch.ones(2, 30)})


@pytest.fixture(scope="module")
def multiome():
    mdata = glassvi.data.simulate(
        n_cells=150, n_genes=60, n_peaks=400, n_programs=4, modality="multiome", seed=7
    )
    add_true_programs(mdata)
    mdata.obs["sample"] = np.where(np.arange(mdata.n_obs) % 2 == 0, "s1", "s2")
    return mdata


def _trained(mdata, cls, sparse, **kwargs):
    data = mdata.copy()
    for mod in ("rna", "atac"):
        counts = data[mod].X
        counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
        data[mod].X = sp.csr_matrix(counts) if sparse else counts
    cls.setup_mudata(data, batch_key="sample")
    scvi.settings.seed = 0
    model = cls(data, zero_sample_fraction=1.0, **kwargs)
    # exact Adam on the first layer too (with sparse inputs it is updated lazily by default)
    model.train(
        max_epochs=2,
        batch_size=50,
        enable_progress_bar=False,
        accelerator="cpu",
        plan_kwargs={"lazy_feature_rows": False},
    )
    return model, data


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
def test_training_on_sparse_atac_matches_dense_atac(multiome, cls):
    """Sparse minibatches take the sparse encoder path; the trained model is the same."""
    kwargs = {"n_latent": 4} if cls is LinearVI else {}
    sparse, data = _trained(multiome, cls, True, **kwargs)
    tensors = MinibatchDataset(sparse.adata_manager)[np.arange(20)]
    assert nonzero_key(sparse.module.registry_keys["atac"]) in tensors
    dense, _ = _trained(multiome, cls, False, **kwargs)
    for (name, a), b in zip(
        sparse.module.state_dict().items(), dense.module.state_dict().values()
    ):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3, msg=name)
    np.testing.assert_allclose(
        sparse.get_latent_representation(), dense.get_latent_representation(data), atol=1e-3
    )


def test_query_mapping_keeps_reference_encoder_columns(multiome, tmp_path):
    mdata = multiome.copy()
    mdata["atac"].X = sp.csr_matrix(mdata["atac"].X)
    LinearVI.setup_mudata(mdata, batch_key="sample")
    model = LinearVI(mdata, n_latent=4)
    model.train(max_epochs=1, batch_size=50, enable_progress_bar=False, accelerator="cpu")
    model.save(tmp_path / "ref")
    loaded = LinearVI.load(tmp_path / "ref", adata=mdata)
    first = "z_encoder.encoder.fc_layers.Layer 0.0.weight"
    torch.testing.assert_close(loaded.module.state_dict()[first], model.module.state_dict()[first])
    query = multiome[:60].copy()
    query["atac"].X = sp.csr_matrix(query["atac"].X)
    query.obs["sample"] = "new"
    qmodel = LinearVI.load_query_data(query, model)
    before = qmodel.module.state_dict()[first].clone()
    qmodel.train(max_epochs=2, batch_size=30, enable_progress_bar=False, accelerator="cpu")
    after = qmodel.module.state_dict()[first]
    n_features = mdata["rna"].n_vars + mdata["atac"].n_vars
    # feature columns of the reference stay fixed; the new batch's column is trained
    torch.testing.assert_close(after[:, :n_features], before[:, :n_features])
    assert not torch.allclose(after[:, -1], before[:, -1])
    assert np.isfinite(qmodel.get_latent_representation()).all()
