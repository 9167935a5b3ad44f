import numpy as np
import pytest
import torch
from scvi.distributions import NegativeBinomial

from glassvi.module import FeatureNegativeBinomial
from glassvi.module._distributions import TABLE_SIZE


def _counts(n_cells, n_genes, density, seed, large=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.rand(n_cells, n_genes, generator=gen) * 6.0)
    x = x * (torch.rand(n_cells, n_genes, generator=gen) < density)
    if large:
        # counts at, around and far above the table size are evaluated directly
        x[0, :6] = torch.tensor([TABLE_SIZE - 1, TABLE_SIZE, TABLE_SIZE + 1, 250.0, 4000.0, 1.0])
    return x


def _reference_and_ours(x, n_rows, seed, nonzero=None, layout="contiguous"):
    gen = torch.Generator().manual_seed(seed)
    n_cells, n_genes = x.shape
    eta = torch.randn(n_cells, n_genes, generator=gen).requires_grad_()
    log_theta = (torch.randn(n_rows, n_genes, generator=gen) * 1.5).requires_grad_()
    rows = torch.randint(0, n_rows, (n_cells,), generator=gen) if n_rows > 1 else None
    lib = torch.log(torch.full((n_cells, 1), 3000.0))

    mu = torch.softmax(eta, -1) * torch.exp(lib)
    theta = torch.exp(log_theta[0] if rows is None else log_theta[rows])
    ref = NegativeBinomial(mu=mu, theta=theta).log_prob(x)
    ref_grads = torch.autograd.grad(ref.sum(), [eta, log_theta])

    log_mu = torch.log_softmax(eta, -1) + lib
    if layout == "transposed":
        # a column-major log mean, as produced by some decoders
        log_mu = log_mu.t().contiguous().t()
    px = FeatureNegativeBinomial(log_mu, log_theta, rows)
    ours = px.log_prob(x, nonzero=nonzero)
    our_grads = torch.autograd.grad(ours.sum(), [eta, log_theta])
    return ref, ref_grads, ours, our_grads


@pytest.mark.parametrize("n_rows", [1, 3])
@pytest.mark.parametrize("density", [0.05, 0.6])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_log_prob_and_gradients_match_scvi(n_rows, density, layout):
    x = _counts(64, 300, density, seed=1)
    ref, ref_grads, ours, our_grads = _reference_and_ours(x, n_rows, seed=2, layout=layout)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=2e-4)
    for r, o in zip(ref_grads, our_grads):
        scale = r.abs().max()
        assert (o - r).abs().max() <= 1e-4 * scale


def test_given_nonzero_positions_match_the_scan_and_may_include_zeros():
    x = _counts(32, 200, 0.2, seed=3)
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    # stored zeros (as a sparse matrix may hold) are harmless
    with_zeros = torch.cat([flat, torch.tensor([1, 2, 3]) * 200 + 7]).unique()
    assert x.reshape(-1)[with_zeros].eq(0).any()
    _, _, scanned, g_scanned = _reference_and_ours(x, 1, seed=4)
    for positions in (flat, with_zeros):
        _, _, given, g_given = _reference_and_ours(x, 1, seed=4, nonzero=positions)
        torch.testing.assert_close(given, scanned)
        for a, b in zip(g_scanned, g_given):
            torch.testing.assert_close(a, b)


def test_missing_nonzero_positions_would_change_the_result():
    x = _counts(16, 100, 0.5, seed=5, large=False)
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    _, _, full, _ = _reference_and_ours(x, 1, seed=6, nonzero=flat)
    _, _, partial, _ = _reference_and_ours(x, 1, seed=6, nonzero=flat[: len(flat) // 2])
    assert not torch.allclose(full, partial)


def test_fractional_values_and_differentiable_counts_fall_back_to_scvi():
    x = _counts(16, 50, 0.5, seed=7, large=False) + 0.5
    log_mu = torch.randn(16, 50)
    log_theta = torch.randn(1, 50)
    px = FeatureNegativeBinomial(log_mu, log_theta)
    expected = NegativeBinomial(mu=log_mu.exp(), theta=log_theta[0].exp()).log_prob(x)
    torch.testing.assert_close(px.log_prob(x), expected)
    xg = x.clone().requires_grad_()
    out = px.log_prob(xg)
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), xg)
    assert torch.isfinite(grad).all()


