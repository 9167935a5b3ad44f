"""ProgramVI activities vs gene-set scoring on real cells with known types, and on the simulator.

Real data: each data set's annotated cell types get a marker program of our own (written from
biology knowledge, restricted to the genes present), mixed into the 50 Hallmark sets. Every
method scores every cell for every program, side by side in one run, and each type's marker
program is scored by how well it separates that type from the other cells (one-vs-rest AUROC):

- ProgramVI, hard and soft mask, several seeds, default training (``model.train()`` with no
  arguments: the number of epochs a user gets), activity = ``get_program_activity()``;
- pyUCell (``compute_ucell_scores``), decoupler ULM and MLM (``decoupler.mt.ulm``/``mlm`` with
  all programs in the network), scanpy ``score_genes``; all on log-normalised counts.

Also reported: programs whose AUROC is below 0.5 (sign flips), the seed stability of ProgramVI's
programs (``glassvi.metrics.program_stability`` over the annotated programs; de novo units
are left out, as they are not the same unit across seeds), and on the simulator
(``glassvi.data.simulate``) the correlation of every method's activity with the true activity.

Data: ``pbmc68k`` (700 PBMCs x 765 genes, ``bulk_labels``), ``immune1k`` (1,000 immune cells,
its 2,000 most variable genes, ``cell_type_annotations``) and the RNA of the SNARE-seq mouse
cortex (a stratified subsample of ``--cortex-cells`` cells, 1,000 by default; ``cell_type``;
Hallmark matched case-insensitively). Marker programs need at least 3 genes present and 8 cells
of their type.

Run: ``python benchmarks/programs_real.py [--quick] [--datasets ...] [--update] [--ablation]
[--seeds ...] [--modes ...] [--model-kwargs JSON]``;
writes ``benchmarks/results/programs_real.json`` (after every data set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def shared_data() -> Path:
    """The real-data folder: ``$GLASSVI_SHARED_DATA``, else ``shared/data`` above here."""
    env = os.environ.get("GLASSVI_SHARED_DATA")
    if env:
        return Path(env)
    for parent in HERE.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    raise FileNotFoundError("shared/data not found; set GLASSVI_SHARED_DATA")


#: marker genes per annotated type, written from biology knowledge (not from these data)
MARKERS = {
    "pbmc68k": {
        "CD14+ Monocyte": ["CD14", "LYZ", "S100A8", "S100A9", "FCN1", "VCAN", "CST3", "CSF1R"],
        "Dendritic": ["FCER1A", "CD1C", "CLEC10A", "HLA-DQA1", "HLA-DPB1", "CLEC4C", "LILRA4"],
        "CD19+ B": ["MS4A1", "CD79A", "CD79B", "CD19", "BANK1", "CD22", "TCL1A", "VPREB3"],
        "CD56+ NK": ["NKG7", "GNLY", "KLRD1", "KLRF1", "PRF1", "GZMB", "NCAM1", "FCGR3A"],
        "CD34+": ["CD34", "PRSS57", "SOX4", "SPINK2", "CRHBP", "MYB", "ERG", "EGFL7"],
        "CD8+ Cytotoxic T": ["CD8A", "CD8B", "GZMK", "GZMH", "CCL5", "CD3D", "CD3E", "CST7"],
        "CD4+/CD25 T Reg": ["FOXP3", "IL2RA", "CTLA4", "TIGIT", "TNFRSF4", "IKZF2", "BATF"],
        "CD8+/CD45RA+ Naive Cytotoxic": ["CD8B", "CCR7", "LEF1", "SELL", "TCF7", "CD3E"],
    },
    # shipped with glassvi: glassvi.data.immune1k_markers()
    "immune1k": None,
    "cortex": {
        "L2/3": ["Cux2", "Otof", "Lamp5", "Calb1", "Stard8", "Rasgrf2"],
        "L4/5": ["Rorb", "Rspo1", "Whrn", "Scnn1a", "Il1rapl2", "Deptor"],
        "L6": ["Foxp2", "Syt6", "Tle4", "Sulf1", "Ctgf", "Zfpm2"],
        "Pvalb": ["Pvalb", "Tac1", "Kcnc1", "Erbb4", "Lhx6", "Cox6a2"],
        "Sst": ["Sst", "Chodl", "Lhx6", "Nos1", "Elfn1", "Grin3a"],
        "Oligo": ["Mbp", "Plp1", "Mog", "Mobp", "Mag", "St18", "Enpp6"],
        "OPC": ["Pdgfra", "Cspg4", "Vcan", "Olig1", "Olig2", "Sox10", "Gpr17"],
        "Astro": ["Gja1", "Aqp4", "Slc1a3", "Gfap", "Aldh1l1", "Slc1a2", "Gjb6", "Sox9"],
        "MGC": ["Cx3cr1", "P2ry12", "Csf1r", "C1qa", "Hexb", "Tmem119", "Aif1"],
    },
}
LABELS = {"pbmc68k": "bulk_labels", "immune1k": "cell_type_annotations", "cortex": "cell_type"}
#: cell-type labels merged before scoring (one marker program for the merged type)
MERGE = {"immune1k": {"B_memory": "B", "B_naive": "B", "B_GC": "B"}}
MIN_MARKERS = 3
MIN_CELLS = 8


def program_name(cell_type: str) -> str:
    return "MARKER_" + "".join(c if c.isalnum() else "_" for c in cell_type)


# ----------------------------------------------------------------------------- data
def load(name: str, n_cortex: int = 1000):
    """Counts AnnData with ``obs['type']``, and the marker sets of its types."""
    import anndata as ad
    import scipy.sparse as sp

    import glassvi

    if name == "pbmc68k":
        adata = glassvi.data.pbmc68k()
    elif name == "immune1k":
        from _common import most_variable_genes

        adata = most_variable_genes(glassvi.data.immune1k(), 2000)
    elif name == "cortex":
        import mudata

        rna = mudata.read_h5mu(shared_data() / "snareseq_cortex_dev.h5mu")["rna"]
        labels = rna.obs["cell_type"].astype(str) if "cell_type" in rna.obs else None
        if labels is None:
            raise KeyError("cortex RNA has no cell_type")
        # a stratified subsample keeps every type and the default epochs affordable
        rng = np.random.default_rng(0)
        frac = min(1.0, n_cortex / rna.n_obs)
        groups = pd.Series(np.arange(rna.n_obs)).groupby(labels.to_numpy()).groups.values()
        keep = np.concatenate(
            [rng.choice(idx, max(1, round(frac * len(idx))), replace=False) for idx in groups]
        )
        keep = np.sort(keep)
        X = rna.X[keep]
        adata = ad.AnnData(
            sp.csr_matrix(X, dtype=np.float32),
            obs=rna.obs.iloc[keep][["cell_type"]].copy(),
            var=pd.DataFrame(index=rna.var_names.copy()),
        )
        adata.layers["counts"] = adata.X.copy()
    else:
        raise ValueError(name)
    labels = adata.obs[LABELS[name]].astype(str).replace(MERGE.get(name, {}))
    adata.obs["type"] = pd.Categorical(labels)
    genes = set(adata.var_names)
    counts = labels.value_counts()
    markers = {}
    sets = MARKERS[name] if MARKERS[name] is not None else glassvi.data.immune1k_markers()
    for cell_type, members in sets.items():
        present = [g for g in members if g in genes]
        if len(present) >= MIN_MARKERS and counts.get(cell_type, 0) >= MIN_CELLS:
            markers[cell_type] = present
    return adata, markers


def gene_sets_for(markers: dict) -> dict[str, list[str]]:
    import glassvi

    sets = dict(glassvi.data.hallmark())
    sets.update({program_name(t): genes for t, genes in markers.items()})
    return sets


def add_mask(adata, markers: dict, case_insensitive: bool) -> None:
    import glassvi

    glassvi.pp.add_programs(
        adata, gene_sets_for(markers), min_genes=MIN_MARKERS, case_insensitive=case_insensitive
    )


def lognorm(adata):
    import scanpy as sc

    out = adata.copy()
    out.X = out.layers["counts"].copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


# ----------------------------------------------------------------------------- scorers
def mask_sets(adata) -> dict[str, list[str]]:
    import glassvi

    mask = glassvi.tl.varm_df(adata, "programs")
    return {p: list(adata.var_names[mask[p].to_numpy()]) for p in mask.columns}


def score_peers(adata, n_jobs: int = 1) -> dict[str, pd.DataFrame]:
    """Activity (cells x programs) of every gene-set scorer, on log-normalised counts."""
    import decoupler as dc
    import pyucell
    import scanpy as sc

    norm = lognorm(adata)
    sets = mask_sets(adata)
    out, seconds = {}, {}
    start = time.perf_counter()
    frame = pd.DataFrame(index=adata.obs_names)
    for name, genes in sets.items():
        sc.tl.score_genes(norm, genes, score_name="_s", random_state=0, use_raw=False)
        frame[name] = norm.obs["_s"].to_numpy()
    out["scanpy score_genes"], seconds["scanpy score_genes"] = frame, time.perf_counter() - start

    start = time.perf_counter()
    tmp = norm.copy()
    pyucell.compute_ucell_scores(tmp, signatures=sets, n_jobs=n_jobs, suffix="")
    out["pyUCell"] = tmp.obs[list(sets)].copy()
    seconds["pyUCell"] = time.perf_counter() - start

    net = pd.DataFrame(
        [(p, g, 1.0) for p, genes in sets.items() for g in genes],
        columns=["source", "target", "weight"],
    )
    dense = pd.DataFrame(
        np.asarray(norm.X.todense() if hasattr(norm.X, "todense") else norm.X),
        index=norm.obs_names,
        columns=norm.var_names,
    )
    for method in ("ulm", "mlm"):
        start = time.perf_counter()
        es, _ = getattr(dc.mt, method)(dense, net, tmin=MIN_MARKERS)
        out[f"decoupler {method.upper()}"] = es
        seconds[f"decoupler {method.upper()}"] = time.perf_counter() - start
    return out, seconds


def train_programvi(adata, mask_mode: str, seed: int, max_epochs=None, **model_kwargs):
    """Activity frame of a ProgramVI trained with default settings (epochs: scvi's default)."""
    import scvi

    import glassvi

    scvi.settings.seed = seed
    data = adata.copy()
    glassvi.model.ProgramVI.setup_anndata(data, layer="counts")
    model = glassvi.model.ProgramVI(data, mask_mode=mask_mode, **model_kwargs)
    start = time.perf_counter()
    kwargs = {"enable_progress_bar": False}
    if max_epochs is not None:
        kwargs["max_epochs"] = max_epochs
    model.train(**kwargs)
    seconds = time.perf_counter() - start
    activity = model.get_program_activity()
    elbo = model.history["elbo_train"].to_numpy().ravel()
    info = {"train_s": seconds, "epochs": len(elbo), "final_elbo_train": float(elbo[-1])}
    return activity, info, model


# ----------------------------------------------------------------------------- scoring
def marker_aurocs(activity: pd.DataFrame, labels: pd.Series, markers: dict) -> dict[str, float]:
    """One-vs-rest AUROC of each type's marker-program activity for that type."""
    from sklearn.metrics import roc_auc_score

    labels = labels.astype(str).to_numpy()
    return {
        t: float(roc_auc_score(labels == t, activity[program_name(t)].to_numpy())) for t in markers
    }


def summarise(aurocs: dict[str, float]) -> dict:
    values = np.array(list(aurocs.values()))
    return {
        "mean_auroc": float(values.mean()),
        "min_auroc": float(values.min()),
        "flipped": [t for t, v in aurocs.items() if v < 0.5],
        "per_type": {t: round(v, 4) for t, v in aurocs.items()},
    }


def run_dataset(
    name: str,
    seeds,
    modes,
    max_epochs=None,
    model_kwargs=None,
    log=print,
    ablation=False,
    activities_dir=None,
    n_cortex: int = 1000,
) -> dict:
    from glassvi.metrics import program_stability

    adata, markers = load(name, n_cortex=n_cortex)
    add_mask(adata, markers, case_insensitive=name == "cortex")
    log(f"[{name}] {adata.n_obs} cells x {adata.n_vars} genes, {len(markers)} marker programs")
    peers, seconds = score_peers(adata)
    result = {
        "data": {
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "n_programs": int(adata.varm["programs"].shape[1]),
            "types": {t: int((adata.obs["type"] == t).sum()) for t in markers},
            "markers": markers,
        },
        "methods": {},
    }
    for method, activity in peers.items():
        res = summarise(marker_aurocs(activity, adata.obs["type"], markers))
        res["seconds"] = round(seconds[method], 2)
        result["methods"][method] = res
        log(f"[{name}] {method}: {res['mean_auroc']:.3f} (min {res['min_auroc']:.3f})")
    variants = [("", dict(model_kwargs or {}))]
    if ablation:
        variants.append((", no anchor", {**(model_kwargs or {}), "activity_anchor": 0.0}))
    for mode, (suffix, kwargs) in ((m, v) for v in variants for m in modes):
        runs, activities = [], []
        for seed in seeds:
            activity, info, _ = train_programvi(adata, mode, seed, max_epochs=max_epochs, **kwargs)
            res = summarise(marker_aurocs(activity, adata.obs["type"], markers))
            res.update(seed=seed, **info)
            runs.append(res)
            activities.append(activity)
            if activities_dir is not None:
                activities_dir.mkdir(parents=True, exist_ok=True)
                tag = f"{name}_{mode}{suffix.replace(', ', '_').replace(' ', '_')}_{seed}"
                activity.to_csv(activities_dir / f"{tag}.csv.gz")
            log(
                f"[{name}] ProgramVI {mode}{suffix} seed {seed}: {res['mean_auroc']:.3f} "
                f"(min {res['min_auroc']:.3f}, flipped {res['flipped']}, {info['epochs']} "
                f"epochs, {info['train_s']:.0f} s)"
            )
        marker_cols = [program_name(t) for t in markers]
        # annotated programs only: de novo units are not the same unit across seeds
        stab = program_stability(activities, include_denovo=False) if len(activities) > 1 else None
        result["methods"][f"ProgramVI ({mode}{suffix})"] = {
            "mean_auroc": float(np.mean([r["mean_auroc"] for r in runs])),
            "worst_seed_mean_auroc": float(np.min([r["mean_auroc"] for r in runs])),
            "min_auroc": float(np.min([r["min_auroc"] for r in runs])),
            "flipped": sorted({t for r in runs for t in r["flipped"]}),
            "seeds": runs,
            "stability": None
            if stab is None
            else {
                "median_all": float(stab["correlation"].median()),
                "median_marker": float(stab.loc[marker_cols, "correlation"].median()),
                "min_marker": float(stab.loc[marker_cols, "correlation"].min()),
                "sign_agreement": float(stab["sign_agreement"].mean()),
                "n_programs": int(len(stab)),
            },
        }
    return result


def run_simulated(seeds, modes, quick: bool, max_epochs=None, model_kwargs=None, log=print):
    """Correlation of each method's activity with the simulator's true activity."""
    import glassvi
    from glassvi.metrics import activity_correlation

    size = {"n_cells": 600, "n_genes": 300}
    adata = glassvi.data.simulate(**size, n_programs=12, n_batches=1, seed=0)
    names = list(adata.uns["simulation"]["program_names"])
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    adata.layers["counts"] = adata.X.copy()
    truth = pd.DataFrame(adata.obsm["true_activity"], index=adata.obs_names, columns=names)
    active = truth.columns[truth.std() > 0]
    peers, _ = score_peers(adata)
    out = {"data": {**size, "n_programs": len(names), "n_active": len(active)}, "methods": {}}
    for method, activity in peers.items():
        r = activity_correlation(activity[active], truth[active])
        out["methods"][method] = {"mean_r": float(np.nanmean(r)), "min_r": float(np.nanmin(r))}
        log(f"[simulated] {method}: r {np.nanmean(r):.3f}")
    # the hidden decoy programs share this small gene space densely (about ten decoys per
    # gene): the last variant shows what they cost here
    variants = [(mode, "", {}) for mode in modes] + [("hard", ", no decoys", {"n_decoys": 0})]
    for mode, suffix, extra in variants:
        rs = []
        for seed in seeds:
            activity, _, _ = train_programvi(
                adata, mode, seed, max_epochs=max_epochs, **{**(model_kwargs or {}), **extra}
            )
            rs.append(activity_correlation(activity[active], truth[active]))
        rs = np.array(rs)
        out["methods"][f"ProgramVI ({mode}{suffix})"] = {
            "mean_r": float(np.nanmean(rs)),
            "min_r": float(np.nanmin(rs)),
            "per_seed_mean_r": [float(np.nanmean(r)) for r in rs],
        }
        log(
            f"[simulated] ProgramVI {mode}{suffix}: r {np.nanmean(rs):.3f} "
            f"(min {np.nanmin(rs):.3f})"
        )
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one data set, fewer epochs")
    parser.add_argument("--out", type=Path, default=RESULTS / "programs_real.json")
    parser.add_argument(
        "--datasets",
        nargs="*",
        default=None,
        choices=["pbmc68k", "immune1k", "cortex", "simulated"],
        help="default: all (pbmc68k and simulated with --quick)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also train ProgramVI with activity_anchor=0"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other data sets' results already in --out (run data sets separately)",
    )
    parser.add_argument(
        "--cortex-cells", type=int, default=1000, help="cells of the stratified cortex subsample"
    )
    parser.add_argument(
        "--activities", type=Path, default=None, help="also write every ProgramVI activity here"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["hard", "soft"], choices=["hard", "soft"])
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default=None,
        help="ProgramVI options as JSON, e.g. '{\"anchor_hidden\": false}'",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _common import machine

    seeds = tuple(args.seeds)
    modes = tuple(args.modes)
    datasets = args.datasets or (
        ["pbmc68k", "simulated"] if args.quick else ["pbmc68k", "immune1k", "cortex", "simulated"]
    )
    max_epochs = 100 if args.quick else None
    result = {}
    if args.update and args.out.exists():
        result = json.loads(args.out.read_text())
    result.update({"seeds": list(seeds), "epochs": max_epochs or "default"})
    if args.model_kwargs:
        result["model_kwargs"] = args.model_kwargs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in datasets:
        if name == "simulated":
            result[name] = run_simulated(
                seeds, modes, args.quick, max_epochs=max_epochs, model_kwargs=args.model_kwargs
            )
        else:
            result[name] = run_dataset(
                name,
                seeds,
                modes,
                max_epochs=max_epochs,
                model_kwargs=args.model_kwargs,
                ablation=args.ablation,
                activities_dir=args.activities,
                n_cortex=args.cortex_cells,
            )
        result["machine"] = machine()
        # written after every data set, so a long run leaves its finished parts behind
        args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
