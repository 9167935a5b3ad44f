"""Marker recovery and seed agreement of label attributions: glassvi vs Wilcoxon DE vs SCANVI.

On bundled real data with cell-type labels, in one run:

* cells of the types with at least ``--min-cells`` cells; a stratified quarter is held out;
* for each of 3 training seeds, LinearVI (labels registered) and scvi-tools SCANVI train on the
  other cells with the same encoder size (10 latent units, one hidden layer of 128) for the same
  number of epochs (200, no early stopping), otherwise with each model's own training defaults
  (minibatches of 128); their training CPU time is recorded. SCANVI takes about 4x LinearVI's
  time per epoch (on immune1k 0.36 vs 0.08 CPU s): its semi-supervised plan also passes a
  labelled minibatch through the encoder and classifier at every step, and its model has a
  second latent layer;
* each data set runs in a fresh process (see ``main``);
* glassvi: ``explain(method="integrated_gradients", target="labels")`` on the held-out cells
  with its defaults, ranked by signed evidence for each class
  (``glassvi.tl.rank_features``); also the complete attributions (``above_baseline=False``: also
  the evidence from genes a cell has less of than the background cell it is compared with) as
  "glassvi, complete attributions", and the previous defaults (raw logit of the predicted class
  from a zero baseline) as "glassvi, previous defaults";
* SCANVI: captum integrated gradients of SCANVI's classifier for the predicted class of every
  held-out cell, as ``SCANVI.predict(ig_interpretability=True)`` computes them, averaged per
  predicted class and ranked signed the same way;
* Wilcoxon DE: ``scanpy.tl.rank_genes_groups`` on log-normalised counts of the training cells
  (no training seed; its seed agreement is 1 by construction).

For every method and seed: the number of types with at least 2 of their markers among the top
50 features, the mean number of hits, and the agreement of the top 50 across seeds
(:func:`glassvi.metrics.stability`: Jaccard, Spearman over the union of the top 50, per type).

The marker lists (``markers.json``, next to this script) are canonical markers written for this
benchmark (not tuned on any ranking), restricted to genes present in each data set.

Run: ``python benchmarks/markers.py [--quick] [--out results/markers.json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch
from _common import most_variable_genes

import glassvi
from glassvi.metrics import marker_recovery, stability

RESULTS = Path(__file__).parent / "results" / "markers.json"
TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
TOP = 50

#: canonical markers per data set and type (shared with tests/explain/test_markers_real.py)
MARKERS = json.loads((Path(__file__).parent / "markers.json").read_text())


def load(name: str, n_genes: int, min_cells: int, seed: int = 123):
    """Counts of the types with enough cells, a held-out mask and the marker lists."""
    if name == "pbmc68k":
        adata, key = glassvi.data.pbmc68k(), "bulk_labels"
    else:
        adata, key = glassvi.data.immune1k(), "cell_type_annotations"
    if n_genes and adata.n_vars > n_genes:
        adata = most_variable_genes(adata, n_genes)
    counts = adata.obs[key].value_counts()
    adata = adata[adata.obs[key].isin(counts.index[counts >= min_cells])].copy()
    adata.obs["labels"] = adata.obs[key].astype(str).astype("category")
    adata.X = adata.layers["counts"].copy()
    rng = np.random.default_rng(seed)
    held = np.zeros(adata.n_obs, dtype=bool)
    for label in adata.obs["labels"].cat.categories:
        idx = np.flatnonzero(adata.obs["labels"].to_numpy() == label)
        rng.shuffle(idx)
        held[idx[: max(3, idx.size // 4)]] = True
    genes = set(adata.var_names)
    markers = {
        t: [g for g in m if g in genes]
        for t, m in MARKERS[name].items()
        if t in set(adata.obs["labels"])
    }
    return adata, held, {t: m for t, m in markers.items() if m}


def hits(scores: pd.DataFrame, markers: dict) -> dict:
    """Markers among the top ``TOP`` features of each type, ranked by signed score."""
    table = marker_recovery(scores[list(markers)].fillna(-np.inf), markers, k=TOP)
    return dict(zip(table["group"], table["n_hits"].astype(int)))


def glassvi_scores(train, test, seed, epochs, **explain_kw) -> tuple[dict, dict, float]:
    """Per-class signed attributions (features x classes) of LinearVI, per setting."""
    scvi.settings.seed = seed
    glassvi.model.LinearVI.setup_anndata(train, labels_key="labels")
    model = glassvi.model.LinearVI(train, n_latent=10, n_hidden=128, n_layers=1)
    start = time.process_time()
    model.train(max_epochs=epochs, **TRAIN_KW)
    out, seconds = {}, {"train": time.process_time() - start}
    for name, kw in explain_kw.items():
        start = time.process_time()
        res = model.explain(
            test,
            method="integrated_gradients",
            target="labels",
            inplace=False,
            progress_bar=False,
            seed=seed,
            **kw,
        )
        seconds[name] = time.process_time() - start
        key = "linearvi_integrated_gradients_labels"
        holder = test.copy()
        holder.varm[key] = res["varm"]["rna"][key]
        holder.uns[key] = res["uns"][key]
        ranked = glassvi.tl.rank_features(holder, key, inplace=False)
        out[name] = ranked.pivot(index="names", columns="group", values="scores").reindex(
            test.var_names
        )
    accuracy = float((model.predict(test).astype(str) == test.obs["labels"].astype(str)).mean())
    return out, seconds, accuracy


def scanvi_scores(train, test, seed, epochs, n_steps) -> tuple[pd.DataFrame, dict, float]:
    """SCANVI's integrated gradients for the predicted class, mean per predicted class."""
    from captum.attr import IntegratedGradients
    from scvi import REGISTRY_KEYS

    scvi.settings.seed = seed
    ref = train.copy()
    scvi.model.SCANVI.setup_anndata(ref, labels_key="labels", unlabeled_category="Unknown")
    model = scvi.model.SCANVI(ref, n_latent=10, n_hidden=128, n_layers=1)
    start = time.process_time()
    model.train(max_epochs=epochs, **TRAIN_KW)
    train_seconds = time.process_time() - start
    query = test.copy()
    query.obs["labels"] = query.obs["labels"].astype(str)
    model.module.eval()
    ig = IntegratedGradients(model.module.classify)
    loader = model._make_data_loader(adata=model._validate_anndata(query), batch_size=128)
    attrs, preds = [], []
    start = time.process_time()
    for tensors in loader:
        x = tensors[REGISTRY_KEYS.X_KEY]
        batch = tensors[REGISTRY_KEYS.BATCH_KEY]
        with torch.no_grad():
            pred = model.module.classify(x, batch_index=batch).argmax(dim=1)
        a = ig.attribute(x, target=pred, additional_forward_args=(batch,), n_steps=n_steps)
        attrs.append(a.detach().numpy())
        preds.append(pred.numpy())
    seconds = {"train": train_seconds, "explain": time.process_time() - start}
    attrs, preds = np.concatenate(attrs), np.concatenate(preds)
    names = list(model._code_to_label.values()) if hasattr(model, "_code_to_label") else None
    names = names or list(model.adata_manager.get_state_registry("labels").categorical_mapping)
    table = pd.DataFrame(
        {
            str(c): attrs[preds == j].mean(axis=0) if (preds == j).any() else np.nan
            for j, c in enumerate(names)
        },
        index=test.var_names,
    )
    accuracy = float((np.asarray(names)[preds] == test.obs["labels"].astype(str)).mean())
    return table, seconds, accuracy


