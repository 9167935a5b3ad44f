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
    markers = glassvi.data.immune1k_markers()
    types = set(imm.obs["cell_type_annotations"].astype(str))
    assert len(markers) == 10 and set(markers) - {"B"} <= types
    assert {"B_naive", "B_memory"} <= types
    assert all(8 <= len(genes) <= 9 for genes in markers.values())
    assert markers["DC"][:3] == ["CD1C", "FCER1A", "CLEC10A"]
    with pytest.raises(FileNotFoundError, match="available"):
        glassvi.data.data_path("nothing.gmt")


def test_bundled_multiome_loads_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mdata = glassvi.data.snareseq_cortex()
    assert mdata.shape == (2000, 6677)
    assert list(mdata.obs.columns) == ["sample", "cell_type"]
    assert "linked_genes" in mdata["atac"].var


def _write_annotation(path, peaks):
    """Cell Ranger ARC layout: one row per peak-gene pair, intergenic peaks without a gene."""
    rows = ["chrom\tstart\tend\tgene\tdistance\tpeak_type"]
    for i, peak in enumerate(peaks):
        chrom, rest = peak.split(":")
        start, end = rest.split("-")
        if i % 4 == 3:
            rows.append(f"{chrom}\t{start}\t{end}\t\t\tintergenic")
            continue
        rows.append(f"{chrom}\t{start}\t{end}\tGENE{i % 12}\t{-100 * i}\tdistal")
        if i % 4 == 0:
            rows.append(f"{chrom}\t{start}\t{end}\tGENE{(i + 1) % 12}\t0\tpromoter")
    path.write_text("\n".join(rows) + "\n")


def test_read_10x_multiome_reads_peak_annotation(tmp_path):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _, genes, peaks = multiome_h5(path)
    _write_annotation(tmp_path / "atac_peak_annotation.tsv", peaks)
    (tmp_path / "atac_fragments.tsv.gz").write_bytes(b"")
    mdata = glassvi.data.read_10x_multiome(path)
    atac = mdata["atac"]
    links = atac.uns["peak_annotation"]
    assert list(links.columns) == ["peak", "gene", "distance", "peak_type"]
    # 20 peaks: 5 intergenic, 15 with one gene, 5 of them with a second one
    assert len(links) == 20 and links["peak"].nunique() == 15
    assert links["peak"].isin(atac.var_names).all()
    assert atac.var.loc[peaks[0], "linked_genes"] == "GENE0;GENE1"
    assert atac.var.loc[peaks[0], "peak_type"] == "distal;promoter"
    assert atac.var.loc[peaks[3], "linked_genes"] == ""
    assert atac.uns["files"]["fragments"].endswith("atac_fragments.tsv.gz")
    # the links feed straight into peak programs
    glassvi.pp.add_programs(mdata["rna"], {"p": ["GENE0", "GENE1", "GENE2"]}, min_genes=1)
    summary = glassvi.pp.add_peak_programs(mdata, links="peak_annotation")
    assert summary.loc["p", "n_peaks"] == 6  # peaks 0, 1, 2 and 12, 13, 14 (gene i % 12)
    # explicit path, and no annotation at all
    other = tmp_path / "elsewhere.tsv"
    _write_annotation(other, peaks[:4])
    assert (
        len(
            glassvi.data.read_10x_multiome(path, peak_annotation=other)["atac"].uns[
                "peak_annotation"
            ]
        )
        == 4
    )
    bare = glassvi.data.read_10x_multiome(path, peak_annotation=False)
    assert "peak_annotation" not in bare["atac"].uns
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        glassvi.data.read_10x_multiome(path, peak_annotation=tmp_path / "missing.tsv")


def test_read_10x_multiome_uses_muon(tmp_path, monkeypatch):
    import muon

    calls = []
    original = muon.read_10x_h5

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(muon, "read_10x_h5", spy)
    path = tmp_path / "m.h5"
    multiome_h5(path)
    glassvi.data.read_10x_multiome(path)
    assert len(calls) == 1