def test_distribution_attributes_and_bad_arguments():
    log_mu = torch.randn(4, 6)
    px = FeatureNegativeBinomial(log_mu, torch.zeros(1, 6))
    torch.testing.assert_close(px.mu, log_mu.exp())
    torch.testing.assert_close(px.theta, torch.ones(4, 6))
    assert px.sample().shape == (4, 6)
    with pytest.raises(ValueError, match="log_theta must have shape"):
        FeatureNegativeBinomial(log_mu, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="theta_rows is required"):
        FeatureNegativeBinomial(log_mu, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="table_size"):
        FeatureNegativeBinomial(log_mu, torch.zeros(1, 6), table_size=1)


@pytest.mark.parametrize("table_size", [2, 5, 64])
def test_any_table_size_gives_the_same_values(table_size):
    x = _counts(16, 80, 0.6, seed=8)
    log_mu = torch.randn(16, 80)
    log_theta = torch.randn(1, 80)
    default = FeatureNegativeBinomial(log_mu, log_theta).log_prob(x)
    other = FeatureNegativeBinomial(log_mu, log_theta, table_size=table_size).log_prob(x)
    torch.testing.assert_close(other, default, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("with_positions", [False, True])
def test_poisson_matches_torch_with_and_without_positions(with_positions):
    from torch.distributions import Poisson

    from glassvi.module import FeaturePoisson

    x = _counts(32, 120, 0.1, seed=9)
    log_rate = (torch.randn(32, 120) * 2).requires_grad_()
    expected = Poisson(log_rate.exp()).log_prob(x)
    (g_expected,) = torch.autograd.grad(expected.sum(), log_rate)
    positions = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1))) if with_positions else None
    ours = FeaturePoisson(log_rate).log_prob(x, nonzero=positions)
    (g_ours,) = torch.autograd.grad(ours.sum(), log_rate)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_ours, g_expected)
    if with_positions:
        # lgamma(x + 1) of the listed entries only: leaving some out changes the result
        partial = FeaturePoisson(log_rate).log_prob(x, nonzero=positions[: len(positions) // 2])
        assert not torch.allclose(partial, ours)


def _accessibility(n_cells, n_peaks, density, seed):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((n_cells, n_peaks), 1.5), generator=gen)
    return counts * (torch.rand(n_cells, n_peaks, generator=gen) < density)


def _bernoulli_reference(logits, x):
    ref = torch.distributions.Bernoulli(logits=logits).log_prob((x > 0).float()).sum(-1)
    return ref, torch.autograd.grad(ref.sum() + (ref**2).sum() * 1e-3, logits)[0]


@pytest.mark.parametrize("positions", ["none", "exact", "with_stored_zeros"])
def test_bernoulli_cell_log_prob_equals_the_dense_likelihood(positions):
    from glassvi.module import FeatureBernoulli

    x = _accessibility(40, 500, 0.03, seed=4)  # counts above one are ones
    gen = torch.Generator().manual_seed(5)
    logits = (torch.randn(40, 500, generator=gen) * 4.0 - 3.0).requires_grad_()
    ref, ref_grad = _bernoulli_reference(logits, x)
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    nonzero = {
        "none": None,
        "exact": flat,
        "with_stored_zeros": torch.cat([flat, torch.tensor([3, 7, 1234])]).unique(),
    }[positions]
    ours = FeatureBernoulli(logits).cell_log_prob(x, nonzero=nonzero)
    grad = torch.autograd.grad(ours.sum() + (ours**2).sum() * 1e-3, logits)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


def test_bernoulli_cell_log_prob_misses_ones_whose_positions_are_not_given():
    from glassvi.module import FeatureBernoulli

    x = _accessibility(8, 100, 0.1, seed=6)
    logits = torch.randn(8, 100)
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    full = FeatureBernoulli(logits).cell_log_prob(x, nonzero=flat)
    partial = FeatureBernoulli(logits).cell_log_prob(x, nonzero=flat[1:])
    assert not torch.allclose(full, partial)


def test_bernoulli_cell_log_prob_is_finite_and_exact_at_extreme_logits():
    from glassvi.module import FeatureBernoulli

    logits = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 80.0], [5.0, -5.0, 1e-3, -1e-3, 0.5]])
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 1.0]])
    ours = FeatureBernoulli(logits.double()).cell_log_prob(x.double())
    ref = torch.distributions.Bernoulli(logits=logits.double()).log_prob(x.double()).sum(-1)
    torch.testing.assert_close(ours, ref)
    ours32 = FeatureBernoulli(logits).cell_log_prob(x)
    torch.testing.assert_close(ours32, ref.float(), rtol=1e-5, atol=1e-4)


