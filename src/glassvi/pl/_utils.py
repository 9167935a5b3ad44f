"""Shared helpers of glassvi.pl: key lookup with clear errors, figure saving and showing."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys
from .._docs import fill_docs
from .._varm import as_frame, entry_frame

logger = logging.getLogger(__name__)

#: dots per inch of saved figures unless ``dpi`` is given
SAVE_DPI = 150

#: fills ``%(show_save)s`` in the docstrings of the plotting functions
plot_docs = fill_docs(
    {
        "show_save": """
            show
                Show the figure; by default it is shown unless ``save`` is given.
            save
                Write the figure to this path (PNG unless the suffix says otherwise).
            dpi
                Resolution of the saved figure.
            """
    }
)


def is_mudata(data: Any) -> bool:
    """Whether ``data`` is a MuData (checked without importing mudata eagerly)."""
    return hasattr(data, "mod") and isinstance(data.mod, Mapping)


def check_data(data: Any, name: str = "adata") -> None:
    """Raise TypeError unless ``data`` is an AnnData or a MuData."""
    if not (isinstance(data, AnnData) or is_mudata(data)):
        raise TypeError(f"{name} must be an AnnData or a MuData, got {type(data).__name__}.")


def available(keys) -> str:
    """Comma-separated, quoted key names for error messages (``none`` when empty)."""
    keys = [str(k) for k in keys]
    return ", ".join(repr(k) for k in keys) if keys else "none"


def _records(data: Any) -> list[dict]:
    """Return glassvi result records in ``.uns`` (dicts with a latent or weights key)."""
    return [
        value
        for value in data.uns.values()
        if isinstance(value, Mapping) and ("latent_key" in value or "weights_key" in value)
    ]


def default_latent_key(data: Any) -> str:
    """Return the obsm key of the first glassvi latent representation found."""
    for record in _records(data):
        key = record.get("latent_key")
        if key in data.obsm:
            return key
    for key in _keys.DEFAULT_LATENTS:
        if key in data.obsm:
            return key
    raise KeyError(
        "No glassvi activities found in .obsm; run model.explain() first or pass key= "
        f"(available obsm keys: {available(data.obsm.keys())})."
    )


def default_weights_key(data: Any) -> str:
    """Return the varm key of the first glassvi weights found in any modality."""
    candidates = [r.get("weights_key") for r in _records(data) if r.get("weights_key")]
    candidates += list(_keys.DEFAULT_WEIGHTS)
    for key in candidates:
        for container in containers(data).values():
            if key in container.varm:
                return key
    raise KeyError(
        "No glassvi weights found in .varm; run model.explain() first or pass key= "
        f"(available varm keys: {available(all_varm_keys(data))})."
    )


def containers(data: Any) -> dict[str | None, AnnData]:
    """Modality name -> AnnData holding that modality's features (``None`` for an AnnData)."""
    if is_mudata(data):
        return dict(data.mod)
    return {None: data}


def all_varm_keys(data: Any) -> list[str]:
    """Every varm key, as ``key`` for an AnnData and ``modality:key`` for a MuData."""
    if not is_mudata(data):
        return list(data.varm.keys())
    return [f"{mod}:{key}" for mod, sub in data.mod.items() for key in sub.varm.keys()]


def get_obsm_frame(data: Any, key: str) -> pd.DataFrame:
    """``data.obsm[key]`` as a DataFrame indexed by ``obs_names`` (KeyError if absent)."""
    if key not in data.obsm:
        raise KeyError(
            f"{key!r} is not in .obsm (available obsm keys: {available(data.obsm.keys())})."
        )
    values = data.obsm[key]
    if isinstance(values, pd.DataFrame):
        return values
    values = np.asarray(values.toarray() if hasattr(values, "toarray") else values)
    if values.ndim != 2:
        raise ValueError(f".obsm[{key!r}] must be two-dimensional, got shape {values.shape}.")
    columns = _stored_columns(data, key, values.shape[1])
    return pd.DataFrame(values, index=data.obs_names, columns=columns)


def _stored_columns(data: Any, key: str, n: int) -> list[str]:
    """Column names kept beside an ``.obsm`` array in ``.uns``.

    glassvi keeps them in ``uns[key]["cell_columns"]`` (cell-level attributions) and
    ``uns[prefix]["columns"]`` (latent representations, found through the record's
    ``latent_key``); other tools may keep ``uns[key]["names"]``.
    """
    record = data.uns.get(key)
    for field in ("cell_columns", "names"):  # attribution records; other tools' name lists
        if isinstance(record, Mapping) and field in record and len(record[field]) == n:
            return [str(c) for c in record[field]]
    for record in _records(data):
        if key == record.get("latent_key"):
            columns = list(record.get("columns", []))
            if len(columns) == n:
                return [str(c) for c in columns]
    return [str(i) for i in range(n)]


def resolve_varm(
    data: Any, key: str, modality: str | None = None
) -> tuple[pd.DataFrame, AnnData, str | None]:
    """Find ``varm[key]`` of an AnnData or of a MuData modality.

    Returns the table as a DataFrame indexed by ``var_names`` (an array gets the column names
    recorded in ``.uns``, see :mod:`glassvi._varm`), the AnnData holding it and the modality
    name (``None`` for an AnnData). With a MuData and no ``modality``, the first modality
    having the key is used.
    """
    conts = containers(data)
    if modality is not None:
        if not is_mudata(data):
            raise ValueError("modality= applies to a MuData only; got an AnnData.")
        if modality not in conts:
            raise KeyError(
                f"modality {modality!r} is not in the MuData (modalities: {available(conts)})."
            )
        conts = {modality: conts[modality]}
    for mod, container in conts.items():
        if key in container.varm:
            values = entry_frame(data, container, key)
            if values is None:  # an array whose column names are not recorded: numbered
                values = as_frame(container.varm[key], container.var_names, None)
            return values, container, mod
    where = ".varm" if modality is None else f"mdata[{modality!r}].varm"
    keys = all_varm_keys(data) if modality is None else list(conts[modality].varm.keys())
    raise KeyError(f"{key!r} is not in {where} (available varm keys: {available(keys)}).")


def check_columns(frame: pd.DataFrame, wanted: Sequence[str], where: str) -> None:
    """KeyError naming the entries of ``wanted`` that are not columns of ``frame``."""
    missing = [str(c) for c in wanted if c not in frame.columns]
    if missing:
        shown = list(map(str, frame.columns[:20]))
        more = f" and {len(frame.columns) - 20} more" if len(frame.columns) > 20 else ""
        raise KeyError(
            f"{available(missing)} not in the columns of {where} "
            f"(available: {available(shown)}{more})."
        )


def as_list(value: str | Sequence[str]) -> list[str]:
    """Return a single name or a sequence of names as a list."""
    if isinstance(value, str | int):
        return [value]
    return list(value)


def finish(fig, axes, show: bool | None, save: str | os.PathLike | None, dpi: int | None):
    """Save and/or show a figure like scanpy does and return what scanpy would return.

    ``show=None`` shows the figure unless it is saved. The axes are returned when the figure
    is not shown; a shown figure is closed and ``None`` is returned.
    """
    import matplotlib.pyplot as plt

    if save is not None and save is not False:
        path = Path(save)
        if not path.suffix:
            path = path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi or SAVE_DPI, bbox_inches="tight")
        logger.info("saved figure to %s", path)
    if show is None:
        show = save is None or save is False
    if show:
        plt.show()
        return None
    return axes


def new_figure(figsize: tuple[float, float], ax=None):
    """Return a new figure and axes, or the figure of the axes given."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize, layout="constrained")
