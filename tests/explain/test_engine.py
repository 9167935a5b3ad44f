import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from torch import nn

import glassvi
from glassvi.explain import StreamingMeans, TargetModel, attribute
from glassvi.explain._engine import AttributionBatch


class LinearModule(nn.Module):
    """Two-modality module whose encoder is linear: z = x_rna A + x_atac B + offset[batch]."""

    def __init__(self, n_rna=7, n_atac=5, n_latent=3, n_labels=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.modalities = ["rna", "atac"]
        self.n_latent = n_latent
        self.A = nn.Parameter(torch.randn(n_rna, n_latent, generator=g))
        self.B = nn.Parameter(torch.randn(n_atac, n_latent, generator=g))
        self.offset = nn.Parameter(torch.randn(2, n_latent, generator=g))
        self.classifier = nn.Linear(n_latent, n_labels)

    def latent_from_inputs(self, inputs, batch_index=None, cat_covs=None, cont_covs=None):
        z = inputs["rna"] @ self.A + inputs["atac"] @ self.B
        if batch_index is not None:
            z = z + self.offset[batch_index.reshape(-1).long()]
        return z


def _batches(x_rna, x_atac, batch, size=4):
    for s in range(0, x_rna.shape[0], size):
        sl = slice(s, s + size)
        yield AttributionBatch(
            (x_rna[sl], x_atac[sl]), (batch[sl], None, None), np.arange(x_rna.shape[0])[sl]
        )


@pytest.fixture
def linear_case():
    g = torch.Generator().manual_seed(1)
    module = LinearModule()
    x_rna = torch.rand(10, 7, generator=g) * 5
    x_atac = (torch.rand(10, 5, generator=g) > 0.5).float()
    batch = torch.randint(2, (10, 1), generator=g)
    return module, x_rna, x_atac, batch


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "deeplift"])
def test_linear_encoder_latent_attributions_are_x_times_w(linear_case, method):
    module, x_rna, x_atac, batch = linear_case
    zeros = (torch.zeros(1, 7), torch.zeros(1, 5))
    res = attribute(
        TargetModel(module, "latent"),
        _batches(x_rna, x_atac, batch),
        method,
        n_cells=10,
        n_targets=3,
        baseline=zeros if method != "input_x_gradient" else None,
        n_steps=8,
        return_per_cell=True,
    )
    A, B = module.A.detach(), module.B.detach()
    expected_rna = x_rna[:, :, None] * A[None]  # cells x genes x targets
    expected_atac = x_atac[:, :, None] * B[None]
    np.testing.assert_allclose(res.per_cell[0], expected_rna.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.per_cell[1], expected_atac.numpy(), rtol=1e-4, atol=1e-5)
    # streamed means equal the means of the per-cell values
    np.testing.assert_allclose(res.mean[0][0], expected_rna.mean(0).T.numpy(), rtol=1e-4)
    np.testing.assert_allclose(
        res.mean_abs[1][0], expected_atac.abs().mean(0).T.numpy(), rtol=1e-4, atol=1e-6
    )
    if method != "input_x_gradient":
        # completeness: the batch offset is in f(x) and f(baseline) alike (covariates passed
        # through), so the attributions sum exactly to the output difference
        assert np.nanmax(np.abs(res.delta)) < 1e-4


@pytest.mark.parametrize("contrast", ["none", "mean"])
def test_linear_encoder_label_attributions(linear_case, contrast):
    module, x_rna, x_atac, batch = linear_case
    res = attribute(
        TargetModel(module, "labels", label_contrast=contrast),
        _batches(x_rna, x_atac, batch),
        "integrated_gradients",
        n_cells=10,
        n_targets=4,
        baseline=(torch.zeros(1, 7), torch.zeros(1, 5)),
        n_steps=4,
        return_per_cell=True,
    )
    with torch.no_grad():
        z = module.latent_from_inputs({"rna": x_rna, "atac": x_atac}, batch)
        pred = module.classifier(z).argmax(1)
        W = module.classifier.weight
        if contrast == "mean":
            # logit_c - mean of the other logits is linear: W[c] - mean_{j != c} W[j]
            W = (4 * W - W.sum(0, keepdim=True)) / 3
        expected = x_rna * (module.A @ W.T).T[pred]
        contrib = z * W[pred]
    np.testing.assert_array_equal(res.predicted, pred.numpy())
    np.testing.assert_array_equal(res.classes, pred.numpy())
    np.testing.assert_allclose(res.per_cell[0], expected.numpy(), rtol=1e-4, atol=1e-5)
    # exact decomposition of the explained margin by latent unit
    np.testing.assert_allclose(res.cell_scores, contrib.numpy(), rtol=1e-5, atol=1e-5)
    # class means are over the cells predicted as that class
    for c in range(4):
        sel = (pred == c).numpy()
        if sel.any():
            np.testing.assert_allclose(res.mean[0][0][c], expected.numpy()[sel].mean(0), rtol=1e-4)
            assert res.counts[0, c] == sel.sum()
        else:
            assert np.isnan(res.mean[0][0][c]).all()


