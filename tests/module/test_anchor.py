"""The anchor that ties program activities to their members' expression."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS

from glassvi.module import ProgramVAE, expression_moments
from glassvi.module._anchor import anchor_loss, normalised_log_expression


def _counts(n_cells=40, n_features=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(3.0, size=(n_cells, n_features)).astype(np.float32)


def test_expression_moments_match_numpy_dense_sparse_and_binary():
    x = _counts()
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    for data in (x, sp.csr_matrix(x)):
        mean, sd = expression_moments(data, binary=False)
        np.testing.assert_allclose(mean, y.mean(0), rtol=1e-5)
        np.testing.assert_allclose(sd, y.std(0), rtol=1e-4)
    mean, sd = expression_moments(sp.csr_matrix(x), binary=True)
    np.testing.assert_allclose(mean, (x > 0).mean(0), rtol=1e-6)
    const = np.ones((5, 3), dtype=np.float32)
    assert expression_moments(const, binary=False)[1].min() == pytest.approx(1e-3)


def test_normalised_log_expression():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    y = normalised_log_expression(x, binary=False)
    np.testing.assert_allclose(y[0].numpy(), np.log1p([2500.0, 7500.0]), rtol=1e-6)
    assert torch.equal(y[1], torch.zeros(2))
    assert torch.equal(normalised_log_expression(x, binary=True), torch.tensor([[1.0, 1], [0, 0]]))


def test_anchor_loss_values():
    score = torch.randn(64, 3)
    weights = torch.tensor([1.0, 2.0, 3.0])
    assert anchor_loss(3 * score + 1, score, weights).item() == pytest.approx(0.0, abs=1e-4)
    # a flipped program costs 2 * its weight
    flipped = torch.cat([score[:, :1], -score[:, 1:2], score[:, 2:]], 1)
    assert anchor_loss(flipped, score, weights).item() == pytest.approx(4.0, abs=1e-3)
    # a score without variation contributes nothing
    const = score.clone()
    const[:, 0] = 1.0
    assert anchor_loss(-score, const, weights).item() == pytest.approx(10.0, abs=1e-3)


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_member_score_is_mean_of_standardised_members(mask_mode):
    x = _counts()
    mask = np.zeros((12, 3), dtype=bool)
    mask[[0, 1, 2], 0] = True
    mask[[2, 5, 7, 9], 1] = True  # program 2 has no member
    mean, sd = expression_moments(x, binary=False)
    module = ProgramVAE(
        {"rna": 12},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": torch.from_numpy(mask)},
        mask_mode=mask_mode,
        activity_anchor=1.0,
        feature_moments={"rna": (mean, sd)},
    )
    score = module.member_score({"rna": torch.from_numpy(x)}).numpy()
    y = (np.log1p(1e4 * x / x.sum(1, keepdims=True)) - mean) / sd
    np.testing.assert_allclose(score[:, 0], y[:, [0, 1, 2]].mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(score[:, 1], y[:, [2, 5, 7, 9]].mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(score[:, 2], 0.0)


def test_loss_adds_anchor_only_when_on_and_its_gradient_reaches_the_encoder():
    x = torch.from_numpy(_counts())
    mask = torch.zeros(12, 2, dtype=torch.bool)
    mask[:6, 0] = True
    mask[6:, 1] = True
    tensors = {"X": x, REGISTRY_KEYS.BATCH_KEY: torch.zeros(x.shape[0], 1)}
    out = {}
    for anchor in (0.0, 2.0):
        torch.manual_seed(0)
        module = ProgramVAE(
            {"rna": 12}, {"rna": "X"}, {"rna": "nb"}, {"rna": mask}, activity_anchor=anchor
        )
        module.eval()  # no dropout: both modules compute the same ELBO
        torch.manual_seed(1)
        inf = module.inference(**module._get_inference_input(tensors))
        gen = module.generative(**module._get_generative_input(tensors, inf))
        out[anchor] = (module, module.loss(tensors, inf, gen))
    base, (module, anchored) = out[0.0][1], out[2.0]
    penalty = anchored.extra_metrics["activity_anchor"]
    assert "activity_anchor" not in (base.extra_metrics or {})
    assert 0 < penalty.item() <= 2.0 * 2 * 12
    torch.testing.assert_close(anchored.loss, base.loss + penalty)
    module.zero_grad()
    x_in = {"rna": x}
    pen = module.anchor_penalty(tensors, module.posterior_mean(x_in, tensors["batch"]))
    pen.backward()
    assert module.z_encoder.mean_encoder.weight.grad.abs().sum() > 0
    assert module.decoders["rna"].program_values.grad is None
    with pytest.raises(ValueError, match="activity_anchor"):
        ProgramVAE({"rna": 12}, {"rna": "X"}, {"rna": "nb"}, {"rna": mask}, activity_anchor=-1)


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_member_score_from_nonzero_positions_equals_the_dense_score(mask_mode):
    gen = np.random.default_rng(3)
    rna = _counts()
    atac = (gen.random((rna.shape[0], 30)) < 0.1) * gen.integers(1, 4, (rna.shape[0], 30))
    atac = atac.astype(np.float32)
    masks = {"rna": gen.random((12, 4)) < 0.4, "atac": gen.random((30, 4)) < 0.2}
    moments = {
        "rna": expression_moments(rna, binary=False),
        "atac": expression_moments(atac, binary=True),
    }
    x = {"rna": torch.from_numpy(rna), "atac": torch.from_numpy(atac)}
    flat = {m: torch.from_numpy(np.flatnonzero(v.numpy().reshape(-1))) for m, v in x.items()}
    # positions of stored zeros (as a sparse matrix may hold) change nothing
    flat["atac"] = torch.cat([flat["atac"], torch.tensor([0, 31, 65])]).unique()
    for weights in (None, {"atac": 0.5}):
        module = ProgramVAE(
            {"rna": 12, "atac": 30},
            {"rna": "X", "atac": "atac"},
            {"rna": "nb", "atac": "bernoulli"},
            {m: torch.from_numpy(v) for m, v in masks.items()},
            mask_mode=mask_mode,
            activity_anchor=1.0,
            feature_moments=moments,
            modality_weights=weights,
        )
        dense = module.member_score(x)
        sparse = module.member_score(x, flat)
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
        partial = module.member_score(x, {"rna": flat["rna"][5:], "atac": flat["atac"]})
        assert not torch.allclose(partial, dense)
