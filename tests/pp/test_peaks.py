import logging
import time

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from glassvi.pp import add_peak_programs, add_peak_sets, add_programs, link_peaks
from glassvi.tl import varm_df

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata's update() notice

# TSS: GAPDH (+) 6534516, CD4 (+) 6789527, TP53 (-) 7687550, ACTB (-) 5530601 (hg38)
SUBSET = ["GAPDH", "CD4", "TP53", "ACTB"]


@pytest.fixture
def genes(shared_data):
    return pd.read_csv(shared_data / "genes_hg38.tsv", sep="\t")


@pytest.fixture
def subset(genes):
    return genes.set_index("gene").loc[SUBSET].reset_index()


def tss(table, gene):
    row = table.set_index("gene").loc[gene]
    return int(row["start"] if row["strand"] == "+" else row["end"])


def peak_at(chrom, center, half_width=250, sep=(":", "-")):
    start, end = center - half_width, center + half_width
    assert (start + end) // 2 == center
    return f"{chrom}{sep[0]}{start}{sep[1]}{end}"


def atac_from(names, var=None):
    var = pd.DataFrame(index=names) if var is None else var
    return ad.AnnData(np.zeros((2, len(var)), dtype=np.float32), var=var)


def links_as_set(links):
    return set(zip(links["peak"], links["gene"], links["distance"], strict=True))


def test_peaks_at_known_offsets(subset):
    gapdh, tp53, actb = tss(subset, "GAPDH"), tss(subset, "TP53"), tss(subset, "ACTB")
    gapdh_end = int(subset.set_index("gene").loc["GAPDH", "end"])
    tp53_start = int(subset.set_index("gene").loc["TP53", "start"])
    peaks = {
        "gapdh_up10k": (peak_at("chr12", gapdh - 10_000), -10_000),
        "gapdh_up60k": (peak_at("chr12", gapdh - 60_000), None),
        "gapdh_body": (peak_at("chr12", gapdh + 2_000), 2_000),
        "gapdh_end_40k": (peak_at("chr12", gapdh_end + 40_000), gapdh_end + 40_000 - gapdh),
        "gapdh_end_60k": (peak_at("chr12", gapdh_end + 60_000), None),
        # overlaps the window edge by 100 bp while its center lies outside
        "gapdh_edge": (f"chr12:{gapdh - 50_400}-{gapdh - 49_900}", -50_150),
        "tp53_up10k": (peak_at("chr17", tp53 + 10_000), -10_000),
        "tp53_body": (peak_at("chr17", tp53 - 5_000), 5_000),
        "tp53_past_end": (peak_at("chr17", tp53_start - 30_000), tp53 - tp53_start + 30_000),
        "tp53_up55k": (peak_at("chr17", tp53 + 55_000), None),
        "actb_tss": (peak_at("chr7", actb), 0),
        "other_chrom": (peak_at("chr2", 1_000_000), None),
    }
    atac = atac_from([name for name, _ in peaks.values()])
    links = link_peaks(atac, subset, window=50_000)
    expected = {
        (name, label.split("_")[0].upper(), distance)
        for label, (name, distance) in peaks.items()
        if distance is not None
    }
    assert links_as_set(links) == expected
    assert list(links.columns) == ["peak", "gene", "distance"]
    assert links["distance"].dtype == np.int64
    # ordered by peak in var order
    order = atac.var_names.get_indexer(links["peak"])
    assert (np.diff(order) >= 0).all()


def test_strand_and_asymmetric_window(subset):
    gapdh, tp53 = tss(subset, "GAPDH"), tss(subset, "TP53")
    names = [
        peak_at("chr12", gapdh - 10_000),  # upstream of a + gene
        peak_at("chr12", gapdh + 2_000),  # downstream, in the body
        peak_at("chr17", tp53 + 10_000),  # upstream of a - gene (genomic right)
        peak_at("chr17", tp53 - 5_000),  # downstream of a - gene, in the body
    ]
    atac = atac_from(names)
    links = link_peaks(atac, subset, window=(20_000, 0), use_gene_body=False)
    assert links_as_set(links) == {(names[0], "GAPDH", -10_000), (names[2], "TP53", -10_000)}
    links = link_peaks(atac, subset, window=(20_000, 0), use_gene_body=True)
    assert links_as_set(links) == {
        (names[0], "GAPDH", -10_000),
        (names[1], "GAPDH", 2_000),
        (names[2], "TP53", -10_000),
        (names[3], "TP53", 5_000),
    }
    # downstream-only window reaches the other way
    links = link_peaks(atac, subset, window=(0, 20_000), use_gene_body=False)
    assert links_as_set(links) == {(names[1], "GAPDH", 2_000), (names[3], "TP53", 5_000)}


