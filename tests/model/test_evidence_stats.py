"""The numbers behind ProgramVI.program_evidence: decoys, p-values, BH, effective genes."""

import numpy as np
import pytest
from scipy import sparse, stats

from glassvi.model._evidence import (
    benjamini_hochberg,
    coherence,
    decoy_masks,
    default_n_decoys,
    effective_number,
    empirical_pvalues,
    explained_signal,
    expression_bins,
    feature_information,
    member_correlations,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benjamini_hochberg_matches_reference(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10)])
    rng.shuffle(p)
    expected = stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(benjamini_hochberg(p), expected)
    # by hand: the step-up rule on a small example
    np.testing.assert_allclose(
        benjamini_hochberg(np.array([0.01, 0.02, 0.03, 0.5])), [0.04, 0.04, 0.04, 0.5]
    )
    assert benjamini_hochberg(np.array([])).shape == (0,)


def test_empirical_pvalues_plus_one_and_ties():
    null = np.array([0.0, 1.0, 2.0, 2.0])
    p = empirical_pvalues(np.array([3.0, 2.0, -1.0, np.nan]), null)
    np.testing.assert_allclose(p, [1 / 5, 3 / 5, 1.0, 1.0])


def test_empirical_pvalues_uniform_under_exchangeability():
    rng = np.random.default_rng(0)
    # a statistic drawn from the same distribution as the null is called at the nominal rate
    p = np.array(
        [empirical_pvalues(rng.normal(size=1), rng.normal(size=99))[0] for _ in range(2000)]
    )
    for level in (0.05, 0.1, 0.5):
        assert abs(np.mean(p <= level) - level) < 0.03


def test_effective_number():
    shares = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    out = effective_number(shares)
    np.testing.assert_allclose(out[:2], [1.0, 4.0])
    assert np.isnan(out[2])
    # one gene with 90% of the signal and nine sharing the rest: close to one carrier
    skewed = np.array([90.0] + [10.0 / 9] * 9)[:, None]
    assert effective_number(skewed)[0] < 2


def test_decoys_match_size_and_expression():
    rng = np.random.default_rng(0)
    n_genes = 600
    mean = rng.lognormal(0, 1.5, n_genes)
    mask = np.zeros((n_genes, 6), dtype=bool)
    for k, size in enumerate([5, 8, 20, 40, 12, 30]):
        # programs of highly expressed genes, to see that the decoys follow their expression
        mask[rng.choice(np.argsort(mean)[-200:], size, replace=False), k] = True
    decoys = decoy_masks({"rna": mask}, {"rna": mean}, 60, seed=3)["rna"]
    assert decoys.shape == (n_genes, 60)
    # sizes: every decoy copies one program, each program is copied 10 times
    assert sorted(decoys.sum(0).tolist()) == sorted(np.repeat(mask.sum(0), 10).tolist())
    bins = expression_bins(mean)
    assert np.median(bins[decoys.any(1)]) > np.median(bins) + 5
    # deterministic given the seed, different with another seed
    again = decoy_masks({"rna": mask}, {"rna": mean}, 60, seed=3)["rna"]
    np.testing.assert_array_equal(decoys, again)
    other = decoy_masks({"rna": mask}, {"rna": mean}, 60, seed=4)["rna"]
    assert not np.array_equal(decoys, other)


def test_decoys_multimodal_and_small_bins():
    mask_rna = np.zeros((30, 2), dtype=bool)
    mask_rna[:10, 0] = True
    mask_atac = np.zeros((50, 2), dtype=bool)
    mask_atac[:7, 0] = mask_atac[20:24, 1] = True
    decoys = decoy_masks(
        {"rna": mask_rna, "atac": mask_atac},
        {"rna": np.zeros(30), "atac": np.arange(50.0)},
        4,
    )
    # a decoy copies the same template in every modality
    sizes = list(zip(decoys["rna"].sum(0).tolist(), decoys["atac"].sum(0).tolist()))
    assert sorted(sizes) == [(0, 4), (0, 4), (10, 7), (10, 7)]
    assert default_n_decoys(5) == 100 and default_n_decoys(45) == 300
    assert default_n_decoys(20) == 200 and default_n_decoys(400) == 400
    assert default_n_decoys(10**5) == 1000
    # a feature belongs to at most 5.5 decoys on average: large programs in a small feature
    # space get fewer decoys (never fewer than 20); real gene-set collections are unaffected
    assert default_n_decoys(12, n_memberships=300, n_features=300) == 66
    assert default_n_decoys(12, n_memberships=3000, n_features=300) == 20
    assert default_n_decoys(49, n_memberships=644, n_features=765) == 300  # pbmc68k benchmark
    assert default_n_decoys(50, n_memberships=1000, n_features=20_000) == 300
    assert default_n_decoys(12, n_memberships=300) == 120  # no cap without the feature count


