"""ProgramVI against expiMap (scArches) on planted programs with a noisy mask, and on real data.

Simulated data (``glassvi.data.simulate``) have planted programs, some of them inactive decoys.
Both models get the same NOISY mask: about 30% of each program's members are dropped, about 10%
wrong genes are added, and the decoys stay in the mask. Reported per model:

- ``auroc_variance`` / ``auroc_norm``: active vs decoy programs (``glassvi.metrics.
  program_activity_auroc``) scored by the variance of the posterior-mean activity across cells,
  and by the norm of the program's decoder weights;
- ``activity_corr``: mean Pearson correlation between estimated and true activity over the
  active programs (``glassvi.metrics.activity_correlation``);
- ``member_auprc`` (soft masks): recovery of the dropped members among the features outside the
  given mask (``glassvi.metrics.member_recovery`` with ``held_out``), with its chance level;
- ``epoch_s`` (wall seconds per epoch) and ``peak_rss_gib`` of the training process.

Real data: immune1k (1,000 cells x 6,397 genes) with the Hallmark programs (time per epoch and
memory), and ProgramVI with the 5,233 GO Biological Process programs over 20,000 genes
(memory, time per epoch and time of the whole ``train()`` call of the indexed hard mask), side
by side: with the defaults, without the activity anchor, and without the anchor, the decoys
and the de novo units, with each run's ratios to the last.

Every model trains in its own process so that peak memory is that model's. expiMap runs with
the interpreter named by ``GLASSVI_EXPIMAP_PYTHON`` (default ``benchmarks/.venv-expimap/bin/
python``, then ``/work/expimap-venv/bin/python``), an environment with ``scArches==0.6.1``; it
is skipped, with a message, where that environment is absent. glassvi never imports scArches.
One that works with Python 3.11: ``python -m venv benchmarks/.venv-expimap`` and ``pip install
torch==2.13.0 scArches==0.6.1 "scvi-tools<1.2" "jax<0.4.36" "jaxlib<0.4.36" "numpyro<0.16"
"optax<0.2.4" "flax<0.10.3" "orbax-checkpoint<0.10" "chex<0.1.88"`` (scvi-tools 1.1, which
scArches imports, needs a jax from before 0.4.36).

ProgramVI trains with its defaults (hidden decoy programs for the evidence, two de novo units,
the activity anchor on the encoder's output layer); only the mask mode, the soft-mask penalty and
the group lasso are set per row.

Run: ``python benchmarks/programs.py [--quick] [--seed N] [--go-only | --no-go]``; writes
``benchmarks/results/programs.json`` (``--go-only``: only the GO BP runs, replacing that section
of the file; ``--no-go``: everything but the GO BP runs, keeping that section of the file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

EXPIMAP_CANDIDATES = (
    HERE / ".venv-expimap" / "bin" / "python",
    Path("/work/expimap-venv/bin/python"),
)


def expimap_python() -> str | None:
    env = os.environ.get("GLASSVI_EXPIMAP_PYTHON")
    if env:
        return env if Path(env).exists() else None
    for cand in EXPIMAP_CANDIDATES:
        if cand.exists():
            return str(cand)
    return None


# ----------------------------------------------------------------------------- data
def simulated(quick: bool):
    import pandas as pd

    import glassvi

    size = (
        {"n_cells": 800, "n_genes": 300, "n_programs": 10}
        if quick
        else {"n_cells": 3000, "n_genes": 1000, "n_programs": 24}
    )
    adata = glassvi.data.simulate(**size, seed=0)
    info = adata.uns["simulation"]
    truth = adata.varm["true_programs"]
    rng = np.random.default_rng(0)
    dropped = truth & (rng.random(truth.shape) < 0.3)
    wrong = ~truth & (rng.random(truth.shape) < 0.1 * truth.sum(0) / (~truth).sum(0))
    given = (truth & ~dropped) | wrong
    adata.varm["programs"] = pd.DataFrame(
        given, index=adata.var_names, columns=info["program_names"]
    )
    adata.varm["held_out"] = dropped
    return adata


def immune_hallmark():
    import glassvi

    adata = glassvi.data.immune1k()
    glassvi.pp.add_programs(adata, glassvi.data.hallmark(), min_genes=5)
    adata.obs["batch"] = "batch_0"
    return adata


def go_data(n_cells: int):
    import glassvi

    adata = glassvi.data.simulate(n_cells=n_cells, n_genes=20000, n_programs=20, seed=0)
    glassvi.pp.add_programs(adata, glassvi.data.go_bp(), min_genes=5)
    return adata


# ----------------------------------------------------------------------------- workers
def programvi_worker(data: str, opts: dict) -> dict:
    """Train ProgramVI in this process; return activities/weights (paths) and cost figures."""
    import anndata as ad
    import scvi
    from _common import EpochTimer, PeakRSS

    from glassvi.model import ProgramVI

    scvi.settings.seed = opts.get("seed", 0)
    adata = ad.read_h5ad(data)
    with PeakRSS() as rss:
        ProgramVI.setup_anndata(adata, layer=opts.get("layer"), batch_key="batch")
        model = ProgramVI(adata, **opts.get("model", {}))
        timer = EpochTimer()
        start = time.perf_counter()
        model.train(
            max_epochs=opts["epochs"],
            batch_size=128,
            enable_progress_bar=False,
            accelerator="cpu",
            callbacks=[timer],
        )
        train_s = time.perf_counter() - start
        activity = model.get_program_activity()
    summary = timer.summary()
    out = {
        "epoch_s": summary["median_epoch_wall_s"],
        "epoch_cpu_s": summary["median_epoch_cpu_s"],
        # the whole train() call: set-up before the first epoch (the activity anchor's joint
        # fit and, with many programs, every cell's target) and every epoch
        "train_s": round(train_s, 3),
        "epoch_wall_s": summary["epoch_wall_s"],
        "peak_rss_gib": round(rss.peak / 2**30, 3),
        "n_programs": len(model.program_names),
        "n_memberships": int(np.asarray(adata.varm["programs"]).sum()),
    }
    if opts.get("save"):
        np.savez(
            opts["save"],
            latent=activity.to_numpy()[:, : len(model.program_names)],
            weights=model.get_program_weights().to_numpy()[:, : len(model.program_names)],
        )
    return out


def run_programvi(path: Path, opts: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        opts = dict(opts)
        cmd = [sys.executable, __file__, "--worker", str(path), json.dumps(opts), str(result)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(result.read_text())


def run_expimap(python: str, adata, opts: dict, tmp: Path, name: str) -> dict:
    """Write ``adata`` as expiMap expects it and train expiMap in its own environment."""
    import anndata as ad
    import scipy.sparse as sp

    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    plain = ad.AnnData(
        X=np.asarray(counts.todense() if sp.issparse(counts) else counts, dtype=np.float32),
        obs=adata.obs[["batch"]].astype(str),
    )
    plain.obs_names = adata.obs_names
    plain.var_names = adata.var_names
    plain.varm["I"] = np.asarray(adata.varm["programs"]).astype(np.int64)
    path = tmp / f"{name}.h5ad"
    plain.write_h5ad(path)
    out = tmp / f"{name}.npz"
    proc = subprocess.run(
        [python, str(HERE / "_expimap_worker.py"), str(path), str(out), json.dumps(opts)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"expiMap failed:\n{proc.stderr[-3000:]}")
    res = np.load(out)
    return {
        "latent": res["latent"],
        "weights": res["weights"],
        "epoch_s": float(res["epoch_s"][0]),
        "peak_rss_gib": round(float(res["peak_rss"][0]) / 2**30, 3),
    }


# ----------------------------------------------------------------------------- scoring
def score(adata, latent, weights, soft: bool) -> dict:
    from glassvi import metrics

    info = adata.uns["simulation"]
    active = np.asarray(info["active_programs"])
    truth = adata.varm["true_programs"]
    out = {
        "auroc_variance": metrics.program_activity_auroc(latent.var(0), active)["auroc"],
        "auroc_norm": metrics.program_activity_auroc(np.linalg.norm(weights, axis=0), active)[
            "auroc"
        ],
    }
    corr = metrics.activity_correlation(latent, adata.obsm["true_activity"])
    out["activity_corr"] = float(np.nanmean(corr[active]))
    out["activity_corr_abs"] = float(np.nanmean(np.abs(corr[active])))
    if soft:
        rec = metrics.member_recovery(weights, truth, held_out=adata.varm["held_out"] & truth)
        out["member_auprc"] = rec["mean_auprc"]
        out["member_auprc_chance"] = float(np.nanmean(rec["auprc_chance"]))
    return {k: round(float(v), 4) for k, v in out.items()}


#: GO BP runs, side by side: the defaults, then without the activity anchor, then without
#: the anchor, the decoys and the de novo units (what the GO figure measured before them)
GO_CONFIGS = {
    "ProgramVI (hard, indexed)": {},
    "ProgramVI (hard, indexed), no anchor": {"activity_anchor": 0.0},
    "ProgramVI (hard, indexed), no anchor, decoys or de novo units": {
        "activity_anchor": 0.0,
        "n_decoys": 0,
        "n_denovo": 0,
    },
}


def go_section(tmp: Path, quick: bool) -> dict:
    """Time per epoch and peak memory with the 5,233 GO BP programs over 20,000 genes."""
    n_cells = 500 if quick else 2000
    go = go_data(n_cells)
    go_path = tmp / "go.h5ad"
    go.write_h5ad(go_path)
    del go
    out = {}
    for name, model in GO_CONFIGS.items():
        fig = run_programvi(go_path, {"layer": "counts", "epochs": 3, "model": model})
        fig.update({"n_cells": n_cells, "n_genes": 20000, "epochs": 3})
        out[name] = fig
        print("GO BP", name, fig, flush=True)
    plain = out[list(GO_CONFIGS)[-1]]
    out["ratios to the run without anchor, decoys or de novo units"] = {
        name: {
            "epoch_s": round(fig["epoch_s"] / plain["epoch_s"], 3),
            "epoch_cpu_s": round(fig["epoch_cpu_s"] / plain["epoch_cpu_s"], 3),
            "peak_rss_gib": round(fig["peak_rss_gib"] / plain["peak_rss_gib"], 3),
        }
        for name, fig in out.items()
    }
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every model (the data keep seed 0)"
    )
    parser.add_argument(
        "--no-go",
        action="store_true",
        help="skip the GO run, keeping the GO section of an existing file at --out",
    )
    parser.add_argument(
        "--go-only", action="store_true", help="only the GO run, updating the file at --out"
    )
    parser.add_argument("--out", default=str(RESULTS / "programs.json"))
    args = parser.parse_args(argv)
    from _common import machine

    epochs = args.epochs or (40 if args.quick else 150)
    python = expimap_python()
    results: dict = {
        "machine": machine(),
        "epochs": epochs,
        "quick": args.quick,
        "seed": args.seed,
    }
    if python is None:
        results["expimap"] = (
            "skipped (no environment with scArches; set GLASSVI_EXPIMAP_PYTHON or create "
            f"{EXPIMAP_CANDIDATES[0].parent.parent})"
        )
        print(f"expiMap: {results['expimap']}")
    if args.go_only:
        # refresh the GO BP figures of an existing result file, keeping the other sections
        previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        with tempfile.TemporaryDirectory() as tmp_name:
            previous["go_bp_memory"] = go_section(Path(tmp_name), args.quick)
        previous["go_bp_machine"] = machine()
        Path(args.out).write_text(json.dumps(previous, indent=2))
        print(f"wrote {args.out}")
        return previous
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        adata = simulated(args.quick)
        sim_path = tmp / "sim.h5ad"
        adata.write_h5ad(sim_path)
        sim = {
            "data": {
                "n_cells": adata.n_obs,
                "n_genes": adata.n_vars,
                "n_programs": adata.varm["programs"].shape[1],
                "n_active": int(np.sum(adata.uns["simulation"]["active_programs"])),
            }
        }
        configs = {
            "ProgramVI (hard)": {"model": {}},
            "ProgramVI (hard, group lasso)": {"model": {"group_lasso": 0.3}},
            "ProgramVI (soft)": {"model": {"mask_mode": "soft", "soft_penalty": 0.5}},
        }
        for name, cfg in configs.items():
            save = tmp / "pv.npz"
            fig = run_programvi(
                sim_path,
                {
                    **cfg,
                    "layer": "counts",
                    "epochs": epochs,
                    "save": str(save),
                    "seed": args.seed,
                },
            )
            res = np.load(save)
            fig.update(score(adata, res["latent"], res["weights"], "soft" in name))
            sim[name] = fig
            print(name, fig, flush=True)
        if python is not None:
            for name, opts in {
                "expiMap (hard)": {"soft": False},
                "expiMap (soft)": {"soft": True, "alpha_l1": 0.5},
            }.items():
                try:
                    res = run_expimap(
                        python, adata, {**opts, "epochs": epochs, "seed": args.seed}, tmp, "sim"
                    )
                except RuntimeError as err:
                    print(f"{name}: failed: {err}")
                    sim[name] = {"error": str(err)[-500:]}
                    continue
                fig = {"epoch_s": round(res["epoch_s"], 4), "peak_rss_gib": res["peak_rss_gib"]}
                fig.update(score(adata, res["latent"], res["weights"], "soft" in name))
                sim[name] = fig
                print(name, fig, flush=True)
        results["simulated"] = sim

        real = {}
        immune = immune_hallmark()
        real_path = tmp / "immune.h5ad"
        immune.write_h5ad(real_path)
        real_epochs = 3 if args.quick else 10
        real["data"] = {
            "n_cells": immune.n_obs,
            "n_genes": immune.n_vars,
            "n_programs": immune.varm["programs"].shape[1],
            "epochs": real_epochs,
        }
        real["ProgramVI (hard)"] = run_programvi(
            real_path, {"epochs": real_epochs, "seed": args.seed}
        )
        print("immune1k ProgramVI", real["ProgramVI (hard)"], flush=True)
        if python is not None:
            try:
                res = run_expimap(
                    python, immune, {"epochs": real_epochs, "seed": args.seed}, tmp, "immune"
                )
                real["expiMap (hard)"] = {
                    "epoch_s": round(res["epoch_s"], 4),
                    "peak_rss_gib": res["peak_rss_gib"],
                }
            except RuntimeError as err:
                real["expiMap (hard)"] = {"error": str(err)[-500:]}
            print("immune1k expiMap", real["expiMap (hard)"], flush=True)
        results["immune1k_hallmark"] = real

        if not args.no_go:
            results["go_bp_memory"] = go_section(tmp, args.quick)
            results["go_bp_machine"] = machine()
        elif Path(args.out).exists():
            # the GO BP figures of an earlier run (``--go-only``) stay, with their machine
            previous = json.loads(Path(args.out).read_text())
            for key in ("go_bp_memory", "go_bp_machine"):
                if key in previous:
                    results[key] = previous[key]

    RESULTS.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        figures = programvi_worker(sys.argv[2], json.loads(sys.argv[3]))
        Path(sys.argv[4]).write_text(json.dumps(figures))
    else:
        main()
