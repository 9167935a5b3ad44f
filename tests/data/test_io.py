import numpy as np
import pytest

import glassvi
from glassvi.model import LinearVI
from tenx import multiome_h5


@pytest.mark.parametrize("with_interval", [True, False])
def test_read_10x_multiome(tmp_path, with_interval):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    counts, genes, peaks = multiome_h5(path, with_interval=with_interval)
    mdata = glassvi.data.read_10x_multiome(path)
    assert set(mdata.mod) == {"rna", "atac"}
    assert list(mdata["rna"].var_names) == genes
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), counts[:, : len(genes)])
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), counts[:, len(genes) :])
    var = mdata["atac"].var
    assert list(var["chrom"]) == [p.split(":")[0] for p in peaks]
    assert list(var["start"]) == [int(p.split(":")[1].split("-")[0]) for p in peaks]
    assert list(var["end"]) == [int(p.split("-")[1]) for p in peaks]
    LinearVI.setup_mudata(mdata)
    model = LinearVI(mdata, n_latent=2)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.explain()
    assert "linearvi_loadings" in mdata["atac"].varm


def test_read_10x_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        glassvi.data.read_10x_multiome(tmp_path / "nope.h5")


def test_bundled_data():
    adata = glassvi.data.pbmc68k()
    assert adata.shape == (700, 765)
    assert "bulk_labels" in adata.obs
    x = adata.layers["counts"].data
    assert (x == np.round(x)).all() and (x >= 0).all()
    imm = glassvi.data.immune1k()
    assert imm.shape == (1000, 6397)
    assert imm.obs["cell_type_annotations"].nunique() == 14
    hallmark = glassvi.data.hallmark()
    assert len(hallmark) == 50
    assert "STAT1" in hallmark["HALLMARK_INTERFERON_GAMMA_RESPONSE"]
    pos = glassvi.data.gene_positions()
    assert list(pos.columns) == ["gene", "chrom", "start", "end", "strand"]
    assert len(pos) == 28257
    assert len(glassvi.data.reactome()) == 1615
    with pytest.raises(FileNotFoundError, match="available"):
        glassvi.data.data_path("nothing.gmt")