@pytest.mark.parametrize("sep", [(":", "-"), ("-", "-"), ("_", "_")])
def test_peak_name_formats(subset, sep):
    gapdh = tss(subset, "GAPDH")
    names = [peak_at("chr12", gapdh - 1_000, sep=sep), peak_at("chr12", gapdh - 90_000, sep=sep)]
    links = link_peaks(atac_from(names), subset, window=5_000)
    assert links_as_set(links) == {(names[0], "GAPDH", -1_000)}


def test_contig_names_with_separators_parse():
    genes = pd.DataFrame(
        {
            "gene": ["g1"],
            "chrom": ["chrUn_KI270742v1"],
            "start": [1000],
            "end": [2000],
            "strand": ["+"],
        }
    )
    atac = atac_from(["chrUn_KI270742v1_900_1100", "chrUn_KI270742v1:5000-5200"])
    links = link_peaks(atac, genes, window=100, use_gene_body=False)
    assert links_as_set(links) == {("chrUn_KI270742v1_900_1100", "g1", 0)}


def test_coordinates_from_var_columns(subset):
    gapdh = tss(subset, "GAPDH")
    var = pd.DataFrame(
        {
            "chr": ["chr12", "chr12"],
            "Start": [gapdh - 600, gapdh + 80_000],
            "End": [gapdh - 400, gapdh + 80_200],
        },
        index=["peak_a", "peak_b"],
    )
    links = link_peaks(atac_from(None, var), subset, window=1_000)
    assert links_as_set(links) == {("peak_a", "GAPDH", -500)}
    custom = var.rename(columns={"chr": "c", "Start": "s", "End": "e"})
    links = link_peaks(atac_from(None, custom), subset, window=1_000, coordinates=("c", "s", "e"))
    assert links_as_set(links) == {("peak_a", "GAPDH", -500)}
    with pytest.raises(ValueError, match="coordinate columns missing"):
        link_peaks(atac_from(None, custom), subset, coordinates=("c", "s", "stop"))


def test_unparseable_peaks(subset, caplog):
    gapdh = tss(subset, "GAPDH")
    good = peak_at("chr12", gapdh)
    atac = atac_from([good, "peak_17", "chr12:600-100", "chr12:abc-def"])
    with pytest.raises(ValueError, match=r"3 of 4 peaks have no readable coordinates") as err:
        link_peaks(atac, subset)
    assert "'peak_17'" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="glassvi.pp"):
        links = link_peaks(atac, subset, errors="drop")
    assert "dropped 3 of 4 peaks" in caplog.text
    assert links_as_set(links) == {(good, "GAPDH", 0)}


def test_gene_table_errors(subset):
    atac = atac_from([peak_at("chr12", 6_534_516)])
    with pytest.raises(ValueError, match=r"lacks the columns start, strand"):
        link_peaks(atac, subset.drop(columns=["start", "strand"]))
    with pytest.raises(ValueError, match=r"lacks the columns gene"):
        link_peaks(atac, subset.drop(columns=["gene"]))
    # gene names as the index work
    links = link_peaks(atac, subset.set_index("gene"))
    assert links["gene"].tolist() == ["GAPDH"]
    # pyranges-style capitalised columns and gene_name work
    renamed = subset.rename(
        columns={
            "gene": "gene_name",
            "chrom": "Chromosome",
            "start": "Start",
            "end": "End",
            "strand": "Strand",
        }
    )
    assert link_peaks(atac, renamed)["gene"].tolist() == ["GAPDH"]


def test_no_shared_chromosome(subset):
    atac = atac_from(["12:6534000-6534500"])
    with pytest.raises(ValueError, match=r"share no chromosome name.*'12'.*'chr12'"):
        link_peaks(atac, subset)


def test_max_links_per_peak_keeps_nearest(subset):
    gapdh, cd4 = tss(subset, "GAPDH"), tss(subset, "CD4")
    name = peak_at("chr12", cd4 - 100_000)  # 155 kb from GAPDH's TSS, 100 kb from CD4's
    atac = atac_from([name])
    links = link_peaks(atac, subset, window=200_000)
    assert links_as_set(links) == {
        (name, "CD4", -100_000),
        (name, "GAPDH", cd4 - 100_000 - gapdh),
    }
    assert links["gene"].tolist() == ["CD4", "GAPDH"]  # nearest first
    nearest = link_peaks(atac, subset, window=200_000, max_links_per_peak=1)
    assert links_as_set(nearest) == {(name, "CD4", -100_000)}


