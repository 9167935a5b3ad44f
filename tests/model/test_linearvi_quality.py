"""Held-out reconstruction of LinearVI against scvi-tools' LinearSCVI on real counts."""

import numpy as np
import pytest
import scvi

import glassvi

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


@pytest.mark.slow
def test_heldout_reconstruction_not_worse_than_linearscvi():
    adata = glassvi.data.pbmc68k()
    rng = np.random.default_rng(0)
    order = rng.permutation(adata.n_obs)
    test, train = order[:140], order[140:]
    split = {"external_indexing": [train, np.array([], dtype=int), test]}
    epochs, n_latent = 150, 10

    ref = adata.copy()
    scvi.model.LinearSCVI.setup_anndata(ref, layer="counts")
    scvi.settings.seed = 0
    ldvae = scvi.model.LinearSCVI(ref, n_latent=n_latent)
    ldvae.train(max_epochs=epochs, datasplitter_kwargs=split, **TRAIN_KW)

    ours = adata.copy()
    glassvi.model.LinearVI.setup_anndata(ours, layer="counts")
    scvi.settings.seed = 0
    model = glassvi.model.LinearVI(ours, n_latent=n_latent)
    model.train(max_epochs=epochs, datasplitter_kwargs=split, **TRAIN_KW)
    np.testing.assert_array_equal(np.sort(model.test_indices), np.sort(test))

    def heldout_nll(m):
        scvi.settings.seed = 1
        return float(sum(m.get_reconstruction_error(indices=test).values()))

    nll_ldvae, nll_ours = heldout_nll(ldvae), heldout_nll(model)
    print(f"held-out NLL per cell: LinearSCVI {nll_ldvae:.1f}, LinearVI {nll_ours:.1f}")
    assert nll_ours <= nll_ldvae * 1.01