def test_bernoulli_with_sample_dimensions_falls_back_to_torch():
    from glassvi.module import FeatureBernoulli

    logits = torch.randn(3, 4, 10)
    x = _accessibility(4, 10, 0.3, seed=7)
    ours = FeatureBernoulli(logits).cell_log_prob(x)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob((x > 0).float()).sum(-1)
    torch.testing.assert_close(ours, ref)
    assert FeatureBernoulli(logits).probs.shape == (3, 4, 10)


def _union_and_sample(flat, n_features, fraction):
    """Features with a one at weight 1, others drawn with probability ``fraction``."""
    with_ones = torch.zeros(n_features, dtype=torch.bool)
    with_ones[flat % n_features] = True
    columns = (with_ones | (torch.rand(n_features) < fraction)).nonzero().squeeze(1)
    return columns, torch.where(with_ones[columns], 1.0, 1.0 / fraction)


def test_weighted_columns_likelihood_is_unbiased_with_unbiased_gradients():
    from glassvi.module import FeatureBernoulli

    x = _accessibility(6, 400, 0.02, seed=8)
    gen = torch.Generator().manual_seed(9)
    logits = (torch.randn(6, 400, generator=gen) - 4.0).requires_grad_()
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    exact = FeatureBernoulli(logits).cell_log_prob(x, nonzero=flat)
    exact_grad = torch.autograd.grad(exact.sum(), logits)[0]
    torch.manual_seed(10)
    draws, grads = [], torch.zeros_like(logits)
    n_draws = 3000
    for _ in range(n_draws):
        columns, weight = _union_and_sample(flat, 400, 0.1)
        est = FeatureBernoulli(logits[:, columns], columns, weight).cell_log_prob(x, flat)
        grads += torch.autograd.grad(est.sum(), logits)[0]
        draws.append(est.detach())
    draws = torch.stack(draws)
    sem = draws.std(0) / n_draws**0.5
    assert torch.all((draws.mean(0) - exact.detach()).abs() < 4 * sem + 1e-4)
    assert draws.std(0).min() > 0  # it is an estimate, not the exact value
    # a zero entry's gradient is -sigmoid(l) / 0.1 in one draw of ten: sd 3 sigmoid(l) per draw
    sem_grad = 3.0 * torch.sigmoid(logits.detach()) / n_draws**0.5
    assert torch.all((grads / n_draws - exact_grad).abs() <= 5 * sem_grad + 1e-5)


def _sampled_estimate(logits, flat, fraction):
    from glassvi.module._distributions import SampledBernoulli, draw_features

    columns = draw_features(logits.shape[1], fraction)
    px = SampledBernoulli(logits[:, columns], columns, fraction, logits.reshape(-1)[flat], flat)
    return px.cell_log_prob(torch.zeros(logits.shape))


def test_ones_and_uniform_feature_sample_estimate_is_unbiased_with_unbiased_gradients():
    from glassvi.module import FeatureBernoulli

    x = _accessibility(6, 400, 0.02, seed=8)
    gen = torch.Generator().manual_seed(9)
    logits = (torch.randn(6, 400, generator=gen) - 4.0).requires_grad_()
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    exact = FeatureBernoulli(logits).cell_log_prob(x, nonzero=flat)
    exact_grad = torch.autograd.grad(exact.sum(), logits)[0]
    # every feature drawn: the exact value and gradient
    everything = _sampled_estimate(logits, flat, 1.0)
    torch.testing.assert_close(everything, exact)
    torch.testing.assert_close(torch.autograd.grad(everything.sum(), logits)[0], exact_grad)
    torch.manual_seed(10)
    draws, grads = [], torch.zeros_like(logits)
    n_draws = 3000
    for _ in range(n_draws):
        est = _sampled_estimate(logits, flat, 0.1)
        grads += torch.autograd.grad(est.sum(), logits)[0]
        draws.append(est.detach())
    draws = torch.stack(draws)
    sem = draws.std(0) / n_draws**0.5
    assert torch.all((draws.mean(0) - exact.detach()).abs() < 4 * sem + 1e-4)
    assert draws.std(0).min() > 0  # it is an estimate, not the exact value
    # the ones' gradient is exact in every draw (their softplus is taken out of the drawn sum)
    ones = x > 0
    torch.testing.assert_close((grads / n_draws)[ones], exact_grad[ones], atol=1e-4, rtol=1e-4)
    # a zero entry's gradient is -sigmoid(l) / 0.1 in one draw of ten: sd 3 sigmoid(l) per draw
    sem_grad = 3.0 * torch.sigmoid(logits.detach()) / n_draws**0.5
    assert torch.all((grads / n_draws - exact_grad).abs() <= 5 * sem_grad + 1e-5)


