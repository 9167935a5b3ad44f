"""The program decoder's indexed product against the dense product of its weights."""

import pytest
import torch

from glassvi.module import ProgramDecoder


@pytest.mark.parametrize("n_denovo", [0, 2])
def test_indexed_program_decoder_matches_the_dense_product_and_its_gradients(n_denovo):
    gen = torch.Generator().manual_seed(0)
    n_features, n_programs = 60, 7
    mask = torch.rand(n_features, n_programs, generator=gen) < 0.15
    decoder = ProgramDecoder(n_programs + n_denovo, n_features, n_batch=3, mask=mask)
    with torch.no_grad():
        decoder.batch_offset.normal_(generator=gen)
    z = torch.randn(9, n_programs + n_denovo, generator=gen, requires_grad=True)
    batch = torch.randint(0, 3, (9, 1), generator=gen)
    weights = torch.randn(9, n_features, generator=gen)

    eta = decoder(z, batch)
    grads = torch.autograd.grad((eta * weights).sum(), [z, decoder.program_values])

    dense_values = decoder.program_values.detach().clone().requires_grad_()
    program_weight = torch.zeros(n_features, n_programs).index_put(
        (decoder.program_rows, decoder.program_cols), dense_values
    )
    weight = torch.cat([program_weight, decoder.weight.detach()], 1)
    reference = z @ weight.T + decoder.bias.detach() + decoder.batch_offset.detach()[batch[:, 0]]
    ref_grads = torch.autograd.grad((reference * weights).sum(), [z, dense_values])

    torch.testing.assert_close(eta, reference)
    for ours, ref in zip(grads, ref_grads):
        torch.testing.assert_close(ours, ref)


def _decoders():
    from glassvi.module import LinearFeatureDecoder

    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(40, 5, generator=gen) < 0.3
    kwargs = {"n_batch": 3, "n_cats_per_cov": [2], "n_continuous_cov": 2}
    decoders = {
        "linear": LinearFeatureDecoder(5, 40, **kwargs),
        "linear_hard_mask": LinearFeatureDecoder(5, 40, mask=mask, **kwargs),
        "program_hard": ProgramDecoder(7, 40, mask=mask, **kwargs),
        "program_soft": ProgramDecoder(7, 40, mask=mask, mask_mode="soft", **kwargs),
        "program_hard_no_denovo": ProgramDecoder(5, 40, mask=mask, **kwargs),
    }
    for decoder in decoders.values():
        with torch.no_grad():
            for param in decoder.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    return decoders


KINDS = ["linear", "linear_hard_mask", "program_hard", "program_soft", "program_hard_no_denovo"]