def wilcoxon_scores(train) -> pd.DataFrame:
    logged = train.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.tl.rank_genes_groups(logged, "labels", method="wilcoxon")
    de = sc.get.rank_genes_groups_df(logged, None)
    return de.pivot(index="names", columns="group", values="scores").reindex(train.var_names)


def summarise(tables: list[pd.DataFrame], markers: dict) -> dict:
    per_seed = [hits(t, markers) for t in tables]
    rows = [
        {
            "types_with_2": int(sum(v >= 2 for v in h.values())),
            "n_types": len(h),
            "mean_hits": float(np.mean(list(h.values()))),
            "hits": h,
        }
        for h in per_seed
    ]
    # the acceptance threshold: at most one type with fewer than 2 markers (7 of 8) and at
    # least 3.5 mean hits, in every seed
    for r in rows:
        r["passes"] = bool(r["types_with_2"] >= r["n_types"] - 1 and r["mean_hits"] >= 3.5)
    out = {"per_seed": rows, "passes_every_seed": all(r["passes"] for r in rows)}
    if len(tables) > 1:
        agree = stability([t[list(markers)].fillna(-1e30) for t in tables], k=TOP)
        out["seed_topk_jaccard"] = float(agree["topk_jaccard"].mean())
        out["seed_topk_rank_correlation"] = float(agree["topk_rank_correlation"].mean())
        out["seed_rank_correlation"] = float(agree["rank_correlation"].mean())
    return out


