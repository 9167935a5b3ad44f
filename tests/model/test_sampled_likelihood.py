"""ATAC decoders: sampled likelihood in training (exact elsewhere), initial biases."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import glassvi
from glassvi.model import LinearVI, ProgramVI
from glassvi.module import nonzero_key
from glassvi.train import MinibatchDataset
from simulated import add_true_programs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu", "batch_size": 64}


@pytest.fixture(scope="module")
def multiome():
    mdata = glassvi.data.simulate(
        n_cells=160, n_genes=80, n_peaks=300, n_programs=4, modality="multiome", seed=5
    )
    add_true_programs(mdata)
    for mod in ("rna", "atac"):
        mdata[mod].X = sp.csr_matrix(mdata[mod].X)
    return mdata


def _minibatch(model):
    return MinibatchDataset(model.adata_manager)[np.arange(64)]


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
def test_sampled_likelihood_only_while_training(multiome, cls):
    mdata = multiome.copy()
    cls.setup_mudata(mdata)
    kwargs = {"n_latent": 4} if cls is LinearVI else {}
    model = cls(mdata, zero_sample_fraction=0.2, **kwargs)
    module = model.module
    tensors = _minibatch(model)
    assert nonzero_key(module.registry_keys["atac"]) in tensors
    module.train()
    torch.manual_seed(0)
    inf = module.inference(**module._get_inference_input(tensors))
    gen = module.generative(**module._get_generative_input(tensors, inf))
    px = gen["px"]["atac"]
    assert px.columns is not None and px.logits.shape[-1] == px.columns.numel() < 300
    sampled = module.reconstruction_nll(tensors, gen)["atac"]
    module.eval()
    gen_eval = module.generative(**module._get_generative_input(tensors, inf))
    assert gen_eval["px"]["atac"].columns is None
    exact = module.reconstruction_nll(tensors, gen_eval)["atac"]
    assert sampled.shape == exact.shape and not torch.allclose(sampled, exact)
    # the estimate is in the right range: zero entries carry a small share of the NLL here
    assert torch.allclose(sampled.mean(), exact.mean(), rtol=0.3)


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
def test_training_estimate_averages_to_the_exact_likelihood(multiome, cls):
    mdata = multiome.copy()
    atac = mdata["atac"].X.tocsr(copy=True)
    atac.data[::7] = 0.0  # stored zeros are not ones
    mdata["atac"].X = atac
    cls.setup_mudata(mdata)
    model = cls(mdata, zero_sample_fraction=0.2)
    module = model.module
    tensors = _minibatch(model)
    module.eval()
    with torch.no_grad():
        inf = dict(module.inference(**module._get_inference_input(tensors)))
        inf["z"] = inf["qz"].loc
        exact = module.reconstruction_nll(
            tensors, module.generative(**module._get_generative_input(tensors, inf))
        )["atac"]
        module.train()
        draws = torch.stack(
            [
                module.reconstruction_nll(
                    tensors, module.generative(**module._get_generative_input(tensors, inf))
                )["atac"]
                for _ in range(400)
            ]
        )
    assert draws.std(0).min() > 0
    sem = draws.std(0) / 400**0.5
    assert torch.all((draws.mean(0) - exact).abs() < 4.5 * sem + 1e-3)


def test_sampled_programvi_trains_saves_loads_and_maps_a_query(multiome, tmp_path):
    mdata = multiome.copy()
    ProgramVI.setup_mudata(mdata)
    model = ProgramVI(mdata, zero_sample_fraction=0.25, modality_weights={"atac": 1.0})
    model.train(max_epochs=4, **TRAIN_KW)
    elbo = model.history["elbo_train"].to_numpy(dtype=float).ravel()
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    model.explain()
    assert mdata["atac"].varm["programvi_weights"].shape[0] == mdata["atac"].n_vars
    model.save(tmp_path / "m")
    loaded = ProgramVI.load(tmp_path / "m", adata=mdata)
    assert loaded.module.zero_sample_fraction == 0.25
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    query = multiome[:40].copy()
    qmodel = ProgramVI.load_query_data(query, model)
    qmodel.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(qmodel.get_latent_representation()).all()


def test_zero_sample_fraction_is_checked(multiome):
    mdata = multiome.copy()
    LinearVI.setup_mudata(mdata)
    with pytest.raises(ValueError, match="zero_sample_fraction"):
        LinearVI(mdata, zero_sample_fraction=0.0)


def test_bernoulli_decoder_bias_starts_at_each_peaks_log_odds(multiome):
    mdata = multiome.copy()
    LinearVI.setup_mudata(mdata)
    model = LinearVI(mdata, n_latent=4)
    share = np.asarray((mdata["atac"].X > 0).mean(0)).ravel().clip(1e-4, 1 - 1e-4)
    bias = model.module.decoders["atac"].bias.detach().numpy()
    np.testing.assert_allclose(bias, np.log(share / (1 - share)), rtol=1e-4, atol=1e-4)
    assert np.all(model.module.decoders["rna"].bias.detach().numpy() == 0.0)
