"""Multiome specifics: default modalities, modality weights, balance of RNA and ATAC."""

import mudata as md
import numpy as np
import pytest
import torch

import glassvi
from glassvi.model import LinearVI, ProgramVI
from glassvi.module import GlassVAE, resolve_modality_weights

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice


@pytest.fixture(scope="module")
def multiome():
    return glassvi.data.simulate(
        n_cells=200, n_genes=120, n_peaks=400, n_programs=6, modality="multiome", seed=3
    )


def _with_programs(mdata):
    mdata = mdata.copy()
    truth = mdata["rna"].varm["true_programs"]
    names = mdata.uns["simulation"]["program_names"]
    sets = {n: list(mdata["rna"].var_names[truth[:, i]]) for i, n in enumerate(names)}
    glassvi.pp.add_programs(mdata["rna"], sets, min_genes=1)
    glassvi.pp.add_peak_programs(mdata, links="gene")
    return mdata


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
def test_setup_mudata_needs_no_modalities_dict(multiome, cls):
    """Modalities named rna and atac are found without a modalities dict."""
    mdata = _with_programs(multiome) if cls is ProgramVI else multiome.copy()
    cls.setup_mudata(mdata, batch_key="batch")
    model = cls(mdata)
    assert model.modalities == ["rna", "atac"]
    assert model.module.n_features == {"rna": 120, "atac": 400}
    assert model.adata_manager.registry["setup_args"]["modalities"] == {
        "rna_layer": "rna",
        "atac_layer": "atac",
    }
    # a MuData with only one of them models that one
    rna_only = md.MuData({"rna": mdata["rna"].copy()})
    rna_only.obs["batch"] = mdata.obs["batch"].to_numpy()
    cls.setup_mudata(rna_only, batch_key="batch")
    assert cls(rna_only).modalities == ["rna"]


def test_resolve_modality_weights():
    n = {"rna": 2000, "atac": 50_000}
    assert resolve_modality_weights(None, n).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(resolve_modality_weights("balanced", n), [1.0, 0.04])
    np.testing.assert_allclose(resolve_modality_weights({"atac": 0.2}, n), [1.0, 0.2])
    # one modality: balanced changes nothing
    assert resolve_modality_weights("balanced", {"rna": 10}).tolist() == [1.0]
    with pytest.raises(ValueError, match="unknown modalities"):
        resolve_modality_weights({"adt": 1.0}, n)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_modality_weights({"atac": -1.0}, n)
    with pytest.raises(ValueError, match="'balanced'"):
        resolve_modality_weights("equal", n)


def test_loss_weighs_each_modality():
    torch.manual_seed(0)
    kwargs = dict(
        n_features={"rna": 30, "atac": 80},
        registry_keys={"rna": "X", "atac": "atac"},
        likelihoods={"rna": "nb", "atac": "bernoulli"},
        n_latent=4,
    )
    x = {
        "X": torch.poisson(torch.full((16, 30), 2.0)),
        "atac": (torch.rand(16, 80) < 0.05).float(),
    }
    losses = {}
    for name, weights in {"plain": None, "half": {"atac": 0.5}, "none": {"atac": 0.0}}.items():
        torch.manual_seed(0)
        module = GlassVAE(**kwargs, modality_weights=weights)
        module.eval()
        torch.manual_seed(1)
        _, _, out = module(x)
        losses[name] = out
    rec = losses["plain"].reconstruction_loss
    kl = losses["plain"].kl_local["kl_divergence_z"]
    for name, w in {"plain": 1.0, "half": 0.5, "none": 0.0}.items():
        expected = torch.mean(rec["rna"] + w * rec["atac"] + kl)
        torch.testing.assert_close(losses[name].loss, expected)
        # the logged reconstruction losses are the unweighted NLLs
        torch.testing.assert_close(losses[name].reconstruction_loss["atac"], rec["atac"])
