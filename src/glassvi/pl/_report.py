"""A self-contained HTML report of a trained glassvi model and its explanations."""

from __future__ import annotations

import base64
import datetime
import html
import logging
import os
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys
from .._varm import entry_columns
from .._version import __version__
from ..tl import rank_features
from . import _record as rec
from . import _utils
from ._differential import DIFFERENTIAL_COLUMNS, differential
from ._embedding import activity
from ._evidence import FEW_GENES
from ._features import select_top, top_features
from ._heatmap import attribution_heatmap
from ._history import history, history_frame
from ._multiome import multiome_program

logger = logging.getLogger(__name__)

#: attribution tables with more columns (e.g. groups x targets) are left out of the report
_MAX_GROUPS = 30


def _template(name: str) -> string.Template:
    """A file of the package's ``templates`` folder as a :class:`string.Template`."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


# ----------------------------------------------------------------------------- gathering
def _record(data: Any, model: Any) -> tuple[str, dict]:
    """Return the ``uns`` record that ``model.explain()`` wrote (key and dict)."""
    prefix = getattr(model, "_prefix", None)
    if prefix and isinstance(data.uns.get(prefix), Mapping):
        return prefix, dict(data.uns[prefix])
    for key, value in data.uns.items():
        if isinstance(value, Mapping) and "latent_key" in value and "weights_key" in value:
            return key, dict(value)
    expected = f"uns[{prefix!r}]" if prefix else "a glassvi record in .uns"
    raise KeyError(
        f"{expected} not found: run model.explain() before writing the report "
        f"(available uns keys: {_utils.available(data.uns.keys())})."
    )


def _weights_by_modality(data: Any, record: dict) -> dict[str, pd.DataFrame]:
    """Modality label -> features x programs weights."""
    key = record["weights_key"]
    mods = dict(record.get("modalities") or {})
    out = {}
    if _utils.is_mudata(data):
        for mod in mods.values():
            if mod and mod in data.mod and key in data.mod[mod].varm:
                out[str(mod)], _, _ = _utils.resolve_varm(data, key, mod)
        if not out:
            for mod, sub in data.mod.items():
                if key in sub.varm:
                    out[str(mod)], _, _ = _utils.resolve_varm(data, key, mod)
    else:
        label = next(iter(mods), "features")
        out[str(label)], _, _ = _utils.resolve_varm(data, key)
    if not out:
        raise KeyError(f"{key!r} is not in any .varm; run model.explain() first.")
    return out


def _attribution_keys(data: Any, prefix: str, record: dict) -> list[tuple[str | None, str]]:
    """(modality, varm key) of per-group attribution tables written by glassvi.explain."""
    skip = {record.get("weights_key"), "programs"}
    found = []
    for mod, container in _utils.containers(data).items():
        keys = [str(k) for k in container.varm.keys()]
        for key in keys:
            if key in skip or not _keys.has_prefix(key, prefix):
                continue
            value = container.varm[key]
            if not isinstance(value, pd.DataFrame):
                # glassvi's attribution tables: arrays with their column names in .uns
                if not entry_columns(data, container, key):
                    continue
                value, _, _ = _utils.resolve_varm(data, key, mod)
            if value.shape[1] == 0:
                continue
            if not all(pd.api.types.is_numeric_dtype(t) for t in value.dtypes):
                continue
            if any(pd.api.types.is_bool_dtype(t) for t in value.dtypes):
                continue
            if value.shape[1] > _MAX_GROUPS:
                logger.info(
                    "varm[%r] has %d columns; left out of the report (at most %d)",
                    key,
                    value.shape[1],
                    _MAX_GROUPS,
                )
                continue
            # the signed mean and its "_abs" companion describe one attribution; keep one
            if _keys.is_absolute(key) and _keys.signed(key) in keys:
                continue
            found.append((mod, key))
    return found


def _ranks_attribution(ranking: Mapping, key: str) -> bool:
    """Whether a ``rank_genes_groups``-layout ranking is rank_features' signed ranking of key."""
    params = ranking.get("params", {})
    return (
        params.get("key") == _keys.signed(key)
        and params.get("direction") in ("for", "against")
        and not params.get("absolute", False)
    )


