"""Run every glassvi benchmark, each in its own process, and write a markdown summary.

Comparisons (each a script in this folder, writing ``results/<name>.json``):

* ``linear.py``: LinearVI vs scvi-tools LinearSCVI (time per epoch, held-out NLL, memory);
* ``scaling.py``: LinearVI time per epoch and peak memory at growing numbers of cells;
* ``programs.py``: ProgramVI vs expiMap, when the script exists;
* ``explain.py``: post-hoc attributions vs scvi-tools SCANVI, when the script exists.

All figures of one comparison come from one run on one machine; the summary reports ratios
measured within a run, never ratios of times from different runs.

Run: ``python benchmarks/run.py [--quick] [--only linear scaling]``; writes
``benchmarks/results/*.json`` and ``benchmarks/results/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COMPARISONS = ("linear", "scaling", "programs", "explain")


def run_comparison(name: str, quick: bool) -> dict:
    script = HERE / f"{name}.py"
    if not script.exists():
        msg = f"{script.name} not found; skipped"
        print(f"[run] {msg}", flush=True)
        return {"status": "skipped", "reason": msg}
    cmd = [sys.executable, str(script)]
    if quick:
        if "--quick" in script.read_text():
            cmd.append("--quick")
        else:
            print(f"[run] {script.name} has no --quick option; running it in full", flush=True)
    print(f"[run] {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    if proc.returncode != 0:
        print(f"[run] {name} failed (exit {proc.returncode}):\n{tail}", flush=True)
        return {"status": "failed", "returncode": proc.returncode, "seconds": seconds, "log": tail}
    print(f"[run] {name} done in {seconds:.0f} s", flush=True)
    return {"status": "ok", "seconds": seconds}


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, nd=2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def linear_section(res: dict) -> list[str]:
    lines = [
        "## LinearVI vs scvi-tools LinearSCVI",
        "",
        "Same architecture (n_latent 10, n_hidden 128, 1 layer), batch size 128, same epochs and "
        "held-out cells; each model trained in its own process, runs alternated. Time per epoch "
        "is the median over epochs after the first. NLL: mean negative log-likelihood per "
        "held-out cell of the raw counts, decoded from the posterior means, scored with the same "
        "negative binomial for both models (lower is better).",
        "",
        "glassvi trains on CPU with raised glibc allocator thresholds "
        "(`glassvi.train.tune_cpu_allocator`); the column *LinearSCVI, same allocator* trains "
        "LinearSCVI with the same settings, to show how much of the difference they account for.",
        "",
        "| data | cells x genes | density | epochs | time/epoch LinearVI (s) | time/epoch "
        "LinearSCVI (s) | **time ratio** | CPU-time ratio | LinearSCVI, same allocator (s) | "
        "time ratio to it | held-out NLL LinearVI | held-out NLL LinearSCVI | NLL difference | "
        "peak RSS ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["comparisons"]:
        a, b, r = c["models"]["LinearVI"], c["models"]["LinearSCVI"], c["ratios"]
        t = c["models"].get("LinearSCVI_tuned_allocator")
        tuned_s = _fmt(t["median_epoch_wall_s"]) if t else "n/a"
        lines.append(
            f"| {c['dataset']} | {c['n_cells']} x {c['n_genes']} | {c['density']:.2f} | "
            f"{c['epochs']} | {a['median_epoch_wall_s']:.2f} | {b['median_epoch_wall_s']:.2f} | "
            f"**{r['epoch_wall_time']:.2f}** | {r['epoch_cpu_time']:.2f} | {tuned_s} | "
            f"{_fmt(r.get('epoch_wall_time_vs_tuned_allocator'))} | "
            f"{a['heldout_nll_per_cell']:.1f} | {b['heldout_nll_per_cell']:.1f} | "
            f"{c['heldout_nll_difference']:+.1f} | {r['peak_rss']:.2f} |"
        )
    m = res["machine"]
    lines += [
        "",
        f"Machine: {m['cpus']} CPUs, {m['torch_threads']} torch threads, load average at the end "
        f"{m['load_average']}; GPU: {m['gpu'] or 'none'}.",
        "",
    ]
    return lines


def scaling_section(res: dict) -> list[str]:
    lines = [
        "## Scaling with the number of cells (LinearVI)",
        "",
        "Simulated sparse counts; one process per size. Memory is the peak resident memory of "
        "the training process, next to the size of the count matrix as CSR and as a dense "
        "array.",
        "",
        "| cells x genes | storage | nonzeros | time/epoch (s) | s per 1k cells | relative "
        "per-cell time | peak RSS (GiB) | CSR (GiB) | dense (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['n_cells']} x {r['n_genes']} | {'backed h5ad' if r['backed'] else 'in memory'}"
            f" | {r['nnz']:,} | {r['median_epoch_wall_s']:.2f} | {r['epoch_s_per_1k_cells']:.3f}"
            f" | {r['time_per_cell_relative_to_smallest']:.2f} | {r['peak_rss_gib']:.2f} | "
            f"{r['csr_gib']:.2f} | {r['dense_gib']:.2f} |"
        )
    lines += [
        "",
        f"Slope of log(time per epoch) against log(cells): {res['time_log_log_slope']:.2f} "
        "(1 is linear).",
        "",
    ]
    return lines


def generic_section(name: str, res: dict) -> list[str]:
    lines = [f"## {name}", "", "```json", json.dumps(res, indent=1)[:4000], "```", ""]
    return lines


def write_summary(status: dict, quick: bool) -> Path:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if quick else ''}`. "
        "Ratios are measured within one run, on one machine.",
        "",
    ]
    for name in COMPARISONS:
        res = _load(name)
        st = status.get(name, {})
        if st.get("status") in ("skipped", "failed") or res is None:
            reason = st.get("reason") or st.get("status") or "no results"
            lines += [f"## {name}", "", f"Not available: {reason}.", ""]
            continue
        if name == "linear":
            lines += linear_section(res)
        elif name == "scaling":
            lines += scaling_section(res)
        else:
            lines += generic_section(name, res)
    path = RESULTS / "summary.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", nargs="*", choices=COMPARISONS, help="run these only")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    status = {}
    for name in args.only or COMPARISONS:
        status[name] = run_comparison(name, args.quick)
    path = write_summary(status, args.quick)
    print(f"[run] wrote {path}")
    if any(s["status"] == "failed" for s in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