def test_duplicate_gene_names_keep_nearest_copy():
    genes = pd.DataFrame(
        {
            "gene": ["g", "g"],
            "chrom": ["chr1", "chr1"],
            "start": [1_000, 9_000],
            "end": [2_000, 10_000],
            "strand": ["+", "+"],
        }
    )
    links = link_peaks(atac_from(["chr1:8000-8100"]), genes, window=10_000)
    assert links_as_set(links) == {("chr1:8000-8100", "g", -950)}


def test_key_added_and_bundled_table(genes, shared_data):
    gapdh = tss(genes, "GAPDH")
    atac = atac_from([peak_at("chr12", gapdh), peak_at("chr12", gapdh + 400_000)])
    links = link_peaks(atac, "hg38", window=10_000, key_added="peak_to_gene")
    assert atac.uns["peak_to_gene"] is links
    assert ("GAPDH", 0) in set(zip(links["gene"], links["distance"], strict=True))
    from_path = link_peaks(atac, shared_data / "genes_hg38.tsv", window=10_000)
    pd.testing.assert_frame_equal(links, from_path)
    with pytest.warns(UserWarning, match="overwriting"):
        link_peaks(atac, genes, window=10_000, key_added="peak_to_gene")


def test_matches_brute_force(genes):
    rng = np.random.default_rng(0)
    table = genes[genes["chrom"].isin(["chr21", "chr22"])].reset_index(drop=True)
    n = 3_000
    chrom = rng.choice(["chr21", "chr22", "chrM"], n)
    start = rng.integers(5_000_000, 50_000_000, n)
    end = start + rng.integers(0, 5_000, n)  # peaks of very different lengths
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end, strict=True)]
    atac = atac_from(pd.Index(names).unique())
    links = link_peaks(atac, table, window=(30_000, 10_000))

    minus = table["strand"].to_numpy() == "-"
    gene_tss = np.where(minus, table["end"], table["start"])
    lo = np.minimum(np.where(minus, gene_tss - 10_000, gene_tss - 30_000), table["start"])
    hi = np.maximum(np.where(minus, gene_tss + 30_000, gene_tss + 10_000), table["end"])
    expected = set()
    for name in atac.var_names:
        c, rest = name.split(":")
        s, e = map(int, rest.split("-"))
        hits = np.flatnonzero((table["chrom"].to_numpy() == c) & (s <= hi) & (e >= lo))
        for g in hits:
            d = (s + e) // 2 - gene_tss[g]
            expected.add((name, table["gene"][g], int(-d if minus[g] else d)))
    assert len(expected) > 500
    assert links_as_set(links) == expected


def test_link_peaks_is_fast(genes):
    rng = np.random.default_rng(0)
    anchor = genes.iloc[rng.integers(0, len(genes), 100_000)]
    start = np.maximum(anchor["start"].to_numpy() + rng.integers(-300_000, 300_000, 100_000), 0)
    var = pd.DataFrame(
        {"chrom": anchor["chrom"].to_numpy(), "start": start, "end": start + 500},
        index=[f"peak{i}" for i in range(100_000)],
    )
    atac = atac_from(None, var)
    begin = time.perf_counter()
    links = link_peaks(atac, genes)
    elapsed = time.perf_counter() - begin
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert len(links) > 100_000
    assert set(links["peak"]) <= set(var.index)


# peak programs -------------------------------------------------------------------------------

RNA_GENES = ["GAPDH", "CD4", "TP53", "ACTB", "MS4A1", "X1"]
PROGRAMS = {"P1": ["GAPDH", "TP53"], "P2": ["CD4"], "P3": ["ACTB", "MS4A1"], "P4": ["MS4A1"]}
LINKS = pd.DataFrame(
    {
        "peak": ["p0", "p1", "p1", "p2", "p3", "p_elsewhere"],
        "gene": ["GAPDH", "GAPDH", "CD4", "TP53", "ACTB", "GAPDH"],
        "distance": [0, 10, 20, 30, 40, 50],
    }
)
EXPECTED = {"P1": {"p0", "p1", "p2"}, "P2": {"p1"}, "P3": {"p3"}, "P4": set()}