def test_label_margins_remove_the_part_shared_by_all_classes():
    from glassvi.explain import label_margins

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    shared = torch.randn(6, 1, generator=g)
    for contrast in ("rest", "mean"):
        # adding the same amount to every logit (which the softmax ignores) changes nothing
        np.testing.assert_allclose(
            label_margins(logits + shared, contrast), label_margins(logits, contrast), atol=1e-5
        )
    rest = label_margins(logits, "rest")
    p = torch.softmax(logits, dim=1)
    np.testing.assert_allclose(rest, torch.log(p / (1 - p)), rtol=1e-4, atol=1e-5)


def _annotated_case(linear_case, seed):
    """Ten cells annotated with classes 0-3 (two unlabelled), a background of six cells, and a
    function yielding the cells in minibatches of four."""
    module, x_rna, x_atac, batch = linear_case
    annotated = torch.tensor([0, 1, 2, 3, -1, 0, 1, 2, 3, -1])
    g = torch.Generator().manual_seed(seed)
    background = (torch.rand(6, 7, generator=g) * 5, (torch.rand(6, 5, generator=g) > 0.5).float())

    def batches():
        for s in range(0, 10, 4):
            sl = slice(s, s + 4)
            yield AttributionBatch(
                (x_rna[sl], x_atac[sl]),
                (batch[sl], None, None),
                np.arange(10)[sl],
                labels=annotated[sl],
            )

    return annotated, background, batches


def test_annotated_classes_and_background_draws(linear_case):
    module, x_rna, x_atac, batch = linear_case
    annotated, background, batches = _annotated_case(linear_case, seed=3)

    res = attribute(
        TargetModel(module, "labels", label_contrast="rest"),
        batches(),
        "integrated_gradients",
        n_cells=10,
        n_targets=4,
        baseline=background,
        n_steps=60,
        n_samples=3,
        return_per_cell=True,
    )
    with torch.no_grad():
        z = module.latent_from_inputs({"rna": x_rna, "atac": x_atac}, batch)
        pred = module.classifier(z).argmax(1)
    expected = torch.where(annotated >= 0, annotated, pred)
    np.testing.assert_array_equal(res.classes, expected.numpy())
    np.testing.assert_array_equal(res.counts[0], np.bincount(expected.numpy(), minlength=4))
    # the attributions averaged over 3 background cells per cell sum to the margin minus the
    # mean margin of those background cells (completeness holds for the average)
    assert np.nanmax(np.abs(res.delta)) < 1e-3
    total = res.per_cell[0].sum(1) + res.per_cell[1].sum(1)
    np.testing.assert_allclose(total, res.output_gap[:, 0], rtol=1e-4, atol=1e-4)


def test_saliency_is_the_signed_gradient(linear_case):
    module, x_rna, x_atac, batch = linear_case
    res = attribute(
        TargetModel(module, lambda z: z[:, 0] - 2 * z[:, 2]),
        _batches(x_rna, x_atac, batch),
        "saliency",
        n_cells=10,
        n_targets=1,
    )
    A = module.A.detach()
    np.testing.assert_allclose(res.mean[0][0][0], (A[:, 0] - 2 * A[:, 2]).numpy(), rtol=1e-5)


def test_background_baseline_shap_methods(linear_case):
    module, x_rna, x_atac, batch = linear_case
    bg = (torch.rand(6, 7) * 5, (torch.rand(6, 5) > 0.5).float())
    # expected attribution of a linear map with a background distribution: (x - E[bg]) * w
    want = ((x_rna - bg[0].mean(0)) * module.A.detach()[:, 1]).numpy()
    for method in ["deeplift_shap", "gradient_shap"]:
        res = attribute(
            TargetModel(module, "latent"),
            _batches(x_rna, x_atac, batch),
            method,
            n_cells=10,
            n_targets=3,
            baseline=bg,
            n_samples=400,
            return_per_cell=True,
        )
        atol = 1e-4 if method == "deeplift_shap" else 0.6
        np.testing.assert_allclose(res.per_cell[0][:, :, 1], want, atol=atol)


