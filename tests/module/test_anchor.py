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
    for weights in (None, {"atac": 0.0}, {"atac": 0.5}):
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
        # a sparse CSR minibatch (as training passes accessibility) with its entries' positions
        csr = {"rna": x["rna"], "atac": x["atac"].to_sparse_csr()}
        entries = {"rna": flat["rna"], "atac": torch.from_numpy(np.flatnonzero(atac))}
        torch.testing.assert_close(module.member_score(csr, entries), sparse, rtol=0, atol=0)
        torch.testing.assert_close(module.member_score(csr), dense)
        partial = module.member_score(x, {"rna": flat["rna"][5:], "atac": flat["atac"]})
        assert not torch.allclose(partial, dense)


def _lstsq_coefficients(y, design):
    """Least-squares coefficients of every row of ``y`` (cells) on ``design`` (features x k)."""
    return np.linalg.lstsq(design, y.T, rcond=None)[0].T


def _collinearity_ridge(design):
    """``n_k * (VIF_k - 1)**2`` of every program column of ``design`` (intercept first)."""
    out = []
    for k in range(1, design.shape[1]):
        column, others = design[:, k], np.delete(design, k, axis=1)
        fitted = others @ np.linalg.lstsq(others, column, rcond=None)[0]
        r2 = 1.0 - ((column - fitted) ** 2).sum() / ((column - column.mean()) ** 2).sum()
        r2 = min(max(r2, 0.0), 0.99)
        out.append(column.sum() * (r2 / (1.0 - r2)) ** 2)
    return np.array(out)


def test_collinearity_ridge_spares_programs_with_their_own_members():
    from glassvi.module._program import collinearity_ridge

    mask = np.zeros((40, 4), dtype=bool)
    mask[0:6, 0] = True  # members of its own
    mask[6:12, 1] = True
    mask[9:15, 2] = True  # half of it shared with program 1
    mask[6:15, 3] = True  # all of it held by programs 1 and 2 (the decoy, last column)
    design = np.column_stack([np.ones(40), mask]).astype(float)
    gram = torch.from_numpy(design.T @ design)
    ridge = collinearity_ridge(gram, n_real=3).numpy()
    assert ridge[0] == 0.0  # the intercept
    np.testing.assert_allclose(ridge[1:4], _collinearity_ridge(design[:, :4]), rtol=1e-6)
    # a decoy's R^2 is against all annotated programs, as if it were added alone
    np.testing.assert_allclose(ridge[4], _collinearity_ridge(design)[-1], rtol=1e-6)
    assert ridge[1] < 0.1 * ridge[2] < ridge[2] < ridge[4]


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_joint_score_is_the_joint_least_squares_fit_and_decoys_enter_alone(mask_mode):
    gen = np.random.default_rng(1)
    x = _counts(n_features=30)
    mask = gen.random((30, 7)) < 0.3
    mask[:, 0] = False
    mask[:4, 0] = True
    mask[2:6, 1] = True  # two real programs sharing members
    module = ProgramVAE(
        {"rna": 30},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": torch.from_numpy(mask)},
        mask_mode=mask_mode,
        activity_anchor=1.0,
        n_decoys=2,  # the last two programs
        anchor_ridge=0.0,
        anchor_tvalue=False,
    )
    assert module.anchor_target == "joint"
    score = module.joint_score({"rna": torch.from_numpy(x)}).numpy()
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    design = np.column_stack([np.ones(30), mask[:, :5]]).astype(float)
    np.testing.assert_allclose(score[:, :5], _lstsq_coefficients(y, design)[:, 1:], atol=1e-4)
    for decoy in (5, 6):
        alone = np.column_stack([design, mask[:, decoy]])
        expected = _lstsq_coefficients(y, alone)[:, -1]
        np.testing.assert_allclose(score[:, decoy], expected, atol=1e-4)
    # with the default ridge (each program's grows with how much of its membership the other
    # programs explain), a decoy's value is still its coefficient in the fit it joins alone
    ridged = ProgramVAE(
        {"rna": 30},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": torch.from_numpy(mask)},
        n_decoys=2,
        anchor_tvalue=False,
    )
    assert ridged.anchor_ridge == 30.0
    score = ridged.joint_score({"rna": torch.from_numpy(x)}).numpy()
    for decoy in (None, 5, 6):
        cols = list(range(5)) + ([] if decoy is None else [decoy])
        design = np.column_stack([np.ones(30), mask[:, cols]]).astype(float)
        # the annotated programs keep their own ridges; the decoy's R^2 is against them all
        ridge = np.r_[_collinearity_ridge(design[:, :6]), _collinearity_ridge(design)[5:]]
        penalty = np.diag(np.r_[0.0, 30.0 * ridge])
        coef = np.linalg.solve(design.T @ design + penalty, design.T @ y.T).T
        if decoy is None:
            np.testing.assert_allclose(score[:, :5], coef[:, 1:], atol=1e-4)
        else:
            np.testing.assert_allclose(score[:, decoy], coef[:, -1], atol=1e-4)
    # the joint fit tells two overlapping programs apart, the mean score does not: all of
    # B's members are high, so A (sharing two of them) gets coefficient 0 but a high mean
    pair = torch.zeros(12, 2, dtype=torch.bool)
    pair[0:4, 0] = True
    pair[2:6, 1] = True
    two = ProgramVAE(
        {"rna": 12},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": pair},
        anchor_ridge=0.0,
        anchor_tvalue=False,
    )
    counts = torch.tensor([[1.0, 1, 10, 10, 10, 10, 1, 1, 1, 1, 1, 1]])
    joint = two.joint_score({"rna": counts})[0]
    assert abs(joint[0].item()) < 1e-4 < joint[1].item()
    assert two.member_score({"rna": counts})[0, 0] > 0
    # the anchor uses the joint target by default, the mean target on request
    xt = {"rna": torch.from_numpy(x)}
    torch.testing.assert_close(module.anchor_score(xt), module.joint_score(xt))
    module.anchor_target = "mean"
    torch.testing.assert_close(module.anchor_score(xt), module.member_score(xt))
    with pytest.raises(ValueError, match="anchor_target"):
        ProgramVAE({"rna": 30}, {"rna": "X"}, {"rna": "nb"}, {"rna": mask}, anchor_target="max")


