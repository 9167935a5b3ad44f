"""Lazy (row-sparse) Adam for the encoder's first layer: equal to a reference, with fallbacks."""

import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch

import glassvi
from glassvi.model import LinearVI, ProgramVI
from glassvi.module._sparse_input import (
    SparseBlock,
    SparseInputEncoder,
    _BlockLinearRows,
    _entry_rows_sum,
    block_linear,
)
from glassvi.train._lazy_adam import (
    RowSparseAdam,
    _interleaved_base,
    _interleaved_moments,
    lazy_adam_rows_,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


def _reference_lazy_adam(steps, shape, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """NumPy lazy Adam: ``steps`` are (rows, row gradients); returns the parameter's path."""
    param = np.zeros(shape, np.float64)
    m, v = np.zeros(shape), np.zeros(shape)
    path = []
    for t, (rows, grad) in enumerate(steps, start=1):
        m[rows] = betas[0] * m[rows] + (1 - betas[0]) * grad
        v[rows] = betas[1] * v[rows] + (1 - betas[1]) * grad**2
        m_hat = m[rows] / (1 - betas[0] ** t)
        v_hat = v[rows] / (1 - betas[1] ** t)
        param[rows] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        path.append(param.copy())
    return path


@pytest.mark.parametrize("eps", [1e-8, 0.01])
def test_row_sparse_adam_equals_numpy_lazy_adam_and_torch_adam_on_dense(eps):
    gen = np.random.default_rng(0)
    shape = (30, 5)
    steps = []
    for _ in range(6):
        rows = np.sort(gen.choice(shape[0], 7, replace=False))
        steps.append((rows, gen.normal(size=(7, shape[1]))))
    expected = _reference_lazy_adam(steps, shape, lr=0.05, eps=eps)
    weight = torch.nn.Parameter(torch.zeros(shape))
    other = torch.nn.Parameter(torch.zeros(3))
    twin = torch.nn.Parameter(torch.zeros(3))
    opt = RowSparseAdam([weight, other], lr=0.05, eps=eps, fused=True)
    plain = torch.optim.Adam([twin], lr=0.05, eps=eps)
    for (rows, grad), target in zip(steps, expected):
        weight.grad = torch.sparse_coo_tensor(
            torch.from_numpy(rows)[None],
            torch.tensor(grad, dtype=torch.float32),
            shape,
            check_invariants=True,
        )
        other.grad = twin.grad = torch.arange(3.0) - 1.0
        opt.step()
        plain.step()
        np.testing.assert_allclose(weight.detach().numpy(), target, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(other, twin)
    # rows never listed keep their values and moments
    never = np.setdiff1d(np.arange(shape[0]), np.concatenate([r for r, _ in steps]))
    assert never.size and (weight.detach().numpy()[never] == 0).all()
    assert (opt.state[weight]["exp_avg"][never] == 0).all()
    assert int(opt.state[weight]["step"]) == len(steps)


def _reference_row_adam(steps, shape, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """NumPy lazy Adam with one second moment per row (the row mean of squared gradients)."""
    param = np.zeros(shape, np.float64)
    m, v = np.zeros(shape), np.zeros(shape[0])
    path = []
    for t, (rows, grad) in enumerate(steps, start=1):
        m[rows] = betas[0] * m[rows] + (1 - betas[0]) * grad
        v[rows] = betas[1] * v[rows] + (1 - betas[1]) * (grad**2).mean(1)
        m_hat = m[rows] / (1 - betas[0] ** t)
        v_hat = v[rows] / (1 - betas[1] ** t)
        param[rows] -= lr * m_hat / (np.sqrt(v_hat)[:, None] + eps)
        path.append(param.copy())
    return path, m, v


@pytest.mark.parametrize("eps", [1e-8, 0.01])
def test_row_second_moment_equals_numpy_row_wise_adam_on_sparse_and_dense_steps(eps):
    gen = np.random.default_rng(1)
    shape = (30, 20)
    steps = []
    for step in range(6):
        # (step 3: a dense gradient, which updates every row the same way)
        n = shape[0] if step == 3 else 7
        rows = np.sort(gen.choice(shape[0], n, replace=False))
        steps.append((rows, gen.normal(size=(n, shape[1])) * (1 + np.arange(n))[:, None]))
    expected, m, v = _reference_row_adam(steps, shape, lr=0.05, eps=eps)
    weight = torch.nn.Parameter(torch.zeros(shape))
    other = torch.nn.Parameter(torch.zeros(3))
    twin = torch.nn.Parameter(torch.zeros(3))
    opt = RowSparseAdam([weight, other], lr=0.05, eps=eps, row_second_moment=True)
    plain = torch.optim.Adam([twin], lr=0.05, eps=eps)
    for step, ((rows, grad), target) in enumerate(zip(steps, expected)):
        grad = torch.tensor(grad, dtype=torch.float32)
        if step == 3:
            weight.grad = grad
        else:
            index = torch.from_numpy(rows)[None]
            weight.grad = torch.sparse_coo_tensor(index, grad, shape, check_invariants=True)
        other.grad = twin.grad = torch.arange(3.0) - 1.0
        opt.step()
        plain.step()
        np.testing.assert_allclose(weight.detach().numpy(), target, rtol=1e-4, atol=1e-6)
        # the other parameters take Adam's (element-wise) step
        torch.testing.assert_close(other, twin)
    state = opt.state[weight]
    assert state["exp_avg_sq"].shape == (shape[0],) and state["exp_avg"].shape == shape
    np.testing.assert_allclose(state["exp_avg_sq"].numpy(), v, rtol=1e-4)
    np.testing.assert_allclose(state["exp_avg"].numpy(), m, rtol=1e-4, atol=1e-7)
    assert opt.state[other]["exp_avg_sq"].shape == (3,)
    # the row-wise update differs from element-wise Adam (rows share one step size)
    elementwise = _reference_lazy_adam(steps, shape, lr=0.05, eps=eps)[-1]
    assert np.abs(elementwise - expected[-1]).max() > 1e-3


def test_row_and_element_second_moments_convert_into_each_other():
    """Element-wise moments become row means; row-wise ones are repeated over the row."""
    gen = torch.Generator().manual_seed(7)
    shape = (8, 5)
    weight = torch.nn.Parameter(torch.zeros(shape))
    grad = torch.randn(shape, generator=gen)
    every_row = torch.arange(shape[0])[None]
    element = RowSparseAdam([weight], lr=0.05)
    weight.grad = torch.sparse_coo_tensor(every_row, grad, shape, check_invariants=True)
    element.step()
    before = element.state[weight]["exp_avg_sq"].clone()
    rows = RowSparseAdam([weight], lr=0.05, row_second_moment=True)
    rows.load_state_dict(element.state_dict())
    rows.step()  # (the sparse gradient is still set)
    after = rows.state[weight]["exp_avg_sq"]
    expected = 0.999 * before.mean(1) + 0.001 * (grad**2).mean(1)
    torch.testing.assert_close(after, expected)
    back = RowSparseAdam([weight], lr=0.05)
    back.load_state_dict(rows.state_dict())
    weight.grad = grad  # a dense step: torch's Adam on the repeated row moments
    back.step()
    state = back.state[weight]
    assert state["exp_avg_sq"].shape == shape
    torch.testing.assert_close(state["exp_avg_sq"], 0.999 * after[:, None] + 0.001 * grad**2)


def test_moments_of_lazy_rows_share_one_buffer_and_mix_with_dense_steps():
    """Lazy steps keep both moments in one buffer; dense steps in between still equal Adam's."""
    gen = torch.Generator().manual_seed(5)
    shape = (12, 4)
    grads = [torch.randn(shape, generator=gen) for _ in range(4)]
    weight = torch.nn.Parameter(torch.randn(shape, generator=gen))
    twin = torch.nn.Parameter(weight.detach().clone())
    opt = RowSparseAdam([weight], lr=0.05, eps=0.01)
    plain = torch.optim.Adam([twin], lr=0.05, eps=0.01)
    every_row = torch.arange(shape[0])[None]
    for step, grad in enumerate(grads):
        # lazy steps over every row equal Adam's step
        sparse = step != 2
        weight.grad = (
            torch.sparse_coo_tensor(every_row, grad, shape, check_invariants=True)
            if sparse
            else grad
        )
        twin.grad = grad.clone()
        opt.step()
        plain.step()
        state = opt.state[weight]
        assert (_interleaved_base(state["exp_avg"], state["exp_avg_sq"]) is not None) == sparse
        torch.testing.assert_close(weight.detach(), twin.detach(), rtol=1e-5, atol=1e-6)
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name], plain.state[twin][name])


def test_lazy_row_step_on_separate_moments_equals_the_step_on_one_buffer():
    gen = torch.Generator().manual_seed(6)
    param = torch.randn(10, 3, generator=gen)
    index, grad = torch.tensor([1, 4, 7]), torch.randn(3, 3, generator=gen)
    kwargs = {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step": 2}
    separate = [param.clone(), torch.rand(10, 3, generator=gen), torch.rand(10, 3, generator=gen)]
    exp_avg, exp_avg_sq = _interleaved_moments(param)
    exp_avg.copy_(separate[1])
    exp_avg_sq.copy_(separate[2])
    shared = [param.clone(), exp_avg, exp_avg_sq]
    for tensors in (separate, shared):
        lazy_adam_rows_(*tensors, index, grad, **kwargs)
    for a, b in zip(separate, shared):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved = (separate[0] != param).any(1)
    assert moved[index].all() and moved.sum() == len(index)


def test_row_sparse_adam_coalesces_repeated_rows_and_refuses_decay():
    weight = torch.nn.Parameter(torch.zeros(4, 2))
    opt = RowSparseAdam([weight], lr=0.1)
    # row 1 listed twice: its gradients are summed first
    weight.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 3, 1]]), torch.ones(3, 2), (4, 2), check_invariants=True
    )
    opt.step()
    twin = torch.nn.Parameter(torch.zeros(4, 2))
    dense = torch.zeros(4, 2)
    dense[1], dense[3] = 2.0, 1.0
    twin.grad = dense
    torch.optim.Adam([twin], lr=0.1).step()
    torch.testing.assert_close(weight.detach(), twin.detach())
    decayed = RowSparseAdam([torch.nn.Parameter(torch.zeros(4, 2))], lr=0.1, weight_decay=0.1)
    decayed.param_groups[0]["params"][0].grad = weight.grad
    with pytest.raises(ValueError, match="weight_decay"):
        decayed.step()


