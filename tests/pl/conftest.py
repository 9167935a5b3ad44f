import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import glassvi  # noqa: E402
from glassvi.model import LinearVI  # noqa: E402

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


def assert_png_not_blank(path, min_std=0.02):
    """The file exists, is a PNG and shows more than a flat background."""
    assert path.exists(), f"{path} was not written"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    rgb = image[..., :3]
    assert rgb.std() > min_std, f"{path} looks blank (pixel std {rgb.std():.4f})"
    non_white = (rgb < 0.9).any(axis=-1).mean()
    assert non_white > 0.005, f"{path} is almost all white ({non_white:.4%} drawn)"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _embed(latent: np.ndarray) -> np.ndarray:
    """A cheap 2-D embedding of the latent space (first two principal axes)."""
    latent = np.asarray(latent)
    centred = latent - latent.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


@pytest.fixture(scope="session")
def rna_trained():
    """Simulated RNA with LinearVI results plus ProgramVI- and explain-shaped tables."""
    adata = glassvi.data.simulate(n_cells=300, n_genes=150, modality="rna", seed=3)
    LinearVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    model = LinearVI(adata, n_latent=6)
    model.train(max_epochs=4, batch_size=128, check_val_every_n_epoch=1, **TRAIN_KW)
    model.explain()
    adata.obsm["X_umap"] = _embed(adata.obsm["X_linearvi"])

    names = list(adata.uns["simulation"]["program_names"])
    weights = pd.DataFrame(adata.varm["true_weights"], index=adata.var_names, columns=names)
    mask = pd.DataFrame(
        adata.varm["true_programs"].astype(bool), index=adata.var_names, columns=names
    )
    # DataFrames, as earlier versions wrote them (and users may): both forms are read
    adata.varm["programvi_weights"] = weights
    adata.varm["programs"] = mask
    # stored as explain() stores it: an array, its names in the record
    adata.obsm["X_programvi"] = np.asarray(adata.obsm["true_activity"])
    adata.uns["programvi"] = {
        "latent_key": "X_programvi",
        "weights_key": "programvi_weights",
        "columns": names,
    }
    rng = np.random.default_rng(0)
    types = sorted(adata.obs["cell_type"].unique())
    attribution = pd.DataFrame(
        rng.normal(size=(adata.n_vars, len(types))), index=adata.var_names, columns=types
    )
    adata.varm["linearvi_ig_cell_type"] = attribution
    adata.varm["linearvi_ig_cell_type_abs"] = attribution.abs() + 0.1
    adata.uns["programvi_differential"] = pd.DataFrame(
        {
            "program": names,
            "proba": np.linspace(0.05, 0.99, len(names)),
            "bayes_factor": np.linspace(-3.0, 5.0, len(names)),
            "effect_size": rng.normal(size=len(names)),
            "is_significant": np.linspace(-3.0, 5.0, len(names)) > 2.3,
        }
    )
    return adata, model


@pytest.fixture(scope="session")
def multiome_trained():
    mdata = glassvi.data.simulate(
        n_cells=200, n_genes=120, n_peaks=240, modality="multiome", seed=4
    )
    LinearVI.setup_mudata(mdata, rna_layer="counts", atac_layer="counts")
    model = LinearVI(mdata, n_latent=4)
    model.train(max_epochs=3, batch_size=128, **TRAIN_KW)
    model.explain()
    return mdata, model
