"""What the explain job needs from a model: the :class:`ExplainableModel` protocol.

:func:`glassvi.explain.explain` works on any object with these members; glassvi's model
classes (:class:`~glassvi.model.LinearVI`, :class:`~glassvi.model.ProgramVI`) provide them
through their shared base class. Nothing here imports the model classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import pandas as pd
import torch


class ExplainableModel(Protocol):
    """A trained glassvi model as seen by :mod:`glassvi.explain`.

    Attributes
    ----------
    module
        The torch module (:class:`~glassvi.module.GlassVAE` or subclass). Explain reads its
        ``modalities``, ``likelihoods``, ``registry_keys``, ``n_features``, ``n_latent``,
        ``n_cats_per_cov``, ``n_continuous_cov``, ``decoders`` (and their optional ``mask``),
        ``classifier``, ``n_labels``, ``loadings(role)`` and ``latent_from_inputs(...)``: the
        encoder input builder that maps one tensor per modality (and the covariates) to the
        posterior mean.
    adata
        The training data.
    device
        Device of the module.
    modalities
        Modality roles (``"rna"``, ``"atac"``) in decoder order.
    _prefix, _weights_suffix
        Default key prefix of the results and suffix of the decoder weights' key.
    _modality_names
        Role -> MuData modality name (``None`` for AnnData).

    Examples
    --------
    >>> isinstance(model, ExplainableModel)  # structural: any glassvi model
    """

    module: torch.nn.Module
    adata: Any
    _prefix: str
    _weights_suffix: str
    _modality_names: dict[str, str | None]

    @property
    def device(self) -> torch.device:
        """Device of the module."""

    @property
    def modalities(self) -> list[str]:
        """Modality roles in decoder order."""

    def _latent_names(self) -> list[str]:
        """Names of the latent units (factors or programs)."""

    def _label_names(self) -> list[str]:
        """Names of the classes of the cell-label head."""

    def _check_classifier(self) -> None:
        """Raise a ``ValueError`` when the model has no cell-label head."""

    def _container(self, adata, role: str):
        """The AnnData holding modality ``role``'s features (``adata`` or one modality)."""

    def _var_names(self, role: str, adata=None) -> pd.Index:
        """Feature names of modality ``role`` (of the training data by default)."""

    def _intrinsic_extras(self, adata=None, batch_size: int | None = None) -> dict:
        """Model-specific ``.uns`` fields of the intrinsic explanation (``"params"`` merged)."""

    def _check_if_trained(self, warn: bool = True) -> None:
        """Warn when the model has not been trained."""

    def _validate_anndata(self, adata=None):
        """The data, checked against the registry (the training data by default)."""

    def _make_data_loader(self, adata, indices=None, batch_size=None, shuffle=False, **kwargs):
        """Minibatches of registered tensors of the cells at ``indices``."""

    def get_anndata_manager(self, adata, required: bool = False):
        """The registry manager of ``adata``."""

    def get_latent_representation(self, adata=None, batch_size=None, **kwargs) -> Iterable:
        """Posterior mean of the latent units, cells x latent."""
