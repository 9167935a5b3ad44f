"""Real multiome benchmark: speed vs scvi-tools MultiVI and marker-program AUROC vs score_genes.

Data: SNARE-seq adult mouse cortex (Chen, Lake & Zhang 2019), ``../shared/data/
snareseq_cortex_dev.h5mu`` (RNA 1,677 genes, ATAC 25,734 regions linked to genes in
``atac.var["linked_genes"]``); ``--quick`` uses the reduced copy bundled with glassvi
(:func:`glassvi.data.snareseq_cortex`).

Speed: LinearVI and ProgramVI on RNA+ATAC against MultiVI on the same cells, batch size 128,
every model in the same process, interleaved (each repeat trains every model once, in an
order rotated between repeats); time per epoch is the median over epochs after the first, in
process CPU time (``time.process_time``, less sensitive to other processes on a shared
machine) and wall time. Ratios are taken within a repeat. Time per non-zero entry: LinearVI
and ProgramVI on RNA alone and on ATAC alone (same architecture and settings), time per epoch
divided by the number of non-zero entries of that modality; the ATAC / RNA ratio of these is
1 when the sparse ATAC path costs no more per non-zero than the RNA path.

Quality: one program per cortical cell type from marker lists ("dev": the lists the defaults
were chosen on; "heldout": disjoint lists), peak programs through the linked genes; the AUROC of
each program's activity for its cell type(s), averaged over programs (those whose cell types have
at least 3 cells), for ProgramVI on RNA, RNA+ATAC (defaults) and ATAC (``--quality-models``
adds RNA+ATAC with either encoder, ``joint`` or ``experts``, and with ATAC weight 0, ATAC
informing the encoder's input only), and for scanpy's ``score_genes`` on normalised RNA;
several seeds (seed = subsample and training seed). The check is per run, so the per-seed
difference RNA+ATAC - RNA is reported too.

Sampling: the training likelihood's sample of zero features (10% drawn uniformly, the
previous default, or 3% drawn by open rate, the default) and the lazy first-layer update's
second moment (element-wise, the previous default, or one per row, the default), side by side:
exact held-out negative log-likelihood per cell of LinearVI and ProgramVI on ATAC alone,
ProgramVI's marker-program AUROC on ATAC alone and on RNA+ATAC (held-out lists) and training CPU
time, seeds 0/1/2, with per-seed differences from the previous default.

Simulator (opt-in: ``--parts simulator``, about 6 minutes of CPU on one thread): RNA+ATAC counts
from :func:`glassvi.data.simulate` (``modality="multiome"``, one batch) with known program
activities, in two RNA regimes on the same cells, programs and ATAC: shallow RNA (100 UMIs per cell
on average, where ATAC should add information) and deep RNA (the simulator's default 3,000, where
it has little to add). ATAC depth (``--simulator-atac-depth``): 300 insertions in peaks per cell on
average over 2,000 peaks (0.15 per peak) in both regimes, 3 times the RNA counts in the shallow one
and a tenth in the deep one, which brackets the SNARE-seq cortex (median ATAC : RNA counts per cell
81 : 248, about 1 : 3). The RNA program mask is the planted programs, the peak mask follows the
simulated peaks' genes (``atac.var["gene"]``, through :func:`glassvi.pp.add_peak_programs`). Per
seed (seed = simulation and training seed), ProgramVI on RNA, RNA+ATAC (defaults) and ATAC, any
extra RNA+ATAC variants given as model arguments (``--simulator-kwargs``), and scanpy
``score_genes``, pyUCell and decoupler ULM/MLM on the log-normalised RNA (the scorers of
``programs_real.py``); the metric is the Pearson r of each active program's activity with the true
activity, averaged over active programs (:func:`glassvi.metrics.activity_correlation`), and per
seed RNA+ATAC - RNA. 1,200 cells, 400 genes, 2,000 peaks, 12 programs (9 active), 200 epochs (100
gave the same figures within 0.007).

Run: ``python benchmarks/multiome.py [--quick] [--parts speed quality sampling simulator]
[--out results/multiome.json]``; parts not run keep their results in the output file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")

import mudata as md  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import glassvi  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import EpochTimer, machine  # noqa: E402

md.set_options(pull_on_update=False)
logging.getLogger("glassvi").setLevel(logging.ERROR)
scvi.settings.verbosity = logging.ERROR

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "snareseq_cortex_dev.h5mu"

#: cell types scored by each program
GROUPS = {
    "Excitatory": ["L2/3", "L4/5", "L6"],
    "Inhibitory": ["Pvalb", "Sst", "Npy", "CGE"],
    "Pvalb": ["Pvalb"],
    "Sst": ["Sst"],
    "Oligo": ["Oligo"],
    "OPC": ["OPC"],
    "Astro": ["Astro"],
    "Microglia": ["MGC"],
    "Endo": ["Endo"],
}
#: marker lists the defaults were chosen on, and disjoint held-out lists
MARKERS = {
    "dev": {
        "Excitatory": "Slc17a7 Satb2 Neurod6 Cux2 Fezf2",
        "Inhibitory": "Gad1 Gad2 Dlx2 Dlx5",
        "Pvalb": "Pvalb Kcnc1 Tac1",
        "Sst": "Sst Elfn1 Grin3a",
        "Oligo": "Mbp Plp1 Mog Mobp",
        "OPC": "Pdgfra Cspg4 Vcan Olig1 Bcan Ptprz1",
        "Astro": "Aqp4 Gja1 Slc1a3 Aldoc Fgfr3",
        "Microglia": "Cx3cr1 P2ry12 Csf1r Hexb C1qa",
        "Endo": "Cldn5 Flt1 Pecam1 Esam",
    },
    "heldout": {
        "Excitatory": "Tle4 Kcnh5 Cpne4 Bcl11b",
        "Inhibitory": "Erbb4 Nxph1 Btbd11 Kcnc2 Arx",
        "Pvalb": "Kcns3 Pthlh Eya4",
        "Sst": "Nos1 Crhbp Rab3b",
        "Oligo": "Mag Cldn11 St18 Enpp2 Cnp Mal Prr5l Aspa",
        "OPC": "Lhfpl3 Megf11 Sox10 Cacng4 Stk32a Pcdh15",
        "Astro": "Slc1a2 Gpc5 Slc4a4 Sparcl1 Ntsr2 Prex2 Mertk Slc6a11",
        "Microglia": "Ly86 Inpp5d Dock8 Ptprc C1qb Cd53 Trem2",
        "Endo": "Ebf1 Itm2a Mecom Ptprb Abcb1a Slc2a1",
    },
}


def load(path: Path | None, n_cells: int | None, seed: int) -> md.MuData:
    mdata = md.read_h5mu(path) if path is not None else glassvi.data.snareseq_cortex()
    if n_cells is not None and n_cells < mdata.n_obs:
        rng = np.random.default_rng(seed)
        mdata = mdata[np.sort(rng.choice(mdata.n_obs, n_cells, replace=False))].copy()
    return mdata


def add_marker_programs(mdata: md.MuData, markers: str) -> None:
    sets = {k: v.split() for k, v in MARKERS[markers].items()}
    glassvi.pp.add_programs(mdata["rna"], sets, min_genes=1)
    glassvi.pp.add_peak_programs(mdata, links="linked_genes")


def one_modality(mdata: md.MuData, mods: tuple[str, ...]) -> md.MuData:
    if len(mods) == len(mdata.mod):
        return mdata
    out = md.MuData({m: mdata[m] for m in mods})
    out.obs = mdata.obs.loc[out.obs_names].copy()
    return out


def mean_auroc(activity: pd.DataFrame, obs: pd.DataFrame) -> dict:
    per = {}
    for program, types in GROUPS.items():
        if program not in activity.columns:
            continue
        y = obs["cell_type"].isin(types).to_numpy()
        if y.sum() >= 3:
            per[program] = float(roc_auc_score(y, activity[program].to_numpy()))
    return {"mean": float(np.mean(list(per.values()))), "per_program": per}


def fit(model, epochs: int, **overrides) -> None:
    """Train as every part of this benchmark does (batch 128, all cells, no early stopping)."""
    options = {"batch_size": 128, "train_size": 1.0, "early_stopping": False}
    model.train(max_epochs=epochs, enable_progress_bar=False, **{**options, **overrides})


def train_timed(model, epochs: int) -> dict:
    timer = EpochTimer()
    fit(model, epochs, callbacks=[timer])
    return timer.summary()


def programvi(mdata, mods, seed: int, epochs: int, **kwargs):
    scvi.settings.seed = seed
    data = one_modality(mdata, mods)
    glassvi.model.ProgramVI.setup_mudata(data, batch_key="sample")
    model = glassvi.model.ProgramVI(data, **kwargs)
    timing = train_timed(model, epochs)
    return model, data, timing


def score_genes(mdata, markers: str) -> pd.DataFrame:
    import scanpy as sc

    rna = mdata["rna"].copy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    scores = {}
    for name, genes in MARKERS[markers].items():
        genes = [g for g in genes.split() if g in rna.var_names]
        sc.tl.score_genes(rna, genes, score_name="score", random_state=0)
        scores[name] = rna.obs["score"].to_numpy()
    return pd.DataFrame(scores, index=rna.obs_names)


#: models timed side by side: name -> (class, modalities, model arguments); MultiVI is
#: scvi-tools' own
SPEED_MODELS = {
    "LinearVI": ("LinearVI", ("rna", "atac"), {}),
    "ProgramVI": ("ProgramVI", ("rna", "atac"), {}),
    "LinearVI experts": ("LinearVI", ("rna", "atac"), {"encoder": "experts"}),
    "ProgramVI experts": ("ProgramVI", ("rna", "atac"), {"encoder": "experts"}),
    "MultiVI": ("MULTIVI", ("rna", "atac"), {}),
    "LinearVI RNA": ("LinearVI", ("rna",), {}),
    "LinearVI ATAC": ("LinearVI", ("atac",), {}),
    "ProgramVI RNA": ("ProgramVI", ("rna",), {}),
    "ProgramVI ATAC": ("ProgramVI", ("atac",), {}),
    "ProgramVI ATAC exact": ("ProgramVI", ("atac",), {"zero_sample_fraction": 1.0}),
}


def speed_model(name: str, mdata: md.MuData):
    cls, mods, kwargs = SPEED_MODELS[name]
    data = one_modality(mdata, mods).copy()
    if cls == "MULTIVI":
        scvi.model.MULTIVI.setup_mudata(
            data, batch_key="sample", modalities={"rna_layer": "rna", "atac_layer": "atac"}
        )
        return scvi.model.MULTIVI(data, n_genes=data["rna"].n_vars, n_regions=data["atac"].n_vars)
    model_cls = getattr(glassvi.model, cls)
    model_cls.setup_mudata(data, batch_key="sample")
    return model_cls(data, **kwargs)


def speed(mdata, epochs: int, repeats: int, models=None) -> dict:
    """Time per epoch of every model in :data:`SPEED_MODELS`, interleaved in one process.

    Each repeat trains every model for ``epochs`` epochs, in an order rotated by one model per
    repeat; a model's figure for the repeat is the median over its epochs after the first, in
    process CPU time and in wall time. Ratios are taken within each repeat (same machine
    state) and summarised by their median and maximum over repeats.
    """
    add_marker_programs(mdata, "dev")
    order = list(models or SPEED_MODELS)
    runs: dict[str, list] = {name: [] for name in order}
    for rep in range(repeats):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            scvi.settings.seed = rep
            timing = train_timed(speed_model(name, mdata), epochs)
            runs[name].append(
                {"cpu_s": timing["median_epoch_cpu_s"], "wall_s": timing["median_epoch_wall_s"]}
            )
            print(
                f"[multiome] speed {name} repeat {rep}: {timing['median_epoch_cpu_s']:.3f} s "
                f"CPU, {timing['median_epoch_wall_s']:.3f} s wall per epoch",
                flush=True,
            )
    nnz = {mod: int(mdata[mod].X.nnz) for mod in ("rna", "atac")}
    entries = {mod: int(mdata[mod].n_obs * mdata[mod].n_vars) for mod in ("rna", "atac")}

    def summary(values: list[float]) -> dict:
        return {"median": float(np.median(values)), "max": float(np.max(values))}

    def ratio(a: str, b: str, clock: str) -> dict:
        return summary([ra[clock] / rb[clock] for ra, rb in zip(runs[a], runs[b])])

    out = {
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": 128,
        "nnz": nnz,
        "entries": entries,
        "epoch_s": runs,
        "median_epoch_cpu_s": {
            k: float(np.median([r["cpu_s"] for r in v])) for k, v in runs.items()
        },
        "median_epoch_wall_s": {
            k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()
        },
        "ratios": {},
        "per_nonzero": {},
    }
    for arch in ("LinearVI", "ProgramVI"):
        for multi in (arch, f"{arch} experts"):
            if multi in runs and "MultiVI" in runs:
                out["ratios"][f"{multi} / MultiVI"] = {
                    clock: ratio(multi, "MultiVI", clock) for clock in ("cpu_s", "wall_s")
                }
        for atac in (f"{arch} ATAC", f"{arch} ATAC exact"):
            rna = f"{arch} RNA"
            if rna not in runs or atac not in runs:
                continue
            # time per non-zero entry: one-modality models of the same architecture
            per = {
                mod.lower(): {
                    "ns_per_nonzero_cpu": 1e9 * out["median_epoch_cpu_s"][name] / nnz[mod],
                    "ns_per_entry_cpu": 1e9 * out["median_epoch_cpu_s"][name] / entries[mod],
                }
                for name, mod in ((rna, "rna"), (atac, "atac"))
            }
            scale = nnz["rna"] / nnz["atac"]
            per["atac_vs_rna_per_nonzero"] = {
                clock: {k: v * scale for k, v in ratio(atac, rna, clock).items()}
                for clock in ("cpu_s", "wall_s")
            }
            out["per_nonzero"][atac.replace(" ATAC", "")] = per
    return out


#: models of the quality part: label -> (modalities, model arguments)
QUALITY_MODELS = {
    "ProgramVI RNA": (("rna",), {}),
    "ProgramVI RNA+ATAC": (("rna", "atac"), {}),
    "ProgramVI RNA+ATAC joint": (("rna", "atac"), {"encoder": "joint"}),
    "ProgramVI RNA+ATAC experts": (("rna", "atac"), {"encoder": "experts"}),
    # ATAC informs the encoder's input only (the default before measurement chose weight 1)
    "ProgramVI RNA+ATAC weight 0": (("rna", "atac"), {"modality_weights": {"atac": 0.0}}),
    "ProgramVI ATAC": (("atac",), {}),
}
#: models run unless ``--quality-models`` says otherwise
QUALITY_DEFAULT = ("ProgramVI RNA", "ProgramVI RNA+ATAC", "ProgramVI ATAC")


def quality(
    path, n_cells, seeds, epochs: int, models=QUALITY_DEFAULT, lists=("dev", "heldout")
) -> dict:
    out = {}
    for markers in lists:
        rows = []
        for seed in seeds:
            mdata = load(path, n_cells, seed)
            add_marker_programs(mdata, markers)
            row = {
                "seed": seed,
                "n_cells": {
                    p: int(mdata.obs["cell_type"].isin(t).sum()) for p, t in GROUPS.items()
                },
                "score_genes": mean_auroc(score_genes(mdata, markers), mdata.obs),
            }
            for label in models:
                mods, kwargs = QUALITY_MODELS[label]
                model, data, _ = programvi(mdata, mods, seed, epochs, **kwargs)
                row[label] = mean_auroc(model.get_program_activity(), data.obs)
                print(
                    f"[multiome] {markers} seed {seed} {label}: {row[label]['mean']:.3f}",
                    flush=True,
                )
            rows.append(row)
        methods = [k for k in rows[0] if k not in ("seed", "n_cells")]
        out[markers] = {
            "epochs": epochs,
            "runs": rows,
            "mean": {m: float(np.mean([r[m]["mean"] for r in rows])) for m in methods},
            "min": {m: float(np.min([r[m]["mean"] for r in rows])) for m in methods},
            # the check is per run: multiome at least RNA alone
            "multiome_minus_rna": [
                r["ProgramVI RNA+ATAC"]["mean"] - r["ProgramVI RNA"]["mean"] for r in rows
            ],
        }
    return out


def heldout_nll(model, data, mods) -> dict:
    """Exact negative log-likelihood per held-out cell, decoded from the posterior mean."""
    module = model.module
    module.eval()
    total, n_cells = dict.fromkeys(mods, 0.0), 0
    loader = model._make_data_loader(data, indices=model.validation_indices, batch_size=256)
    with torch.no_grad():
        for tensors in loader:
            inference = dict(module.inference(**module._get_inference_input(tensors)))
            inference["z"] = inference["qz"].loc
            generative = module.generative(**module._get_generative_input(tensors, inference))
            nll = module.reconstruction_nll(tensors, generative)
            for mod in mods:
                total[mod] += float(nll[mod].sum())
            n_cells += int(next(iter(nll.values())).shape[0])
    return {mod: total[mod] / n_cells for mod in mods}


#: training likelihood and optimiser settings of the sampling part: label -> (model arguments,
#: training plan arguments); the first is the previous default
SAMPLING_CONFIGS = {
    "uniform 10%, element-wise moments": (
        {"zero_sample": "uniform", "zero_sample_fraction": 0.1},
        {"row_second_moment": False},
    ),
    "uniform 10%, row moments": ({"zero_sample": "uniform", "zero_sample_fraction": 0.1}, {}),
    "open rate 3%, element-wise moments": ({}, {"row_second_moment": False}),
    "open rate 3%, row moments (default)": ({}, {}),
}


def sampling(path, n_cells, seeds, epochs: int, multiome_epochs: int, configs=None) -> dict:
    """Sampled ATAC likelihood and row-wise moments against the previous defaults, side by side.

    For each setting of :data:`SAMPLING_CONFIGS` and seed: LinearVI and ProgramVI on ATAC alone
    (90% of the cells for training, ``epochs`` epochs): exact negative log-likelihood per
    held-out cell, ProgramVI's marker-program AUROC (dev lists) and CPU seconds of training;
    ProgramVI on RNA+ATAC (all cells, ``multiome_epochs`` epochs, as the quality part): marker-
    program AUROC on the held-out lists.
    """
    rows = []
    for seed in seeds:
        for label in configs or SAMPLING_CONFIGS:
            model_kwargs, plan_kwargs = SAMPLING_CONFIGS[label]
            row = {"seed": seed, "config": label}
            for arch in ("LinearVI", "ProgramVI"):
                mdata = load(path, n_cells, seed)
                add_marker_programs(mdata, "dev")
                scvi.settings.seed = seed
                data = one_modality(mdata, ("atac",)).copy()
                model_cls = getattr(glassvi.model, arch)
                model_cls.setup_mudata(data, batch_key="sample")
                model = model_cls(data, **model_kwargs)
                start = time.process_time()
                fit(model, epochs, train_size=0.9, plan_kwargs=plan_kwargs)
                row[f"{arch} ATAC train_cpu_s"] = time.process_time() - start
                nll = heldout_nll(model, data, ("atac",))["atac"]
                row[f"{arch} ATAC heldout_nll_per_cell"] = nll
                if arch == "ProgramVI":
                    auroc = mean_auroc(model.get_program_activity(), data.obs)["mean"]
                    row["ProgramVI ATAC auroc_dev"] = auroc
            mdata = load(path, n_cells, seed)
            add_marker_programs(mdata, "heldout")
            scvi.settings.seed = seed
            data = one_modality(mdata, ("rna", "atac")).copy()
            glassvi.model.ProgramVI.setup_mudata(data, batch_key="sample")
            model = glassvi.model.ProgramVI(data, **model_kwargs)
            fit(model, multiome_epochs, plan_kwargs=plan_kwargs)
            row["ProgramVI RNA+ATAC auroc_heldout"] = mean_auroc(
                model.get_program_activity(), data.obs
            )["mean"]
            print(f"[multiome] sampling {row}", flush=True)
            rows.append(row)
    labels = list(dict.fromkeys(r["config"] for r in rows))
    base = labels[0]
    metrics = [k for k in rows[0] if k not in ("seed", "config")]
    by = {(r["config"], r["seed"]): r for r in rows}
    # per-seed differences from the previous default (first setting)
    diffs = {
        label: {m: [by[(label, s)][m] - by[(base, s)][m] for s in seeds] for m in metrics}
        for label in labels[1:]
    }
    means = {
        label: {m: float(np.mean([by[(label, s)][m] for s in seeds])) for m in metrics}
        for label in labels
    }
    return {
        "epochs": epochs,
        "multiome_epochs": multiome_epochs,
        "runs": rows,
        "mean": means,
        "minus_previous_default": diffs,
    }


#: the simulator part: data sizes, and the mean RNA UMIs per cell of each regime
SIM_SIZE = {"n_cells": 1200, "n_genes": 400, "n_peaks": 2000, "n_programs": 12}
SIM_QUICK_SIZE = {"n_cells": 300, "n_genes": 150, "n_peaks": 500, "n_programs": 6}
SIM_REGIMES = {"shallow RNA": 100.0, "deep RNA": 3000.0}
#: mean ATAC insertions in peaks per cell (per peak: this / 2,000)
SIM_ATAC_DEPTH = 300.0
#: ProgramVI models of the simulator part: label -> (modalities, model arguments)
SIM_MODELS = {
    "ProgramVI RNA": (("rna",), {}),
    "ProgramVI RNA+ATAC": (("rna", "atac"), {}),
    "ProgramVI ATAC": (("atac",), {}),
}


def simulated_multiome(size: dict, library_size: float, atac_depth: float, seed: int):
    """Simulated RNA+ATAC, planted programs as masks; true activity of the active programs."""
    mdata = glassvi.data.simulate(
        **size,
        modality="multiome",
        n_batches=1,
        library_size=library_size,
        atac_library_size=atac_depth,
        seed=seed,
    )
    sim = mdata.uns["simulation"]
    names = list(sim["program_names"])
    truth = mdata["rna"].varm["true_programs"]
    sets = {n: list(mdata["rna"].var_names[truth[:, i]]) for i, n in enumerate(names)}
    glassvi.pp.add_programs(mdata["rna"], sets, min_genes=1)
    glassvi.pp.add_peak_programs(mdata, links="gene")
    true = pd.DataFrame(mdata.obsm["true_activity"], index=mdata.obs_names, columns=names)
    active = [n for n, a in zip(names, sim["active_programs"]) if a and true[n].std() > 0]
    return mdata, true[active]


def simulator_models(extra: dict | None) -> dict:
    """:data:`SIM_MODELS` plus RNA+ATAC variants ``{label: model arguments}``.

    A variant's arguments go to :class:`~glassvi.model.ProgramVI` unchanged, except an optional
    ``"modalities"`` entry (a list, default ``["rna", "atac"]``) that selects the data.
    """
    models = dict(SIM_MODELS)
    for label, kwargs in (extra or {}).items():
        if not isinstance(kwargs, dict):
            raise ValueError(f"--simulator-kwargs: {label!r} must map to a dict of arguments")
        kwargs = dict(kwargs)
        mods = tuple(kwargs.pop("modalities", ("rna", "atac")))
        if not mods or set(mods) - {"rna", "atac"}:
            raise ValueError(f"--simulator-kwargs: {label!r} modalities must be rna and/or atac")
        models[label] = (mods, kwargs)
    return models


def simulator(
    seeds, epochs: int, models: dict, size=SIM_SIZE, regimes=SIM_REGIMES, atac=SIM_ATAC_DEPTH
) -> dict:
    """Correlation of activity with the simulator's true activity, per regime and seed."""
    from programs_real import score_peers

    from glassvi.metrics import activity_correlation

    def score(activity: pd.DataFrame, true: pd.DataFrame) -> dict:
        r = activity_correlation(activity[true.columns], true)
        return {
            "mean_r": float(np.nanmean(r)),
            "min_r": float(np.nanmin(r)),
            "per_program": {p: round(float(v), 4) for p, v in zip(true.columns, r)},
        }

    out = {
        "size": dict(size),
        "atac_library_size": atac,
        "epochs": epochs,
        "batch_size": 128,
        "models": {k: {"modalities": list(m), "kwargs": kw} for k, (m, kw) in models.items()},
        "regimes": {},
    }
    for regime, library_size in regimes.items():
        rows = []
        for seed in seeds:
            mdata, true = simulated_multiome(size, library_size, atac, seed)
            row = {
                "seed": seed,
                "n_active": true.shape[1],
                "median_counts": {
                    m: float(np.median(np.asarray(mdata[m].X.sum(1)).ravel())) for m in mdata.mod
                },
            }
            peers, _ = score_peers(mdata["rna"])
            for method, activity in peers.items():
                row[method] = score(activity, true)
            for label, (mods, kwargs) in models.items():
                scvi.settings.seed = seed
                data = one_modality(mdata, mods).copy()
                glassvi.model.ProgramVI.setup_mudata(data)
                model = glassvi.model.ProgramVI(data, **kwargs)
                start = time.process_time()
                fit(model, epochs)
                row[label] = score(model.get_program_activity(), true)
                row[label]["train_cpu_s"] = round(time.process_time() - start, 2)
            print(
                f"[multiome] simulator {regime} seed {seed}: "
                + ", ".join(
                    f"{k} {v['mean_r']:.3f}"
                    for k, v in row.items()
                    if isinstance(v, dict) and "mean_r" in v
                ),
                flush=True,
            )
            rows.append(row)
        methods = [k for k, v in rows[0].items() if isinstance(v, dict) and "mean_r" in v]
        out["regimes"][regime] = {
            "library_size": library_size,
            "runs": rows,
            "mean_r": {m: float(np.mean([r[m]["mean_r"] for r in rows])) for m in methods},
            "min_seed_mean_r": {m: float(np.min([r[m]["mean_r"] for r in rows])) for m in methods},
            # paired per seed (same data and training seed): each model minus ProgramVI on RNA
            "minus_rna": {
                m: [r[m]["mean_r"] - r["ProgramVI RNA"]["mean_r"] for r in rows]
                for m in models
                if m != "ProgramVI RNA" and "ProgramVI RNA" in models
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "multiome.json")
    parser.add_argument(
        "--parts",
        nargs="*",
        choices=("speed", "quality", "sampling", "simulator"),
        default=["speed", "quality", "sampling"],
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per speed run")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the speed runs")
    parser.add_argument(
        "--models", nargs="*", choices=list(SPEED_MODELS), default=None, help="speed models"
    )
    parser.add_argument(
        "--quality-models",
        nargs="*",
        choices=list(QUALITY_MODELS),
        default=list(QUALITY_DEFAULT),
        help="ProgramVI models of the quality part",
    )
    parser.add_argument("--quality-epochs", type=int, default=None, help="epochs per quality run")
    parser.add_argument(
        "--quality-lists",
        nargs="*",
        choices=list(MARKERS),
        default=list(MARKERS),
        help="marker lists of the quality part",
    )
    parser.add_argument(
        "--simulator-kwargs",
        type=json.loads,
        default=None,
        help="extra ProgramVI models of the simulator part, as JSON {label: model arguments} "
        '(RNA+ATAC unless the arguments hold "modalities": [...]), e.g. '
        '\'{"experts": {"encoder": "experts"}}\'',
    )
    parser.add_argument(
        "--simulator-epochs", type=int, default=None, help="epochs per simulator run"
    )
    parser.add_argument(
        "--simulator-atac-depth",
        type=float,
        default=SIM_ATAC_DEPTH,
        help="mean ATAC insertions in peaks per cell of the simulator part",
    )
    parser.add_argument(
        "--simulator-seeds", type=int, nargs="+", default=None, help="seeds of the simulator part"
    )
    args = parser.parse_args()
    sim_models = simulator_models(args.simulator_kwargs)  # bad arguments fail before training
    torch.set_num_threads(1)
    path = None if args.quick or not SHARED.exists() else SHARED
    if path is None and not args.quick:
        print(
            f"[multiome] WARNING: {SHARED} not found; falling back to the bundled reduced "
            "SNARE-seq data, so the figures are not comparable with the full-data results",
            file=sys.stderr,
            flush=True,
        )
    n_cells = None if path is None else 3000
    start = time.perf_counter()
    # parts not run now keep their previous results
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    # the top-level data, machine and seconds describe the real-data parts; the simulator
    # part carries its own
    real_parts = set(args.parts) - {"simulator"}
    if real_parts:
        res.update(
            {
                "data": "bundled reduced SNARE-seq" if path is None else str(SHARED.name),
                "n_cells": n_cells,
                "machine": machine(),
            }
        )
    if "speed" in args.parts:
        res["speed"] = speed(
            load(path, n_cells, 0),
            epochs=args.epochs or (3 if args.quick else 4),
            repeats=args.repeats or (1 if args.quick else 3),
            models=args.models,
        )
    if "quality" in args.parts:
        seeds = [0] if args.quick else [0, 1, 2]
        epochs = args.quality_epochs or (30 if args.quick else 100)
        res["quality"] = quality(
            path, n_cells, seeds, epochs, args.quality_models, args.quality_lists
        )
    if "sampling" in args.parts:
        res["sampling"] = sampling(
            path,
            n_cells,
            [0] if args.quick else [0, 1, 2],
            10 if args.quick else 30,
            10 if args.quick else 40,
        )
    if "simulator" in args.parts:
        part_start = time.perf_counter()
        res["simulator"] = simulator(
            args.simulator_seeds or ([0] if args.quick else [0, 1, 2]),
            args.simulator_epochs or (20 if args.quick else 200),
            sim_models,
            size=SIM_QUICK_SIZE if args.quick else SIM_SIZE,
            atac=args.simulator_atac_depth,
        )
        res["simulator"].update(seconds=time.perf_counter() - part_start, machine=machine())
    if real_parts:
        res["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"[multiome] wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
