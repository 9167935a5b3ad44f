"""Scaling of LinearVI training with the number of cells: time per epoch and peak memory.

Simulated sparse counts (``glassvi.data.simulate``) at 10k, 50k and 200k cells x 5,000 genes
(``--quick``: 2k, 5k and 20k cells x 1,000 genes) are written to ``.h5ad``; each size is then
trained in its own process, once with the matrix in memory (kept sparse) and, for the largest
size, once backed on disk (``anndata.read_h5ad(path, backed="r")``). Reported per run: seconds
per epoch (and per 1,000 cells), peak resident memory of the process, and the size of the matrix
as CSR and as a dense array, so that memory can be compared with nonzeros and with cells x genes.

Run: ``python benchmarks/scaling.py [--quick]``; writes ``benchmarks/results/scaling.json``.
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

ARCH = {"n_latent": 10, "n_hidden": 128, "n_layers": 1}


def make(args) -> None:
    import anndata as ad

    import glassvi

    start = time.perf_counter()
    sim = glassvi.data.simulate(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        library_size=args.library_size,
        n_batches=2,
        seed=0,
    )
    seconds = time.perf_counter() - start
    from _common import max_rss_bytes

    X = sim.X
    out = ad.AnnData(X, obs=sim.obs[["batch"]].copy())
    out.write_h5ad(args.data)
    info = {
        "simulate_s": seconds,
        "simulate_max_rss_bytes": int(max_rss_bytes()),
        "nnz": int(X.nnz),
        "csr_bytes": int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes),
        "dense_bytes": int(X.shape[0] * X.shape[1] * 4),
    }
    Path(args.out).write_text(json.dumps(info))


def worker(args) -> None:
    import anndata as ad
    import scvi
    from _common import EpochTimer, PeakRSS, max_rss_bytes

    import glassvi

    scvi.settings.seed = 0
    adata = ad.read_h5ad(args.data, backed="r" if args.backed else None)
    glassvi.model.LinearVI.setup_anndata(adata, batch_key="batch")
    model = glassvi.model.LinearVI(adata, **ARCH)
    timer = EpochTimer()
    with PeakRSS() as mem:
        model.train(
            max_epochs=args.epochs,
            batch_size=128,
            accelerator="cpu",
            enable_progress_bar=False,
            callbacks=[timer],
        )
    elbo = model.history["elbo_train"].to_numpy(dtype=float).ravel()
    out = {
        **timer.summary(),
        "rss_before_train_bytes": int(mem.start),
        "peak_rss_train_bytes": int(mem.peak),
        "max_rss_bytes": int(max_rss_bytes()),
        "final_elbo": float(elbo[-1]),
    }
    Path(args.out).write_text(json.dumps(out))


def _run(argv: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--out", out], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scaling step {argv[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data")
    parser.add_argument("--n-cells", type=int)
    parser.add_argument("--n-genes", type=int)
    parser.add_argument("--library-size", type=float, default=1500.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = parser.parse_args()
    if args.make:
        make(args)
        return
    if args.worker:
        worker(args)
        return
    from _common import machine

    start = time.perf_counter()
    sizes, n_genes = (
        ([2000, 5000, 20_000], 1000) if args.quick else ([10_000, 50_000, 200_000], 5000)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"sim_{n}.h5ad")
            print(f"[scaling] simulating {n} cells x {n_genes} genes", flush=True)
            data = _run(
                [
                    "--make",
                    "--data",
                    path,
                    "--n-cells",
                    str(n),
                    "--n-genes",
                    str(n_genes),
                    "--library-size",
                    str(args.library_size),
                ]
            )
            modes = [False, True] if n == sizes[-1] else [False]
            for backed in modes:
                print(
                    f"[scaling] training on {n} cells ({'backed' if backed else 'in memory'})",
                    flush=True,
                )
                argv = ["--worker", "--data", path, "--epochs", str(args.epochs)]
                run = _run(argv + (["--backed"] if backed else []))
                rows.append({"n_cells": n, "n_genes": n_genes, "backed": backed, **data, **run})
            Path(path).unlink()
    base = rows[0]
    for row in rows:
        row["epoch_s_per_1k_cells"] = row["median_epoch_wall_s"] / row["n_cells"] * 1000
        row["time_per_cell_relative_to_smallest"] = (
            row["epoch_s_per_1k_cells"] / base["epoch_s_per_1k_cells"]
        )
        row["peak_rss_gib"] = row["peak_rss_train_bytes"] / 2**30
        row["csr_gib"] = row["csr_bytes"] / 2**30
        row["dense_gib"] = row["dense_bytes"] / 2**30
    in_memory = [r for r in rows if not r["backed"]]
    n = np.array([r["n_cells"] for r in in_memory], dtype=float)
    t = np.array([r["median_epoch_wall_s"] for r in in_memory])
    slope = float(np.polyfit(np.log(n), np.log(t), 1)[0])
    result = {
        "benchmark": "scaling",
        "quick": args.quick,
        "library_size": args.library_size,
        "rows": rows,
        "time_log_log_slope": slope,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for r in rows:
        print(
            f"[scaling] {r['n_cells']} cells{' (backed)' if r['backed'] else ''}: "
            f"{r['median_epoch_wall_s']:.2f} s/epoch, peak RSS {r['peak_rss_gib']:.2f} GiB "
            f"(CSR {r['csr_gib']:.2f}, dense {r['dense_gib']:.2f} GiB)"
        )
    print(f"[scaling] log-log slope of time vs cells: {slope:.2f}")


if __name__ == "__main__":
    main()