@pytest.mark.parametrize("weighted", [False, True])
def test_row_gradient_equals_dense_gradient_rows(weighted):
    """The sparse weight gradient holds exactly the dense gradient's reached rows."""
    gen = torch.Generator().manual_seed(1)
    n_cells, n_rna, n_peaks, n_cat, hidden = 9, 4, 40, 3, 6
    counts = (torch.rand(n_cells, n_peaks, generator=gen) < 0.1).float() * 2
    positions = counts.reshape(-1).nonzero().squeeze(1)
    block = SparseBlock.from_positions(counts, positions, binarise=not weighted)
    rna = torch.rand(n_cells, n_rna, generator=gen)
    codes = torch.tensor([0, 2, 2, 0, 0, 2, 0, 2, 0])  # category 1 absent
    layer = torch.nn.Linear(n_rna + n_peaks + n_cat, hidden)
    out_grad = torch.randn(n_cells, hidden, generator=gen)
    block_linear(layer, [rna, block], [(codes, n_cat)]).backward(out_grad)
    dense_t = layer.weight.grad.t()
    weight_t = layer.weight.detach().t().contiguous().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    out = _BlockLinearRows.apply(weight_t, bias, [rna, block], [(codes, n_cat)])
    torch.testing.assert_close(out, block_linear(layer, [rna, block], [(codes, n_cat)]))
    out.backward(out_grad)
    grad = weight_t.grad.coalesce()
    rows = grad.indices()[0]
    reached = torch.cat(
        [
            torch.arange(n_rna),
            n_rna + torch.unique(block.cols),
            n_rna + n_peaks + torch.unique(codes),
        ]
    )
    assert torch.equal(rows, reached)
    torch.testing.assert_close(grad.to_dense(), dense_t)
    torch.testing.assert_close(bias.grad, layer.bias.grad)


