"""Speed of glassvi's post-hoc attributions against scvi-tools' SCANVI, in one run.

Same data (immune1k, 1,000 cells x 2,000 highly variable genes), same encoder size, same
number of integration steps:

* integrated gradients for the cell-label head: ``LinearVI.explain(method="integrated_gradients",
  target="labels")`` against ``SCANVI.predict(ig_interpretability=True)``, cells per second;
* SHAP: ``LinearVI.explain(method="shap", target="labels")`` (shap's GradientExplainer) against
  ``SCANVI.shap_predict`` (shap's KernelExplainer over all genes) on a few cells.

Integrated gradients are timed both as wall-clock time (``time.perf_counter``) and as this
process's CPU time (``time.process_time``), the two methods alternating within each repeat, so
that both clocks see the same conditions; CPU time is the fairer figure on a shared machine,
where wall time also counts waiting for the cores. Both run with one torch thread.

Run: ``python benchmarks/explain.py [--quick] [--n-ig-cells 500] [--n-shap-cells 2]``. Writes
``benchmarks/results/explain.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import scvi
import torch
from _common import most_variable_genes

import glassvi

RESULTS = Path(__file__).parent / "results" / "explain.json"
TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


def load_data(n_genes: int):
    adata = most_variable_genes(glassvi.data.immune1k(), n_genes)
    adata.obs["labels"] = adata.obs["cell_type_annotations"].astype(str)
    return adata


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def clocked(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-ig-cells", type=int, default=500)
    parser.add_argument("--n-shap-cells", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-scanvi-background", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer cells, epochs and repeats")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        args.n_ig_cells, args.epochs, args.repeats = min(args.n_ig_cells, 200), 3, 1
    warnings.filterwarnings("ignore")
    scvi.settings.seed = 0
    torch.set_num_threads(1)

    adata = load_data(args.n_genes)
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes")
    ref = adata.copy()
    scvi.model.SCANVI.setup_anndata(ref, labels_key="labels", unlabeled_category="Unknown")
    scanvi = scvi.model.SCANVI(ref, n_latent=10, n_hidden=128, n_layers=1)
    scanvi.train(max_epochs=args.epochs, **TRAIN_KW)

    ours = adata.copy()
    glassvi.model.LinearVI.setup_anndata(ours, labels_key="labels")
    model = glassvi.model.LinearVI(ours, n_latent=10, n_hidden=128, n_layers=1)
    model.train(max_epochs=args.epochs, **TRAIN_KW)

    rng = np.random.default_rng(0)
    ig_cells = np.sort(rng.choice(adata.n_obs, size=args.n_ig_cells, replace=False))
    shap_cells = ig_cells[: args.n_shap_cells]

    # warm-up of both paths (first captum call, allocations)
    scanvi.predict(ref, indices=ig_cells[:8], ig_interpretability=True, ig_args={"n_steps": 4})
    model.explain(
        method="integrated_gradients",
        target="labels",
        indices=ig_cells[:8],
        n_steps=4,
        inplace=False,
        progress_bar=False,
    )

    def scanvi_ig():
        scanvi.predict(
            ref, indices=ig_cells, ig_interpretability=True, ig_args={"n_steps": args.n_steps}
        )

    def glassvi_ig():
        model.explain(
            method="integrated_gradients",
            target="labels",
            indices=ig_cells,
            n_steps=args.n_steps,
            batch_size=128,
            progress_bar=False,
        )

    # the two alternate within every repeat (which goes first alternates too), so a busy
    # spell on a shared machine falls on both; medians over repeats
    runs = {"scanvi": {"wall": [], "cpu": []}, "glassvi": {"wall": [], "cpu": []}}
    for r in range(args.repeats):
        order = (("scanvi", scanvi_ig), ("glassvi", glassvi_ig))
        for name, fn in order if r % 2 == 0 else order[::-1]:
            wall, cpu = clocked(fn)
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
    med = {n: {c: float(np.median(v)) for c, v in clocks.items()} for n, clocks in runs.items()}
    ig = {
        "n_cells": int(args.n_ig_cells),
        "n_steps": int(args.n_steps),
        "repeats": int(args.repeats),
        "glassvi_settings": "defaults of target='labels': label_contrast='rest', "
        "label_target='annotated', background baseline, 5 background cells per cell "
        f"sharing the {args.n_steps} steps",
        "scanvi_settings": f"SCANVI.predict(ig_interpretability=True), zero baseline, "
        f"{args.n_steps} steps",
        "scanvi_wall_seconds_all": runs["scanvi"]["wall"],
        "glassvi_wall_seconds_all": runs["glassvi"]["wall"],
        "scanvi_cpu_seconds_all": runs["scanvi"]["cpu"],
        "glassvi_cpu_seconds_all": runs["glassvi"]["cpu"],
        "scanvi_seconds": med["scanvi"]["wall"],
        "glassvi_seconds": med["glassvi"]["wall"],
        "scanvi_cpu_seconds": med["scanvi"]["cpu"],
        "glassvi_cpu_seconds": med["glassvi"]["cpu"],
        "scanvi_cells_per_s": args.n_ig_cells / med["scanvi"]["wall"],
        "glassvi_cells_per_s": args.n_ig_cells / med["glassvi"]["wall"],
        # SCANVI's time over glassvi's: above 1, glassvi is faster
        "speedup": med["scanvi"]["wall"] / med["glassvi"]["wall"],
        "cpu_speedup": med["scanvi"]["cpu"] / med["glassvi"]["cpu"],
        # glassvi's time as a fraction of SCANVI's: below 1, glassvi is faster
        "glassvi_over_scanvi_wall": med["glassvi"]["wall"] / med["scanvi"]["wall"],
        "glassvi_over_scanvi_cpu": med["glassvi"]["cpu"] / med["scanvi"]["cpu"],
        "glassvi_convergence": ours.uns["linearvi_integrated_gradients_labels"]["convergence"],
    }
    print(
        f"integrated gradients ({args.n_steps} steps, {args.n_ig_cells} cells): "
        f"SCANVI {ig['scanvi_cells_per_s']:.1f} cells/s, glassvi {ig['glassvi_cells_per_s']:.1f} "
        f"cells/s -> glassvi {ig['speedup']:.2f}x; CPU time glassvi/SCANVI "
        f"{ig['glassvi_over_scanvi_cpu']:.2f}"
    )

    _, t_ours_shap = timed(
        lambda: model.explain(
            method="shap",
            target="labels",
            indices=ig_cells[:100],
            progress_bar=False,
        )
    )
    per_cell_ours = t_ours_shap / 100
    # shap_predict uses every cell of the model's registered data as KernelExplainer
    # background; with all 1,000 cells it asks for 45 GiB (6,048 samples x 1,000 x 2,000) and
    # fails, so the trained SCANVI is pointed at a background of a few cells
    background = np.sort(rng.choice(adata.n_obs, size=args.n_scanvi_background, replace=False))
    query = ref[shap_cells].copy()
    scanvi.adata = ref[background].copy()
    _, t_scanvi_shap = timed(lambda: scanvi.shap_predict(query))
    per_cell_scanvi = t_scanvi_shap / len(shap_cells)
    shap_res = {
        "scanvi_cells": int(len(shap_cells)),
        "scanvi_background_cells": int(args.n_scanvi_background),
        "scanvi_full_background": "out of memory (45 GiB asked for 1,000 cells)",
        "scanvi_seconds_per_cell": per_cell_scanvi,
        "glassvi_cells": 100,
        "glassvi_background_cells": 100,
        "glassvi_samples_per_cell": 200,
        "glassvi_seconds_per_cell": per_cell_ours,
        "speedup": per_cell_scanvi / per_cell_ours,
    }
    print(
        f"SHAP: SCANVI.shap_predict {per_cell_scanvi:.2f} s/cell (KernelExplainer, "
        f"{args.n_scanvi_background} background cells), "
        f"glassvi {per_cell_ours * 1000:.1f} ms/cell "
        f"(GradientExplainer) -> glassvi {shap_res['speedup']:.0f}x"
    )
    from _common import machine

    out = {
        "data": f"immune1k, {adata.n_obs} cells x {adata.n_vars} genes",
        "machine_details": machine(),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, cpu",
        "versions": {
            "glassvi": glassvi.__version__,
            "scvi-tools": scvi.__version__,
            "torch": torch.__version__,
        },
        "quick": bool(args.quick),
        "integrated_gradients": ig,
        "shap": shap_res,
        "passed": {
            "ig_at_least_as_fast": bool(ig["speedup"] >= 1.0),
            "ig_at_least_as_fast_cpu": bool(ig["cpu_speedup"] >= 1.0),
            "shap_at_least_100x": bool(shap_res["speedup"] >= 100),
        },
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