def _refuse_compiled():
    raise AssertionError("a compiled pair kernel ran with numba switched off")


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_on_a_subset_of_features_equals_those_columns(kind):
    decoder = _decoders()[kind]
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(6, decoder.n_latent, generator=gen)
    covariates = (
        torch.randint(0, 3, (6, 1), generator=gen),
        torch.randint(0, 2, (6, 1), generator=gen),
        torch.randn(6, 2, generator=gen),
    )
    features = torch.tensor([0, 3, 4, 17, 22, 39])
    weights = torch.randn(6, features.numel(), generator=gen)
    params = [param for param in decoder.parameters() if param.numel()]
    full = decoder(z, *covariates)[:, features]
    full_grads = torch.autograd.grad((full * weights).sum(), params)
    part = decoder(z, *covariates, features=features)
    part_grads = torch.autograd.grad((part * weights).sum(), params)
    torch.testing.assert_close(part, full)
    for ours, ref in zip(part_grads, full_grads):
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("sort_rows", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_pair_logits_equal_the_entries_of_the_full_decoder(kind, sort_rows, compiled, monkeypatch):
    import glassvi._compiled as kernels
    import glassvi.module._decoders as decoders

    if not compiled:  # torch's gather and embedding_bag path (other devices and dtypes)
        monkeypatch.setattr(kernels, "numba_available", lambda: False)
        monkeypatch.setattr(decoders, "_pair_kernels", _refuse_compiled)
    decoder = _decoders()[kind]
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(6, decoder.n_latent, generator=gen, requires_grad=True)
    covariates = (
        torch.randint(0, 3, (6, 1), generator=gen),
        torch.randint(0, 2, (6, 1), generator=gen),
        torch.randn(6, 2, generator=gen),
    )
    # unsorted pairs, features repeated across cells
    rows = torch.tensor([5, 0, 0, 3, 2, 5, 1, 4])
    features = torch.tensor([39, 3, 17, 3, 0, 22, 39, 17])
    if sort_rows:  # as the data loader's row-major positions come
        order = torch.argsort(rows, stable=True)
        rows, features = rows[order], features[order]
    weights = torch.randn(rows.numel(), generator=gen)
    params = [z, *(param for param in decoder.parameters() if param.numel())]
    full = decoder(z, *covariates)[rows, features]
    full_grads = torch.autograd.grad((full * weights).sum(), params)
    pairs = decoder.pair_logits(z, rows, features, *covariates)
    pair_grads = torch.autograd.grad((pairs * weights).sum(), params)
    torch.testing.assert_close(pairs, full)
    for ours, ref in zip(pair_grads, full_grads):
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("covariates", ["batch", "none", "all"])
@pytest.mark.parametrize("kind", KINDS)
def test_sampled_logits_equal_the_columns_and_pairs_of_the_decoder(kind, covariates):
    # batch / none: the fused product (one gradient buffer per parameter); all: the fallback
    decoder = _decoders()[kind]
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(6, decoder.n_latent, generator=gen, requires_grad=True)
    cell_offset = torch.randn(6, 1, generator=gen, requires_grad=True)
    covs = (
        torch.randint(0, 3, (6, 1), generator=gen),
        torch.randint(0, 2, (6, 1), generator=gen),
        torch.randn(6, 2, generator=gen),
    )
    covs = {"batch": covs[:1] + (None, None), "none": (None, None, None), "all": covs}[covariates]
    columns = torch.tensor([0, 3, 4, 17, 22, 39])
    rows = torch.tensor([0, 0, 2, 3, 5, 5, 5])
    features = torch.tensor([3, 17, 0, 3, 22, 39, 8])  # 8: a pair outside the columns
    w_eta = torch.randn(6, columns.numel(), generator=gen)
    w_pair = torch.randn(rows.numel(), generator=gen)
    params = [z, cell_offset, *(param for param in decoder.parameters() if param.numel())]

    eta = decoder(z, *covs, features=columns) + cell_offset
    pair = decoder.pair_logits(z, rows, features, *covs) + cell_offset[rows, 0]
    loss = (eta * w_eta).sum() + (pair * w_pair).sum()
    ref_grads = torch.autograd.grad(loss, params, allow_unused=True)
    eta2, pair2 = decoder.sampled_logits(z, columns, rows, features, *covs, cell_offset)
    loss = (eta2 * w_eta).sum() + (pair2 * w_pair).sum()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    torch.testing.assert_close(eta2, eta)
    torch.testing.assert_close(pair2, pair)
    for ours, ref, param in zip(grads, ref_grads, params):
        zero = torch.zeros_like(param)
        torch.testing.assert_close(zero if ours is None else ours, zero if ref is None else ref)
    # the fused product writes one gradient per parameter: no batch offsets' gradient
    # without a batch, none at all for an unused output
    if covariates == "none":
        eta2, _ = decoder.sampled_logits(z, columns, rows, features, None, None, None, None)
        bias_grad, batch_grad = torch.autograd.grad(
            eta2.sum(), [decoder.bias, decoder.batch_offset], allow_unused=True
        )
        torch.testing.assert_close(bias_grad[columns], torch.full((6,), 6.0))
        assert bias_grad.sum() == 36.0
        assert batch_grad is None or not batch_grad.any()


def test_feature_memberships_lists_every_membership_of_every_listed_feature():
    from glassvi.module._program import _feature_memberships

    gen = torch.Generator().manual_seed(4)
    mask = torch.rand(30, 6, generator=gen) < 0.2
    mask[7] = False  # a feature without members
    decoder = ProgramDecoder(6, 30, mask=mask)
    features = torch.tensor([7, 3, 29, 3, 0, 7, 12, 5, 5])
    owner, entry = _feature_memberships(decoder._crow, decoder._n_members, features)
    expected = [
        (i, j)
        for i, f in enumerate(features.tolist())
        for j in range(decoder.program_rows.numel())
        if decoder.program_rows[j] == f
    ]
    assert list(zip(owner.tolist(), entry.tolist())) == expected
    empty = _feature_memberships(decoder._crow, decoder._n_members, features[:0])
    assert empty[0].numel() == empty[1].numel() == 0
