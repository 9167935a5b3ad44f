"""Shared machinery of glassvi's model classes: construction, accessors, explain, query mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from .._validation import check_batch_size, row_sums
from ..explain import explain_model
from ..module import LIKELIHOODS, GlassVAE, expression_moments
from ..train import (
    GlassDataSplitter,
    GlassTrainingPlan,
    progress_bar_kwargs,
    quiet_training,
    restore_cpu_allocator,
)
from ._classifier import ClassifierMixin
from ._expression import ExpressionMixin
from ._features import FeatureMatchingMixin
from ._io import SaveLoadMixin, read_saved_model
from ._query import reference_state
from ._setup import DEFAULT_LIKELIHOOD, FIRST_KEY, SECOND_KEY, SetupMixin

logger = logging.getLogger(__name__)


class GlassModelBase(
    SetupMixin,
    ExpressionMixin,
    SaveLoadMixin,
    FeatureMatchingMixin,
    ClassifierMixin,
    ArchesMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Base class of glassvi models; not meant to be used directly.

    Subclasses set ``_prefix`` (key prefix of their results), ``_weights_suffix`` and implement
    ``_latent_names``.
    """

    _module_cls = GlassVAE
    _training_plan_cls = GlassTrainingPlan
    _data_splitter_cls = GlassDataSplitter
    _prefix = "glassvi"
    _weights_suffix = "weights"

    # ------------------------------------------------------------------------- construction
    def _modality_layout(self) -> tuple[dict[str, str], dict[str, str | None]]:
        """Modality role -> registry key, and role -> MuData modality name (None for AnnData)."""
        registry = self.adata_manager.registry
        args = registry["setup_args"]
        if registry.get("setup_method_name") == "setup_mudata":
            mods = args.get("modalities") or {}
            roles = [r for r in ("rna", "atac") if mods.get(f"{r}_layer") is not None]
            keys = dict(zip(roles, [FIRST_KEY, SECOND_KEY]))
            return keys, {r: mods[f"{r}_layer"] for r in roles}
        role = args.get("modality", "rna")
        return {role: FIRST_KEY}, {role: None}

    def _resolve_likelihoods(self, likelihood, roles) -> dict[str, str]:
        if likelihood is None:
            out = {r: DEFAULT_LIKELIHOOD[r] for r in roles}
        elif isinstance(likelihood, str):
            out = dict.fromkeys(roles, likelihood)
        else:
            unknown = set(likelihood) - set(roles)
            if unknown:
                raise ValueError(f"likelihood given for unknown modalities {sorted(unknown)}.")
            out = {r: likelihood.get(r, DEFAULT_LIKELIHOOD[r]) for r in roles}
        for role, lik in out.items():
            if lik not in LIKELIHOODS:
                raise ValueError(
                    f"Unknown likelihood {lik!r} for {role}; choose from {', '.join(LIKELIHOODS)}."
                )
        return out

    def _module_kwargs_from_registry(self, likelihood, classifier: bool | None = None) -> dict:
        keys, names = self._modality_layout()
        self._modality_keys = keys
        self._modality_names = names
        n_features, log_means = {}, {}
        for role, key in keys.items():
            X = self.adata_manager.get_from_registry(key)
            n_features[role] = X.shape[1]
            totals = row_sums(X)  # streams backed (on-disk) matrices
            log_means[role] = float(np.mean(np.log(np.clip(totals, 1.0, None))))
            n_empty = int(np.sum(totals == 0))
            if n_empty:
                logger.warning(
                    "%d cells have no counts in %s; their library size is taken as 1.",
                    n_empty,
                    role,
                )
        n_classes = len(self._label_names())
        labels_key = self.adata_manager.registry["setup_args"].get("labels_key")
        if classifier is None and labels_key is not None and n_classes < 2:
            logger.warning(
                "labels_key=%r has %d label(s) besides the unlabelled category; the model gets "
                "no cell-label head (it needs at least two).",
                labels_key,
                n_classes,
            )
        if classifier is None:
            classifier = n_classes > 1
        elif classifier and n_classes < 2:
            raise ValueError(
                "classifier=True needs a labels_key with at least two labels (besides the "
                f"unlabelled category) registered in setup; found {n_classes}."
            )
        likelihoods = self._resolve_likelihoods(likelihood, list(keys))
        # Bernoulli decoders start at each feature's share of cells with a non-zero count
        open_share = {
            role: expression_moments(self.adata_manager.get_from_registry(key), binary=True)[0]
            for role, key in keys.items()
            if likelihoods[role] == "bernoulli"
        }
        stats = self.summary_stats
        cat_state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        n_cats = list(cat_state.n_cats_per_key) if "n_cats_per_key" in cat_state else []
        return {
            "n_features": n_features,
            "registry_keys": keys,
            "likelihoods": likelihoods,
            "library_log_means": log_means,
            "feature_open_share": open_share,
            "n_batch": stats.n_batch,
            "n_labels": n_classes,
            "classifier": bool(classifier),
            "n_cats_per_cov": n_cats,
            "n_continuous_cov": stats.get("n_extra_continuous_covs", 0),
        }

    # ------------------------------------------------------------------------- training
    def train(self, *args, **kwargs):
        """Train the model; arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`.

        Training is quiet: the progress bar shows the losses of the last epoch, and
        Lightning's start-up banners and hints are held back while glassvi trains; other
        warnings still reach you.

        ``batch_size`` must be at least 1 (scvi-tools would silently replace 0 by its
        default), and at least 3 cells must remain for training.

        Training minibatches of accessibility (Bernoulli) modalities stay sparse when the
        module reads them at their stored entries only (see
        :meth:`~glassvi.module.GlassVAE.sparse_input_keys`).

        Examples
        --------
        >>> model.train(max_epochs=100, batch_size=128)
        """
        if "batch_size" in kwargs:
            check_batch_size(kwargs["batch_size"])
        sparse_keys = self.module.sparse_input_keys()
        if sparse_keys:
            splitter_kwargs = dict(kwargs.get("datasplitter_kwargs") or {})
            splitter_kwargs.setdefault("sparse_training_keys", sparse_keys)
            kwargs["datasplitter_kwargs"] = splitter_kwargs
        # scvi-tools leaves the module in eval mode after training or inference; Lightning keeps
        # modules in the mode it finds them in, which would train without dropout
        self.module.train()
        try:
            with quiet_training():
                return super().train(*args, **progress_bar_kwargs(kwargs))
        finally:
            restore_cpu_allocator()  # also when training stops with an error

    # ------------------------------------------------------------------------- accessors
    def _make_data_loader(self, adata, indices=None, batch_size=None, *args, **kwargs):
        # every accessor (latent, activities, predictions, attributions) loads through here
        batch_size = check_batch_size(batch_size)
        return super()._make_data_loader(adata, indices, batch_size, *args, **kwargs)

    @property
    def modalities(self) -> list[str]:
        """Modality roles of this model (``"rna"``, ``"atac"``), in decoder order."""
        return list(self.module.modalities)

    def _latent_names(self) -> list[str]:
        raise NotImplementedError

    def _var_names(self, role: str, adata=None) -> pd.Index:
        adata = self.adata if adata is None else adata
        mod = self._modality_names.get(role)
        return (adata[mod] if mod is not None else adata).var_names

    def _check_modality(self, modality: str | None) -> list[str]:
        if modality is None:
            return self.modalities
        if modality not in self.modalities:
            raise KeyError(
                f"modality {modality!r} is not modelled (modalities: {self.modalities})."
            )
        return [modality]

    def _weights_frame(self, modality: str | None = None) -> pd.DataFrame:
        frames = [
            pd.DataFrame(
                self.module.loadings(role).cpu().numpy(),
                index=self._var_names(role),
                columns=self._latent_names(),
            )
            for role in self._check_modality(modality)
        ]
        return frames[0] if len(frames) == 1 else pd.concat(frames, axis=0)

    # ------------------------------------------------------------------------- explain
    def _container(self, adata, role: str):
        mod = self._modality_names.get(role)
        return adata[mod] if mod is not None else adata

    def _intrinsic_extras(self, adata=None, batch_size: int | None = None) -> dict:
        """Model-specific ``.uns`` fields of ``explain(method="weights")``; none here."""
        return {}

    def explain(
        self,
        adata: AnnData | MuData | None = None,
        method: str = "weights",
        *,
        target: str | Callable = "latent",
        key_added: str | None = None,
        inplace: bool = True,
        batch_size: int | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        baseline: str | np.ndarray | Mapping[str, np.ndarray] | None = None,
        n_steps: int = 50,
        n_samples: int | None = None,
        n_background: int | None = None,
        groupby: str | None = None,
        return_per_cell: bool = False,
        seed: int = 0,
        progress_bar: bool = True,
        label_contrast: Literal["rest", "mean", "none"] = "rest",
        label_target: Literal["annotated", "predicted"] = "annotated",
        above_baseline: bool | None = None,
    ) -> dict | None:
        """Explain the model and write the explanation into the AnnData/MuData.

        ``method="weights"`` writes the intrinsic explanation: the decoder weights and the
        posterior-mean latent representation. Every other method attributes a *target* (the
        latent units, the cell-label head's logits, or a function of the latent) to the input
        features of every modality, batch by batch, keeping only running means (never a cells x
        features x targets array unless ``return_per_cell=True``).

        Parameters
        ----------
        adata
            AnnData or MuData with the training data's features, matched by name (in another
            order they are used through a reordered copy and results are written in this
            object's order; a missing feature is an error); defaults to the training data.
        method
            ``"weights"`` (intrinsic, default); post-hoc through captum:
            ``"integrated_gradients"``, ``"deeplift"``, ``"deeplift_shap"``, ``"gradient_shap"``,
            ``"input_x_gradient"``, ``"saliency"`` (the signed gradient); or ``"shap"``: the shap
            library's :class:`shap.GradientExplainer` (expected gradients over a background
            sample).
        target
            ``"latent"``: each latent unit (factor or program) of the encoder's posterior mean.
            ``"labels"``: the cell-label head, one output per class contrasted with the other
            classes (``label_contrast``); every cell is explained for one class
            (``label_target``). A callable mapping the posterior mean (cells x latent tensor) to a
            tensor ``(cells,)`` or ``(cells, n_outputs)``, e.g. ``lambda z: z[:, 2] - z[:, 5]``.
        key_added
            Prefix of the keys written; defaults to the model's name (``"linearvi"``).
        inplace
            Write into ``adata`` (default) or return the results without touching it.
        batch_size
            Cells per minibatch (128 by default for attributions).
        indices
            Positions (or a boolean mask) of the cells to explain; all cells by default. The
            cell-level entry is NaN for the other cells.
        baseline
            Reference input of the methods that need one: ``"zeros"`` (no counts; the default of
            integrated gradients and DeepLIFT, except integrated gradients with
            ``target="labels"``, which defaults to ``"background"``), ``"mean"`` (the mean cell of
            ``adata``, with the mean accessibility for Bernoulli modalities), ``"background"``
            (``n_background`` random cells of ``adata``; the default of the SHAP-style methods,
            which use it as their baseline distribution, while integrated gradients pairs each cell
            with ``n_samples`` random background cells, expected gradients, and DeepLIFT with one),
            or arrays: one per modality as a dict ``{"rna": ..., "atac": ...}`` (one array for one
            modality), each of one row (a fixed baseline) or several rows (a background). Baselines
            keep the explained cell's batch and covariates. Ignored by ``"input_x_gradient"`` and
            ``"saliency"``.
        n_steps
            Gradient evaluations per cell of integrated gradients (split between the
            background cells a cell is paired with, so the cost does not grow with them).
        n_samples
            Random samples per cell: ``"gradient_shap"`` (default 20), ``"shap"`` (default
            200), and for ``"integrated_gradients"`` with a background baseline the number of
            background cells each cell is paired with (default 5; their attributions are
            averaged, which lowers the variance at the same number of gradient evaluations).
        n_background
            Number of background cells of ``baseline="background"``: 100 by default, 20 for
            ``"deeplift_shap"`` (whose cost grows with every background cell).
        groupby
            ``.obs`` column (``mdata.obs`` for MuData): also store the means over the cells of
            each of its groups.
        return_per_cell
            Also return every explained cell's attributions (use with ``indices``).
        seed
            Seed of the background sample and of random draws.
        progress_bar
            Show a progress bar over minibatches.
        label_contrast
            Output of class ``c`` explained with ``target="labels"``. ``"rest"`` (default):
            ``logit_c - logsumexp_{j != c} logit_j``, the log-odds of ``c`` against the other
            classes. ``"mean"``: ``logit_c`` minus the mean of the other logits. ``"none"``: the
            raw logit. The softmax ignores any amount added to every logit, so training leaves
            that shared part free and it differs between training seeds; both contrasts remove
            it, so the per-class attributions are signed evidence for ``c`` against the others.
        label_target
            Class each cell is explained for with ``target="labels"``: ``"annotated"``
            (default): its label in the registered ``labels_key``, or its predicted class when
            it is of the unlabelled category; ``"predicted"``: its predicted class.
        above_baseline
            Keep each feature's attribution only where the cell's value is above that of the
            baseline it is compared with (for a background, the background cell it is paired
            with): the evidence the cell's own expression carries. What is left out comes from
            features the cell has less of than the baseline, such as the markers of another
            type that the cell lacks, which otherwise count as evidence for its class and
            crowd its markers out of the top ranks. ``None`` (default): ``True`` for
            ``target="labels"`` with a method that compares each cell with one baseline at a
            time (integrated gradients, DeepLIFT), else ``False``. The completeness delta is
            that of the complete attributions.

        Returns
        -------
        ``None`` when ``inplace=True`` (or, with ``return_per_cell=True``, the per-cell dict
        below); otherwise a dict with the entries that would have been written:
        ``{"obsm": {key: array}, "varm": {modality: {key: array}}, "uns": {key: dict}}``
        plus ``"per_cell"`` when asked for. The per-cell dict holds ``"attributions"``
        (modality -> array cells x features x targets, or cells x features for
        ``target="labels"``), ``"obs_names"``, ``"columns"``, ``"delta"`` (completeness
        delta per cell and target, or ``None``) and, for ``target="labels"``, ``"predicted"``
        and ``"explained_class"``.

        Notes
        -----
        ``method="weights"`` writes ``.obsm[f"X_{key_added}"]`` (cells x latent units),
        ``.varm[f"{key_added}_loadings"]`` (LinearVI) or ``.varm[f"{key_added}_weights"]``
        (ProgramVI), a features x latent units float32 array, and the record
        ``.uns[key_added]``, whose ``columns`` name the units of both (program names may hold a
        "/", which h5ad cannot keep as column keys; :func:`glassvi.tl.varm_df` gives a named
        DataFrame).

        Keys written by post-hoc methods, with ``key = f"{key_added}_{method}_{target}"``
        (a callable target is named by its ``__name__``, or ``"custom"``):

        ``.varm[key]``
            A features x targets array (names in ``.uns[key]["columns"]``; h5ad cannot keep
            names such as ``"CD4+/CD25 T Reg"`` as column keys; :func:`glassvi.tl.varm_df`
            gives a named DataFrame): mean signed attribution over the explained cells. For
            ``target="labels"``, column ``c`` is the mean over the cells explained for ``c``
            (annotated as ``c``, or predicted as ``c`` when unlabelled or with
            ``label_target="predicted"``) of the attribution of the class's margin
            (``label_contrast``): positive values are evidence *for* ``c`` against the other
            classes, negative values evidence against it; with ``above_baseline``, only from
            the features each cell has more of than its baseline. Rank it with
            :func:`glassvi.tl.rank_features`.
        ``.varm[key + "_abs"]``
            The mean absolute attribution.
        ``.varm[key + f"_by_{groupby}"]`` and ``... + "_abs"``
            With ``groupby``: the same means per group, columns ``"<group>|<target>"`` (names
            in ``.uns[key]["group_columns"]``).
        ``.obsm[key]``
            A cells x columns array (names in ``.uns[key]["cell_columns"]``, as scanpy keeps
            embeddings). Cells x latent units for ``target="labels"``: the contribution of each
            unit to the margin of the class ``c`` the cell is explained for, ``z_k * (W[c, k] -
            sum_j q_j W[j, k])`` over the other classes ``j`` (``W``, ``b``: the linear head). With
            ``label_contrast="none"`` ``q = 0`` (the logit is their sum plus ``b_c``); with
            ``"mean"`` ``q_j = 1 / (K - 1)`` (exact, plus the same contrast of ``b``); with
            ``"rest"`` ``q`` is the softmax over the other classes' logits, the local linear part
            of the log-odds (which is their sum plus ``b_c - sum_j q_j b_j`` minus the entropy of
            ``q``). ``.uns[key]["obsm_definition"]`` says which. For ``target="latent"``: per unit,
            the summed ``|attribution|`` over the features annotated to that unit by the decoder's
            mask (all features when the model has no mask). For a callable: the summed
            ``|attribution|`` per output.
        ``.uns[key]``
            ``method``, ``target``, ``baseline``, ``n_steps``, ``n_samples``,
            ``baselines_per_cell``, ``columns``, ``cell_columns``, ``group_columns`` (with
            ``groupby``), cell counts, ``varm_keys``,
            ``obsm_definition``; for ``target="labels"`` also ``label_contrast``,
            ``label_target``, ``labels_key`` and ``varm_definition``; ``above_baseline``; and
            ``convergence``
            (``mean_abs_delta``, ``max_abs_delta``, ``mean_abs_output_difference``,
            ``relative_delta``: the completeness gap ``sum(attr) - (f(x) - f(baseline))`` of
            the methods that report it).

        With MuData, feature-level entries go to ``mdata[modality].varm``, cell-level entries
        to ``mdata.obsm`` and metadata to ``mdata.uns``. Attributions are with respect to the
        counts of count modalities and the binarised accessibility of Bernoulli modalities.

        Examples
        --------
        >>> model.explain()  # intrinsic: .obsm["X_linearvi"], .varm["linearvi_loadings"]
        >>> model.explain(method="integrated_gradients", target="labels", groupby="batch")
        >>> glassvi.tl.rank_features(adata, "linearvi_integrated_gradients_labels", n_top=50)
        >>> sc.get.rank_genes_groups_df(adata, "B cells", key="rank_features")
        """
        arguments = dict(locals())  # the parameters above, passed on unchanged
        del arguments["self"]
        return explain_model(self, **arguments)

    # ------------------------------------------------------------------------- reference mapping
    @classmethod
    def load_query_data(cls, adata=None, reference_model=None, **kwargs):
        """Map query data onto a trained reference model (scArches surgery).

        The reference's decoder weights (loadings or programs) stay fixed. The encoder learns
        only the weights of the new batch categories, and the decoders learn only the offsets of
        the new batches and covariate categories, so the reference's latent space keeps its
        meaning.

        Parameters
        ----------
        adata
            Query AnnData/MuData with the reference's features. They are matched by name: in
            another order (or with extra features) the model uses a copy in the reference's
            order, which becomes the query model's ``adata``; missing features are refused.
        reference_model
            A trained model of this class, or the directory it was saved to (read without
            running code, see :meth:`load`).
        **kwargs
            Keyword arguments of :meth:`scvi.model.base.ArchesMixin.load_query_data`, and
            ``trusted`` (see :meth:`load`).

        Returns
        -------
        A model of this class, ready to be trained on the query.

        Examples
        --------
        >>> query_model = glassvi.model.LinearVI.load_query_data(query, model)
        >>> query_model.train(max_epochs=100)
        """
        reference_model = read_saved_model(reference_model, trusted=kwargs.pop("trusted", False))
        adata = cls._align_query(adata, reference_model)
        _, ref_state = reference_state(reference_model)
        model = super().load_query_data(adata, reference_model, **kwargs)
        if kwargs.get("unfrozen", False):
            return model
        model.module.train_new_categories_(ref_state)
        return model