def test_compiled_row_sums_equal_torch_row_sums(monkeypatch):
    import glassvi._compiled as kernels
    import glassvi.module._sparse_input as sparse_input

    def refuse():
        raise AssertionError("the compiled kernel ran with numba switched off")

    gen = torch.Generator().manual_seed(2)
    grad = torch.randn(50, 8, generator=gen)
    cells = torch.randint(0, 50, (300,), generator=gen)
    columns = torch.randint(0, 1000, (300,), generator=gen)
    weights = torch.rand(300, generator=gen)
    for w in (None, weights):
        index, rows = _entry_rows_sum(cells, columns, w, grad, 1000)
        monkeypatch.setattr(kernels, "numba_available", lambda: False)
        monkeypatch.setattr(sparse_input, "_rows_kernel", refuse)
        index_torch, rows_torch = _entry_rows_sum(cells, columns, w, grad, 1000)
        monkeypatch.undo()
        assert torch.equal(index, index_torch)
        torch.testing.assert_close(rows, rows_torch)
        assert torch.equal(index, torch.unique(columns))


def test_row_gradient_is_not_used_with_gradient_hooks_or_without_gradients():
    enc = SparseInputEncoder(6, 2, n_cat_list=[2], return_dist=True, feature_major=True)
    weight = enc.first_linear.weight
    alias = torch.nn.Parameter(weight.detach().t())
    enc.set_row_gradient_weight(alias)
    block = SparseBlock.from_positions(torch.eye(6)[:2], torch.tensor([0, 7]), True)
    enc([block], torch.tensor([[0], [1]]))[0].loc.sum().backward()
    assert alias.grad is not None and alias.grad.is_sparse and weight.grad is None
    alias.grad = None
    handle = weight.register_hook(lambda g: g * 0)
    enc([block], torch.tensor([[0], [1]]))[0].loc.sum().backward()
    assert alias.grad is None and weight.grad is not None and (weight.grad == 0).all()
    handle.remove()
    with pytest.raises(ValueError, match="storage"):
        enc.set_row_gradient_weight(torch.nn.Parameter(torch.zeros(8, 128)))
    enc.set_row_gradient_weight(None)
    weight.grad = None
    enc([block], torch.tensor([[0], [1]]))[0].loc.sum().backward()
    assert weight.grad is not None and alias.grad is None
    # factored: the backward pass leaves its factors for the optimiser, and no gradient
    weight.grad = None
    enc.set_row_gradient_weight(alias, factored=True)
    enc([block], torch.tensor([[0], [1]]))[0].loc.sum().backward()
    assert alias.grad is None and weight.grad is None
    assert len(alias.row_gradient_factors) == 1
    enc.set_row_gradient_weight(None)
    assert not hasattr(alias, "row_gradient_factors")