def _differential_keys(data: Any, prefix: str) -> list[str]:
    keys = []
    for key, value in data.uns.items():
        if not str(key).endswith("differential"):
            continue
        if isinstance(value, Mapping) and isinstance(value.get("results"), pd.DataFrame):
            value = value["results"]  # the record of ProgramVI.differential_programs
        try:
            columns = set(value.columns) if isinstance(value, pd.DataFrame) else set(value)
        except TypeError:
            continue
        if set(DIFFERENTIAL_COLUMNS) <= columns | {"program"}:
            keys.append(str(key))
    keys.sort(key=lambda k: k != _keys.differential(prefix))
    return keys


def _differential_table_of(data: Any, key: str) -> pd.DataFrame:
    value = data.uns[key]
    if isinstance(value, Mapping) and isinstance(value.get("results"), pd.DataFrame):
        return value["results"]
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame(dict(value))


def _labels_key(data: Any, model: Any) -> str | None:
    try:
        key = model.adata_manager.registry["setup_args"].get("labels_key")
    except (AttributeError, KeyError, TypeError):
        key = None
    if key and key in data.obs.columns:
        return key
    if key and _utils.is_mudata(data):
        for mod in data.mod:
            if f"{mod}:{key}" in data.obs.columns:
                return f"{mod}:{key}"
    return None


# ----------------------------------------------------------------------------- tables
def _table(
    header: list[str] | None, rows: list[list[Any]], numeric: set[int] | None = None
) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header or [])
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="num"' if j in numeric else ""
            if isinstance(cell, _Raw):
                cells.append(f"<td{cls}>{cell.text}</td>")
            else:
                cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


class _Raw:
    """Table cell content that is already HTML."""

    def __init__(self, text: str):
        self.text = text


def _feature_list(names) -> _Raw:
    return _Raw(f'<span class="features">{html.escape(", ".join(map(str, names)))}</span>')


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:,.4g}" if np.isfinite(value) else "n/a"
    return str(value)


def _data_rows(data: Any, labels_key: str | None, record: dict) -> list[list[Any]]:
    rows = [["object", type(data).__name__], ["cells", f"{data.n_obs:,}"]]
    for mod, container in _utils.containers(data).items():
        name = mod or next(iter(record.get("modalities") or {"features": ""}))
        rows.append([f"features ({name})", f"{container.n_vars:,}"])
    if labels_key:
        n = data.obs[labels_key].nunique()
        rows.append(["cell labels", f"{labels_key} ({n} groups)"])
    return rows


def _model_rows(model: Any, record: dict) -> list[list[Any]]:
    rows = [["class", type(model).__name__]]
    params = getattr(model, "init_params_", {}) or {}
    flat = dict(params.get("non_kwargs", {}))
    for value in params.get("kwargs", {}).values():
        if isinstance(value, Mapping):
            flat.update(value)
    for name, value in flat.items():
        if value is not None and value != {}:
            rows.append([name, _fmt(value)])
    likelihoods = (record.get("params") or {}).get("likelihoods")
    if likelihoods:
        rows.append(["likelihoods", ", ".join(f"{k}: {v}" for k, v in dict(likelihoods).items())])
    rows.append(["latent key", f"obsm[{record.get('latent_key')!r}]"])
    rows.append(["weights key", f"varm[{record.get('weights_key')!r}]"])
    return rows


def _training_rows(model: Any) -> list[list[Any]]:
    raw = getattr(model, "history", None)
    if not raw:
        return [["epochs", "not trained"]]
    frame = history_frame(raw)
    rows = []
    epochs = frame["elbo_train"].dropna() if "elbo_train" in frame else frame.iloc[:, 0]
    rows.append(["epochs", f"{len(epochs)}"])
    for column in (
        "elbo_train",
        "elbo_validation",
        "reconstruction_loss_train",
        "reconstruction_loss_validation",
        "kl_local_train",
        "kl_local_validation",
    ):
        if column in frame.columns and frame[column].notna().any():
            rows.append(
                [f"final {column.replace('_', ' ')}", _fmt(frame[column].dropna().iloc[-1])]
            )
    return rows


def _rank_programs(latent: pd.DataFrame) -> list[str]:
    """Programs ordered by the spread of their activity across cells (most variable first)."""
    spread = latent.astype(float).std(axis=0)
    return [str(c) for c in spread.sort_values(ascending=False, kind="stable").index]