def _t_values(y, design):
    """t-value of every coefficient of the least-squares fit of each row of ``y``."""
    coef = _lstsq_coefficients(y, design)
    rss = ((y - coef @ design.T) ** 2).sum(1)
    sigma2 = rss / (design.shape[0] - design.shape[1])
    se = np.sqrt(sigma2[:, None] * np.diag(np.linalg.pinv(design.T @ design))[None, :])
    return coef / se


def test_joint_score_gives_the_t_values_of_the_fit_on_request():
    # decoupler's MLM score: each coefficient over its standard error in that cell
    gen = np.random.default_rng(2)
    x = _counts(n_features=30, seed=3)
    mask = gen.random((30, 6)) < 0.3
    mask[2:6, 1] = mask[2:6, 0] = True
    module = ProgramVAE(
        {"rna": 30},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": torch.from_numpy(mask)},
        n_decoys=2,
        anchor_ridge=0.0,
        anchor_tvalue=True,
    )
    score = module.joint_score({"rna": torch.from_numpy(x)}).numpy()
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    design = np.column_stack([np.ones(30), mask[:, :4]]).astype(float)
    np.testing.assert_allclose(score[:, :4], _t_values(y, design)[:, 1:], rtol=1e-3, atol=1e-3)
    for decoy in (4, 5):  # a decoy's t-value in the fit it joins alone
        alone = np.column_stack([design, mask[:, decoy]])
        expected = _t_values(y, alone)[:, -1]
        np.testing.assert_allclose(score[:, decoy], expected, rtol=1e-3, atol=1e-3)
    # the coefficient itself is not it: cells with a larger residual count less
    module.anchor_tvalue = False
    coef = module.joint_score({"rna": torch.from_numpy(x)}).numpy()
    assert not np.allclose(np.corrcoef(coef[:, 0], score[:, 0])[0, 1], 1.0, atol=1e-3)


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_joint_score_from_nonzero_positions_equals_the_dense_score(mask_mode):
    gen = np.random.default_rng(4)
    rna = _counts(n_features=20)
    atac = (gen.random((rna.shape[0], 30)) < 0.2) * gen.integers(1, 4, (rna.shape[0], 30))
    atac = atac.astype(np.float32)
    masks = {"rna": gen.random((20, 5)) < 0.3, "atac": gen.random((30, 5)) < 0.3}
    x = {"rna": torch.from_numpy(rna), "atac": torch.from_numpy(atac)}
    flat = {m: torch.from_numpy(np.flatnonzero(v.numpy().reshape(-1))) for m, v in x.items()}
    for weights in ({"atac": 0.0}, {"atac": 0.5}):
        module = ProgramVAE(
            {"rna": 20, "atac": 30},
            {"rna": "X", "atac": "atac"},
            {"rna": "nb", "atac": "bernoulli"},
            {m: torch.from_numpy(v) for m, v in masks.items()},
            mask_mode=mask_mode,
            activity_anchor=1.0,
            modality_weights=weights,
            n_decoys=1,
        )
        dense = module.joint_score(x)
        sparse = module.joint_score(x, flat)
        torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-4)
        csr = {"rna": x["rna"], "atac": x["atac"].to_sparse_csr()}
        torch.testing.assert_close(module.joint_score(csr, flat), sparse, rtol=0, atol=0)
        torch.testing.assert_close(module.joint_score(csr), dense)
        if weights["atac"] == 0.0:  # ATAC of weight 0: the fit reads RNA only
            rna_only = ProgramVAE(
                {"rna": 20},
                {"rna": "X"},
                {"rna": "nb"},
                {"rna": torch.from_numpy(masks["rna"])},
                n_decoys=1,
            )
            torch.testing.assert_close(rna_only.joint_score({"rna": x["rna"]}), dense)


