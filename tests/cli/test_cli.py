import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest

import glassvi
from glassvi.cli import main
from tenx import multiome_h5


def test_run_default_is_programvi_with_hallmark(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    res = ad.read_h5ad(out / "results.h5ad")
    assert res.shape == (1000, 6397)
    names = list(glassvi.tl.varm_df(res, "programs").columns)
    assert len(names) > 40 and all(n.startswith("HALLMARK_") for n in names)
    # ProgramVI's default: a hard mask with two de novo units after the programs
    denovo = ["denovo_0", "denovo_1"]
    assert list(res.uns["programvi"]["columns"]) == names + denovo
    assert res.uns["programvi"]["params"]["n_denovo"] == 2
    weights = glassvi.tl.varm_df(res, "programvi_weights")
    assert weights.shape == (6397, len(names) + 2)
    assert (weights[names].to_numpy()[~res.varm["programs"]] == 0).all()
    assert res.uns["programvi"]["model"] == "ProgramVI"
    text = capsys.readouterr().out
    assert "Programs the data support" in text
    assert "varm['programvi_weights']" in text and "obsm['X_programvi']" in text
    # the evidence of every program is stored, and the printed list follows it
    evidence = res.uns["programvi"]["evidence"]
    assert set(evidence.index) == set(names)
    assert {"pvalue", "fdr", "significant", "effective_genes", "n_genes"} <= set(evidence.columns)
    best = evidence.index[0]
    assert best in text
    # the top list holds supported programs that three or more genes carry, no de novo unit
    lines = text[text.index("Programs the data support") :].splitlines()
    top = []
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        top.append(line.strip().split(" (")[0])
    top = [name for name in top if name != "(none)"]
    assert set(top) <= set(names)
    assert all(evidence.loc[top, "effective_genes"] >= 3)
    assert all(evidence.loc[top, "significant"])
    marked = [line for line in lines if line.strip().startswith("[de novo]")]
    assert [line.split(":")[0].strip() for line in marked] == [f"[de novo] {d}" for d in denovo]


def test_run_program_with_gmt_and_denovo(tmp_path):
    adata = glassvi.data.simulate(n_cells=200, n_genes=120, n_programs=5, seed=3)
    # names as GO's, with a "/" (e.g. "G1/S transition"), which h5ad keeps only as values
    names = [f"GO:{j} G{j}/S transition" for j in range(5)]
    truth = adata.varm["true_programs"]
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(
        "".join(
            f"{name}\tplanted\t" + "\t".join(adata.var_names[truth[:, j]]) + "\n"
            for j, name in enumerate(names)
        )
    )
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "o"
    # an explicit --n-denovo replaces ProgramVI's default (2 with the hard mask)
    argv = ["run", str(path), "--layer", "counts", "--programs", str(gmt), "--n-denovo", "1"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Forward slashes")
        assert main(argv + ["--epochs", "1", "--out", str(out), "--quiet"]) == 0
    res = ad.read_h5ad(out / "results.h5ad")
    assert list(res.uns["programvi"]["columns"]) == names + ["denovo_0"]
    assert list(glassvi.tl.varm_df(res, "programs").columns) == names
    weights = glassvi.tl.varm_df(res, "programvi_weights")
    assert list(weights.columns) == names + ["denovo_0"]
    assert (weights[names].to_numpy()[~res.varm["programs"]] == 0).all()


def test_run_program_multiome_links_peaks(tmp_path):
    mdata = glassvi.data.simulate(n_cells=120, n_genes=3000, n_peaks=300, modality="multiome")
    path = tmp_path / "in.h5mu"
    mdata.write(path)
    out = tmp_path / "m"
    assert main(["run", str(path), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    res = md.read_h5mu(out / "results.h5mu")
    assert "programvi_weights" in res["atac"].varm and "programvi_weights" in res["rna"].varm
    atac_names = glassvi.tl.varm_df(res, "programs", modality="atac").columns
    assert list(atac_names) == list(glassvi.tl.varm_df(res, "programs", modality="rna").columns)


def test_run_linear_default_data(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["run", "--model", "linear", "--epochs", "2", "--out", str(out), "--quiet"]
    assert main(argv + ["--n-latent", "5"]) == 0
    res = ad.read_h5ad(out / "results.h5ad")
    assert res.shape == (1000, 6397)
    assert res.obsm["X_linearvi"].shape == (1000, 5)
    assert res.varm["linearvi_loadings"].shape == (6397, 5)
    assert res.uns["linearvi"]["model"] == "LinearVI"
    assert (out / "model" / "model.pt").exists()
    text = capsys.readouterr().out
    assert "factor_4" in text and "Top rna features" in text
    # the summary names the genes with the largest loadings of factor_0
    top = glassvi.tl.varm_df(res, "linearvi_loadings")["factor_0"].sort_values().index[-1]
    assert top in text


def test_run_h5ad_with_keys(tmp_path):
    adata = glassvi.data.simulate(n_cells=200, n_genes=80, seed=3)
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "o"
    rc = main(
        [
            "run",
            str(path),
            "--model",
            "linear",
            "--layer",
            "counts",
            "--batch-key",
            "batch",
            "--labels-key",
            "cell_type",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    res = ad.read_h5ad(out / "results.h5ad")
    assert res.obsm["X_linearvi"].shape == (200, 10)


def test_run_h5mu_and_10x(tmp_path):
    mdata = glassvi.data.simulate(n_cells=150, n_genes=60, n_peaks=120, modality="multiome")
    path = tmp_path / "in.h5mu"
    mdata.write(path)
    lin = ["--model", "linear", "--epochs", "1", "--quiet"]
    assert main(["run", str(path), *lin, "--out", str(tmp_path / "a")]) == 0
    res = md.read_h5mu(tmp_path / "a" / "results.h5mu")
    assert "linearvi_loadings" in res["atac"].varm and "X_linearvi" in res.obsm
    h5 = tmp_path / "filtered_feature_bc_matrix.h5"
    multiome_h5(h5)
    assert main(["run", str(h5), *lin, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "results.h5mu").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "missing.h5ad"], "does not exist"),
        (["run", "--epochs", "0"], "--epochs"),
        (["run", "--programs", "nosuch.gmt"], "--programs 'nosuch.gmt'"),
        (["run", "--n-denovo", "-1"], "--n-denovo"),
        (["run", "--layer", "nolayer", "--epochs", "1"], "layer 'nolayer'"),
        (["run", "--batch-key", "donor", "--epochs", "1"], "batch_key='donor'"),
    ],
)
def test_run_bad_input_one_line_error(argv, message, capsys, tmp_path):
    rc = main(argv + ["--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("glassvi: error:")
    assert not (tmp_path / "x").exists()


def test_run_non_count_input(tmp_path, capsys):
    adata = ad.AnnData(np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32))
    path = tmp_path / "norm.h5ad"
    adata.write_h5ad(path)
    assert main(["run", str(path), "--model", "linear", "--out", str(tmp_path / "o")]) == 2
    assert "negative" in capsys.readouterr().err


def _evidence_frame():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "coherence": [0.5, 0.4, 0.3, 0.05, 0.01],
            "pvalue": [0.01, 0.01, 0.02, 0.5, 0.9],
            "fdr": [0.025, 0.025, 0.033, 0.6, 0.9],
            "significant": [True, True, True, False, False],
            "effective_genes": [12.0, 1.2, 5.0, 8.0, 1.0],
            "top_gene": ["A1", "MAFB", "C1", "D1", "E1"],
        },
        index=["STRONG", "ONE_GENE", "GOOD", "WEAK", "NOISE"],
    )
    frame.attrs.update(fdr_level=0.1, n_decoys=100)
    return frame


def test_program_summary_marks_unsupported_and_one_gene_programs():
    from glassvi.cli import format_program_evidence

    frame = _evidence_frame()
    genes = {name: [f"{name}_g{i}" for i in range(3)] for name in frame.index}
    text = format_program_evidence(frame, genes, n_programs=10)
    head, marked = text.split("Marked:")
    # the top list holds the supported programs that three or more genes carry, best first
    assert head.index("STRONG") < head.index("GOOD")
    assert "ONE_GENE" not in head and "WEAK" not in head and "NOISE" not in head
    assert "3 of 5" in head and "100 decoy programs" in head
    assert "[1-2 genes] ONE_GENE" in marked and "mostly MAFB" in marked
    assert "[unsupported] WEAK" in marked and "[unsupported] NOISE" in marked
    # without decoys there are no p-values: one-gene programs are still kept out of the list
    frame["pvalue"] = frame["fdr"] = float("nan")
    frame["significant"] = False
    text = format_program_evidence(frame, genes, n_programs=2)
    head, marked = text.split("Marked:")
    assert "no p-values" in head and "STRONG" in head and "GOOD" in head
    assert "ONE_GENE" not in head and "[1-2 genes] ONE_GENE" in marked
    assert "[1-2 genes] NOISE" in marked


def test_program_summary_lists_de_novo_units_apart():
    from glassvi.cli import format_program_evidence

    frame = _evidence_frame()
    genes = {name: [f"{name}_g{i}" for i in range(3)] for name in frame.index}
    genes.update(denovo_0=["LYZ", "S100A8"], denovo_1=["MS4A1"])
    text = format_program_evidence(frame, genes, denovo=["denovo_0", "denovo_1"])
    head, rest = text.split("Marked:")
    assert "denovo" not in head
    marked, denovo = rest.split("De novo units")
    assert "denovo" not in marked
    assert "[de novo] denovo_0: LYZ, S100A8" in denovo and "[de novo] denovo_1: MS4A1" in denovo
    assert "De novo units" not in format_program_evidence(frame, genes, denovo=[])


def test_n_denovo_follows_the_model_default():
    from glassvi.cli import _build_parser

    parser = _build_parser()
    assert parser.parse_args(["run"]).n_denovo is None
    assert parser.parse_args(["run", "--n-denovo", "0"]).n_denovo == 0
    run = parser._subparsers._group_actions[0].choices["run"]
    assert "ProgramVI's, 2;" in " ".join(run.format_help().split())