class _LazyAdamReference(torch.optim.Optimizer):
    """Plain Adam, except that rows of ``lazy`` (features) with no gradient are left alone.

    With ``row_wise``, ``lazy`` keeps one second moment per feature: the mean over the
    feature's weights of their squared gradient.
    """

    def __init__(self, params, lazy, lr=1e-3, eps=0.01, row_wise=False):
        super().__init__(params, {"lr": lr, "eps": eps})
        self.lazy = lazy
        self.row_wise = row_wise

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, g = state["t"], p.grad
                m = 0.9 * state["m"] + 0.1 * g
                squares = g * g
                if p is self.lazy and self.row_wise:
                    # weight is (hidden x features): a feature's weights are a column
                    squares = squares.mean(0, keepdim=True).expand_as(p)
                v = 0.999 * state["v"] + 0.001 * squares
                new = p - group["lr"] / (1 - 0.9**t) * m / (
                    (v / (1 - 0.999**t)).sqrt() + group["eps"]
                )
                keep = torch.zeros_like(p, dtype=torch.bool)
                if p is self.lazy:
                    # weight is (hidden x features): a feature's column without gradient
                    keep = (g == 0).all(0, keepdim=True).expand_as(p)
                state["m"] = torch.where(keep, state["m"], m)
                state["v"] = torch.where(keep, state["v"], v)
                p.copy_(torch.where(keep, p, new))
        return loss


