"""LinearVI and ProgramVI against scvi-tools' LinearSCVI, side by side on one machine.

For each dataset (simulated 10,000 cells x 2,000 genes with planted programs, and the real
immune1k counts), LinearVI and LinearSCVI are trained with the same architecture (n_latent,
n_hidden, n_layers, dropout), batch size, learning rate, number of epochs and train/validation
split (scvi-tools' seeded split, so the held-out cells are the same). ProgramVI uses the same
encoder and batch size with one latent unit per program (the simulation's planted programs;
Hallmark for immune1k), and LinearSCVI is also trained with glassvi's CPU allocator settings
(``glassvi.train.tune_cpu_allocator``) to show how much of the difference they account for. Each
training run is its own process (so peak memory is that model's), and the order of the models
rotates over ``--repeats`` so that load on the machine falls on all alike.

Reported per model: wall and CPU seconds per epoch (median over epochs after the first and over
repeats), peak resident memory of the training process, and the held-out reconstruction NLL per
cell. The NLL is computed the same way for all: the posterior-mean latent (and, for LinearSCVI,
the posterior-mean library size) is decoded and scored with scvi-tools' negative binomial
``log_prob`` on the same held-out cells' raw counts. Ratios (to LinearSCVI) are taken within the
run.

Run: ``python benchmarks/linear.py [--quick]``; writes ``benchmarks/results/linear.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

ARCH = {"n_latent": 10, "n_hidden": 128, "n_layers": 1, "dropout_rate": 0.1}
#: LinearSCVI_tuned_allocator is LinearSCVI trained with glassvi's CPU allocator settings
#: (glassvi.train.tune_cpu_allocator), to show how much of the difference they account for;
#: ProgramVI uses the same encoder and batch size, with one latent unit per program of the mask
#: stored in varm["programs"] (the planted programs of the simulation, Hallmark for immune1k)
MODELS = ("LinearVI", "LinearSCVI", "LinearSCVI_tuned_allocator", "ProgramVI")
PROGRAM_ARCH = {k: v for k, v in ARCH.items() if k != "n_latent"}


# ----------------------------------------------------------------------------- worker
def heldout_nll(model, indices: np.ndarray, batch_size: int = 512) -> float:
    """Mean negative log-likelihood per held-out cell, decoded from the posterior means."""
    import torch
    from scvi import REGISTRY_KEYS

    module = model.module
    module.eval()
    loader = model._make_data_loader(model.adata, indices=indices, batch_size=batch_size)
    total, n = 0.0, 0
    with torch.inference_mode():
        for tensors in loader:
            inf = module.inference(**module._get_inference_input(tensors))
            inf = dict(inf)
            inf["z"] = inf["qz"].loc
            if inf.get("ql") is not None:
                inf["library"] = inf["ql"].loc
            gen = module.generative(**module._get_generative_input(tensors, inf))
            px = gen["px"]
            px = px["rna"] if isinstance(px, dict) else px
            x = tensors[REGISTRY_KEYS.X_KEY]
            total += float(-px.log_prob(x).sum(-1).sum())
            n += x.shape[0]
    return total / n


def worker(args) -> None:
    import anndata as ad
    import scvi
    import torch
    from _common import EpochTimer, PeakRSS, machine, max_rss_bytes

    import glassvi

    torch.set_num_threads(args.threads) if args.threads else None
    scvi.settings.seed = 0
    adata = ad.read_h5ad(args.data)
    batch_key = "batch" if "batch" in adata.obs else None
    if args.model == "ProgramVI":
        glassvi.model.ProgramVI.setup_anndata(adata, batch_key=batch_key)
        model = glassvi.model.ProgramVI(adata, **PROGRAM_ARCH)
    else:
        cls = glassvi.model.LinearVI if args.model == "LinearVI" else scvi.model.LinearSCVI
        if args.model == "LinearSCVI_tuned_allocator":
            glassvi.train.tune_cpu_allocator()
        cls.setup_anndata(adata, batch_key=batch_key)
        model = cls(adata, **ARCH)
    # glassvi's allocator settings are opt-in; the comparison is made with them on
    glassvi_plan = {"tune_allocator": True}
    n_params = sum(p.numel() for p in model.module.parameters())
    timer = EpochTimer()
    with PeakRSS() as mem:
        model.train(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            train_size=0.9,
            accelerator="cpu",
            enable_progress_bar=False,
            callbacks=[timer],
            **({} if args.model.startswith("LinearSCVI") else {"plan_kwargs": glassvi_plan}),
        )
    out = {
        "model": args.model,
        "n_params": int(n_params),
        **timer.summary(),
        "rss_before_train_bytes": int(mem.start),
        "peak_rss_train_bytes": int(mem.peak),
        "max_rss_bytes": int(max_rss_bytes()),
        "heldout_nll_per_cell": heldout_nll(model, np.asarray(model.validation_indices)),
        "n_heldout": int(len(model.validation_indices)),
        "heldout_first": [int(i) for i in np.asarray(model.validation_indices)[:5]],
        "machine": machine(),
    }
    Path(args.out).write_text(json.dumps(out))


# ----------------------------------------------------------------------------- driver
def make_datasets(quick: bool, workdir: Path) -> dict[str, dict]:
    import anndata as ad

    import glassvi

    n_cells, n_genes = (3000, 1000) if quick else (10_000, 2000)
    sim = glassvi.data.simulate(n_cells=n_cells, n_genes=n_genes, n_batches=2, seed=0)
    del sim.layers["counts"]
    planted = np.asarray(sim.varm["true_programs"], dtype=bool)
    sim = ad.AnnData(sim.X, obs=sim.obs[["batch"]].copy(), var=sim.var[[]].copy())
    sim.varm["programs"] = planted
    real = glassvi.data.immune1k()
    real = ad.AnnData(real.layers["counts"].copy(), obs=real.obs[[]].copy(), var=real.var[[]])
    glassvi.pp.add_programs(real, glassvi.data.hallmark())
    out = {}
    for name, adata in ((f"simulated_{n_cells}x{n_genes}", sim), ("immune1k", real)):
        path = workdir / f"{name}.h5ad"
        adata.write_h5ad(path)
        out[name] = {
            "path": str(path),
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "density": float(adata.X.nnz / (adata.n_obs * adata.n_vars)),
            "n_programs": int(np.asarray(adata.varm["programs"]).shape[1]),
        }
    return out


def run_worker(model: str, data: str, epochs: int, batch_size: int, threads: int | None):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--data",
        data,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--out",
        out,
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(Path(out).read_text())


def compare(name: str, info: dict, epochs: int, repeats: int, batch_size: int, threads):
    runs = {m: [] for m in MODELS}
    for rep in range(repeats):
        # rotate the order so that drifts in machine load fall on every model alike
        order = MODELS[rep % len(MODELS) :] + MODELS[: rep % len(MODELS)]
        for model in order:
            print(f"[linear] {name}: {model} run {rep + 1}/{repeats}", flush=True)
            runs[model].append(run_worker(model, info["path"], epochs, batch_size, threads))
    per_model = {}
    for model, rs in runs.items():
        wall = np.concatenate([r["epoch_wall_s"][1:] or r["epoch_wall_s"] for r in rs])
        cpu = np.concatenate([r["epoch_cpu_s"][1:] or r["epoch_cpu_s"] for r in rs])
        per_model[model] = {
            "median_epoch_wall_s": float(np.median(wall)),
            "min_epoch_wall_s": float(np.min(wall)),
            "median_epoch_cpu_s": float(np.median(cpu)),
            "peak_rss_train_gib": max(r["peak_rss_train_bytes"] for r in rs) / 2**30,
            "train_rss_increase_gib": max(
                r["peak_rss_train_bytes"] - r["rss_before_train_bytes"] for r in rs
            )
            / 2**30,
            "heldout_nll_per_cell": float(np.mean([r["heldout_nll_per_cell"] for r in rs])),
            "n_params": rs[0]["n_params"],
            "runs": rs,
        }
    a, b = per_model["LinearVI"], per_model["LinearSCVI"]
    tuned = per_model["LinearSCVI_tuned_allocator"]
    same_cells = a["runs"][0]["heldout_first"] == b["runs"][0]["heldout_first"]
    return {
        "dataset": name,
        **{k: v for k, v in info.items() if k != "path"},
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": batch_size,
        "architecture": ARCH,
        "same_heldout_cells": bool(same_cells),
        "models": per_model,
        "ratios": {
            "epoch_wall_time": a["median_epoch_wall_s"] / b["median_epoch_wall_s"],
            "epoch_wall_time_best": a["min_epoch_wall_s"] / b["min_epoch_wall_s"],
            "epoch_cpu_time": a["median_epoch_cpu_s"] / b["median_epoch_cpu_s"],
            "peak_rss": a["peak_rss_train_gib"] / b["peak_rss_train_gib"],
            "epoch_wall_time_vs_tuned_allocator": a["median_epoch_wall_s"]
            / tuned["median_epoch_wall_s"],
            "programvi_epoch_wall_time": per_model["ProgramVI"]["median_epoch_wall_s"]
            / b["median_epoch_wall_s"],
        },
        "heldout_nll_difference": a["heldout_nll_per_cell"] - b["heldout_nll_per_cell"],
        "heldout_nll_relative_difference": (a["heldout_nll_per_cell"] - b["heldout_nll_per_cell"])
        / abs(b["heldout_nll_per_cell"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS)
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "linear.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from _common import machine

    start = time.perf_counter()
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_datasets(args.quick, Path(tmp))
        comparisons = []
        for name, info in datasets.items():
            real = name == "immune1k"
            epochs = args.epochs or ((6 if real else 4) if args.quick else (40 if real else 20))
            comparisons.append(compare(name, info, epochs, repeats, args.batch_size, args.threads))
    result = {
        "benchmark": "linear",
        "quick": args.quick,
        "comparisons": comparisons,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for c in comparisons:
        r = c["ratios"]
        print(
            f"[linear] {c['dataset']}: time/epoch ratio {r['epoch_wall_time']:.2f} "
            f"(cpu {r['epoch_cpu_time']:.2f}; vs LinearSCVI with the same allocator settings "
            f"{r['epoch_wall_time_vs_tuned_allocator']:.2f}; ProgramVI "
            f"{r['programvi_epoch_wall_time']:.2f}), peak RSS ratio {r['peak_rss']:.2f}, "
            f"held-out NLL diff {c['heldout_nll_difference']:+.2f}/cell"
        )


if __name__ == "__main__":
    main()
