import logging
import time
import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

from glassvi.pp import add_programs, read_gmt, write_gmt
from glassvi.tl import varm_df

GENES = [f"G{i}" for i in range(20)]
GENE_SETS = {
    "first set": ["G0", "G1", "G2", "G3", "G4", "G5"],
    "second": ["G5", "G6", "G7", "G8", "G9", "MISSING1", "MISSING2"],
    "small": ["G10", "G11", "MISSING3"],
    "large": GENES[:18],
}


@pytest.fixture
def adata():
    return ad.AnnData(np.zeros((3, len(GENES)), dtype=np.float32), var=pd.DataFrame(index=GENES))


def expected_mask(names):
    return np.array([[gene in GENE_SETS[name] for name in names] for gene in GENES])


def test_mask_values_and_summary(adata, caplog):
    with caplog.at_level(logging.INFO, logger="glassvi.pp"):
        summary = add_programs(adata, GENE_SETS, min_genes=5, max_genes=10)
    stored = adata.varm["programs"]  # a plain boolean array, names in uns (h5ad-safe)
    assert type(stored) is np.ndarray and stored.dtype == bool
    mask = varm_df(adata, "programs")
    assert list(mask.columns) == ["first set", "second"]
    assert mask.index.equals(adata.var_names)
    assert all(dtype == np.dtype(bool) for dtype in mask.dtypes)
    np.testing.assert_array_equal(mask.to_numpy(), expected_mask(["first set", "second"]))

    assert list(summary.index) == list(GENE_SETS)
    assert summary["n_genes"].tolist() == [6, 7, 3, 18]
    assert summary["n_found"].tolist() == [6, 5, 2, 18]
    assert summary["kept"].tolist() == [True, True, False, False]
    assert summary["reason"].tolist() == ["", "", "< 5 genes found", "> 10 genes found"]
    np.testing.assert_allclose(summary["fraction"], [1.0, 5 / 7, 2 / 3, 1.0])
    assert "dropped 2 of 4 sets: 1 with < 5 genes found, 1 with > 10" in caplog.text

    provenance = adata.uns["programs"]
    assert list(provenance["names"]) == ["first set", "second"]
    assert list(provenance["n_genes_total"]) == [6, 7]
    assert list(provenance["n_genes_found"]) == [6, 5]
    assert list(provenance["dropped_names"]) == ["small", "large"]
    assert list(provenance["dropped_reasons"]) == ["< 5 genes found", "> 10 genes found"]
    assert provenance["source"] == "dict"
    assert provenance["params"] == {"min_genes": 5, "max_genes": 10, "case_insensitive": False}


def test_dict_gmt_and_frames_give_identical_masks(adata, tmp_path):
    mask_dict, summary_dict = add_programs(adata, GENE_SETS, min_genes=2, inplace=False)

    write_gmt(GENE_SETS, tmp_path / "sets.gmt")
    mask_gmt, summary_gmt = add_programs(adata, tmp_path / "sets.gmt", min_genes=2, inplace=False)
    mask_str, _ = add_programs(adata, str(tmp_path / "sets.gmt"), min_genes=2, inplace=False)

    long = pd.DataFrame(
        [
            (name, gene, -1.0 if i % 2 else 1.0)
            for name, genes in GENE_SETS.items()
            for i, gene in enumerate(genes)
        ],
        columns=["source", "target", "weight"],
    )
    mask_long, summary_long = add_programs(adata, long, min_genes=2, inplace=False)

    all_genes = sorted(set().union(*GENE_SETS.values()))
    wide = pd.DataFrame(
        {name: [gene in genes for gene in all_genes] for name, genes in GENE_SETS.items()},
        index=all_genes,
    )
    mask_wide, _ = add_programs(adata, wide.astype(int), min_genes=2, inplace=False)

    assert list(mask_dict.columns) == list(GENE_SETS)
    np.testing.assert_array_equal(mask_dict.to_numpy(), expected_mask(list(GENE_SETS)))
    for other in (mask_gmt, mask_str, mask_long, mask_wide):
        pd.testing.assert_frame_equal(mask_dict, other)
    pd.testing.assert_frame_equal(summary_dict, summary_gmt)
    pd.testing.assert_frame_equal(summary_dict, summary_long)


def test_inplace_false_leaves_adata_untouched(adata):
    before = adata.copy()
    mask, summary = add_programs(adata, GENE_SETS, inplace=False)
    assert "programs" not in adata.varm and "programs" not in adata.uns
    assert adata.var.equals(before.var)
    assert list(mask.columns) == ["first set", "second", "large"]
    assert summary["kept"].sum() == 3


def test_case_insensitive(adata):
    lower = {name: [gene.lower() for gene in genes] for name, genes in GENE_SETS.items()}
    with pytest.raises(ValueError, match="genes match when case is ignored"):
        add_programs(adata, lower)
    mask, _ = add_programs(adata, lower, case_insensitive=True, inplace=False)
    np.testing.assert_array_equal(mask.to_numpy(), expected_mask(list(mask.columns)))
    assert list(mask.columns) == ["first set", "second", "large"]


