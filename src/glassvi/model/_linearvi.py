"""LinearVI: a linearly decoded VAE for RNA, ATAC and RNA+ATAC multiome."""

from __future__ import annotations

import logging
from typing import Literal

import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import _keys
from ._base import GlassModelBase
from ._docs import setup_docs

logger = logging.getLogger(__name__)


class LinearVI(GlassModelBase):
    """Linearly decoded variational autoencoder for RNA, ATAC or RNA+ATAC (multiome) counts.

    A non-linear encoder infers a shared latent space from every modality together with the batch
    and covariates; each modality is decoded by a *linear* map of the latent factors plus batch
    and covariate offsets, so the decoder weights (loadings, features x factors) say which genes
    or peaks each factor drives. This is the LDVAE idea :cite:p:`Svensson2020`, extended to ATAC
    and multiome data and to reference mapping (the encoder sees the batch).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` or MuData registered with
        :meth:`setup_mudata`.
    n_latent
        Number of latent factors.
    n_hidden
        Width of the encoder's hidden layers.
    n_layers
        Number of hidden layers of the encoder.
    dropout_rate
        Encoder dropout.
    likelihood
        ``"nb"`` (default for RNA), ``"zinb"``, ``"poisson"`` or ``"bernoulli"`` (default for
        ATAC; accessibility is binarised). A string applies to every modality; a dict such as
        ``{"rna": "nb", "atac": "poisson"}`` sets each modality's likelihood.
    dispersion
        ``"gene"`` or ``"gene-batch"`` inverse dispersion of (ZI)NB likelihoods.
    nonnegative
        Constrain the loadings to be non-negative.
    classifier
        Train a linear cell-label head on the posterior mean of the factors (semi-supervised:
        cells of the unlabelled category only enter the ELBO). ``None`` (default) adds it when
        a ``labels_key`` with at least two labels was registered. Its weight in the loss is
        ``classification_ratio`` (a keyword of :class:`~glassvi.module.GlassVAE`, default 50).
        A lighter weight trades prediction for attributions that follow the expression: at 10,
        the label attributions of held-out pbmc68k cells named more markers in each of 5
        training seeds (4.6 vs 4.0 of 6 per type among the top 50), immune1k's slightly fewer
        (4.4 vs 4.5 of 6), and the head predicted the labels less well after short training.
    modality_weights
        How much each modality shapes the latent factors, in ``[0, 1]``;
        each modality's decoder always fits its own counts. ``None`` (default): every modality
        weighs 1, the plain joint model, which no lower ATAC weight beat on real SNARE-seq
        cortex data (ProgramVI marker programs, 3 seeds; see
        :data:`glassvi.module.MULTIOME_ATAC_WEIGHT` for the figures). ``{"atac": 0.0}`` keeps
        ATAC out of what the factors mean. See :func:`glassvi.module.resolve_modality_weights`.
    encoder
        How the factors are inferred from several modalities: ``"joint"``, one encoder over the
        concatenated modalities, or ``"experts"``, one encoder per modality combined as a
        product of Gaussian experts (:class:`~glassvi.module.ModalityExpertsEncoder`). ``None``
        (default): ``"joint"``.
    **module_kwargs
        Further keyword arguments of :class:`~glassvi.module.GlassVAE`.

    Examples
    --------
    >>> import glassvi
    >>> adata = glassvi.data.immune1k()
    >>> glassvi.model.LinearVI.setup_anndata(adata, labels_key="cell_type_annotations")
    >>> model = glassvi.model.LinearVI(adata, n_latent=10)
    >>> model.train(max_epochs=50)
    >>> model.explain()  # adata.obsm["X_linearvi"], adata.varm["linearvi_loadings"]
    """

    _prefix = _keys.LINEARVI
    _weights_suffix = _keys.LINEARVI_WEIGHTS

    def __init__(
        self,
        adata: AnnData | MuData | None = None,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        likelihood: str | dict[str, str] | None = None,
        dispersion: Literal["gene", "gene-batch"] = "gene",
        nonnegative: bool = False,
        classifier: bool | None = None,
        modality_weights: dict[str, float] | None = None,
        encoder: Literal["joint", "experts"] | None = None,
        **module_kwargs,
    ):
        super().__init__(adata)
        if n_latent < 1:
            raise ValueError(f"n_latent must be at least 1, got {n_latent}.")
        kwargs = self._module_kwargs_from_registry(likelihood, classifier=classifier)
        self.module = self._module_cls(
            **kwargs,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            nonnegative=nonnegative,
            modality_weights=modality_weights,
            encoder=encoder,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"LinearVI: modalities {kwargs['likelihoods']}, n_latent {n_latent}, "
            f"n_hidden {n_hidden}, n_layers {n_layers}, n_batch {kwargs['n_batch']}"
            + (f", classifier over {kwargs['n_labels']} labels" if kwargs["classifier"] else "")
        )
        encoder = self.module.encoder_kind  # saved resolved: a later default cannot change it
        self.init_params_ = self._get_init_params(locals())

    def _latent_names(self) -> list[str]:
        return [f"factor_{i}" for i in range(self.module.n_latent)]

    def get_loadings(self, modality: str | None = None) -> pd.DataFrame:
        """Decoder loadings: features x factors.

        Parameters
        ----------
        modality
            ``"rna"`` or ``"atac"``; ``None`` returns all modalities stacked (genes, then peaks).

        Returns
        -------
        DataFrame indexed by the features' ``var_names`` with columns ``factor_0``, ...

        Examples
        --------
        >>> model.get_loadings().sort_values("factor_0").tail(10)
        """
        return self._weights_frame(modality)

    @classmethod
    @setup_docs
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | None = None,
        modality: Literal["rna", "atac"] = "rna",
        unlabeled_category: str = "Unknown",
        **kwargs,
    ) -> None:
        """Register an AnnData of one modality's counts with LinearVI.

        The data are checked first (counts must be finite, non-negative whole numbers; keys and
        layer must exist) and nothing is written to ``adata`` if a check fails.

        Parameters
        ----------
        %(adata)s
        %(layer)s
        %(batch_key)s
        %(labels_key)s
        %(covariate_keys)s
        %(size_factor_key)s
        %(modality)s
        %(unlabeled_category)s

        Examples
        --------
        >>> glassvi.model.LinearVI.setup_anndata(adata, layer="counts", batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._setup_anndata_from(adata, setup_method_args, **kwargs)

    @classmethod
    @setup_docs
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | list[str] | None = None,
        modalities: dict[str, str] | None = None,
        unlabeled_category: str = "Unknown",
        **kwargs,
    ) -> None:
        """Register a MuData of RNA and/or ATAC counts measured in the same cells.

        Parameters
        ----------
        %(mdata)s
        %(rna_layer)s
        %(atac_layer)s
        %(mudata_batch_key)s
        %(mudata_labels_key)s
        %(mudata_covariate_keys)s
        %(mudata_size_factor_key)s
        %(modalities)s
        %(unlabeled_category)s

        Examples
        --------
        >>> mdata = glassvi.data.simulate(modality="multiome")
        >>> glassvi.model.LinearVI.setup_mudata(mdata, batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._setup_mudata_from(mdata, setup_method_args, **kwargs)
