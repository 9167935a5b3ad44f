"""Match the features of an AnnData/MuData to a model's by name, never by position."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd
from anndata import AnnData
from mudata import MuData

logger = logging.getLogger(__name__)

#: keys scvi-tools writes into ``.uns`` to recognise data it registered
_SCVI_UNS_KEYS = ("_scvi_uuid", "_scvi_manager_uuid")
_N_SHOWN = 5


def _shown(names: pd.Index) -> str:
    listed = ", ".join(map(repr, names[:_N_SHOWN]))
    return listed + (f", ... ({len(names)} in all)" if len(names) > _N_SHOWN else "")


def feature_order(
    names: pd.Index, reference: pd.Index, where: str
) -> tuple[list[int] | None, int]:
    """Positions of the ``reference`` features in ``names``.

    Parameters
    ----------
    names
        Feature names of the data.
    reference
        Feature names the model was trained on, in the model's order.
    where
        How to name the data in errors (e.g. ``"adata"`` or ``"mdata['atac']"``).

    Returns
    -------
    ``(None, 0)`` when ``names`` equals ``reference``; otherwise the positions to take, in
    the model's order, and the number of extra features of the data that are left out.

    Raises
    ------
    ValueError
        If a model feature is missing from the data (the first few are named, with their
        count), or a model feature appears more than once in the data.

    Examples
    --------
    >>> feature_order(pd.Index(["b", "a"]), pd.Index(["a", "b"]), "adata")
    ([1, 0], 0)
    """
    names = pd.Index(names).astype(str)
    reference = pd.Index(reference).astype(str)
    if names.equals(reference):
        return None, 0
    missing = reference[~reference.isin(names)]
    if len(missing):
        raise ValueError(
            f"{where} lacks {len(missing)} of the model's {len(reference)} features: "
            f"{_shown(missing)}. Features are matched by name; add them (e.g. as zero counts "
            "with Model.prepare_query_anndata) or use data with the training features."
        )
    needed = names[names.isin(reference)]
    if needed.has_duplicates:
        repeated = needed[needed.duplicated()].unique()
        raise ValueError(
            f"{where} has features named more than once ({_shown(repeated)}); features are "
            "matched by name, so names must be unique (adata.var_names_make_unique())."
        )
    positions = names.get_indexer(reference)
    return [int(p) for p in positions], len(names) - len(reference)


def _without_scvi_keys(data):
    for container in [data, *getattr(data, "mod", {}).values()]:
        for key in _SCVI_UNS_KEYS:
            container.uns.pop(key, None)
    return data


def align_features(
    data: AnnData | MuData, reference: Mapping[str | None, pd.Index]
) -> AnnData | MuData:
    """Return ``data`` with its features in the model's order: itself, or a reordered copy.

    The user's object is never changed: when the features are in another order (or the data
    hold extra features), the model works on a copy holding exactly its features in its order.

    Parameters
    ----------
    data
        AnnData or MuData to use with a model.
    reference
        Modality name -> the model's feature names; the key ``None`` stands for an AnnData.

    Returns
    -------
    ``data`` itself when every modality already matches, else a copy whose modelled features
    are in the model's order (without scvi-tools' registration marks, so it is registered
    afresh).

    Raises
    ------
    ValueError
        If a model feature is missing (named, with the count of missing ones).

    Examples
    --------
    >>> work = align_features(adata, {None: model.adata.var_names})  # doctest: +SKIP
    """
    orders = {}
    for mod, ref in reference.items():
        container = data if mod is None else data[mod]
        where = "adata" if mod is None else f"mdata[{mod!r}]"
        order, n_extra = feature_order(container.var_names, ref, where)
        if order is not None:
            orders[mod] = order
            logger.warning(
                "%s: the features are matched to the model's by name (%s); the model uses a "
                "copy in its own order, the object passed in is left unchanged.",
                where,
                f"{n_extra} extra features left out" if n_extra else "another order",
            )
    if not orders:
        return data
    if isinstance(data, MuData):
        aligned = data.copy()
        for mod, order in orders.items():
            aligned.mod[mod] = aligned.mod[mod][:, order].copy()
        aligned.update()
    else:
        aligned = data[:, orders[None]].copy()
    return _without_scvi_keys(aligned)


class FeatureMatchingMixin:
    """Match every AnnData/MuData given to a model to its features by name.

    Mixed into the model base class: scvi-tools routes every accessor (latent representation,
    activities, predictions, attributions) through ``_validate_anndata``, so data given with
    the model's features in another order are used through a reordered copy, and data missing
    a feature are refused before anything is registered.
    """

    def _feature_reference(self) -> dict[str | None, pd.Index]:
        """Modality name (``None`` for AnnData) -> the model's features, in its order."""
        return {self._modality_names.get(r): self._var_names(r) for r in self.modalities}

    def _validate_anndata(self, adata=None, copy_if_view: bool = True):
        if adata is not None and adata is not self.adata:
            adata = align_features(adata, self._feature_reference())
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)