def test_streaming_means_groups():
    acc = StreamingMeans([2], n_targets=2, n_groups=2, device="cpu")
    attr = torch.tensor([[1.0, -1.0], [3.0, 1.0], [5.0, -3.0], [7.0, 0.0]])
    acc.update((attr,), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, -1]))
    mean, mean_abs, counts = acc.means()
    np.testing.assert_allclose(mean[0][0, 0], [2.0, 0.0])
    np.testing.assert_allclose(mean[0][0, 1], [6.0, -1.5])
    np.testing.assert_allclose(mean_abs[0][0, 1], [6.0, 1.5])
    np.testing.assert_allclose(mean[0][1, 0], [1.0, -1.0])  # group 0, target 0
    np.testing.assert_allclose(mean[0][2, 1], [5.0, -3.0])  # group 1, target 1 (no -1 cell)
    np.testing.assert_array_equal(counts, [[2, 2], [1, 0], [1, 1]])


def test_rank_features_no_off_by_one():
    adata = AnnData(np.zeros((2, 4), np.float32))
    adata.var_names = ["a", "b", "c", "d"]
    adata.varm["att"] = pd.DataFrame(
        {"B": [0.1, -3.0, 2.0, np.nan], "T": [1.0, 2.0, 3.0, 4.0]}, index=adata.var_names
    )
    table = glassvi.tl.rank_features(adata, "att", "B", inplace=False)
    assert table["names"].tolist() == ["c", "a", "b", "d"]  # the missing score ranks last
    assert table["rank"].tolist() == [1, 2, 3, 4]
    table = glassvi.tl.rank_features(adata, "att", "B", absolute=True, n_top=1, inplace=False)
    assert table.iloc[0].tolist() == ["B", "b", -3.0, 1]
    with pytest.raises(KeyError, match="not a column"):
        glassvi.tl.rank_features(adata, "att", "NK")
    with pytest.raises(KeyError, match="not in .varm"):
        glassvi.tl.rank_features(adata, "missing", "B")


def test_shap_explains_each_cell_for_its_annotated_class(linear_case):
    module, x_rna, x_atac, batch = linear_case
    annotated, background, batches = _annotated_case(linear_case, seed=5)

    res = attribute(
        TargetModel(module, "labels", label_contrast="mean"),
        batches(),
        "shap",
        n_cells=10,
        n_targets=4,
        baseline=background,
        n_samples=400,
        return_per_cell=True,
    )
    with torch.no_grad():
        z = module.latent_from_inputs({"rna": x_rna, "atac": x_atac}, batch)
        pred = module.classifier(z).argmax(1)
        W = module.classifier.weight
        W = (4 * W - W.sum(0, keepdim=True)) / 3  # the "mean" margin is linear
    classes = torch.where(annotated >= 0, annotated, pred)
    np.testing.assert_array_equal(res.classes, classes.numpy())
    # SHAP of a linear margin: (x - E[background]) times the explained class's gradient
    grad = (module.A.detach() @ W.T).T[classes]
    want = ((x_rna - background[0].mean(0)) * grad).numpy()
    np.testing.assert_allclose(res.per_cell[0], want, atol=0.6)
    # a class other than the predicted one: cell 0 is annotated 0
    if pred[0] != 0:
        other = ((x_rna[0] - background[0].mean(0)) * (module.A.detach() @ W.T).T[pred[0]]).numpy()
        assert np.abs(res.per_cell[0][0] - want[0]).max() < np.abs(other - want[0]).max()


def test_above_baseline_keeps_the_evidence_of_what_the_cell_has_more_of(linear_case):
    module, x_rna, x_atac, batch = linear_case
    g = torch.Generator().manual_seed(7)
    base = (torch.rand(1, 7, generator=g) * 5, (torch.rand(1, 5, generator=g) > 0.5).float())
    runs = {}
    for above in (False, True):
        runs[above] = attribute(
            TargetModel(module, "labels", label_contrast="mean"),
            _batches(x_rna, x_atac, batch),
            "integrated_gradients",
            n_cells=10,
            n_targets=4,
            baseline=base,
            n_steps=4,
            return_per_cell=True,
            above_baseline=above,
        )
    full, kept = runs[False].per_cell, runs[True].per_cell
    for m, x in enumerate((x_rna, x_atac)):
        above = (x > base[m]).numpy()
        assert 0 < above.mean() < 1
        np.testing.assert_allclose(kept[m], full[m] * above, rtol=1e-6)
    # completeness is reported for the complete attributions
    np.testing.assert_allclose(runs[True].delta, runs[False].delta, atol=1e-6)
    np.testing.assert_allclose(runs[True].output_gap, runs[False].output_gap, atol=1e-6)
    assert np.abs(full[0].sum(1) + full[1].sum(1) - runs[True].output_gap[:, 0]).max() < 1e-4
