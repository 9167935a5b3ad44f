"""What a report records about a run: versions, inputs, settings, provenance and tables.

Each function takes what is already in the AnnData/MuData and the model and returns rows for a
report table (or a DataFrame that is also written as CSV); none of them changes the data.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

#: distributions whose versions a report records, in this order
VERSIONED = (
    "glassvi",
    "scvi-tools",
    "torch",
    "lightning",
    "anndata",
    "mudata",
    "scanpy",
    "numpy",
    "pandas",
    "scipy",
    "captum",
    "shap",
)

#: columns of a program-evidence table shown in the report, in this order
EVIDENCE_COLUMNS = ("pvalue", "fdr", "significant", "effective_genes", "n_genes")


def versions() -> list[list[str]]:
    """Rows ``[package, version]`` of Python and the packages glassvi runs on."""
    rows = [["python", platform.python_version()]]
    for name in VERSIONED:
        try:
            rows.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            rows.append([name, "not installed"])
    return rows


def run_rows(run_info: Mapping[str, Any] | None, model: Any) -> list[list[str]]:
    """Rows of the run: command line, input, seed and the other entries of ``run_info``."""
    import scvi

    info = dict(run_info or {})
    rows = []
    for key in ("command", "input"):
        if info.get(key):
            rows.append([key, str(info.pop(key))])
    seed = info.pop("seed", None)
    rows.append(["seed", str(seed if seed is not None else scvi.settings.seed)])
    for key, value in info.items():
        rows.append([str(key), _plain(value)])
    split = _split_sizes(model)
    if split:
        rows.append(["cells (training / validation)", split])
    return rows


def _split_sizes(model: Any) -> str | None:
    train = getattr(model, "train_indices", None)
    valid = getattr(model, "validation_indices", None)
    if train is None:
        return None
    n_valid = 0 if valid is None else len(valid)
    return f"{len(train):,} / {n_valid:,}"


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(map(str, value))
    return str(value)


def program_provenance(data: Any, model: Any) -> dict[str, Any] | None:
    """The ``uns`` record that ``glassvi.pp.add_programs`` wrote for the model's program mask.

    Returns ``None`` for models without a program mask or when the record is absent.
    """
    try:
        args = model.adata_manager.registry["setup_args"]
    except (AttributeError, KeyError, TypeError):
        return None
    program_key = args.get("program_key")
    if program_key is None:
        return None
    keys = list(program_key.values()) if isinstance(program_key, Mapping) else [program_key]
    containers = [data] + ([data.mod[m] for m in data.mod] if hasattr(data, "mod") else [])
    for key in keys:
        for container in containers:
            record = container.uns.get(key)
            if isinstance(record, Mapping) and "names" in record:
                return {"key": key, **dict(record)}
    return None


def provenance_rows(record: Mapping[str, Any]) -> tuple[list[list[str]], pd.DataFrame]:
    """Summary rows of a program mask's provenance and the table of dropped programs."""
    source = record.get("source")
    rows = [["mask", f"varm[{record['key']!r}]"]]
    if source is not None:
        rows.append(["source", _plain(source)])
    rows.append(["programs kept", f"{len(record.get('names', [])):,}"])
    dropped = pd.DataFrame(
        {
            "program": [str(n) for n in record.get("dropped_names", [])],
            "reason": [str(r) for r in record.get("dropped_reasons", [])],
        }
    )
    rows.append(["programs dropped", f"{len(dropped):,}"])
    params = record.get("params")
    if isinstance(params, Mapping) and params:
        rows.append(["matching", _plain(params)])
    return rows, dropped


def evidence_table(record: Mapping[str, Any]) -> pd.DataFrame | None:
    """``uns[prefix]["evidence"]`` as a DataFrame sorted by p-value, or ``None`` if absent."""
    evidence = record.get("evidence")
    if evidence is None:
        return None
    table = evidence if isinstance(evidence, pd.DataFrame) else pd.DataFrame(evidence)
    columns = [c for c in EVIDENCE_COLUMNS if c in table.columns]
    table = table[columns + [c for c in table.columns if c not in columns]]
    if "pvalue" in table.columns:
        table = table.sort_values("pvalue", kind="stable")
    table.index.name = "program"
    return table


def attribution_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """Settings and convergence of one attribution run (its ``uns`` record)."""
    rows = []
    for key in ("method", "target", "baseline", "n_steps", "n_samples", "n_background", "seed"):
        value = record.get(key)
        # 0 samples or background cells: the method does not use them
        if value is not None and value != "" and not (key.startswith("n_") and value == 0):
            rows.append([key, _plain(value)])
    if record.get("groupby"):
        rows.append(["groupby", str(record["groupby"])])
    if record.get("n_cells") is not None:
        rows.append(["cells explained", f"{int(record['n_cells']):,}"])
    convergence = record.get("convergence")
    if isinstance(convergence, Mapping):
        for key, value in convergence.items():
            rows.append([f"convergence: {key}", _number(value)])
    return rows


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if np.isfinite(number) else "n/a"


def activity_by_group(latent: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Mean activity of every program (rows) in every cell group (columns)."""
    means = latent.astype(float).groupby(groups.to_numpy(), observed=True).mean()
    means.index.name = str(groups.name) if groups.name is not None else "group"
    table = means.T
    table.index.name = "program"
    return table


def program_table(
    latent: pd.DataFrame, weights: Mapping[str, pd.DataFrame], groups: pd.Series | None, n_top: int
) -> pd.DataFrame:
    """One row per program: activity spread, where it is highest and its top features."""
    spread = latent.astype(float).std(axis=0)
    table = pd.DataFrame({"activity_sd": spread})
    if groups is not None:
        table["highest_in"] = activity_by_group(latent, groups).idxmax(axis=1)
    for mod, frame in weights.items():
        top = {}
        for program in latent.columns:
            if program not in frame.columns:
                continue
            column = frame[program].astype(float)
            best = column[column > 0].sort_values(ascending=False).head(n_top)
            top[program] = ", ".join(map(str, best.index))
        table[f"top_{mod}"] = pd.Series(top)
        table[f"n_{mod}_nonzero"] = (frame != 0).sum(axis=0).reindex(table.index)
    table.index.name = "program"
    return table.sort_values("activity_sd", ascending=False, kind="stable")


def rankings(data: Any, key: str) -> pd.DataFrame | None:
    """A ranking in scanpy's ``rank_genes_groups`` layout as one long table (all groups)."""
    record = data.uns.get(key)
    if not isinstance(record, Mapping) or "names" not in record:
        return None
    names = record["names"]
    frames = []
    for group in names.dtype.names:
        frame = {"group": group, "rank": np.arange(1, len(names) + 1)}
        for field in ("names", "scores", "logfoldchanges", "pvals", "pvals_adj"):
            if field in record:
                frame[field] = np.asarray(record[field][group])
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def ranking_keys(data: Any) -> list[str]:
    """``uns`` keys holding rankings in scanpy's ``rank_genes_groups`` layout."""
    keys = []
    for key, value in data.uns.items():
        if isinstance(value, Mapping) and "names" in value and "params" in value:
            names = value["names"]
            if getattr(getattr(names, "dtype", None), "names", None):
                keys.append(str(key))
    return keys
