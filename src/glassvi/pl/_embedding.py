"""Program or factor activities on a cell embedding (UMAP, t-SNE, PCA, ...)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys
from ._evidence import find_evidence, with_evidence
from ._utils import (
    available,
    check_columns,
    check_data,
    default_latent_key,
    finish,
    get_obsm_frame,
    plot_docs,
)


def _basis_key(data: Any, basis: str) -> str:
    key = basis if basis in data.obsm else _keys.latent(basis)
    if key not in data.obsm:
        raise KeyError(
            f"basis {basis!r}: {key!r} is not in .obsm (available obsm keys: "
            f"{available(data.obsm.keys())}). Compute it first, e.g. "
            "sc.pp.neighbors(adata, use_rep='X_linearvi'); sc.tl.umap(adata)."
        )
    return key


@plot_docs
def activity(
    adata: Any,
    programs: str | Sequence[str],
    basis: str = "umap",
    *,
    key: str | None = None,
    color: str | Sequence[str] | None = None,
    ncols: int = 4,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
    show_evidence: bool = False,
    **kwargs,
):
    """Color cells on an embedding by the activity of programs or factors.

    The activities are columns of a cells x programs DataFrame in ``.obsm`` (such as
    ``obsm["X_programvi"]``, ``obsm["X_linearvi"]`` or a cell-level attribution). They are drawn
    with :func:`scanpy.pl.embedding` on a lightweight copy, so ``adata`` is left untouched.
    Signed activities use a diverging colormap centred on zero.

    Parameters
    ----------
    adata
        AnnData or MuData with the embedding ``obsm["X_" + basis]`` and the activities.
    programs
        One or several columns of ``obsm[key]`` (program or factor names).
    basis
        Embedding to draw on: ``"umap"`` reads ``obsm["X_umap"]``; a full key also works.
    key
        ``obsm`` key of the activities; by default the latent representation that
        ``model.explain()`` wrote (``"X_programvi"`` or ``"X_linearvi"``).
    color
        Extra ``obs`` columns (e.g. cell types) drawn as further panels after the programs.
    ncols
        Panels per row.
    %(show_save)s
    show_evidence
        Add each program's evidence (FDR q-value, effective number of genes, and a mark when
        the data do not support it or one or two genes carry it) to its panel's title, from
        the ``uns[...]["evidence"]`` table ProgramVI's ``explain()`` writes.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``cmap``, ``size``, ``vmax``, ...).

    Returns
    -------
    The Axes (a list of Axes for several panels) when the figure is not shown, else ``None``.

    Raises
    ------
    KeyError
        If the basis, the activity key, a program or an ``obs`` column is missing; the message
        lists what is available.

    Examples
    --------
    >>> import scanpy as sc
    >>> sc.pp.neighbors(adata, use_rep="X_linearvi")
    >>> sc.tl.umap(adata)
    >>> glassvi.pl.activity(adata, ["factor_0", "factor_1"], color="cell_type")
    >>> glassvi.pl.activity(adata, "HALLMARK_HYPOXIA", show_evidence=True)
    """
    import scanpy as sc

    check_data(adata)
    basis_key = _basis_key(adata, basis)
    key = key or default_latent_key(adata)
    frame = get_obsm_frame(adata, key)
    names = [programs] if isinstance(programs, str) else list(programs)
    if not names:
        raise ValueError("programs is empty; name at least one column of obsm[key].")
    check_columns(frame, names, f"obsm[{key!r}]")
    extra = [] if color is None else ([color] if isinstance(color, str) else list(color))
    missing = [c for c in extra if c not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"{available(missing)} not in .obs (available obs columns: "
            f"{available(adata.obs.columns)})."
        )

    # a throwaway AnnData that shares nothing writable with the user's object
    obs = adata.obs[extra].copy() if extra else pd.DataFrame(index=adata.obs_names.copy())
    labels = {}
    for name in names:
        label = str(name)
        while label in obs.columns:
            label = f"{label} "
        obs[label] = frame[name].to_numpy(dtype=float)
        labels[name] = label
    embedding = np.asarray(adata.obsm[basis_key])[:, :2]
    plot_data = AnnData(obs=obs, obsm={"X_emb": embedding})

    # signed activities (LinearVI factors) read best on a diverging map centred on zero
    signed = all(obs[labels[n]].min() < 0 < obs[labels[n]].max() for n in names)
    if signed and not {"cmap", "color_map", "vmin", "vmax", "vcenter", "norm"} & set(kwargs):
        # symmetric limits per panel keep white at zero on a linear color scale
        limits = [float(obs[labels[n]].abs().max()) for n in names]
        kwargs["cmap"] = "RdBu_r"
        kwargs["vmax"] = limits + [None] * len(extra)
        kwargs["vmin"] = [-v for v in limits] + [None] * len(extra)
    axes = sc.pl.embedding(
        plot_data,
        basis="X_emb",
        color=[labels[n] for n in names] + extra,
        ncols=ncols,
        show=False,
        **kwargs,
    )
    ax_list = axes if isinstance(axes, list) else [axes]
    if show_evidence:
        evidence = find_evidence(adata, latent_key=key)
        for name, ax in zip(names, ax_list):
            ax.set_title(with_evidence(ax.get_title(), evidence, name))
    basis_name = _keys.latent_name(basis_key).upper()
    for ax in ax_list:
        ax.set_xlabel(f"{basis_name}1")
        ax.set_ylabel(f"{basis_name}2")
    return finish(ax_list[0].figure, axes, show, save, dpi)