def test_coherence_and_correlations():
    rng = np.random.default_rng(0)
    n_cells = 400
    activity = rng.normal(size=(n_cells, 2))
    coherent = activity[:, :1] + 0.5 * rng.normal(size=(n_cells, 5))
    noise = rng.normal(size=(n_cells, 5))
    X = np.exp(np.hstack([coherent, noise]))
    r = member_correlations(sparse.csr_matrix(X), activity)
    assert r.shape == (10, 2)
    np.testing.assert_allclose(r[0, 0], np.corrcoef(X[:, 0], activity[:, 0])[0, 1])
    mask = np.zeros((10, 2), dtype=bool)
    mask[:5, 0] = True
    mask[5:, 1] = True
    c = coherence(r, mask)
    assert c[0] > 0.5 and abs(c[1]) < 0.15
    # one gene that follows the activity perfectly does not make a coherent program
    single = np.zeros((10, 1))
    single[0, 0] = 1.0
    assert coherence(single, np.ones((10, 1), dtype=bool))[0] == 0.0


def test_explained_signal_single_carrier():
    rng = np.random.default_rng(1)
    # one strong gene and nine barely expressed ones, all with the same weight
    counts = sparse.csr_matrix(rng.poisson(np.r_[50.0, np.full(9, 0.001)], size=(3000, 10)))
    activity = rng.normal(size=(3000, 1))
    weights = np.ones((10, 1))
    info = feature_information(counts, "nb")
    signal = explained_signal(info, activity, weights)
    assert effective_number(signal)[0] < 1.5
    # ten equally expressed genes with equal weights share the signal equally
    even = sparse.csr_matrix(rng.poisson(20.0, size=(3000, 10)))
    signal = explained_signal(feature_information(even, "poisson"), activity, weights)
    assert effective_number(signal)[0] > 9.9
    # a unit that does not vary explains nothing
    flat = explained_signal(info, np.ones((3000, 1)), weights)
    assert np.all(flat == 0)
    info_b = feature_information(counts, "bernoulli")
    assert info_b.shape == counts.shape


def test_size_adjusted_scores_calibrate_small_and_large_sets():
    from glassvi.model._evidence import size_adjusted_scores

    rng = np.random.default_rng(0)

    # null statistic that shrinks with size, as a unit fitted to n unrelated genes does
    def draw(n):
        return (1 + rng.normal(0, 0.5, len(n))) / np.sqrt(n)

    sizes_decoys = rng.choice([5, 6, 8, 30, 100, 150, 200], 400)
    sizes_null = np.repeat([5, 200], 300)
    stat = np.concatenate([draw(sizes_null), draw(sizes_decoys)])
    sizes = np.concatenate([sizes_null, sizes_decoys])
    is_decoy = np.r_[np.zeros(600, dtype=bool), np.ones(400, dtype=bool)]
    z = size_adjusted_scores(stat, sizes, is_decoy)
    p = empirical_pvalues(z[~is_decoy], z[is_decoy])
    # unused sets are called at about the nominal rate at every size, small or large
    assert abs(np.mean(p[:300] <= 0.1) - 0.1) < 0.06
    assert abs(np.mean(p[300:] <= 0.1) - 0.1) < 0.06
    # without the adjustment the small unused sets would be called far too often
    raw = empirical_pvalues(stat[~is_decoy], stat[is_decoy])
    assert np.mean(raw[:300] <= 0.1) > 0.3