def _nested_mask(n_features=60, seed=5):
    """Programs as in GO: exact duplicates, and parents that are unions of their children."""
    gen = np.random.default_rng(seed)
    children = gen.random((n_features, 8)) < 0.12
    children[:6, 0], children[6:12, 1] = True, True
    children[:12, 0:2] &= ~np.eye(12, 2, dtype=bool)  # keep the two children disjoint
    children[:6, 1], children[6:12, 0] = False, False
    parent = children[:, 0] | children[:, 1]  # = child 0 + child 1: the Gram is singular
    decoys = gen.random((n_features, 3)) < 0.15
    return np.column_stack([children, children[:, 2], parent, decoys])  # column 8 = column 2


def _pinv_design(gram, n_real, anchor_ridge):
    """The joint fit's design terms computed with eigendecomposition pseudo-inverses."""
    size = torch.diagonal(gram)[1:]
    plain = torch.linalg.pinv(gram[: n_real + 1, : n_real + 1], hermitian=True)
    cross = gram[: n_real + 1, n_real + 1 :]
    residual = torch.cat(
        [1.0 / torch.diagonal(plain)[1:], size[n_real:] - (cross * (plain @ cross)).sum(0)]
    )
    centred = size - gram[0, 1:] ** 2 / gram[0, 0]
    r2 = torch.where(centred > 1e-9, 1.0 - residual / centred, 0.0).clamp(0.0, 0.99)
    ridge = torch.cat([torch.zeros(1, dtype=gram.dtype), size * (r2 / (1.0 - r2)) ** 2])
    ridge = anchor_ridge * ridge
    inverse = torch.linalg.pinv(
        gram[: n_real + 1, : n_real + 1] + torch.diag(ridge[: n_real + 1]), hermitian=True
    )
    own = size[n_real:] + ridge[n_real + 1 :]
    return inverse, cross, (own - (cross * (inverse @ cross)).sum(0)).clamp(min=1e-6)