def _rank_by_evidence(order: list[str], evidence: pd.DataFrame) -> list[str]:
    """Programs the data support that three or more genes carry first, in evidence order."""
    tested = [str(p) for p in evidence.index if str(p) in set(order)]
    supported = evidence["significant"].astype(bool)
    if evidence["pvalue"].isna().all():
        supported = supported | True
    trusted = supported & (evidence["effective_genes"].fillna(0) >= FEW_GENES)
    first = [p for p in tested if trusted[p]]
    return first + [p for p in tested if not trusted[p]] + [p for p in order if p not in tested]


def _evidence_cells(evidence: pd.DataFrame | None, program: str) -> list[Any]:
    if evidence is None:
        return []
    if program not in evidence.index:
        # the evidence covers the annotated programs; the other units are the de novo ones
        return ["", "", "de novo unit (no gene set, not tested)"]
    row = evidence.loc[program]
    note = ""
    if pd.notna(row["fdr"]) and not bool(row["significant"]):
        note = "not supported"
    elif row["effective_genes"] < FEW_GENES:
        note = f"1-2 genes ({row['top_gene']})"
    q = "" if pd.isna(row["fdr"]) else f"{row['fdr']:.2g}"
    return [q, f"{row['effective_genes']:.1f}", note]


def _program_rows(
    latent: pd.DataFrame,
    weights: dict[str, pd.DataFrame],
    order: list[str],
    groups: pd.Series | None,
    n_top: int,
    evidence: pd.DataFrame | None = None,
) -> tuple[list[str], list[list[Any]]]:
    spread = latent.astype(float).std(axis=0)
    header = ["program", "activity SD"]
    if evidence is not None:
        header += ["FDR q", "effective genes", "note"]
    if groups is not None:
        header.append("highest in")
        means = latent.astype(float).groupby(groups.to_numpy(), observed=True).mean()
    for mod in weights:
        header += [f"top {mod} (+)", f"top {mod} (\u2212)"]
    rows = []
    for program in order:
        row: list[Any] = [program, f"{spread[program]:.3g}", *_evidence_cells(evidence, program)]
        if groups is not None:
            row.append(str(means[program].idxmax()))
        for table in weights.values():
            if program not in table.columns:
                row += ["", ""]
                continue
            column = table[program].astype(float)
            positive = select_top(column[column > 0], n_top, "positive")
            negative = select_top(column[column < 0], n_top, "negative")
            row += [_feature_list(positive.index), _feature_list(negative.index)]
        rows.append(row)
    # a column that is empty for every program (non-negative weights) says nothing
    keep = [j for j in range(len(header)) if any(_cell_text(r[j]) for r in rows)]
    return [header[j] for j in keep], [[r[j] for j in keep] for r in rows]


def _cell_text(cell: Any) -> str:
    text = cell.text if isinstance(cell, _Raw) else str(cell)
    return text.replace('<span class="features">', "").replace("</span>", "").strip()


def _attribution_rows(data: Any, mod: str | None, key: str, n_top: int) -> list[list[Any]]:
    """Per group: the features with the strongest signed evidence for it, and against it."""
    container = _utils.containers(data)[mod]
    signed = _keys.signed(key)
    if signed not in container.varm:
        # only a mean |attribution| entry: it has no sign to split by
        table, _, _ = _utils.resolve_varm(data, key, mod)
        return [
            [str(g), _feature_list(select_top(table[g].astype(float), n_top, "abs").index), ""]
            for g in table.columns
        ]
    where = {"modality": mod} if _utils.is_mudata(data) else {}
    ranked = {
        d: rank_features(data, signed, direction=d, n_top=n_top, inplace=False, **where)
        for d in ("for", "against")
    }
    against = ranked["against"].groupby("group", sort=False)["names"]
    return [
        [str(g), _feature_list(t["names"]), _feature_list(against.get_group(g))]
        for g, t in ranked["for"].groupby("group", sort=False)
    ]


# ----------------------------------------------------------------------------- figures
def _embedding_data(data: Any, latent_key: str, latent: pd.DataFrame, labels_key: str | None):
    """Build a throwaway AnnData with a UMAP (the data's own, or one of the latent)."""
    import scanpy as sc
    from anndata import AnnData

    obs = data.obs[[labels_key]].copy() if labels_key else pd.DataFrame(index=data.obs_names)
    plot_data = AnnData(obs=obs, obsm={latent_key: latent})
    if "X_umap" in data.obsm:
        plot_data.obsm["X_umap"] = np.asarray(data.obsm["X_umap"])[:, :2]
        return plot_data
    if data.n_obs < 5:
        return None
    sc.pp.neighbors(plot_data, use_rep=latent_key, n_neighbors=min(15, data.n_obs - 1))
    sc.tl.umap(plot_data, random_state=0)
    return plot_data