@pytest.fixture
def mdata():
    rna = ad.AnnData(np.zeros((3, len(RNA_GENES))), var=pd.DataFrame(index=RNA_GENES))
    atac = atac_from(["p0", "p1", "p2", "p3", "p4"])
    add_programs(rna, PROGRAMS, min_genes=1)
    return md.MuData({"rna": rna, "atac": atac})


def members(mask):
    return {name: set(mask.index[mask[name]]) for name in mask.columns}


def test_add_peak_programs_from_mudata(mdata, caplog):
    with caplog.at_level(logging.INFO, logger="glassvi.pp"):
        summary = add_peak_programs(mdata, links=LINKS)
    assert type(mdata["atac"].varm["programs"]) is np.ndarray  # names in uns (h5ad-safe)
    mask = varm_df(mdata, "programs", modality="atac")
    assert list(mask.columns) == list(varm_df(mdata, "programs", modality="rna").columns)
    assert mask.index.equals(mdata["atac"].var_names)
    assert all(dtype == np.dtype(bool) for dtype in mask.dtypes)
    assert members(mask) == EXPECTED
    assert summary["n_peaks"].tolist() == [3, 1, 1, 0]
    assert summary["n_genes"].tolist() == [2, 1, 2, 1]
    assert summary["n_genes_linked"].tolist() == [2, 1, 1, 0]
    assert summary["kept"].tolist() == [True, True, True, False]
    assert "ignored 1 links to peaks absent from atac" in caplog.text
    provenance = mdata["atac"].uns["programs"]
    assert list(provenance["names"]) == ["P1", "P2", "P3", "P4"]
    assert list(provenance["n_peaks"]) == [3, 1, 1, 0]
    assert list(provenance["below_min_peaks"]) == ["P4"]
    assert provenance["source"] == "mdata['rna'].varm['programs']"
    assert provenance["n_links"] == 5


def test_min_peaks_empties_columns_but_keeps_order(mdata):
    mask, summary = add_peak_programs(mdata, links=LINKS, min_peaks=2, inplace=False)
    assert list(mask.columns) == ["P1", "P2", "P3", "P4"]
    assert members(mask) == {"P1": EXPECTED["P1"], "P2": set(), "P3": set(), "P4": set()}
    assert summary["reason"].tolist() == [
        "",
        "< 2 peaks linked",
        "< 2 peaks linked",
        "< 2 peaks linked",
    ]
    assert "programs" not in mdata["atac"].varm and "programs" not in mdata["atac"].uns


def test_add_peak_programs_other_inputs(mdata, tmp_path):
    atac = mdata["atac"]
    reference, _ = add_peak_programs(mdata, links=LINKS, inplace=False)
    # ATAC AnnData with a dict, links from uns
    atac.uns["peak_to_gene"] = LINKS
    mask, _ = add_peak_programs(atac, PROGRAMS, "peak_to_gene", inplace=False)
    pd.testing.assert_frame_equal(mask, reference)
    # boolean genes x programs DataFrame
    mask, _ = add_peak_programs(atac, varm_df(mdata["rna"], "programs"), LINKS, inplace=False)
    pd.testing.assert_frame_equal(mask, reference)
    # a str is an RNA varm key with a MuData
    add_programs(mdata["rna"], {"only": ["TP53", "ACTB"]}, min_genes=1, key_added="custom")
    mask, _ = add_peak_programs(mdata, "custom", LINKS, inplace=False)
    assert members(mask) == {"only": {"p2", "p3"}}
    # lower-case links need case_insensitive
    lower = LINKS.assign(gene=LINKS["gene"].str.lower())
    with pytest.raises(ValueError, match="no program got any peak"):
        add_peak_programs(mdata, links=lower)
    mask, _ = add_peak_programs(mdata, links=lower, case_insensitive=True, inplace=False)
    pd.testing.assert_frame_equal(mask, reference)


def test_add_peak_programs_with_ensembl_rna():
    var = pd.DataFrame({"symbol": RNA_GENES}, index=[f"ENSG{i:05d}" for i in range(6)])
    rna = ad.AnnData(np.zeros((3, 6)), var=var)
    add_programs(rna, PROGRAMS, min_genes=1, var_names_column="symbol")
    mdata = md.MuData({"rna": rna, "atac": atac_from(["p0", "p1", "p2", "p3", "p4"])})
    add_peak_programs(mdata, links=LINKS)
    assert members(varm_df(mdata["atac"], "programs")) == EXPECTED