@pytest.mark.parametrize("singular", [False, True])
def test_psd_pinv_equals_the_eigendecomposition_pseudo_inverse(singular):
    from glassvi.module._linalg import psd_pinv

    mask = _nested_mask()
    if not singular:
        mask = mask[:, :8]
    design = np.column_stack([np.ones(len(mask)), mask]).astype(float)
    gram = design.T @ design
    assert (np.linalg.matrix_rank(gram) < len(gram)) == singular
    builds = []

    def build():
        builds.append(1)
        return gram.copy()

    got = psd_pinv(build)
    expected = torch.linalg.pinv(torch.from_numpy(gram), hermitian=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10 * np.abs(expected).max())
    np.testing.assert_array_equal(got, got.T)
    # a positive definite matrix is factorised once, in its own storage
    assert len(builds) == (3 if singular else 1)


@pytest.mark.parametrize("anchor_tvalue", [False, True])
def test_joint_design_factorises_without_eigendecompositions_and_keeps_the_fit(
    anchor_tvalue, monkeypatch
):
    mask = _nested_mask()
    n_decoys = 3
    x = torch.from_numpy(_counts(n_cells=30, n_features=len(mask), seed=3))
    module = ProgramVAE(
        {"rna": len(mask)},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": torch.from_numpy(mask)},
        activity_anchor=1.0,
        n_decoys=n_decoys,
        anchor_tvalue=anchor_tvalue,
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the joint design eigendecomposes a (k + 1) x (k + 1) matrix")

    # an eigendecomposition costs ~9 k^3 flops and three k x k float64 arrays: at 5,233 GO BP
    # programs that was 35 s (one thread) and 1.3 GiB, twice per model
    with monkeypatch.context() as patch:
        for name in ("pinv", "eigh", "eigvalsh", "svd"):
            patch.setattr(torch.linalg, name, refuse)
            patch.setattr(np.linalg, name, refuse)
        score = module.joint_score({"rna": x})
    n_real = mask.shape[1] - n_decoys
    inverse, cross, residual, gram, n_total = module._joint_design_cache
    assert inverse.dtype == torch.float32 and inverse.shape == (n_real + 1, n_real + 1)
    assert (gram is not None) == anchor_tvalue  # the Gram matrix is kept only for t-values

    design = np.column_stack([np.ones(len(mask)), mask]).astype(float)
    reference = _pinv_design(torch.from_numpy(design.T @ design), n_real, module.anchor_ridge)
    torch.testing.assert_close(inverse, reference[0].float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cross, reference[1].float())
    torch.testing.assert_close(residual, reference[2].float(), rtol=1e-5, atol=1e-5)
    module._joint_design_cache = tuple(t.float() for t in reference) + (
        torch.from_numpy(design.T @ design)[: n_real + 1, : n_real + 1].float(),
        float(len(mask)),
    )
    torch.testing.assert_close(score, module.joint_score({"rna": x}), rtol=1e-4, atol=1e-4)
    # the duplicated program's target is its original's
    torch.testing.assert_close(score[:, 8], score[:, 2])


def test_compiled_member_sums_equal_the_torch_path(monkeypatch):
    import glassvi._compiled as kernels
    import glassvi.module._program as program

    def refuse():
        raise AssertionError("the compiled kernel ran with numba switched off")

    gen = np.random.default_rng(6)
    x = torch.from_numpy((gen.random((25, 40)) < 0.3) * gen.integers(1, 5, (25, 40))).float()
    flat = torch.from_numpy(np.flatnonzero(x.numpy().reshape(-1)))
    for mask_mode in ("hard", "soft"):
        module = ProgramVAE(
            {"rna": 40},
            {"rna": "X"},
            {"rna": "nb"},
            {"rna": torch.from_numpy(gen.random((40, 6)) < 0.3)},
            mask_mode=mask_mode,
            activity_anchor=1.0,
            n_decoys=2,
        )
        compiled = module.joint_score({"rna": x}, {"rna": flat})
        monkeypatch.setattr(kernels, "numba_available", lambda: False)
        monkeypatch.setattr(program, "_member_sums_kernel", refuse)
        torch.testing.assert_close(module.joint_score({"rna": x}, {"rna": flat}), compiled)
        monkeypatch.undo()