def _heatmap_n_top(data: Any, mod: str | None, key: str, n_top: int) -> int:
    """Features per group in the report's heatmap: at most about 50 columns in all."""
    n_groups = _utils.containers(data)[mod].varm[key].shape[1]
    return max(2, min(n_top, 5, 50 // max(n_groups, 1)))


def _save(name: str, out_dir: Path, figures: dict[str, Path], draw, dpi: int) -> None:
    """Draw one figure into ``out_dir/name.png``; a failure is logged, not raised."""
    import matplotlib.pyplot as plt

    path = out_dir / f"{name}.png"
    before = set(plt.get_fignums())
    try:
        draw(path)
    except Exception as err:  # one bad figure must not lose the rest of the report
        logger.warning("figure %s skipped: %s", name, err)
        return
    finally:
        # close only the figures drawn here, not the user's open ones
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    figures[name] = path


def _img(path: Path, caption: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def write_report(
    data: Any,
    model: Any,
    out_dir: str | os.PathLike,
    *,
    title: str | None = None,
    n_top: int = 8,
    n_programs: int = 8,
    dpi: int = 110,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a trained model's figures, tables (CSV) and a self-contained ``report.html``.

    The report is a record of the run. It embeds every figure (as base64 data, so the single
    HTML file can be mailed or opened offline) in its section: the run (package versions,
    seed, and the command line, input and parameters given in ``run_info``), the data, the
    model and its parameters, the training (final losses, training and validation curves),
    the programs or factors (activity spread, top features, where each is highest, a
    program x cell-group table), where the programs came from (the mask's source and the
    dropped programs with the reason), their evidence (``uns[prefix]["evidence"]``), each
    attribution (settings, convergence, top features per group), rankings in scanpy's
    ``rank_genes_groups`` layout (such as ``glassvi.tl.rank_features`` and differential
    programs write) and differential programs. The tables are also written as CSV files next
    to the report and linked from it. ``data`` is not modified: a UMAP is computed on a
    temporary copy of the latent space when ``obsm["X_umap"]`` is absent.

    Figures written (when the data hold what they need): ``history.png``, ``embedding.png``
    (activities of the top programs and the cell labels on a UMAP), ``top_features_<mod>.png``,
    ``attribution_<key>.png``, ``differential_<key>.png`` and ``multiome_<program>.png``.

    Parameters
    ----------
    data
        AnnData or MuData on which ``model.explain()`` was run.
    model
        The trained glassvi model.
    out_dir
        Directory to write into (created if needed).
    title
        Title of the report; default ``"<model class> report"``.
    n_top
        Features listed per program and per group.
    n_programs
        Programs or factors shown in the figures and the table (most variable first).
    dpi
        Resolution of the PNG files.
    run_info
        What the report should record about how the results were made, e.g.
        ``{"command": "glassvi run data.h5ad", "input": "data.h5ad", "seed": 0,
        "parameters": {...}}``; the seed defaults to ``scvi.settings.seed``.

    Returns
    -------
    Name -> path of every file written; ``"report"`` is the HTML file, CSV tables are named
    ``"csv:<name>"``.

    Raises
    ------
    KeyError
        If ``model.explain()`` has not written its results into ``data``.

    Examples
    --------
    >>> model.explain()
    >>> paths = glassvi.pl.write_report(adata, model, "glassvi_results")
    >>> paths["report"]
    PosixPath('glassvi_results/report.html')
    """
    _utils.check_data(data, "data")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {str(out)!r} exists and is not a directory.")
    if n_top < 1 or n_programs < 1:
        raise ValueError(f"n_top and n_programs must be at least 1, got {n_top}, {n_programs}.")
    prefix, record = _record(data, model)
    latent_key = record["latent_key"]
    latent = _utils.get_obsm_frame(data, latent_key)
    weights = _weights_by_modality(data, record)
    out.mkdir(parents=True, exist_ok=True)

    import matplotlib

    labels_key = _labels_key(data, model)
    order = _rank_programs(latent)
    evidence = record.get(_keys.EVIDENCE)
    evidence = evidence if isinstance(evidence, pd.DataFrame) else None
    if evidence is not None:
        order = _rank_by_evidence(order, evidence)
    shown = order[:n_programs]
    figures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    with matplotlib.rc_context({"figure.dpi": dpi, "savefig.dpi": dpi}):
        if getattr(model, "history", None):
            _save("history", out, figures, lambda p: history(model, show=False, save=p), dpi)
            captions["history"] = "Training curves by epoch."

        embedded = _embedding_data(data, latent_key, latent, labels_key)
        if embedded is not None:
            colors = [labels_key] if labels_key else None
            _save(
                "embedding",
                out,
                figures,
                lambda p: activity(
                    embedded,
                    shown[:5],
                    key=latent_key,
                    color=colors,
                    ncols=3,
                    show=False,
                    save=p,
                    size=max(120_000 / data.n_obs, 4.0),
                ),
                dpi,
            )
            captions["embedding"] = (
                f"UMAP of obsm[{latent_key!r}] colored by the activity of the "
                + ("most variable" if evidence is None else "best-supported")
                + " programs"
                + (f" and by {labels_key}." if labels_key else ".")
            )
        for mod in weights:
            modality = mod if _utils.is_mudata(data) else None
            name = f"top_features_{mod}"
            _save(
                name,
                out,
                figures,
                lambda p, m=modality: top_features(
                    data,
                    shown,
                    key=record["weights_key"],
                    n=min(n_top + 4, 15),
                    modality=m,
                    show=False,
                    save=p,
                ),
                dpi,
            )
            captions[name] = f"Top {mod} features of each program (largest weights)."
        attributions = _attribution_keys(data, prefix, record)
        for mod, key in attributions:
            name = f"attribution_{key}"
            _save(
                name,
                out,
                figures,
                lambda p, m=mod, k=key: attribution_heatmap(
                    data,
                    k,
                    n_top=_heatmap_n_top(data, m, k, n_top),
                    modality=m,
                    show=False,
                    save=p,
                ),
                dpi,
            )
            captions[name] = f"Top attributed features per group, varm[{key!r}]."
        for key in _differential_keys(data, prefix):
            name = f"differential_{key}"
            _save(
                name, out, figures, lambda p, k=key: differential(data, k, show=False, save=p), dpi
            )
            captions[name] = f"Differential programs, uns[{key!r}]."
        if _utils.is_mudata(data) and len(weights) > 1 and shown:
            name = f"multiome_{shown[0]}"
            _save(
                name,
                out,
                figures,
                lambda p: multiome_program(
                    data, shown[0], key=record["weights_key"], show=False, save=p
                ),
                dpi,
            )
            captions[name] = (
                f"Program {shown[0]}: top genes and the weights of their linked peaks."
            )

    groups = data.obs[labels_key] if labels_key else None
    header, program_rows = _program_rows(latent, weights, shown, groups, n_top, evidence)
    title = title or f"{type(model).__name__} report"
    tables: dict[str, Path] = {}

    def csv(name: str, frame: pd.DataFrame) -> str:
        path = out / f"{name}.csv"
        frame.to_csv(path)
        tables[f"csv:{name}"] = path
        return (
            f'<p class="download"><a href="{html.escape(path.name)}" download>{path.name}</a></p>'
        )

    def figs(*names: str) -> str:
        return "".join(_img(figures[n], captions.get(n, n)) for n in names if n in figures)

    sections = [
        (
            "run",
            "Run",
            _table(None, rec.run_rows(run_info, model))
            + "<h3>Versions</h3>"
            + _table(["package", "version"], rec.versions()),
        ),
        ("data", "Data", _table(None, _data_rows(data, labels_key, record))),
        ("model", "Model", _table(["parameter", "value"], _model_rows(model, record))),
        ("training", "Training", _table(None, _training_rows(model)) + figs("history")),
    ]
    program_html = (
        (
            "<p>Programs ordered by the standard deviation of their activity across cells.</p>"
            if evidence is None
            else "<p>Programs ordered by their evidence (FDR q-values against decoy "
            "programs trained alongside them): first those the data support that three or "
            "more genes carry. Notes mark programs the data do not support and those one or "
            "two genes carry.</p>"
        )
        + _table(header, program_rows, numeric={1})
        + csv("programs", rec.program_table(latent, weights, groups, n_top))
        + figs("embedding", *[n for n in figures if n.startswith("top_features_")])
    )
    if groups is not None:
        by_group = rec.activity_by_group(latent, groups)
        shown_table = by_group.loc[shown]
        program_html += (
            f"<h3>Mean activity by {html.escape(str(labels_key))}</h3>"
            + _table(
                ["program", *map(str, shown_table.columns)],
                [[p, *(f"{v:.3g}" for v in row)] for p, row in shown_table.iterrows()],
                numeric=set(range(1, shown_table.shape[1] + 1)),
            )
            + csv("program_by_group", by_group)
        )
    program_html += figs(*[n for n in figures if n.startswith("multiome_")])
    sections.append(("programs", "Programs", program_html))
    provenance = rec.program_provenance(data, model)
    if provenance is not None:
        rows, dropped = rec.provenance_rows(provenance)
        content = _table(None, rows)
        if len(dropped):
            content += (
                f"<details><summary>{len(dropped)} dropped programs and why</summary>"
                + _table(["program", "reason"], dropped.to_numpy().tolist())
                + "</details>"
                + csv("dropped_programs", dropped.set_index("program"))
            )
        sections.append(("source", "Program source", content))
    evidence = rec.evidence_table(record)
    if evidence is not None:
        rows = [[p, *(_fmt(v) for v in row)] for p, row in evidence.iterrows()]
        sections.append(
            (
                "evidence",
                "Program evidence",
                "<p>Programs ordered by p-value of the evidence test.</p>"
                + _table(["program", *map(str, evidence.columns)], rows)
                + csv("program_evidence", evidence),
            )
        )
    # rankings that rank_features wrote from a shown attribution repeat its "evidence for /
    # against" table: their CSVs go into the attribution's section, not into sections of their own
    rankings = {key: rec.rankings(data, key) for key in rec.ranking_keys(data)}
    rankings_of = {
        key: [r for r in rankings if _ranks_attribution(data.uns[r], key)]
        for _, key in attributions
    }
    for mod, key in attributions:
        meta = data.uns.get(key)
        settings = rec.attribution_rows(meta) if isinstance(meta, Mapping) else []
        sections.append(
            (
                f"attr-{key}",
                f"Attribution: {key}",
                (_table(["setting", "value"], settings) if settings else "")
                + "<h3>Top attributed features</h3>"
                + "<p>Features ranked by their mean signed attribution: evidence for each group "
                "against the other groups, and evidence against it (glassvi.tl.rank_features)."
                "</p>"
                + _table(
                    ["group", "evidence for", "evidence against"],
                    _attribution_rows(data, mod, key, n_top),
                )
                + "".join(
                    csv(f"ranking_{r}", rankings[r].set_index(["group", "rank"]))
                    for r in rankings_of[key]
                    if rankings[r] is not None
                )
                + figs(f"attribution_{key}"),
            )
        )
    shown_rankings = {r for keys in rankings_of.values() for r in keys}
    for key, ranking in rankings.items():
        if ranking is None or key in shown_rankings or key in _differential_keys(data, prefix):
            continue
        top = ranking.groupby("group", sort=False).head(n_top)
        rows = [
            [g, ", ".join(map(str, part["names"]))] for g, part in top.groupby("group", sort=False)
        ]
        sections.append(
            (
                f"rank-{key}",
                f"Ranking: {key}",
                _table(["group", f"top {n_top}"], rows)
                + csv(f"ranking_{key}", ranking.set_index(["group", "rank"])),
            )
        )
    for key in _differential_keys(data, prefix):
        table = _differential_table_of(data, key)
        sections.append(
            (
                f"diff-{key}",
                f"Differential programs: {key}",
                csv(f"differential_{key}", table) + figs(f"differential_{key}"),
            )
        )

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    page = _template("report.html").substitute(
        title=html.escape(title),
        css=_template("report.css").template,
        version=html.escape(__version__),
        stamp=stamp,
        n_cells=f"{data.n_obs:,}",
        nav=nav,
        body=body,
    )
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    logger.info("wrote %s with %d figures", report, len(figures))
    return {**figures, **tables, "report": report}
