"""Calibration of ProgramVI's program evidence: false calls on unused programs, recall of used.

On the simulator (planted programs with noisy masks, silent real gene sets, random gene sets)
and on real data (pbmc68k and immune1k with marker programs of our own, the 50 Hallmark sets and
one program made of a single strong marker gene plus barely expressed genes), over several
seeds, ProgramVI is trained with default settings and ``program_evidence(fdr=0.1)`` is read.

Reported per data set and seed: the fraction of used programs called (recall) and of unused ones
called (false calls), the decoy programs' own false-call rate (each decoy scored against the
other decoys), the single-gene program's call and effective genes, and the cost: the evidence's
CPU time and the training CPU time with decoys over that without them (same seed), with the
marker programs' AUROC for their cell type with and without decoys (do decoys hurt?).

Run: ``python benchmarks/evidence.py [--quick] [--out results/evidence.json] [--seeds ...]
[--datasets ...] [--model-kwargs JSON]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
FDR = 0.1
#: ProgramVI options of every model trained here (``--model-kwargs``)
MODEL_KWARGS: dict = {}

# Marker programs written for this benchmark (common knowledge of PBMC and tumour-infiltrating
# immune cell types), restricted later to the genes each data set measures.
PBMC_MARKERS = {
    "PBMC_MONOCYTE": (["CD14+ Monocyte"], ["LYZ", "S100A8", "S100A9", "FCN1", "CST3", "LGALS2"]),
    "PBMC_B": (["CD19+ B"], ["MS4A1", "CD79A", "CD79B", "BANK1", "HLA-DQA1", "CD74"]),
    "PBMC_NK": (["CD56+ NK"], ["GNLY", "NKG7", "PRF1", "GZMB", "FGFBP2", "SPON2", "CST7"]),
    "PBMC_CD8_T": (
        ["CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic"],
        ["CD8A", "CD8B", "GZMK", "GZMH", "CCL5"],
    ),
    "PBMC_CD4_T": (
        ["CD4+/CD25 T Reg", "CD4+/CD45RO+ Memory", "CD4+/CD45RA+/CD25- Naive T"],
        ["CD4", "IL7R", "CCR7", "MAL", "LDHB", "CD40LG"],
    ),
    "PBMC_T": (
        [
            "CD4+/CD25 T Reg",
            "CD4+/CD45RO+ Memory",
            "CD4+/CD45RA+/CD25- Naive T",
            "CD8+ Cytotoxic T",
            "CD8+/CD45RA+ Naive Cytotoxic",
        ],
        ["CD3D", "CD3E", "CD3G", "TIGIT", "LDHB"],
    ),
    "PBMC_DENDRITIC": (["Dendritic"], ["FCER1A", "CLEC10A", "SERPINF1", "HLA-DRA", "CST3"]),
    "PBMC_CD34": (["CD34+"], ["SOX4", "PRSS57", "SPINK2", "STMN1", "MZB1"]),
}
IMMUNE_MARKERS = {
    "IMM_CD8_T": (["CD8_T"], ["CD8A", "CD8B", "GZMK", "CD3D", "CD3E", "CCL5"]),
    "IMM_CD4_T": (["CD4_T"], ["CD4", "IL7R", "CCR7", "LEF1", "TCF7", "CD40LG"]),
    "IMM_TREG": (["Treg"], ["FOXP3", "IL2RA", "CTLA4", "TIGIT", "IKZF2", "BATF"]),
    "IMM_NK": (["NK"], ["NCAM1", "KLRD1", "KLRF1", "GNLY", "NKG7", "PRF1"]),
    "IMM_B": (
        ["B_naive", "B_memory", "B_GC"],
        ["MS4A1", "CD19", "CD79A", "IGHD", "TCL1A", "FCER2"],
    ),
    "IMM_PLASMA": (["plasma"], ["JCHAIN", "MZB1", "XBP1", "SDC1", "PRDM1", "TNFRSF17"]),
    "IMM_MYELOID": (["MDC"], ["CD14", "LYZ", "CD68", "CSF1R", "C1QA", "C1QB", "APOE"]),
    "IMM_MAST": (["mast"], ["TPSAB1", "TPSB2", "CPA3", "KIT", "MS4A2", "HDC"]),
}
SINGLE_GENE = {"pbmc68k": "LYZ", "immune1k": "MAFB"}


def _quiet():
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _train(adata, seed: int, epochs: int, n_decoys=None, **setup):
    import scvi

    from glassvi.model import ProgramVI

    scvi.settings.seed = seed
    ProgramVI.setup_anndata(adata, **setup)
    kwargs = dict(MODEL_KWARGS) if n_decoys is None else {**MODEL_KWARGS, "n_decoys": n_decoys}
    model = ProgramVI(adata, **kwargs)
    # CPU time of this process: wall time on a shared machine says more about the neighbours
    start = time.process_time()
    model.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False)
    return model, time.process_time() - start


def _evidence(model):
    start = time.process_time()
    table = model.program_evidence(fdr=FDR)
    return table, time.process_time() - start


def _decoy_false_calls(table) -> float:
    """Fraction of decoys called when each is scored against the other decoys (BH at FDR)."""
    from glassvi.model._evidence import benjamini_hochberg, empirical_pvalues

    null = np.asarray(table.attrs["decoy_score"])
    if len(null) < 2:
        return float("nan")
    p = np.array(
        [empirical_pvalues(null[i : i + 1], np.delete(null, i))[0] for i in range(len(null))]
    )
    # decoys alone: every call is false, so BH among them is the familywise view
    return float(np.mean(benjamini_hochberg(p) <= FDR))


def _decoy_summary(table) -> dict:
    """Location and spread of the decoys' coherence (the null's raw statistic)."""
    null = np.asarray(table.attrs["decoy_coherence"])
    return {
        "decoy_coherence_median": float(np.median(null)),
        "decoy_coherence_sd": float(null.std()),
    }


def simulation(seed: int, quick: bool) -> dict:
    import glassvi as gv

    rng = np.random.default_rng(1000 + seed)
    n_cells, epochs = (600, 60) if quick else (1000, 100)
    adata = gv.data.simulate(n_cells=n_cells, n_genes=1500, n_programs=20, seed=seed)
    truth = adata.varm["true_programs"]
    active = np.asarray(adata.uns["simulation"]["active_programs"], dtype=bool)
    genes = adata.var_names
    columns, kinds = {}, {}
    for k in range(truth.shape[1]):
        members = np.flatnonzero(truth[:, k])
        noisy = truth[:, k].copy()
        # noisy annotation: a quarter of the members missing, as many wrong genes added
        noisy[rng.choice(members, len(members) // 4, replace=False)] = False
        outside = np.flatnonzero(~truth[:, k])
        noisy[rng.choice(outside, len(members) // 4, replace=False)] = True
        columns[f"planted_{k:02d}"] = noisy
        kinds[f"planted_{k:02d}"] = "used" if active[k] else "unused_planted"
    silent = 0
    for name, members in gv.data.hallmark().items():
        inside = genes.isin(members)
        if inside.sum() >= 8 and silent < 15:
            columns[name] = inside
            kinds[name] = "silent_gene_set"
            silent += 1
    for i in range(10):
        chosen = np.zeros(len(genes), dtype=bool)
        chosen[rng.choice(len(genes), rng.integers(15, 41), replace=False)] = True
        columns[f"random_{i}"] = chosen
        kinds[f"random_{i}"] = "random_gene_set"
    adata.varm["programs"] = pd.DataFrame(columns, index=genes)
    model, train_s = _train(adata.copy(), seed, epochs, layer="counts", batch_key="batch")
    table, evidence_s = _evidence(model)
    _, train0_s = _train(adata.copy(), seed, epochs, n_decoys=0, layer="counts", batch_key="batch")
    kind = pd.Series(kinds).loc[table.index]
    called = table["significant"].groupby(kind).mean()
    unused = kind != "used"
    return {
        "seed": seed,
        "n_programs": len(table),
        "n_decoys": int(table.attrs["n_decoys"]),
        "recall_used": float(called.get("used", np.nan)),
        "false_calls_unused": float(table["significant"][unused].mean()),
        "false_calls_by_kind": {k: float(v) for k, v in called.items() if k != "used"},
        "false_calls_decoys": _decoy_false_calls(table),
        **_decoy_summary(table),
        "unused_pvalue_le_0.1": float((table["pvalue"][unused] <= 0.1).mean()),
        "unused_median_pvalue": float(table["pvalue"][unused].median()),
        "train_s": train_s,
        "train_no_decoys_s": train0_s,
        "evidence_s": evidence_s,
    }


def _marker_setup(adata, markers: dict, label_key: str, single_gene: str, rng):
    import glassvi as gv

    sets = {
        name: [g for g in genes if g in adata.var_names] for name, (_, genes) in markers.items()
    }
    counts = adata.X
    mean = np.asarray(counts.mean(0)).ravel()
    expressed = np.flatnonzero(mean > 0)
    lowest = adata.var_names[expressed[np.argsort(mean[expressed])][:8]]
    sets["SINGLE_GENE"] = [single_gene, *lowest]
    sets.update(gv.data.hallmark())
    gv.pp.add_programs(adata, sets, min_genes=4)


def _aurocs(model, adata, markers: dict, label_key: str) -> dict:
    from sklearn.metrics import roc_auc_score

    activity = model.get_program_activity()
    labels = adata.obs[label_key].astype(str).to_numpy()
    out = {}
    for name, (types, _) in markers.items():
        if name in activity.columns:
            out[name] = float(roc_auc_score(np.isin(labels, types), activity[name]))
    return out


def real(name: str, seed: int, quick: bool) -> dict:
    import anndata as ad

    rng = np.random.default_rng(seed)
    if name == "pbmc68k":
        adata = ad.read_h5ad(DATA / "pbmc68k_counts.h5ad")
        markers, label_key, epochs = PBMC_MARKERS, "bulk_labels", (100 if quick else 300)
    else:
        adata = ad.read_h5ad(DATA / "immune1k_counts.h5ad")
        markers, label_key, epochs = (
            IMMUNE_MARKERS,
            "cell_type_annotations",
            (40 if quick else 100),
        )
    _marker_setup(adata, markers, label_key, SINGLE_GENE[name], rng)
    model, train_s = _train(adata.copy(), seed, epochs)
    table, evidence_s = _evidence(model)
    fresh = adata.copy()
    model0, train0_s = _train(fresh, seed, epochs, n_decoys=0)
    aurocs = _aurocs(model, adata, markers, label_key)
    aurocs0 = _aurocs(model0, fresh, markers, label_key)
    marker_names = [m for m in markers if m in table.index]
    hallmark = [p for p in table.index if p.startswith("HALLMARK_")]
    single = table.loc["SINGLE_GENE"]
    top = table[table["significant"] & (table["effective_genes"] >= 3)].index[:10]
    return {
        "seed": seed,
        "n_programs": len(table),
        "n_decoys": int(table.attrs["n_decoys"]),
        "markers_called": int(table.loc[marker_names, "significant"].sum()),
        "n_markers": len(marker_names),
        "marker_fdr": {m: float(table.loc[m, "fdr"]) for m in marker_names},
        "hallmark_called": int(table.loc[hallmark, "significant"].sum()),
        "n_hallmark": len(hallmark),
        "hallmark_called_names": [p for p in hallmark if table.loc[p, "significant"]],
        "single_gene_called": bool(single["significant"]),
        "single_gene_effective_genes": float(single["effective_genes"]),
        "single_gene_ok": bool((not single["significant"]) or single["effective_genes"] < 3),
        "false_calls_decoys": _decoy_false_calls(table),
        **_decoy_summary(table),
        "called_with_few_genes": [
            str(p) for p in table.index[table["significant"] & (table["effective_genes"] < 3)]
        ],
        "top_list": [str(p) for p in top],
        "marker_auroc": float(np.mean(list(aurocs.values()))),
        "marker_auroc_no_decoys": float(np.mean(list(aurocs0.values()))),
        "train_s": train_s,
        "train_no_decoys_s": train0_s,
        "evidence_s": evidence_s,
    }


def summarise(runs: list[dict], keys: list[str]) -> dict:
    return {k: [r[k] for r in runs] for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer epochs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "evidence.json")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="seeds to run")
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default=None,
        help="ProgramVI options as JSON, e.g. '{\"anchor_hidden\": false}'",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["simulation", "pbmc68k", "immune1k"],
        choices=["simulation", "pbmc68k", "immune1k"],
    )
    args = parser.parse_args()
    MODEL_KWARGS.update(args.model_kwargs or {})
    torch.set_num_threads(1)
    _quiet()
    seeds = args.seeds if args.seeds else ([0] if args.quick else [0, 1, 2])
    from _common import machine

    result: dict = {"fdr": FDR, "seeds": seeds, "machine": machine(), "quick": args.quick}
    if MODEL_KWARGS:
        result["model_kwargs"] = dict(MODEL_KWARGS)
    for name in args.datasets:
        if name == "simulation":
            runs = [simulation(s, args.quick) for s in seeds]
        else:
            runs = [real(name, s, args.quick) for s in seeds]
        print(name, json.dumps(runs, indent=1), flush=True)
        result[name] = runs
    every = [r for name in args.datasets for r in result[name]]
    result["cost"] = {
        "train_with_decoys_over_without": [r["train_s"] / r["train_no_decoys_s"] for r in every],
        "evidence_over_train": [r["evidence_s"] / r["train_s"] for r in every],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