def test_var_names_column_with_repeated_symbols():
    var = pd.DataFrame(
        {"symbol": ["A", "B", "C", "A", None, "D"]},
        index=[f"ENSG0000{i}" for i in range(6)],
    )
    adata = ad.AnnData(np.zeros((2, 6)), var=var)
    with pytest.raises(ValueError, match="Ensembl IDs.*var_names_column"):
        add_programs(adata, {"p": ["A", "B", "C"]}, min_genes=1)
    summary = add_programs(adata, {"p": ["A", "B", "C"]}, min_genes=1, var_names_column="symbol")
    assert varm_df(adata, "programs")["p"].tolist() == [True, True, True, True, False, False]
    assert summary.loc["p", "n_found"] == 3
    assert summary.loc["p", "n_features"] == 4
    assert adata.uns["programs"]["params"]["var_names_column"] == "symbol"
    with pytest.raises(KeyError, match="not a column of adata.var"):
        add_programs(adata, {"p": ["A"]}, var_names_column="gene_symbols")


def test_no_overlap_error_shows_examples(adata):
    with pytest.raises(
        ValueError, match="no overlap between the gene sets and adata.var_names"
    ) as err:
        add_programs(adata, {"a": ["CD3E", "CD4"]})
    assert "'G0'" in str(err.value) and "'CD3E'" in str(err.value)


def test_no_set_survives_filters(adata):
    with pytest.raises(ValueError, match="no gene set passed the size filters: 4 of 4"):
        add_programs(adata, GENE_SETS, min_genes=50)


def test_overwrite_warns(adata):
    add_programs(adata, GENE_SETS)
    with pytest.warns(
        UserWarning,
        match=r"overwriting existing adata.varm\['programs'\] and adata.uns\['programs'\]",
    ):
        add_programs(adata, GENE_SETS, min_genes=2)
    assert adata.varm["programs"].shape == (20, 4)


def test_key_added_and_h5ad_round_trip_of_names_with_a_slash(adata, tmp_path):
    sets = {name.replace(" ", "/"): genes for name, genes in GENE_SETS.items()}
    sets["G1/S transition"] = sets.pop("second")
    add_programs(adata, sets, key_added="hallmark", min_genes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata: "Forward slashes will be disallowed"
        adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(varm_df(back, "hallmark"), varm_df(adata, "hallmark"))
    assert list(varm_df(back, "hallmark").columns) == list(sets)
    assert list(back.uns["hallmark"]["names"]) == list(sets)
    assert list(back.uns["hallmark"]["dropped_names"]) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mudata_modality_and_mudata_error(adata):
    atac = ad.AnnData(np.zeros((3, 2)), var=pd.DataFrame(index=["chr1:1-2", "chr1:5-9"]))
    mdata = md.MuData({"rna": adata, "atac": atac})
    add_programs(mdata["rna"], GENE_SETS)
    assert list(varm_df(mdata, "programs").columns) == ["first set", "second", "large"]
    with pytest.raises(TypeError, match=r"mdata\['rna'\]"):
        add_programs(mdata, GENE_SETS)


def test_invalid_inputs(adata):
    with pytest.raises(TypeError, match="single string"):
        add_programs(adata, {"a": "G1"})
    with pytest.raises(ValueError, match="no gene set"):
        add_programs(adata, {})
    with pytest.raises(ValueError, match="long form with columns 'source' and 'target'"):
        add_programs(adata, pd.DataFrame({"set": ["a"], "gene": ["G1"]}))
    with pytest.raises(ValueError, match="0/1"):
        add_programs(adata, pd.DataFrame({"a": [0.5, 1.0]}, index=["G1", "G2"]))
    with pytest.raises(ValueError, match="max_genes"):
        add_programs(adata, GENE_SETS, min_genes=10, max_genes=5)


def test_hallmark_bundled_and_shared_agree(shared_data):
    genes = pd.read_csv(shared_data / "genes_hg38.tsv", sep="\t")["gene"]
    adata = ad.AnnData(np.zeros((2, len(genes)), dtype=np.float32), var=pd.DataFrame(index=genes))
    summary = add_programs(adata, shared_data / "hallmark.gmt", min_genes=10)
    hallmark = read_gmt(shared_data / "hallmark.gmt")
    mask = varm_df(adata, "programs")
    assert mask.shape[1] == summary["kept"].sum()
    hypoxia = set(hallmark["HALLMARK_HYPOXIA"]) & set(genes)
    assert set(mask.index[mask["HALLMARK_HYPOXIA"]]) == hypoxia
    assert summary.loc["HALLMARK_HYPOXIA", "n_found"] == len(hypoxia)


def test_go_bp_on_20000_genes_is_fast(shared_data):
    all_genes = pd.read_csv(shared_data / "genes_hg38.tsv", sep="\t")["gene"].unique()
    genes = np.random.default_rng(0).choice(all_genes, 20_000, replace=False)
    adata = ad.AnnData(np.zeros((2, 20_000), dtype=np.float32), var=pd.DataFrame(index=genes))
    start = time.perf_counter()
    go = read_gmt(shared_data / "go_bp.gmt")
    summary = add_programs(adata, go, min_genes=10, max_genes=400)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"took {elapsed:.1f} s"

    assert len(go) == 5233 and len(summary) == 5233
    mask = varm_df(adata, "programs")
    assert mask.shape == (20_000, int(summary["kept"].sum()))
    gene_set = set(genes)
    rng = np.random.default_rng(1)
    for name in rng.choice(mask.columns, 20, replace=False):
        assert set(mask.index[mask[name]]) == set(go[name]) & gene_set
    expected_found = [len(set(members) & gene_set) for members in go.values()]
    assert summary["n_found"].tolist() == expected_found
    assert summary["kept"].tolist() == [10 <= n <= 400 for n in expected_found]
