"""Optional dependencies fail with a message that names the extra to install."""

import builtins
import sys

import pytest

import glassvi
from glassvi._optional import available, require
from glassvi.cli import main


@pytest.fixture
def no_captum(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("captum", "shap"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in list(sys.modules):
        if name.split(".")[0] in ("captum", "shap"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_require_names_the_extra(no_captum):
    assert not available("captum")
    with pytest.raises(ImportError, match=r'pip install "glassvi\[attribution\]"'):
        require("captum.attr", "integrated gradients")


def test_explain_without_captum_says_what_to_install(no_captum):
    adata = glassvi.data.simulate(n_cells=80, n_genes=40, n_programs=3, seed=0)
    glassvi.model.LinearVI.setup_anndata(adata, layer="counts")
    model = glassvi.model.LinearVI(adata, n_latent=2)
    model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu")
    model.explain()  # the intrinsic explanation needs neither
    with pytest.raises(ImportError, match="glassvi\\[attribution\\]"):
        model.explain(method="integrated_gradients", progress_bar=False)


def test_run_skips_the_attribution_without_captum(no_captum, tmp_path, capsys):
    adata = glassvi.data.simulate(n_cells=120, n_genes=60, n_programs=3, seed=1)
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    argv = ["run", str(path), "--layer", "counts", "--labels-key", "cell_type", "--model"]
    argv += ["linear", "--n-latent", "3", "--epochs", "1", "--out", str(tmp_path / "o")]
    assert main(argv + ["--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "attribution skipped" in out and "glassvi[attribution]" in out