def test_open_rate_feature_sample_is_unbiased_with_less_variance_than_a_uniform_one():
    """Features drawn in proportion to their open probability: unbiased value and gradient,
    and a lower variance than a uniform draw of the same expected size."""
    from glassvi.module import FeatureBernoulli, feature_draw_probabilities

    x = _accessibility(6, 400, 0.02, seed=8)
    gen = torch.Generator().manual_seed(11)
    # peaks' open probabilities spread over orders of magnitude, as in real ATAC
    bias = torch.randn(400, generator=gen) * 1.5 - 5.0
    logits = (bias + 0.3 * torch.randn(6, 400, generator=gen)).requires_grad_()
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    exact = FeatureBernoulli(logits).cell_log_prob(x, nonzero=flat)
    exact_grad = torch.autograd.grad(exact.sum(), logits)[0]
    fraction = 0.1
    probability = feature_draw_probabilities(torch.sigmoid(bias), fraction)
    assert probability.min() >= fraction / 6 - 1e-7 and probability.max() <= 1.0
    assert abs(float(probability.mean()) - fraction) < 0.01
    torch.manual_seed(12)
    n_draws = 3000
    spread = {}
    for name, p in (("open_rate", probability), ("uniform", fraction)):
        draws, grads = [], torch.zeros_like(logits)
        for _ in range(n_draws):
            est = _sampled_estimate(logits, flat, p)
            grads += torch.autograd.grad(est.sum(), logits)[0]
            draws.append(est.detach())
        draws = torch.stack(draws)
        sem = draws.std(0) / n_draws**0.5
        assert torch.all((draws.mean(0) - exact.detach()).abs() < 4 * sem + 1e-4), name
        # a zero entry's gradient is -sigmoid(l) / p with probability p
        p = torch.as_tensor(p).expand(400)
        sem_grad = torch.sigmoid(logits.detach()) * ((1 - p) / p).sqrt() / n_draws**0.5
        # (features drawn with probability 1 differ by float rounding only)
        tolerance = 5 * sem_grad + 1e-4 * exact_grad.abs() + 1e-5
        assert torch.all((grads / n_draws - exact_grad).abs() <= tolerance), name
        spread[name] = draws.std(0)
    assert torch.all(spread["open_rate"] < 0.7 * spread["uniform"])


def test_sampled_columns_must_cover_the_ones():
    from glassvi.module import FeatureBernoulli

    x = torch.zeros(2, 5)
    x[0, 1] = 1.0
    columns = torch.tensor([0, 2, 3])
    with pytest.raises(ValueError, match="every feature with a one"):
        FeatureBernoulli(torch.zeros(2, 3), columns, torch.ones(3)).cell_log_prob(x)
    with pytest.raises(ValueError, match="columns"):
        FeatureBernoulli(torch.zeros(2, 4), columns, torch.ones(3))


def test_sparse_minibatches_are_read_at_their_entries():
    from glassvi.module import GlassVAE, nonzero_key
    from glassvi.module._distributions import as_dense, values_at

    gen = torch.Generator().manual_seed(0)
    dense = (torch.rand(6, 30, generator=gen) < 0.1).float() * 2.0
    csr = dense.to_sparse_csr()
    positions = dense.reshape(-1).nonzero().squeeze(1)
    assert torch.equal(values_at(csr, positions), dense.reshape(-1)[positions])
    assert torch.equal(values_at(dense, positions), dense.reshape(-1)[positions])
    assert torch.equal(as_dense(csr), dense)
    with pytest.raises(ValueError, match="in order"):
        values_at(csr, positions[1:])
    rna = torch.poisson(torch.full((6, 8), 3.0, dtype=torch.float32), generator=gen)
    module = GlassVAE(
        {"rna": 8, "atac": 30},
        {"rna": "X", "atac": "atac"},
        {"rna": "nb", "atac": "bernoulli"},
        n_latent=2,
        n_hidden=8,
    )
    module.eval()  # no dropout, no sampled likelihood: the exact likelihood on every path
    losses = []
    for atac, with_positions in ((dense, True), (csr, True), (csr, False)):
        tensors = {"X": rna, "atac": atac, "batch": torch.zeros(6, 1, dtype=torch.int64)}
        if with_positions:
            tensors[nonzero_key("atac")] = positions
        torch.manual_seed(1)
        _, _, out = module(tensors)
        losses.append(out.loss)
    torch.testing.assert_close(losses[1], losses[0])
    torch.testing.assert_close(losses[2], losses[0])
