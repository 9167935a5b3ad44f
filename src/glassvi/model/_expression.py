"""Decoded expression and differential expression, in scvi-tools' form.

``get_normalized_expression`` decodes cells into each feature's expected fraction of the
counts (scvi-tools' ``px.scale``); ``differential_expression`` feeds it to scvi-tools' own
Bayesian DE machinery (:class:`scvi.model.base.DifferentialComputation`, driven the way
scvi-tools' models drive it), so the result has scvi-tools' columns (``proba_de``,
``bayes_factor``, ``lfc_mean``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from numbers import Number
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS

logger = logging.getLogger(__name__)


def _px_mean(px) -> torch.Tensor:
    """Expected value of a likelihood: the NB/ZINB ``mu``, the Poisson rate, the probability."""
    if hasattr(px, "mu"):
        return px.mu
    if hasattr(px, "probs") and not hasattr(px, "rate"):
        return px.probs
    return px.mean


def _count_properties(key: str):
    """Raw-count statistics of two groups of cells for one registered count matrix.

    The same statistics as scvi-tools' ``scrna_raw_counts_properties`` (means, fractions of
    non-zero cells, means of counts per 10,000), computed without writing to ``.obs``.
    """

    def properties(adata_manager, idx1, idx2) -> dict[str, np.ndarray]:
        data = adata_manager.get_from_registry(key)
        totals = np.asarray(data.sum(axis=1)).ravel()
        scaling = 1e4 / np.clip(totals, 1e-12, None)
        out = {}
        for suffix, idx in (("1", idx1), ("2", idx2)):
            part = data[np.asarray(idx)]
            out[f"raw_mean{suffix}"] = np.asarray(part.mean(axis=0)).ravel()
            out[f"non_zeros_proportion{suffix}"] = np.asarray((part != 0).mean(axis=0)).ravel()
            factor = scaling[np.asarray(idx)].reshape(-1, 1)
            normed = part.multiply(factor) if sparse.issparse(part) else part * factor
            out[f"raw_normalized_mean{suffix}"] = np.asarray(normed.mean(axis=0)).ravel()
        return out

    return properties


class ExpressionMixin:
    """Decoded expression and Bayesian differential expression for glassvi models."""

    def _expression_modality(self, modality: str | None) -> str:
        if modality is None:
            return "rna" if "rna" in self.modalities else self.modalities[0]
        return self._check_modality(modality)[0]

    def _batch_codes(self, adata, transform_batch) -> list[int | None]:
        if transform_batch is None:
            return [None]
        if isinstance(transform_batch, str | Number) or not isinstance(transform_batch, Sequence):
            transform_batch = [transform_batch]
        manager = self.get_anndata_manager(adata, required=True)
        mapping = list(manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
        codes = []
        for batch in transform_batch:
            if batch is None:
                codes.append(None)
            elif batch in mapping:
                codes.append(mapping.index(batch))
            else:
                raise ValueError(f"{batch!r} is not a batch category (batches: {mapping}).")
        return codes

    def _decode_normalized(
        self, tensors: dict, role: str, batch_code: int | None, sample: bool, latent_library: bool
    ) -> torch.Tensor:
        """One minibatch decoded into ``role``'s expected fraction of counts (cells x features).

        The module is decoded at a log library size of zero, so a count likelihood's mean is the
        softmax of the decoder's output (scvi-tools' ``px.scale``); a Bernoulli modality is
        decoded at the training data's mean depth, giving the accessibility probability.
        """
        module = self.module
        inference_inputs = module._get_inference_input(tensors)
        inference_outputs = module.inference(**inference_inputs)
        qz = inference_outputs["qz"]
        z = qz.sample() if sample else qz.loc
        generative_inputs = module._get_generative_input(tensors, {**inference_outputs, "z": z})
        if batch_code is not None and generative_inputs.get("batch_index") is not None:
            generative_inputs["batch_index"] = torch.full_like(
                generative_inputs["batch_index"], batch_code
            )
        if not latent_library:
            library = {}
            for i, m in enumerate(module.modalities):
                observed = generative_inputs["library"][m]
                if module.likelihoods[m] == "bernoulli":
                    library[m] = torch.full_like(observed, float(module.library_log_means[i]))
                else:
                    library[m] = torch.zeros_like(observed)
            generative_inputs["library"] = library
            generative_inputs["size_factor"] = None
        px = module.generative(**generative_inputs)["px"][role]
        return _px_mean(px)

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | Sequence[str | int] | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | Literal["latent"] = 1,
        n_samples: int = 1,
        n_samples_overall: int | None = None,
        batch_size: int | None = None,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        modality: str | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """Decoded (normalised) expression: each feature's expected share of a cell's counts.

        The counterpart of scvi-tools'
        :meth:`~scvi.model.base.RNASeqMixin.get_normalized_expression` (``px.scale``): the
        decoder's output for the cell's latent representation, batch and covariates, at a
        common library size. With ``n_samples=1`` (the default) the posterior
        mean of the latent units is decoded, so the result is deterministic; with
        ``n_samples > 1`` or ``n_samples_overall`` latent draws from ``q(z | x)`` are decoded.

        Parameters
        ----------
        adata
            AnnData/MuData set up like the training data; defaults to the training data.
        indices
            Cells to use (positions); all by default.
        transform_batch
            Decode every cell as if it came from this batch (a category of the registered
            ``batch_key``); a list of batches averages over them. ``None`` uses each cell's own
            batch.
        gene_list
            Return only these features.
        library_size
            Scale the expected fractions to this library size (1: fractions summing to one over
            a modality's features). ``"latent"`` uses each cell's observed library size (or its
            registered size factor), giving expected counts. Bernoulli (ATAC) modalities give
            accessibility probabilities at the training data's mean depth whatever this is,
            or at the cell's own depth with ``"latent"``.
        n_samples
            Number of posterior draws per cell; 1 decodes the posterior mean.
        n_samples_overall
            Draw this many samples in total over the selected cells (cells drawn at random,
            one posterior draw each); returns samples x features. Used by
            :meth:`differential_expression`.
        batch_size
            Minibatch size; defaults to ``scvi.settings.batch_size``.
        return_mean
            Average the draws of each cell (with ``n_samples > 1``).
        return_numpy
            Return an array instead of a DataFrame. Arrays are returned whenever there is a
            sample axis.
        modality
            Modality to decode: ``"rna"`` (default when modelled) or ``"atac"``.

        Returns
        -------
        DataFrame cells x features (indexed by ``obs_names``, columns the modality's
        ``var_names``); or an array: cells x features, samples x cells x features
        (``n_samples > 1`` and ``return_mean=False``) or ``n_samples_overall`` x features.

        Examples
        --------
        >>> expr = model.get_normalized_expression(library_size=1e4)
        >>> expr.groupby(adata.obs["cell_type"]).mean()["CD3E"]
        """
        adata = self._validate_anndata(adata)
        role = self._expression_modality(modality)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        if not (library_size == "latent" or (isinstance(library_size, Number))):
            raise ValueError(f"library_size must be a number or 'latent', got {library_size!r}.")
        if indices is None:
            indices = np.arange(adata.n_obs)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        var_names = self._var_names(role, adata)
        if gene_list is None:
            feature_mask = slice(None)
            columns = var_names
        else:
            feature_mask = np.asarray(var_names.isin(gene_list))
            columns = var_names[feature_mask]
        sample = n_samples > 1 or n_samples_overall is not None
        if n_samples_overall is not None:
            if n_samples_overall < 1:
                raise ValueError(f"n_samples_overall must be >= 1, got {n_samples_overall}.")
            # one draw per cell, cells drawn with replacement from numpy's global generator
            # (seeded by ``scvi.settings.seed``), as scvi-tools pools its draws
            indices = np.sort(
                np.random.choice(  # noqa: NPY002
                    indices, size=n_samples_overall, replace=True
                )
            )
            n_samples = 1
        codes = self._batch_codes(adata, transform_batch)
        latent_library = library_size == "latent"
        scaling = 1.0 if latent_library else float(library_size)
        if self.module.likelihoods[role] == "bernoulli":
            scaling = 1.0
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                per_batch = [
                    self._decode_normalized(tensors, role, code, sample, latent_library)
                    for code in codes
                ]
                value = torch.stack(per_batch, 0).mean(0)[..., feature_mask] * scaling
                draws.append(value.cpu().numpy())
            chunks.append(np.stack(draws, 0))
        values = np.concatenate(chunks, axis=1)  # samples x cells x features
        if n_samples_overall is not None:
            return values[0]
        if n_samples == 1 or return_mean:
            values = values.mean(0)
            if not return_numpy:
                return pd.DataFrame(values, index=adata.obs_names[indices], columns=columns)
        return values

    def differential_expression(
        self,
        adata: AnnData | MuData | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: Literal["vanilla", "change"] = "vanilla",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[str] | None = None,
        batchid2: Sequence[str] | None = None,
        fdr_target: float = 0.05,
        silent: bool = False,
        modality: str | None = None,
        **kwargs,
    ) -> pd.DataFrame:
        r"""Bayesian differential expression between groups of cells, as in scvi-tools.

        Posterior draws of :meth:`get_normalized_expression` of the cells of each group are
        compared by scvi-tools' :class:`~scvi.model.base.DifferentialComputation`:
        ``"vanilla"`` mode :cite:p:`Lopez2018` tests ``h1 > h2`` and ``"change"`` mode
        :cite:p:`Boyeau2019` tests ``|log fold change| > delta`` with a posterior expected
        false discovery rate. The result has scvi-tools' columns.

        Parameters
        ----------
        adata
            AnnData/MuData set up like the training data; defaults to the training data.
        groupby
            ``.obs`` column (``mdata.obs`` for MuData) of the groups.
        group1
            Group(s) of ``groupby`` to test, each against ``group2``; all groups by default.
        group2
            Reference group; ``None`` compares with all other cells.
        idx1
            Instead of ``groupby``: the first population, as positions, a boolean mask or an
            ``.obs`` query string.
        idx2
            The second population (with ``idx1``); the rest of the cells by default.
        mode
            ``"vanilla"`` or ``"change"``.
        delta
            Smallest absolute log fold change that counts as a change in ``"change"`` mode.
        batch_size
            Minibatch size of the decoding.
        all_stats
            Add raw-count statistics of both groups (``raw_mean1``, ``non_zeros_proportion1``,
            ``raw_normalized_mean1``, ... ).
        batch_correction
            Decode every cell in every batch (``transform_batch``) and pool the draws, rather
            than in its own batch.
        batchid1
            Batches whose decoding represents the first group (with ``batch_correction``).
        batchid2
            Batches whose decoding represents the second group.
        fdr_target
            Target posterior expected false discovery rate of ``"change"`` mode.
        silent
            Hide the progress bar over groups.
        modality
            Modality to test: ``"rna"`` (default when modelled) or ``"atac"`` (accessibility
            probabilities).
        **kwargs
            Keyword arguments of
            :meth:`scvi.model.base.DifferentialComputation.get_bayes_factors`, e.g.
            ``n_samples_overall``.

        Returns
        -------
        DataFrame indexed by feature, one block per comparison: ``proba_de``, ``proba_not_de``,
        ``bayes_factor``, ``scale1``, ``scale2``, ``lfc_mean``, ``lfc_median``, ``lfc_std``,
        ``lfc_min``, ``lfc_max`` and (``"change"`` mode) ``is_de_fdr_<fdr_target>``, then the
        raw-count statistics, ``comparison``, ``group1`` and ``group2``.

        Examples
        --------
        >>> de = model.differential_expression(groupby="cell_type", group1="B cells")
        >>> de.sort_values("lfc_mean").tail()
        """
        from scvi.model.base._de_core import _de_core

        adata = self._validate_anndata(adata)
        role = self._expression_modality(modality)
        if groupby is None and idx1 is None:
            raise ValueError("Give groupby (an .obs column) or idx1 (the first population).")
        obs = adata.obs
        if groupby is not None and groupby not in obs.columns:
            raise KeyError(f"groupby {groupby!r} is not a column of .obs.")
        model_fn = partial(
            self.get_normalized_expression,
            return_numpy=True,
            n_samples=1,
            batch_size=batch_size,
            modality=role,
        )
        return _de_core(
            self.get_anndata_manager(adata, required=True),
            model_fn,
            None,
            groupby,
            group1,
            group2,
            idx1,
            idx2,
            all_stats,
            _count_properties(self._modality_keys[role]),
            self._var_names(role, adata),
            mode,
            batchid1,
            batchid2,
            delta,
            batch_correction,
            fdr_target,
            silent,
            **kwargs,
        )