def _atac(n_peaks=300, seed=4):
    sim = glassvi.data.simulate(
        n_cells=120, n_genes=40, n_peaks=n_peaks, n_programs=3, modality="multiome", seed=seed
    )
    atac = sim["atac"].copy()
    atac.X = sp.csr_matrix(atac.X)
    atac.obs["sample"] = np.where(np.arange(atac.n_obs) % 3 == 0, "a", "b")
    return atac


def _mudata(atac):
    data = md.MuData({"atac": atac})
    data.obs["sample"] = atac.obs["sample"].to_numpy()
    return data


@pytest.mark.parametrize(
    ("cls", "row_wise"), [(LinearVI, True), (ProgramVI, True), (LinearVI, False)]
)
def test_default_plan_is_lazy_adam_on_the_first_layer(cls, row_wise, monkeypatch):
    """Sparse ATAC: the first layer's rows of absent peaks stay; equal to a lazy reference.

    By default with one second moment per feature row, else element-wise.
    """
    import glassvi.train._lazy_adam as lazy_adam

    factored_steps = []
    name = "row_adam_factored_" if row_wise else "lazy_adam_factored_"
    step = getattr(lazy_adam, name)
    monkeypatch.setattr(
        lazy_adam,
        name,
        lambda *args, **kwargs: factored_steps.append(1) or step(*args, **kwargs),
    )
    atac = _atac()
    atac.varm["programs"] = np.random.default_rng(0).random((atac.n_vars, 3)) < 0.2
    kwargs = {"n_latent": 4} if cls is LinearVI else {}
    states, moved, optimisers = [], [], []
    for lazy in (True, False):
        data = _mudata(atac.copy())
        cls.setup_mudata(data, batch_key="sample")
        scvi.settings.seed = 0
        model = cls(data, zero_sample_fraction=1.0, **kwargs)
        weight = model.module.z_encoder.first_linear.weight
        initial = weight.detach().clone()
        plan = {} if row_wise else {"row_second_moment": False}
        if not lazy:
            plan = {
                "optimizer": "Custom",
                "optimizer_creator": lambda params, w=weight: _LazyAdamReference(
                    params, w, row_wise=row_wise
                ),
            }
        model.train(max_epochs=2, batch_size=40, train_size=1.0, plan_kwargs=plan, **TRAIN_KW)
        optimisers.append(type(model.trainer.optimizers[0]).__name__ if lazy else None)
        # the row gradient is switched off after training
        assert model.module.z_encoder.__dict__.get("_row_gradient_weight") is None
        moved.append((weight.detach() != initial).any(0))
        states.append(model.module.state_dict())
    assert optimisers[0] == "RowSparseAdam"
    # the optimiser summed the rows from the gradient's factors at every step
    assert len(factored_steps) == 2 * 3
    for name, value in states[0].items():
        torch.testing.assert_close(value, states[1][name], atol=1e-5, rtol=1e-4, msg=name)
    # peaks never open keep their initial weights; the others moved
    never_open = torch.from_numpy(np.asarray(atac.X.sum(0)).ravel() == 0)
    assert never_open.any()
    assert not moved[0][: atac.n_vars][never_open].any()
    assert moved[0][: atac.n_vars][~never_open].all()


@pytest.mark.parametrize(
    "train_kwargs",
    [
        {"plan_kwargs": {"weight_decay": 1e-3}},
        {"gradient_clip_val": 10.0},
        {"plan_kwargs": {"lazy_feature_rows": False}},
        {"plan_kwargs": {"optimizer": "AdamW"}},
    ],
    ids=["weight_decay", "clipping", "off", "adamw"],
)
def test_exact_adam_is_used_when_lazy_rows_do_not_apply(train_kwargs):
    """Fallbacks: the first layer gets its dense gradient and every peak's row moves."""
    atac = _atac()
    data = _mudata(atac)
    LinearVI.setup_mudata(data, batch_key="sample")
    scvi.settings.seed = 0
    model = LinearVI(data, n_latent=4)
    weight = model.module.z_encoder.first_linear.weight
    initial = weight.detach().clone()
    grads = []
    weight.register_post_accumulate_grad_hook(lambda p: grads.append(p.grad is not None))
    model.train(max_epochs=1, batch_size=40, train_size=1.0, **train_kwargs, **TRAIN_KW)
    assert type(model.trainer.optimizers[0]).__name__ in ("Adam", "AdamW")
    assert grads and all(grads)
    never_open = torch.from_numpy(np.asarray(atac.X.sum(0)).ravel() == 0)
    moved = (weight.detach() != initial).any(0)[: atac.n_vars]
    assert moved[~never_open].all()


