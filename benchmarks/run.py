"""Run every glassvi benchmark, each in its own process, and write a markdown summary.

Comparisons (each a script in this folder, writing ``results/<name>.json``):

* ``linear.py``: LinearVI and ProgramVI vs scvi-tools LinearSCVI (time per epoch, held-out NLL,
  memory);
* ``scaling.py``: LinearVI time per epoch and peak memory at growing numbers of cells;
* ``programs.py``: ProgramVI vs expiMap (skipped with a message without expiMap's environment);
* ``explain.py``: post-hoc attributions vs scvi-tools SCANVI;
* ``programs_real.py``: ProgramVI's marker-program activities vs pyUCell, decoupler ULM/MLM and
  scanpy ``score_genes`` on real cells with known types (hard and soft masks, three seeds), and
  activity correlation with the truth on the simulator;
* ``multiome.py``: LinearVI/ProgramVI vs scvi-tools MultiVI time per epoch on real SNARE-seq
  RNA+ATAC, time per non-zero entry of each modality, marker-program AUROC vs score_genes,
  and (``--parts simulator``) activity correlation with the truth on simulated RNA+ATAC;
* ``evidence.py``: calibration of ProgramVI's program evidence (false calls, recall, cost).
* ``markers.py``: marker recovery and seed agreement of label attributions vs Wilcoxon DE and
  SCANVI integrated gradients.

All figures of one comparison come from one run on one machine; the summary reports ratios
measured within a run, never ratios of times from different runs.

Run: ``python benchmarks/run.py [--quick] [--only linear scaling]``; writes
``benchmarks/results/*.json`` and ``benchmarks/results/summary.md`` (``benchmarks/results/quick/``
with ``--quick``). The full run takes about 20 minutes on 2 CPU cores, ``--quick`` about 5.
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
COMPARISONS = (
    "linear",
    "scaling",
    "programs",
    "explain",
    "programs_real",
    "multiome",
    "evidence",
    "markers",
)


def run_comparison(name: str, quick: bool, results: Path) -> dict:
    script = HERE / f"{name}.py"
    if not script.exists():
        msg = f"{script.name} not found; skipped"
        print(f"[run] {msg}", flush=True)
        return {"status": "skipped", "reason": msg}
    cmd = [sys.executable, str(script), "--out", str(results / f"{name}.json")]
    if quick:
        cmd.append("--quick")
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


def _load(name: str, results: Path = RESULTS) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, nd=2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def linear_section(res: dict) -> list[str]:
    lines = [
        "## LinearVI and ProgramVI vs scvi-tools LinearSCVI",
        "",
        "LinearVI and LinearSCVI: same architecture (n_latent 10, n_hidden 128, 1 layer), batch "
        "size 128, same epochs and held-out cells. ProgramVI: same encoder and batch size, one "
        "latent unit per program (the simulation's planted programs; Hallmark for immune1k). "
        "Each model trains in its own process, in rotating order. Time per epoch is the median "
        "over epochs after the first. glassvi trains on CPU with raised glibc allocator "
        "thresholds (`glassvi.train.tune_cpu_allocator`); *LinearSCVI, same allocator* trains "
        "LinearSCVI with the same settings, to show how much of the difference they account for.",
        "",
        "| data | cells x genes | density | epochs | LinearVI (s) | LinearSCVI (s) | **LinearVI "
        "/ LinearSCVI** | CPU-time ratio | LinearSCVI, same allocator (s) | LinearVI / it | "
        "ProgramVI (s) | programs | **ProgramVI / LinearSCVI** |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["comparisons"]:
        m, r = c["models"], c["ratios"]
        a, b = m["LinearVI"], m["LinearSCVI"]
        t, p = m.get("LinearSCVI_tuned_allocator"), m.get("ProgramVI")
        lines.append(
            f"| {c['dataset']} | {c['n_cells']} x {c['n_genes']} | {c['density']:.2f} | "
            f"{c['epochs']} | {a['median_epoch_wall_s']:.2f} | {b['median_epoch_wall_s']:.2f} | "
            f"**{r['epoch_wall_time']:.2f}** | {r['epoch_cpu_time']:.2f} | "
            f"{_fmt(t['median_epoch_wall_s'] if t else None)} | "
            f"{_fmt(r.get('epoch_wall_time_vs_tuned_allocator'))} | "
            f"{_fmt(p['median_epoch_wall_s'] if p else None)} | {c.get('n_programs', 'n/a')} | "
            f"**{_fmt(r.get('programvi_epoch_wall_time'))}** |"
        )
    lines += [
        "",
        "Held-out reconstruction: mean negative log-likelihood per held-out cell of the raw "
        "counts, decoded from the posterior means and scored with the same negative binomial "
        "for every model (lower is better); peak resident memory of the training process.",
        "",
        "| data | NLL LinearVI | NLL LinearSCVI | NLL difference | NLL ProgramVI | peak RSS "
        "LinearVI (GiB) | peak RSS LinearSCVI (GiB) | peak RSS ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in res["comparisons"]:
        m, r = c["models"], c["ratios"]
        a, b, p = m["LinearVI"], m["LinearSCVI"], m.get("ProgramVI")
        lines.append(
            f"| {c['dataset']} | {a['heldout_nll_per_cell']:.1f} | "
            f"{b['heldout_nll_per_cell']:.1f} | {c['heldout_nll_difference']:+.1f} | "
            f"{_fmt(p['heldout_nll_per_cell'] if p else None, 1)} | "
            f"{a['peak_rss_train_gib']:.2f} | {b['peak_rss_train_gib']:.2f} | "
            f"{r['peak_rss']:.2f} |"
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


def _whole_epoch_s(run: dict, epochs: int) -> float:
    """Seconds per epoch of the whole training call (``train_s`` over the epochs) where it was
    recorded, else the recorded ``epoch_s`` (the expiMap worker's is already measured so)."""
    return run["train_s"] / epochs if "train_s" in run else run["epoch_s"]


def programs_section(res: dict) -> list[str]:
    lines = [
        "## ProgramVI vs expiMap",
        "",
        "Simulated counts with planted programs (some inactive decoys); both models get the "
        "same noisy mask (about 30% of members dropped, 10% wrong genes added, decoys kept) and "
        f"train {res['epochs']} epochs, each in its own process. AUROC: active vs decoy "
        "programs, scored by the variance of the activity across cells; activity r: mean "
        "Pearson correlation of estimated and true activities; member AUPRC: recovery of the "
        "dropped members (soft masks). Time per epoch: the whole training call over the number "
        "of epochs, for both models (how the expiMap worker measures it; ProgramVI's includes "
        "its set-up before the first epoch); time ratio: relative to expiMap with the same mask "
        "mode. ProgramVI trains with its defaults (hidden decoy programs for the "
        "evidence, two de novo units, the activity anchor on the encoder's output layer); "
        f"{res.get('machine', {}).get('torch_threads', '?')} torch thread(s).",
        "",
    ]
    sim = res.get("simulated")
    if sim:
        d = sim["data"]
        lines += [
            f"Simulated data: {d['n_cells']} cells x {d['n_genes']} genes, {d['n_programs']} "
            f"programs of which {d['n_active']} are active.",
            "",
            "| model | time/epoch (s) | time ratio to expiMap | peak RSS (GiB) | active-vs-decoy "
            "AUROC | activity r | member AUPRC (chance) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in sim.items():
            if name == "data" or not isinstance(r, dict) or "epoch_s" not in r:
                continue
            peer = sim.get("expiMap (soft)" if "soft" in name else "expiMap (hard)")
            ratio = (
                _fmt(_whole_epoch_s(r, res["epochs"]) / peer["epoch_s"])
                if peer and "epoch_s" in peer and not name.startswith("expiMap")
                else "–"
            )
            auprc = (
                f"{r['member_auprc']:.3f} ({r['member_auprc_chance']:.3f})"
                if "member_auprc" in r
                else "–"
            )
            lines.append(
                f"| {name} | {_whole_epoch_s(r, res['epochs']):.2f} | {ratio} | "
                f"{r['peak_rss_gib']:.2f} | "
                f"{r['auroc_variance']:.2f} | {r['activity_corr']:.2f} | {auprc} |"
            )
        if "expiMap (hard)" not in sim:
            lines += ["", f"expiMap: {res.get('expimap', 'not run')}."]
        lines.append("")
    real = res.get("immune1k_hallmark")
    if real:
        d = real["data"]
        lines += [
            f"Real data: immune1k ({d['n_cells']} cells x {d['n_genes']} genes) with "
            f"{d['n_programs']} Hallmark programs, {d['epochs']} epochs.",
            "",
            "| model | time/epoch (s) | peak RSS (GiB) |",
            "|---|---|---|",
        ]
        for name, r in real.items():
            if isinstance(r, dict) and "epoch_s" in r:
                lines.append(
                    f"| {name} | {_whole_epoch_s(r, d['epochs']):.2f} | {r['peak_rss_gib']:.2f} |"
                )
        a, b = real.get("ProgramVI (hard)"), real.get("expiMap (hard)")
        if a and b and "epoch_s" in b:
            ratio = _whole_epoch_s(a, d["epochs"]) / b["epoch_s"]
            lines += ["", f"Time ratio ProgramVI / expiMap: **{ratio:.2f}**."]
        lines.append("")
    runs = res.get("go_bp_memory", {})
    go = runs.get("ProgramVI (hard, indexed)")
    if go:
        lines += [
            f"GO Biological Process: {go['n_programs']:,} programs, {go['n_memberships']:,} "
            f"memberships, {go['n_cells']:,} cells x {go['n_genes']:,} genes: "
            f"{go['epoch_s']:.2f} s per epoch, peak RSS {go['peak_rss_gib']:.2f} GiB.",
            "",
        ]
        others = [(n, r) for n, r in runs.items() if "train_s" in r]
        if others:
            lines += [
                "| GO BP run | s / epoch | CPU s / epoch | train() s | peak RSS (GiB) |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {n} | {r['epoch_s']:.2f} | {r['epoch_cpu_s']:.2f} | {r['train_s']:.1f} | "
                f"{r['peak_rss_gib']:.2f} |"
                for n, r in others
            ]
            lines.append("")
    return lines


def explain_section(res: dict) -> list[str]:
    ig, shap = res["integrated_gradients"], res["shap"]
    lines = [
        "## explain vs scvi-tools SCANVI",
        "",
        f"{res['data']}; same encoder size; {res['machine']}.",
        "",
        "| attribution | SCANVI | glassvi | **speed-up** |",
        "|---|---|---|---|",
        f"| integrated gradients, {ig['n_cells']} cells, {ig['n_steps']} steps (cells/s, "
        f"wall clock) | {ig['scanvi_cells_per_s']:.0f} | {ig['glassvi_cells_per_s']:.0f} | "
        f"**{ig['speedup']:.2f}** |",
    ]
    if "cpu_speedup" in ig:
        lines.append(
            f"| integrated gradients, same calls (CPU s of this process) | "
            f"{ig['scanvi_cpu_seconds']:.2f} | {ig['glassvi_cpu_seconds']:.2f} | "
            f"**{ig['cpu_speedup']:.2f}** |"
        )
    lines += [
        f"| SHAP (s per cell) | {shap['scanvi_seconds_per_cell']:.2f} "
        f"(KernelExplainer, {shap['scanvi_background_cells']} background cells) | "
        f"{shap['glassvi_seconds_per_cell']:.3f} (GradientExplainer, "
        f"{shap['glassvi_background_cells']} background cells) | **{shap['speedup']:.0f}** |",
        "",
    ]
    if "cpu_speedup" in ig:
        lines += [
            f"Integrated gradients: medians of {ig['repeats']} repeats, the two methods "
            "alternating within each repeat; speed-up = SCANVI's time / glassvi's time. "
            f"glassvi: {ig['glassvi_settings']}; SCANVI: {ig['scanvi_settings']}.",
            "",
        ]
    lines += [
        f"SCANVI's SHAP with its default background: {shap['scanvi_full_background']}. "
        f"Integrated-gradients completeness of glassvi: mean |delta| "
        f"{ig['glassvi_convergence']['mean_abs_delta']:.3f}, relative "
        f"{ig['glassvi_convergence']['relative_delta']:.3f}.",
        "",
    ]
    return lines


def programs_real_section(res: dict) -> list[str]:
    # results that record how many programs the stability compared left out the de novo units
    blocks = [b for n, b in res.items() if n in ("pbmc68k", "immune1k", "cortex") and b]
    stabs = [m.get("stability") for b in blocks for m in b["methods"].values()]
    named_only = any(s and "n_programs" in s for s in stabs)
    over = (
        "the annotated programs (de novo units, which are not the same unit across seeds, "
        "left out)"
        if named_only
        else "all latent units (de novo units included)"
    )
    lines = [
        "## Program activities vs gene-set scoring on real cell types",
        "",
        "One marker program per annotated cell type (our own lists, genes present in the data) "
        "mixed into the 50 Hallmark sets. Score: one-vs-rest AUROC of each type's marker program "
        "for that type, averaged over types. ProgramVI trains with "
        f"{'default epochs' if res['epochs'] == 'default' else str(res['epochs']) + ' epochs'} "
        f"in seeds {res['seeds']}; its row gives the mean over seeds, the worst seed's mean and "
        "the lowest single AUROC of any seed. Flipped: marker programs with AUROC < 0.5 in any "
        "seed. Stability: median correlation of the marker programs' activities across seeds "
        f"(`glassvi.metrics.program_stability`), and the mean over {over} of the fraction of "
        "seed pairs whose activities correlate positively (1: no program ever flips). "
        "Sizes (first column): immune1k with its 2,000 most variable genes, the cortex RNA "
        "as a stratified subsample of the SNARE-seq cells, so that every model trains with "
        "default epochs on the shared machine.",
        "",
        "| data | method | mean AUROC | worst seed | lowest AUROC | flipped | stability (marker "
        "r, sign agreement) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("pbmc68k", "immune1k", "cortex"):
        block = res.get(name)
        if not block:
            continue
        d = block["data"]
        label = f"{name} ({d['n_cells']} x {d['n_genes']}, {len(d['types'])} types)"
        for method, r in block["methods"].items():
            worst = r.get("worst_seed_mean_auroc")
            stab = r.get("stability")
            lines.append(
                f"| {label} | {method} | {r['mean_auroc']:.3f} | {_fmt(worst, 3)} | "
                f"{r['min_auroc']:.3f} | {', '.join(r['flipped']) or '-'} | "
                + (f"{stab['median_marker']:.2f}, {stab['sign_agreement']:.2f}" if stab else "-")
                + " |"
            )
    verdicts = []
    for name in ("pbmc68k", "immune1k", "cortex"):
        methods = (res.get(name) or {}).get("methods", {})
        peers = {m: r["mean_auroc"] for m, r in methods.items() if not m.startswith("ProgramVI")}
        if not peers:
            continue
        best = max(peers, key=peers.get)
        for m, r in methods.items():
            if m.startswith("ProgramVI") and "worst_seed_mean_auroc" in r:
                ok = r["worst_seed_mean_auroc"] >= peers[best]
                verdicts.append(
                    f"{name}, {m}: worst seed {r['worst_seed_mean_auroc']:.3f} vs best scorer "
                    f"{best} {peers[best]:.3f}: {'at least as good' if ok else 'below'}"
                )
    if verdicts:
        lines += ["", "Every seed against the best gene-set scorer:", ""]
        lines += [f"- {v}" for v in verdicts]
    sim = res.get("simulated")
    if sim:
        d = sim["data"]
        lines += [
            "",
            f"Simulated ({d['n_cells']} cells x {d['n_genes']} genes, {d['n_active']} active "
            "programs, true mask): mean Pearson correlation of the activity with the true "
            "activity over the active programs (lowest in brackets).",
            "",
            "| method | activity r | per seed |",
            "|---|---|---|",
        ]
        for method, r in sim["methods"].items():
            seeds = " / ".join(f"{v:.3f}" for v in r.get("per_seed_mean_r", [])) or "-"
            lines.append(f"| {method} | {r['mean_r']:.3f} ({r['min_r']:.3f}) | {seeds} |")
    return [*lines, ""]


def multiome_section(res: dict) -> list[str]:
    lines = ["## Multiome: LinearVI and ProgramVI vs MultiVI on real SNARE-seq cortex", ""]
    sp = res.get("speed")
    if sp is None or "median_epoch_cpu_s" not in sp:
        lines += ["Speed not measured in this run.", ""]
    else:
        cpu, wall = sp["median_epoch_cpu_s"], sp["median_epoch_wall_s"]
        lines += [
            f"Data: {res['data']}"
            + (f", {res['n_cells']} cells" if res.get("n_cells") else "")
            + f"; batch size {sp['batch_size']}, {sp['epochs']} epochs per model in each of "
            f"{sp['repeats']} interleaved repeats in one process; time per epoch = median over "
            "the epochs after the first, process CPU time (wall time in brackets; the machine "
            "is shared). Ratios are taken within each repeat: median (maximum) over repeats.",
            "",
            "| model | CPU s / epoch (wall) | vs MultiVI, CPU | vs MultiVI, wall |",
            "|---|---|---|---|",
        ]
        for name in cpu:
            r = sp["ratios"].get(f"{name} / MultiVI")
            cells = ["", ""]
            if r is not None:
                cells = [
                    f"**{r[c]['median']:.2f}** ({r[c]['max']:.2f})" for c in ("cpu_s", "wall_s")
                ]
            lines.append(
                f"| {name} | {cpu[name]:.2f} ({wall[name]:.2f}) | {cells[0]} | {cells[1]} |"
            )
        nnz = sp["nnz"]
        lines += [
            "",
            f"Time per non-zero entry: one-modality models of the same architecture, CPU time "
            f"per epoch / non-zeros (RNA {nnz['rna']:,}, ATAC {nnz['atac']:,} non-zeros).",
            "",
            "| architecture | RNA ns / non-zero | ATAC ns / non-zero | **ATAC / RNA**, CPU | "
            "ATAC / RNA, wall |",
            "|---|---|---|---|---|",
        ]
        for arch, per in sp["per_nonzero"].items():
            r = per["atac_vs_rna_per_nonzero"]
            lines.append(
                f"| {arch} | {per['rna']['ns_per_nonzero_cpu']:.0f} | "
                f"{per['atac']['ns_per_nonzero_cpu']:.0f} | **{r['cpu_s']['median']:.2f}** "
                f"({r['cpu_s']['max']:.2f}) | {r['wall_s']['median']:.2f} |"
            )
        lines.append("")
    if res.get("sampling") and "mean" in res["sampling"]:
        sa = res["sampling"]
        lines += [
            "ATAC training likelihood (sample of zero features) and the lazy first-layer "
            "update's second moment, side by side in one run: LinearVI and ProgramVI on ATAC "
            f"alone ({sa['epochs']} epochs on 90% of the cells; exact negative log-likelihood "
            "per held-out cell, posterior mean), ProgramVI marker-program AUROC on ATAC alone "
            f"(dev lists) and on RNA+ATAC ({sa['multiome_epochs']} epochs, held-out lists). "
            "Per seed (0 / 1 / 2); the first row is the previous default, the others give "
            "their difference from it.",
            "",
            "| setting | LinearVI ATAC NLL | ProgramVI ATAC NLL | ProgramVI ATAC AUROC | "
            "ProgramVI RNA+ATAC AUROC |",
            "|---|---|---|---|---|",
        ]
        keys = (
            ("LinearVI ATAC heldout_nll_per_cell", "{:.2f}", "{:+.2f}"),
            ("ProgramVI ATAC heldout_nll_per_cell", "{:.2f}", "{:+.2f}"),
            ("ProgramVI ATAC auroc_dev", "{:.3f}", "{:+.3f}"),
            ("ProgramVI RNA+ATAC auroc_heldout", "{:.3f}", "{:+.3f}"),
        )
        labels = list(sa["mean"])
        for label in labels:
            runs = [r for r in sa["runs"] if r["config"] == label]
            diffs = sa["minus_previous_default"].get(label)
            cells = []
            for key, plain, signed in keys:
                if diffs is None:
                    cells.append(" / ".join(plain.format(r[key]) for r in runs))
                else:
                    cells.append(" / ".join(signed.format(d) for d in diffs[key]))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if res.get("quality"):
        methods = [
            ("score_genes", "score_genes (RNA)"),
            ("ProgramVI RNA", "ProgramVI RNA"),
            ("ProgramVI RNA+ATAC", "**ProgramVI RNA+ATAC**"),
            ("ProgramVI RNA+ATAC weight 0", "ProgramVI RNA+ATAC, ATAC weight 0"),
            ("ProgramVI RNA+ATAC joint", "ProgramVI RNA+ATAC plain joint"),
            ("ProgramVI ATAC", "ProgramVI ATAC"),
        ]
        present = [
            (key, title)
            for key, title in methods
            if any(key in q["mean"] for q in res["quality"].values())
        ]
        epochs = {q.get("epochs") for q in res["quality"].values()} - {None}
        lines += [
            "Marker-program AUROC (mean over cell-type programs; mean and minimum over seeds"
            + (f"; {', '.join(map(str, sorted(epochs)))} epochs" if epochs else "")
            + "). *dev*: the marker lists the defaults were chosen on; *heldout*: disjoint "
            "lists. RNA+ATAC has default settings.",
            "",
            "| markers | " + " | ".join(title for _, title in present) + " | RNA+ATAC − RNA "
            "per seed |",
            "|---|" + "---|" * (len(present) + 1),
        ]
        for markers, q in res["quality"].items():
            mean, low = q["mean"], q["min"]
            cells = [f"{mean[m]:.3f} (min {low[m]:.3f})" if m in mean else "–" for m, _ in present]
            diffs = q.get("multiome_minus_rna")
            cells.append(" / ".join(f"{d:+.3f}" for d in diffs) if diffs else "–")
            lines.append(f"| {markers} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Per seed (each seed its own subsample and training seed), mean AUROC and the "
            "programs of the fewest cells:",
            "",
            "| markers | seed | RNA | RNA+ATAC | RNA+ATAC − RNA | ATAC | Microglia RNA → "
            "RNA+ATAC (cells) | Endo RNA → RNA+ATAC (cells) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for markers, q in res["quality"].items():
            for r in q["runs"]:
                rna, multi = r.get("ProgramVI RNA"), r.get("ProgramVI RNA+ATAC")
                if rna is None or multi is None:
                    continue
                atac = r.get("ProgramVI ATAC")
                small = []
                for name in ("Microglia", "Endo"):
                    a, b = rna["per_program"].get(name), multi["per_program"].get(name)
                    n = r.get("n_cells", {}).get(name, "?")
                    small.append("–" if a is None else f"{a:.2f} → {b:.2f} ({n})")
                lines.append(
                    f"| {markers} | {r['seed']} | {rna['mean']:.3f} | {multi['mean']:.3f} | "
                    f"{multi['mean'] - rna['mean']:+.3f} | "
                    + ("–" if atac is None else f"{atac['mean']:.3f}")
                    + f" | {small[0]} | {small[1]} |"
                )
        lines.append("")
    sim = res.get("simulator")
    if sim and sim.get("regimes"):
        lines += simulator_table(sim)
    return lines


def simulator_table(sim: dict) -> list[str]:
    """The multiome simulator part: activity correlation with the truth per RNA regime."""
    size = sim["size"]
    first = next(iter(sim["regimes"].values()))
    methods = list(first["mean_r"])
    lines = [
        f"Simulator (`glassvi.data.simulate`, multiome): {size['n_cells']:,} cells, "
        f"{size['n_genes']} genes, {size['n_peaks']:,} peaks, {size['n_programs']} programs; "
        f"ATAC {sim['atac_library_size']:g} insertions in peaks per cell on average; "
        f"{sim['epochs']} epochs. Pearson r of each active program's activity with the true "
        "activity, averaged over programs: mean (minimum) over seeds; ProgramVI with default "
        "settings unless named; the gene-set scorers read the RNA. The last column is "
        "ProgramVI RNA+ATAC − RNA, paired per seed (same data and training seed).",
        "",
        "| RNA regime (mean UMIs) | " + " | ".join(methods) + " | RNA+ATAC − RNA per seed |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    for regime, q in sim["regimes"].items():
        cells = [
            f"{q['mean_r'][m]:.3f} ({q['min_seed_mean_r'][m]:.3f})" if m in q["mean_r"] else "–"
            for m in methods
        ]
        diffs = q.get("minus_rna", {}).get("ProgramVI RNA+ATAC")
        cells.append(" / ".join(f"{d:+.3f}" for d in diffs) if diffs else "–")
        lines.append(f"| {regime} ({q['library_size']:g}) | " + " | ".join(cells) + " |")
    return [*lines, ""]


def evidence_section(res: dict) -> list[str]:
    def mean(values) -> str:
        values = [v for v in values if v == v]
        return "n/a" if not values else f"{sum(values) / len(values):.2f}"

    sim, lines = res["simulation"], []
    lines += [
        "## Program evidence calibration",
        "",
        f"ProgramVI with default settings; `program_evidence(fdr={res['fdr']})`; seeds "
        f"{res['seeds']}. Simulator: planted programs with noisy masks (a quarter of the members "
        "dropped, as many wrong genes added), silent Hallmark sets and random gene sets. Real "
        "data: marker programs of our own, the Hallmark sets and a program of one strong marker "
        f"plus eight barely expressed genes. {sim[0]['n_decoys']} decoy programs (the default)."
        + (
            " Sizes of `evidence.py --quick`: simulator 600 cells x 1,500 genes, 60 epochs; "
            "pbmc68k 100 epochs; immune1k 40 epochs."
            if res.get("quick")
            else ""
        ),
        "",
        "| data | seed | recall of used / markers called | false calls on unused (p <= 0.1) "
        "| false calls among decoys | decoys' median coherence "
        "| single-gene program (called, effective genes) |",
        "|---|---|---|---|---|---|---|",
    ]

    def decoys(r) -> str:
        value = r.get("decoy_coherence_median")
        return "n/a" if value is None else f"{value:.3f}"

    for r in sim:
        lines.append(
            f"| simulator | {r['seed']} | {r['recall_used']:.2f} | "
            f"{r['false_calls_unused']:.2f} ({r['unused_pvalue_le_0.1']:.2f}) | "
            f"{r['false_calls_decoys']:.2f} | {decoys(r)} | |"
        )
    for name in ("pbmc68k", "immune1k"):
        for r in res[name]:
            lines.append(
                f"| {name} | {r['seed']} | {r['markers_called']} of {r['n_markers']} | "
                f"Hallmark called: {r['hallmark_called']} of {r['n_hallmark']} | "
                f"{r['false_calls_decoys']:.2f} | {decoys(r)} | {r['single_gene_called']}, "
                f"{r['single_gene_effective_genes']:.1f} |"
            )
    cost = res["cost"]
    lines += [
        "",
        "Cost: training with the decoys takes "
        f"{mean(cost['train_with_decoys_over_without'])} x the time without them (mean over "
        f"runs), and the evidence {mean(cost['evidence_over_train'])} x the training time. "
        "Marker-program AUROC with / without decoys: "
        + ", ".join(
            f"{name} {mean([r['marker_auroc'] for r in res[name]])} / "
            f"{mean([r['marker_auroc_no_decoys'] for r in res[name]])}"
            for name in ("pbmc68k", "immune1k")
        )
        + ".",
        "",
    ]
    return lines


def markers_section(res: dict) -> list[str]:
    lines = [
        "## Label attributions: markers and seed agreement",
        "",
        f"Held-out cells; LinearVI and SCANVI trained on the same cells with labels for "
        f"{res['epochs']} epochs each (same encoder size, each model's own training defaults, "
        f"no early stopping), seeds {res['seeds']}; integrated gradients with "
        f"{res['n_steps']} steps; markers of "
        f"our own among the top {res['top']} signed scores per type (types with at least 2 "
        "hits, mean hits per type), and the top-50 Jaccard between seeds (mean over types and "
        f"pairs of seeds). Threshold: at most one type with fewer than 2 markers and at least "
        f"3.5 mean hits. {res['machine']}.",
        "",
        "| data | method | types with >= 2 markers, per seed | mean hits, per seed | "
        "**seed top-50 Jaccard** | seed top-50 rank correlation | explain CPU s, per seed | "
        "training CPU s, per seed | threshold met in every seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, d in res["data"].items():
        for method, m in d["methods"].items():
            runs = m["per_seed"]
            types = ", ".join(f"{r['types_with_2']}/{r['n_types']}" for r in runs)
            hits = ", ".join(f"{r['mean_hits']:.2f}" for r in runs)
            jac = m.get("seed_topk_jaccard")
            secs = ", ".join(f"{t:.1f}" for t in m.get("explain_seconds", []))
            train = ", ".join(f"{t:.0f}" for t in m.get("train_seconds", [])) or "–"
            jac_text = f"**{jac:.2f}**" if jac is not None else "1 (no seed)"
            rho = m.get("seed_topk_rank_correlation")
            rho_text = f"{rho:.2f}" if rho is not None else "1 (no seed)"
            passes = m.get("passes_every_seed")
            passes_text = "n/a" if passes is None else ("yes" if passes else "**no**")
            lines.append(
                f"| {data} | {method} | {types} | {hits} | {jac_text} | {rho_text} | {secs} "
                f"| {train} | {passes_text} |"
            )
    return [*lines, ""]


def generic_section(name: str, res: dict) -> list[str]:
    lines = [f"## {name}", "", "```json", json.dumps(res, indent=1)[:4000], "```", ""]
    return lines


def write_summary(status: dict, quick: bool, results: Path = RESULTS) -> Path:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if quick else ''}`. "
        "Ratios are measured within one run, on one machine.",
        "",
    ]
    for name in COMPARISONS:
        res = _load(name, results)
        st = status.get(name, {})
        if st.get("status") in ("skipped", "failed") or res is None:
            reason = st.get("reason") or st.get("status") or "no results"
            lines += [f"## {name}", "", f"Not available: {reason}.", ""]
            continue
        if name == "linear":
            lines += linear_section(res)
        elif name == "scaling":
            lines += scaling_section(res)
        elif name == "programs":
            lines += programs_section(res)
        elif name == "explain":
            lines += explain_section(res)
        elif name == "programs_real":
            lines += programs_real_section(res)
        elif name == "multiome":
            lines += multiome_section(res)
        elif name == "evidence":
            lines += evidence_section(res)
        elif name == "markers":
            lines += markers_section(res)
        else:
            lines += generic_section(name, res)
    path = results / "summary.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", nargs="*", choices=COMPARISONS, help="run these only")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder of the results (default: results/, or results/quick/ with --quick, so "
        "that a quick run never overwrites the full results)",
    )
    args = parser.parse_args()
    results = args.results or (RESULTS / "quick" if args.quick else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    status = {}
    for name in args.only or COMPARISONS:
        status[name] = run_comparison(name, args.quick, results)
    path = write_summary(status, args.quick, results)
    print(f"[run] wrote {path}")
    if any(s["status"] == "failed" for s in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