def test_add_peak_programs_errors(mdata):
    with pytest.raises(ValueError, match="`links` is required"):
        add_peak_programs(mdata)
    with pytest.raises(ValueError, match="`programs` is required"):
        add_peak_programs(mdata["atac"], links=LINKS)
    with pytest.raises(ValueError, match=r"varm has no 'missing'"):
        add_peak_programs(mdata, "missing", LINKS)
    with pytest.raises(ValueError, match="lack the columns gene"):
        add_peak_programs(mdata, links=LINKS[["peak"]])
    with pytest.raises(ValueError, match="no link names a peak"):
        add_peak_programs(mdata, links=LINKS.assign(peak="chrX:1-2"))
    with pytest.raises(ValueError, match="no modality 'atac'"):
        add_peak_programs(md.MuData({"rna": mdata["rna"]}), links=LINKS)


def test_link_then_peak_programs_end_to_end(subset):
    gapdh, tp53, actb = tss(subset, "GAPDH"), tss(subset, "TP53"), tss(subset, "ACTB")
    names = [
        peak_at("chr12", gapdh - 5_000),
        peak_at("chr17", tp53 + 1_000),
        peak_at("chr7", actb - 20_000),
        peak_at("chr7", actb + 900_000),
    ]
    rna = ad.AnnData(np.zeros((2, 4)), var=pd.DataFrame(index=SUBSET))
    add_programs(
        rna, {"glycolysis": ["GAPDH"], "p53": ["TP53"], "cytoskeleton": ["ACTB"]}, min_genes=1
    )
    mdata = md.MuData({"rna": rna, "atac": atac_from(names)})
    links = link_peaks(mdata["atac"], subset, window=50_000, key_added="peak_to_gene")
    add_peak_programs(mdata, links="peak_to_gene")
    assert members(varm_df(mdata["atac"], "programs")) == {
        "glycolysis": {names[0]},
        "p53": {names[1]},
        "cytoskeleton": {names[2]},
    }
    assert len(links) == 3


# peak sets -----------------------------------------------------------------------------------


def test_add_peak_sets_frame_is_aligned():
    atac = atac_from(["p0", "p1", "p2", "p3"])
    hits = pd.DataFrame(
        {"SPI1": [1, 0, 1, 0, 1], "GATA1": [0, 0, 0, 0, 1], "CEBPA": [0, 1, 1, 0, 0]},
        index=["p2", "p3", "p0", "p1", "extra"],
    )
    summary = add_peak_sets(atac, hits)
    mask = varm_df(atac, "peak_sets")
    assert list(mask.columns) == ["SPI1", "CEBPA"]
    assert members(mask) == {"SPI1": {"p2", "p0"}, "CEBPA": {"p3", "p0"}}
    assert summary["n_peaks"].tolist() == [2, 0, 2]
    assert summary["kept"].tolist() == [True, False, True]
    assert list(atac.uns["peak_sets"]["dropped_names"]) == ["GATA1"]


def test_add_peak_sets_sparse_and_array():
    atac = atac_from(["p0", "p1", "p2"])
    values = np.array([[1, 0], [0, 1], [1, 1]])
    mask_sparse, _ = add_peak_sets(
        atac, sparse.csr_matrix(values), names=["a", "b"], key_added="programs", inplace=False
    )
    mask_dense, _ = add_peak_sets(atac, values.astype(bool), names=["a", "b"], inplace=False)
    pd.testing.assert_frame_equal(mask_sparse, mask_dense)
    assert members(mask_dense) == {"a": {"p0", "p2"}, "b": {"p1", "p2"}}


def test_add_peak_sets_validation():
    atac = atac_from(["p0", "p1", "p2"])
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, n_sets\)"):
        add_peak_sets(atac, np.ones((2, 2)), names=["a", "b"])
    with pytest.raises(ValueError, match="names is required"):
        add_peak_sets(atac, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"the value 0\.5 in column 'b'"):
        add_peak_sets(atac, np.array([[1, 0], [0, 0.5], [1, 1]]), names=["a", "b"])
    with pytest.raises(ValueError, match=r"missing value \(NaN\) in column 'a'"):
        add_peak_sets(atac, sparse.csr_matrix([[np.nan], [0], [1]]), names=["a"])
    with pytest.raises(ValueError, match="1 of 3 peaks .* missing"):
        add_peak_sets(atac, pd.DataFrame({"a": [True, False]}, index=["p0", "p1"]))
    with pytest.raises(ValueError, match="default RangeIndex"):
        add_peak_sets(atac, pd.DataFrame({"a": [True, False, True]}))
    with pytest.raises(ValueError, match="unique"):
        add_peak_sets(atac, np.ones((3, 2)), names=["a", "a"])
