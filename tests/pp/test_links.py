from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import glassvi
from glassvi.pp import (
    add_peak_programs,
    add_programs,
    peak_gene_links,
    read_peak_annotation,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice

FIXTURES = Path(__file__).parent / "fixtures"
ARC = FIXTURES / "atac_peak_annotation_arc.tsv"  # Cell Ranger ARC layout, mm10
ATAC1 = FIXTURES / "atac_peak_annotation_atac1.tsv"  # Cell Ranger ATAC 1.x layout
PEAKS = [
    "chr1:3094708-3095552",
    "chr1:4491637-4492561",
    "chr1:4807578-4808506",
    "chr2:70562543-70563456",
    "chr2:70564892-70565779",
    "chr2:70598112-70598977",
]


def atac(names=PEAKS, var=None):
    return ad.AnnData(
        np.zeros((2, len(names))), var=var if var is not None else pd.DataFrame(index=names)
    )


def pairs(links):
    return sorted(zip(links["peak"], links["gene"], strict=True))


def test_read_peak_annotation_arc():
    links = read_peak_annotation(ARC)
    assert list(links.columns) == ["peak", "gene", "distance", "peak_type"]
    # intergenic peaks (no gene) are left out; a peak linked to two genes gives two rows
    assert len(links) == 9
    assert "chr1:3094708-3095552" not in set(links["peak"])
    two = links[links["peak"] == "chr1:4807578-4808506"]
    assert list(two["gene"]) == ["Lypla1", "Mrpl15"]
    assert list(two["distance"]) == [0, -422]
    assert list(two["peak_type"]) == ["promoter", "promoter"]
    gad1 = links[links["gene"] == "Gad1"]
    assert list(gad1["distance"]) == [-1204, 0, 22743]


def test_read_peak_annotation_cellranger_atac_layout():
    """The older layout: chr_start_end names and ;-joined genes with parallel distances."""
    links = read_peak_annotation(ATAC1)
    expected = read_peak_annotation(ARC)
    expected = expected[expected["peak"].isin(set(links["peak"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(links, expected)


def test_read_peak_annotation_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_peak_annotation(tmp_path / "nope.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("chrom\tstart\tend\tdistance\nchr1\t1\t2\t0\n")
    with pytest.raises(ValueError, match="lack the columns gene"):
        read_peak_annotation(bad)


def test_links_from_var_column():
    var = pd.DataFrame(
        {"linked_genes": ["Gad1", "Gad1;Gad2", "", None, "nan", "Sst"]}, index=PEAKS
    )
    links = peak_gene_links(atac(var=var), "linked_genes")
    assert pairs(links) == sorted(
        [
            (PEAKS[0], "Gad1"),
            (PEAKS[1], "Gad1"),
            (PEAKS[1], "Gad2"),
            (PEAKS[5], "Sst"),
        ]
    )
    # comma-separated lists and list values
    var["linked_genes"] = ["A, B", "C", "", "", "", ""]
    assert pairs(peak_gene_links(atac(var=var), "linked_genes"))[:2] == [
        (PEAKS[0], "A"),
        (PEAKS[0], "B"),
    ]
    var["linked_genes"] = [["A", "B"], ["C"], [], [], [], []]
    assert len(peak_gene_links(atac(var=var), "linked_genes")) == 3


def test_links_from_table_with_other_spellings():
    table = pd.DataFrame(
        {
            "Region": ["chr1_4491637_4492561", "chr2-70562543-70563456", "chr9:1-2"],
            "gene_name": ["Sox17", "Gad1", "Far"],
            "score": [0.9, 0.4, 0.1],
        }
    )
    data = atac()
    links = peak_gene_links(data, table, key_added="my_links")
    # peaks written differently but denoting the same interval get the var_names spelling
    assert list(links["peak"]) == [PEAKS[1], PEAKS[3], "chr9:1-2"]
    assert list(links["score"]) == [0.9, 0.4, 0.1]
    assert data.uns["my_links"] is links
    # and a stored table is found by its uns key
    assert pairs(peak_gene_links(data, "my_links")) == pairs(links)


def test_links_from_file_and_errors():
    data = atac()
    assert pairs(peak_gene_links(data, str(ARC))) == pairs(read_peak_annotation(ARC))
    with pytest.raises(ValueError, match="not a column of atac.var"):
        peak_gene_links(data, "no_such_thing")
    with pytest.raises(ValueError, match="got int"):
        peak_gene_links(data, 3)
    with pytest.raises(ValueError, match="lack the columns peak"):
        peak_gene_links(data, pd.DataFrame({"gene": ["A"]}))


@pytest.mark.parametrize("source", ["var", "table", "file", "uns"])
def test_add_peak_programs_from_every_link_source(source):
    """All link sources give the same peak programs."""
    var = pd.DataFrame(
        {"linked_genes": ["", "Sox17", "Lypla1;Mrpl15", "Gad1", "Gad1", "Gad1"]}, index=PEAKS
    )
    rna = ad.AnnData(
        np.zeros((2, 4)), var=pd.DataFrame(index=["Gad1", "Sox17", "Lypla1", "Mrpl15"])
    )
    mdata = md.MuData({"rna": rna, "atac": atac(var=var)})
    add_programs(mdata["rna"], {"inhib": ["Gad1"], "other": ["Sox17", "Mrpl15"]}, min_genes=1)
    if source == "uns":
        mdata["atac"].uns["links"] = read_peak_annotation(ARC)
    links = {
        "var": "linked_genes",
        "table": read_peak_annotation(ARC),
        "file": ARC,
        "uns": "links",
    }[source]
    add_peak_programs(mdata, links=links)
    mask = glassvi.tl.varm_df(mdata["atac"], "programs")
    assert list(mask.index[mask["inhib"]]) == PEAKS[3:]
    assert list(mask.index[mask["other"]]) == PEAKS[1:3]


def test_real_var_column_links(shared_data):
    """The SNARE-seq cortex data carry their links as atac.var['linked_genes']."""
    mdata = md.read_h5mu(shared_data / "snareseq_cortex_dev.h5mu")
    links = peak_gene_links(mdata["atac"], "linked_genes")
    assert links["peak"].isin(mdata["atac"].var_names).all()
    assert len(links) == int((mdata["atac"].var["linked_genes"].astype(str) != "").sum())
    assert (
        glassvi.pp.add_peak_programs(
            mdata, {"oligo": ["Mbp", "Mog"]}, links="linked_genes", inplace=False
        )[1].loc["oligo", "n_peaks"]
        == 38
    )