def run_data_set(name: str, args: argparse.Namespace, settings: dict) -> dict:
    """Every method and seed on one data set; the ``data[name]`` entry of the results."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    adata, held, markers = load(name, args.n_genes, args.min_cells)
    train, test = adata[~held].copy(), adata[held].copy()
    print(f"{name}: {train.n_obs} training, {test.n_obs} held-out cells, {adata.n_vars} genes")
    tables: dict[str, list] = {k: [] for k in (*settings, "SCANVI IG", "Wilcoxon DE")}
    seconds: dict[str, list] = {k: [] for k in (*settings, "SCANVI IG")}
    train_seconds: dict[str, list] = {"glassvi": [], "SCANVI IG": []}
    accuracy: dict[str, list] = {"glassvi": [], "SCANVI IG": []}
    for seed in args.seeds:
        ours, t_ours, acc = glassvi_scores(train.copy(), test, seed, args.epochs, **settings)
        for k in settings:
            tables[k].append(ours[k])
            seconds[k].append(t_ours[k])
        accuracy["glassvi"].append(acc)
        train_seconds["glassvi"].append(t_ours["train"])
        theirs, t_theirs, acc = scanvi_scores(train, test, seed, args.epochs, args.n_steps)
        tables["SCANVI IG"].append(theirs)
        seconds["SCANVI IG"].append(t_theirs["explain"])
        train_seconds["SCANVI IG"].append(t_theirs["train"])
        accuracy["SCANVI IG"].append(acc)
        print(
            f"  seed {seed}: training CPU s LinearVI {t_ours['train']:.0f}, "
            f"SCANVI {t_theirs['train']:.0f}; explain CPU s glassvi {t_ours['glassvi']:.1f}, "
            f"SCANVI IG {t_theirs['explain']:.1f}",
            flush=True,
        )
    tables["Wilcoxon DE"].append(wilcoxon_scores(train))
    summary = {k: summarise(v, markers) for k, v in tables.items()}
    for k, v in summary.items():
        if k in seconds:
            v["explain_seconds"] = seconds[k]
        if k in train_seconds:
            v["train_seconds"] = train_seconds[k]
        if k in accuracy:
            v["held_out_accuracy"] = accuracy[k]
    result = {
        "cells_train": int(train.n_obs),
        "cells_held_out": int(test.n_obs),
        "genes": int(adata.n_vars),
        "markers": markers,
        "methods": summary,
    }
    for k, v in summary.items():
        figures = ", ".join(
            f"{r['types_with_2']}/{r['n_types']} {r['mean_hits']:.2f}" for r in v["per_seed"]
        )
        agree = v.get("seed_topk_jaccard")
        print(
            f"  {k:24s} {figures}"
            + (f"  seed Jaccard@{TOP} {agree:.2f}" if agree is not None else "")
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="+", default=["pbmc68k", "immune1k"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--min-cells", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="pbmc68k, 2 seeds, 60 epochs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        args.data, args.seeds, args.epochs = ["pbmc68k"], args.seeds[:2], 60
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    settings = {
        "glassvi": {"n_steps": args.n_steps},
        "glassvi, complete attributions": {"n_steps": args.n_steps, "above_baseline": False},
        "glassvi, previous defaults": {
            "n_steps": args.n_steps,
            "label_contrast": "none",
            "label_target": "predicted",
            "baseline": "zeros",
        },
    }
    results = {}
    # each data set in a fresh process: a process that had already trained and explained on
    # pbmc68k trained SCANVI on immune1k 4-7x slower per epoch than a fresh one (same seed,
    # same numbers), which made one full run take far longer than its parts
    context = multiprocessing.get_context("spawn")
    for name in args.data:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results[name] = pool.submit(run_data_set, name, args, settings).result()
    out = {
        "machine": f"{platform.processor() or platform.machine()}, 1 torch thread, cpu",
        "versions": {
            "glassvi": glassvi.__version__,
            "scvi-tools": scvi.__version__,
            "torch": torch.__version__,
        },
        "quick": bool(args.quick),
        "top": TOP,
        "seeds": list(args.seeds),
        "epochs": int(args.epochs),
        "n_steps": int(args.n_steps),
        "data": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
