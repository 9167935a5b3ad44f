"""Stochastic attribution methods give the same result for the same seed."""

import numpy as np
import pytest
import torch

import glassvi
from glassvi.model import LinearVI


@pytest.fixture(scope="module")
def model():
    adata = glassvi.data.simulate(n_cells=80, n_genes=40, seed=7)
    LinearVI.setup_anndata(adata, layer="counts")
    model = LinearVI(adata, n_latent=2)
    model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu")
    return model


def _run(model, method, seed):
    out = model.explain(
        method=method,
        inplace=False,
        seed=seed,
        n_samples=5,
        n_background=10,
        indices=np.arange(20),
        progress_bar=False,
    )
    return np.asarray(out["varm"]["rna"][f"linearvi_{method}_latent"])


@pytest.mark.parametrize(
    "method", ["gradient_shap", "shap", "integrated_gradients", "deeplift_shap"]
)
def test_same_seed_same_result_and_global_rngs_untouched(model, method):
    first = _run(model, method, seed=3)
    np.random.rand()  # noqa: NPY002 - other code drawing in between must not matter
    torch.rand(3)
    second = _run(model, method, seed=3)
    np.testing.assert_array_equal(first, second)
    if method in ("gradient_shap", "shap"):
        assert not np.array_equal(first, _run(model, method, seed=4))
    # the caller's random streams continue as if nothing had been drawn
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    _run(model, method, seed=3)
    after = (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    assert after == (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