def test_dense_atac_minibatches_keep_exact_adam_under_the_lazy_optimiser():
    """Without positions (dense registered ATAC) the weight's gradient is dense: plain Adam."""
    atac = _atac()
    atac.X = atac.X.toarray()
    states = []
    for plan in ({}, {"lazy_feature_rows": False}):
        data = _mudata(atac.copy())
        LinearVI.setup_mudata(data, batch_key="sample")
        scvi.settings.seed = 0
        model = LinearVI(data, n_latent=4)
        model.train(max_epochs=2, batch_size=40, train_size=1.0, plan_kwargs=plan, **TRAIN_KW)
        states.append(model.module.state_dict())
    for name, value in states[0].items():
        torch.testing.assert_close(value, states[1][name], msg=name)


def _block_inputs(weighted, gen, with_dense_block=True):
    n_cells, n_rna, n_peaks, n_cat = 9, 4, 40, 3
    counts = (torch.rand(n_cells, n_peaks, generator=gen) < 0.15).float() * 2
    positions = counts.reshape(-1).nonzero().squeeze(1)
    block = SparseBlock.from_positions(counts, positions, binarise=not weighted)
    codes = torch.tensor([0, 2, 2, 0, 0, 2, 0, 2, 0])  # category 1 absent
    if not with_dense_block:
        return [block], [(codes, n_cat)], n_peaks + n_cat
    rna = torch.rand(n_cells, n_rna, generator=gen)
    return [rna, block], [(codes, n_cat)], n_rna + n_peaks + n_cat


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_dense_block", [False, True])
@pytest.mark.parametrize("row_wise", [False, True])
def test_factored_row_gradient_step_equals_the_formed_sparse_step(
    weighted, with_dense_block, row_wise
):
    """Rows summed inside the update: same values and moments as forming the gradient first."""
    hidden = 6
    results = []
    for factored in (True, False):
        gen = torch.Generator().manual_seed(3)
        blocks, categories, n_input = _block_inputs(weighted, gen, with_dense_block)
        weight_t = torch.nn.Parameter(torch.randn(n_input, hidden, generator=gen))
        bias = torch.nn.Parameter(torch.zeros(hidden))
        if factored:
            weight_t.row_gradient_factors = []
        sink = getattr(weight_t, "row_gradient_factors", None)
        opt = RowSparseAdam([weight_t, bias], lr=0.05, eps=0.01, row_second_moment=row_wise)
        for step in range(3):
            out_grad = torch.randn(9, hidden, generator=gen)
            n_passes = 2 if step == 2 else 1  # two backward passes before one step
            for _ in range(n_passes):
                out = _BlockLinearRows.apply(weight_t, bias, blocks, categories, sink)
                out.backward(out_grad)
            if factored:
                assert weight_t.grad is None and len(sink) == n_passes
            else:
                assert weight_t.grad.is_sparse
            opt.step()
            assert not sink
            opt.zero_grad()
        state = opt.state[weight_t]
        results.append((weight_t.detach(), state["exp_avg"], state["exp_avg_sq"], bias.detach()))
        assert int(state["step"]) == 3
        assert state["exp_avg_sq"].dim() == (1 if row_wise else 2)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved = (results[0][1] != 0).any(1)
    assert moved.any() and not moved.all()  # rows of absent peaks and categories kept


def test_zero_grad_drops_unformed_row_gradients():
    gen = torch.Generator().manual_seed(4)
    blocks, categories, n_input = _block_inputs(False, gen)
    weight_t = torch.nn.Parameter(torch.randn(n_input, 5, generator=gen))
    weight_t.row_gradient_factors = []
    opt = RowSparseAdam([weight_t], lr=0.1)
    sink = weight_t.row_gradient_factors
    _BlockLinearRows.apply(weight_t, None, blocks, categories, sink).sum().backward()
    assert len(sink) == 1
    opt.zero_grad()
    before = weight_t.detach().clone()
    opt.step()
    assert sink == [] and torch.equal(weight_t.detach(), before)
