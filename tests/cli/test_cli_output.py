"""`glassvi run` output: checked before any work, replaced whole, intact after a failure."""

import anndata as ad
import pytest

import glassvi
from glassvi import cli
from glassvi.cli import main


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    adata = glassvi.data.simulate(n_cells=60, n_genes=40, seed=2)
    path = tmp_path_factory.mktemp("in") / "in.h5ad"
    adata.write_h5ad(path)
    return path


def _argv(data_file, out, *extra):
    return [
        "run", str(data_file), "--layer", "counts", "--model", "linear", "--n-latent", "2",
        "--epochs", "1", "--no-report", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def _no_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the data were read before the output was checked")

    monkeypatch.setattr(cli, "_load", fail)


def test_unusable_out_fails_before_any_work(data_file, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(_argv(data_file, blocker / "out")) == 2
    assert "is not a directory" in capsys.readouterr().err

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("glassvi._atomic.tempfile.mkstemp", denied)
    assert main(_argv(data_file, tmp_path / "new")) == 2
    assert "is not writable" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_non_empty_out_needs_overwrite(data_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _no_work(monkeypatch)
    assert main(_argv(data_file, out)) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    # --overwrite never deletes the input it reads
    assert main(_argv(data_file, data_file.parent, "--overwrite")) == 2
    assert "holds the input" in capsys.readouterr().err


def test_overwrite_replaces_the_whole_set_and_failures_keep_the_old(
    data_file, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("stale report of another model")
    assert main(_argv(data_file, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model", "results.h5ad"]
    good = (out / "results.h5ad").read_bytes()
    assert ad.read_h5ad(out / "results.h5ad").obsm["X_linearvi"].shape == (60, 2)

    # a crash half-way through writing the results
    def broken_write(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF partial")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
    assert main(_argv(data_file, out, "--overwrite")) == 2
    assert (out / "results.h5ad").read_bytes() == good
    assert sorted(p.name for p in out.iterdir()) == ["model", "results.h5ad"]
    # a crash after the results, while saving the model
    monkeypatch.undo()

    def broken_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(glassvi.model.LinearVI, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(data_file, out, "--overwrite"))
    assert (out / "results.h5ad").read_bytes() == good
    # no staging folder is left next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_one_label_is_refused(tmp_path, capsys):
    adata = glassvi.data.simulate(n_cells=40, n_genes=40, seed=2)
    adata.obs["one"] = "T cell"
    path = tmp_path / "one.h5ad"
    adata.write_h5ad(path)
    assert main(_argv(path, tmp_path / "o", "--labels-key", "one")) == 2
    assert "--labels-key 'one' has only 'T cell'" in capsys.readouterr().err
