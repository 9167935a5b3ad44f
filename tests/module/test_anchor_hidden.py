"""An anchor that trains the encoder's output layer only (``anchor_hidden=False``)."""

import numpy as np
import pytest
import torch
from scvi import REGISTRY_KEYS

from glassvi.module import ProgramVAE


def _module(anchor_hidden, n_denovo=1):
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((30, 6)) < 0.3)
    torch.manual_seed(0)
    return ProgramVAE(
        {"rna": 30},
        {"rna": "X"},
        {"rna": "nb"},
        {"rna": mask},
        n_denovo=n_denovo,
        activity_anchor=5.0,
        dropout_rate=0.0,
        n_decoys=2,
        anchor_hidden=anchor_hidden,
    )


def _tensors():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.poisson(3.0, size=(24, 30)).astype(np.float32))
    return {"X": x, REGISTRY_KEYS.BATCH_KEY: torch.zeros(x.shape[0], 1)}


def _anchor_gradients(module, tensors):
    """Gradients of the anchor term alone (loss minus the ELBO of the same forward pass)."""
    module.train()
    inf = module.inference(**module._get_inference_input(tensors))
    gen = module.generative(**module._get_generative_input(tensors, inf))
    out = module.loss(tensors, inf, gen)
    module.zero_grad()
    anchor = out.loss - torch.mean(
        torch.stack(list(out.reconstruction_loss.values())).sum(0)
        + out.kl_local["kl_divergence_z"]
    )
    anchor.backward()
    grads = [p.grad for p in module.z_encoder.encoder.parameters() if p.grad is not None]
    hidden = sum(float(g.abs().sum()) for g in grads)
    rows = float(module.z_encoder.mean_encoder.weight.grad.abs().sum())
    return out, hidden, rows


@pytest.mark.parametrize("anchor_hidden", [True, False])
def test_anchor_reaches_the_hidden_layers_only_when_asked(anchor_hidden):
    tensors = _tensors()
    module = _module(anchor_hidden)
    out, hidden, rows = _anchor_gradients(module, tensors)
    penalty = out.extra_metrics["activity_anchor"]
    assert penalty > 0
    assert rows > 0  # the programs' rows of the posterior mean always learn from the anchor
    if anchor_hidden:
        assert hidden > 1e-3
    else:
        assert hidden < 1e-6
        # the value kept for the loss is taken, so no graph stays on the module
        assert "output_on_detached_input" not in module.z_encoder.mean_encoder.__dict__
    # the penalty's value does not depend on where its gradient goes
    other = _module(not anchor_hidden)
    other_out, _, _ = _anchor_gradients(other, tensors)
    torch.testing.assert_close(other_out.extra_metrics["activity_anchor"], penalty)


def test_anchor_hidden_false_survives_new_de_novo_units():
    tensors = _tensors()
    module = _module(False, n_denovo=0)
    module.add_denovo_(1)  # a new output layer (query mapping)
    module.train()
    inf = module.inference(**module._get_inference_input(tensors))
    kept = module.z_encoder.mean_encoder.__dict__["output_on_detached_input"]
    torch.testing.assert_close(kept, inf["qz"].loc)
    assert kept.shape[-1] == module.n_latent
    # outside training nothing is kept
    module = _module(False)
    module.eval()
    with torch.no_grad():
        module.inference(**module._get_inference_input(tensors))
    assert "output_on_detached_input" not in module.z_encoder.mean_encoder.__dict__


def test_a_share_of_the_anchor_reaches_the_hidden_layers():
    tensors = _tensors()
    full = _module(True)
    _, hidden_full, rows_full = _anchor_gradients(full, tensors)
    part = _module(0.25)
    out, hidden_part, rows_part = _anchor_gradients(part, tensors)
    # the hidden layers get a quarter of the anchor's gradient, the output layer all of it
    assert hidden_part == pytest.approx(0.25 * hidden_full, rel=1e-4)
    assert rows_part == pytest.approx(rows_full, rel=1e-4)
    assert "output_on_detached_input" not in part.z_encoder.mean_encoder.__dict__
    with pytest.raises(ValueError, match="anchor_hidden"):
        _module(1.5)
