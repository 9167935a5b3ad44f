"""The torch module shared by LinearVI and ProgramVI."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl
from torch.nn import functional as F

from ._decoders import LinearFeatureDecoder
from ._distributions import (
    FeatureBernoulli,
    FeatureNegativeBinomial,
    FeaturePoisson,
    SampledBernoulli,
    as_dense,
    draw_features,
    feature_draw_probabilities,
    nonzero_key,
    values_at,
)
from ._experts import ENCODERS, ModalityExpertsEncoder
from ._sparse_input import SparseBlock, SparseInputEncoder, _rows_of
from ._surgery import train_new_categories_

LIKELIHOODS = ("nb", "zinb", "poisson", "bernoulli")
#: default expected share of a Bernoulli modality's features at which the training likelihood
#: evaluates the zero entries (see ``GlassVAE(zero_sample_fraction=...)``)
ZERO_SAMPLE_FRACTION = 0.03
#: how those features are drawn by default: ``"open_rate"`` (more often where zeros weigh more)
#: or ``"uniform"`` (see ``GlassVAE(zero_sample=...)``)
ZERO_SAMPLE = "open_rate"
#: ways of drawing the features of the sampled likelihood
ZERO_SAMPLES = ("open_rate", "uniform")
#: default weight of the ATAC modality in shaping the latent units when another modality is
#: modelled with it, chosen by measurement (benchmarks/multiome.py; ProgramVI, 40 epochs, seeds
#: 0/1/2, mean marker-program AUROC of RNA+ATAC minus RNA alone). Weight 1, the plain joint
#: model: +0.036 / +0.024 / +0.010 on real SNARE-seq cortex (3,000 cells, 25,734 regions,
#: held-out marker lists), -0.004 / +0.017 / +0.012 on the bundled copy (lists the defaults
#: were chosen on; +0.010 / +0.013 / +0.010 without its 9 endothelial cells) and +0.018 /
#: +0.019 / +0.015 on the simulator with shallow RNA (library 100, ATAC 60). Weight 0.3:
#: +0.027 / +0.005 / +0.025, 0.000 / +0.010 / +0.013 and +0.008 / +0.006 / +0.007. Weight 0
#: (ATAC only in the encoder's input): +0.015 / -0.007 / +0.012, +0.004 / +0.002 / +0.010 and
#: +0.004 / 0.000 / -0.001. Measured again with ProgramVI's output-layer anchor (held-out lists,
#: 40 epochs, seeds 0/1/2; RNA alone 0.884 / 0.883 / 0.899): weight 1 -0.015 / +0.011 / -0.016,
#: weight 0.3 +0.009 / +0.011 / -0.020, weight 0 +0.012 / +0.010 / -0.016; no weight is at least
#: RNA alone in every seed, and weight 1 stays the default
MULTIOME_ATAC_WEIGHT = 1.0
#: default encoder of a ProgramVAE with several modalities (``ProgramVAE(encoder=None)``), chosen
#: by measurement (benchmarks/multiome.py, ProgramVI on real SNARE-seq cortex, 3,000 cells, 40
#: epochs, seeds 0/1/2, mean marker-program AUROC of RNA+ATAC minus RNA alone, with the sampled
#: ATAC likelihood drawn by open rate). A product of per-modality experts: held-out lists
#: +0.012 / +0.032 / +0.004, dev lists +0.012 / +0.006 / -0.016; the joint encoder: -0.001 /
#: +0.020 / +0.005 and +0.006 / +0.014 / -0.015. The experts' gain is the excitatory program
#: (held-out AUROC 0.73 / 0.74 / 0.77; RNA alone 0.64 / 0.65 / 0.72, joint 0.66 / 0.69 / 0.67);
#: the microglial program stays nearer RNA alone (0.88 / 0.94 / 0.90; RNA 0.91 / 0.94 / 0.92,
#: joint 0.80 / 0.92 / 0.94). After 400 epochs (held-out lists): experts +0.008 / +0.015 /
#: +0.005, joint -0.005 / -0.004 / +0.003. With two more training seeds per cell sample (9
#: paired runs, 40 epochs): held-out +0.016 on average (sd 0.009, 9 of 9 at least RNA alone),
#: dev +0.003 (sd 0.014, 5 of 9; RNA alone is at 0.90-0.93 there). On the simulator
#: (benchmarks/multiome.py, part ``simulator``) both encoders are at or above the better single
#: modality with shallow RNA and level with RNA alone with deep RNA. A GlassVAE (LinearVI) keeps
#: the joint encoder by default: its factors have no such check
MULTIOME_ENCODER = "experts"
#: default share of training cells that a product of experts encodes from one modality alone
EXPERT_DROPOUT = 0.4


def resolve_modality_weights(
    modality_weights: Mapping[str, float] | None, n_features: Mapping[str, int]
) -> torch.Tensor:
    """Weight of each modality in shaping the latent units, in the order of ``n_features``.

    Parameters
    ----------
    modality_weights
        ``None``: the default, which weighs the ``"atac"`` modality by
        :data:`MULTIOME_ATAC_WEIGHT` when another modality is modelled with it and every other
        modality (and ATAC alone) by 1. A mapping gives weights by name (missing modalities
        weigh 1), e.g. ``{"atac": 0.0}`` for ATAC that informs the encoder's input only.
    n_features
        Ordered mapping modality name -> number of features.

    Returns
    -------
    float32 tensor of one weight in ``[0, 1]`` per modality.

    Examples
    --------
    >>> resolve_modality_weights(None, {"rna": 2000, "atac": 50000})
    tensor([1., 1.])
    >>> resolve_modality_weights({"atac": 0.5}, {"rna": 2000, "atac": 50000})
    tensor([1.0000, 0.5000])
    """
    names = list(n_features)
    if modality_weights is None:
        weights = dict.fromkeys(names, 1.0)
        if "atac" in weights and len(names) > 1:
            weights["atac"] = MULTIOME_ATAC_WEIGHT
    elif isinstance(modality_weights, Mapping):
        unknown = set(modality_weights) - set(names)
        if unknown:
            raise ValueError(f"modality_weights given for unknown modalities {sorted(unknown)}.")
        weights = {m: float(modality_weights.get(m, 1.0)) for m in names}
    else:
        raise TypeError(
            f"modality_weights must be a dict or None, got {type(modality_weights).__name__}."
        )
    bad = {m: w for m, w in weights.items() if not 0.0 <= w <= 1.0}
    if bad:
        raise ValueError(f"modality weights must lie in [0, 1], got {bad}.")
    return torch.tensor([weights[m] for m in names], dtype=torch.float32)


def _log_softmax_and_mean(eta: torch.Tensor, lib: torch.Tensor):
    """``log(softmax(eta)) + lib`` and its exponential, with one exponential per entry."""
    shift = eta.detach().amax(dim=-1, keepdim=True)
    expd = torch.exp(eta - shift)
    total = expd.sum(dim=-1, keepdim=True)
    log_mu = eta - (shift + torch.log(total) - lib)
    mu = expd * (torch.exp(lib) / total)
    return log_mu, mu


def transform_counts(x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Encoder input for one modality: binarised for Bernoulli, ``log1p`` otherwise."""
    if likelihood == "bernoulli":
        return (x > 0).to(x.dtype)
    return torch.log1p(x)


class GlassVAE(BaseModuleClass):
    """Variational autoencoder with one non-linear encoder and linear decoders per modality.

    Every modality (for example ``"rna"`` and ``"atac"``) is a configuration of this module: its
    decoder, its likelihood and its library-size handling. All modalities share one latent space,
    inferred from the concatenated (transformed) inputs of every modality together with the batch
    and covariates (``encoder="joint"``), or by one encoder per modality whose posteriors are
    combined as a product of experts (``encoder="experts"``).

    Parameters
    ----------
    n_features
        Ordered mapping modality name -> number of features.
    registry_keys
        Mapping modality name -> key of its count tensor in the data loader's minibatch.
    likelihoods
        Mapping modality name -> one of ``"nb"``, ``"zinb"``, ``"poisson"``, ``"bernoulli"``.
    library_log_means
        Mapping modality name -> mean log library size in the training data; used to centre the
        per-cell depth offset of Bernoulli modalities.
    n_latent
        Number of latent units.
    n_hidden
        Width of the encoder's hidden layers.
    n_layers
        Number of encoder hidden layers.
    dropout_rate
        Encoder dropout.
    n_batch
        Number of batches (the encoder sees the batch; decoders add per-batch offsets).
    n_labels
        Number of cell-label classes (the unlabelled category excluded); cells whose label code
        is ``n_labels`` or more are unlabelled.
    n_cats_per_cov
        Categories of each extra categorical covariate.
    n_continuous_cov
        Number of continuous covariates.
    dispersion
        ``"gene"`` (one inverse dispersion per feature) or ``"gene-batch"``.
    masks
        Optional mapping modality name -> boolean ``(n_features, n_latent)`` decoder mask.
    mask_mode
        ``"hard"`` or ``"soft"``, see :class:`~glassvi.module.LinearFeatureDecoder`.
    nonnegative
        Constrain decoder weights to be non-negative.
    use_layer_norm
        Layer normalisation in the encoder.
    classifier
        Add a linear classification head on the posterior mean of the latent units: the logit
        of class ``c`` is ``z @ classifier.weight[c] + classifier.bias[c]``. It is trained on the
        labelled cells of each minibatch (semi-supervised, as in scANVI); needs
        ``n_labels >= 2``.
    classification_ratio
        Weight of the mean cross-entropy of labelled cells in the loss.
    modality_weights
        How much each modality shapes the latent units (mapping modality name -> weight in
        ``[0, 1]``), see :func:`resolve_modality_weights`. Every modality's decoder always fits
        its own counts fully; only the gradient its likelihood sends to the latent units (and
        through them to the encoder) is scaled. Weight 1 is a plain joint model; weight 0 makes
        the modality inform the encoder's input and get its own weights on every latent unit
        without changing what the units mean. By default every modality weighs 1 (the plain
        joint model, :data:`MULTIOME_ATAC_WEIGHT`): on real multiome data and on the simulator
        it gave better marker programs than lower ATAC weights and than RNA alone with the
        anchor in the encoder's hidden layers; with ProgramVI's output-layer anchor no ATAC
        weight is at least RNA alone in every seed (see :data:`MULTIOME_ATAC_WEIGHT`).
        The loss and logged reconstruction losses are the unweighted ELBO terms.
    feature_open_share
        Mapping Bernoulli modality name -> share of training cells in which each feature is
        non-zero. The decoder's feature bias starts at its log-odds (clipped to
        ``[1e-4, 1 - 1e-4]``), so that the model starts at each peak's accessibility instead
        of 0.5: with tens of thousands of rarely open peaks a bias started at 0 takes thousands
        of optimiser steps to get there. Not saved; a loaded model reads the trained biases.
    zero_sample_fraction
        During training, the log-likelihood of a Bernoulli (ATAC) modality is estimated from
        its ones, evaluated exactly as (cell, feature) pairs, and its zeros on a random sample
        of the features, on average this fraction of them, drawn anew at each step, each drawn
        feature weighted by one over its probability of being drawn
        (:class:`~glassvi.module.SampledBernoulli`): an unbiased estimate whose cost follows the
        non-zeros plus this fraction of cells x features; ``1`` evaluates every feature.
        Validation, :meth:`loss` outside training and every accessor use the exact likelihood.
        It takes effect when the data loader passes the positions of the non-zero entries
        (sparse counts).
    zero_sample
        How the features are drawn: ``"open_rate"`` (default) draws a feature more often the
        more its zeros weigh, with probability proportional to its open probability under the
        decoder's bias, a sixth of the draw spread evenly
        (:func:`~glassvi.module.feature_draw_probabilities`); ``"uniform"`` draws every
        feature with probability ``zero_sample_fraction``. The defaults
        (:data:`ZERO_SAMPLE`, :data:`ZERO_SAMPLE_FRACTION`) were chosen on real SNARE-seq
        cortex ATAC (25,734 peaks, 3,000 cells, seeds 0/1/2; benchmarks/multiome.py, part
        ``sampling``): drawing 3% of the features by open rate gave a better held-out
        likelihood than 10% drawn uniformly (the previous default; by 0.2 nats per cell in 9
        of 9 runs) and marker programs within seed noise, at less cost per step.
    encoder
        How the latent units are inferred from several modalities. ``"joint"``: one encoder
        reads the concatenated inputs of every modality. ``"experts"``: one encoder per
        modality, whose Gaussian posteriors are combined with the prior as a product of
        experts (:class:`~glassvi.module.ModalityExpertsEncoder`), so that a modality moves a
        cell's posterior by how certain it is of it. ``None`` (default): ``"joint"`` here,
        :data:`MULTIOME_ENCODER` in :class:`~glassvi.module.ProgramVAE` with several
        modalities, ``"joint"`` with one (``"experts"`` needs two or more).
    expert_dropout
        With ``encoder="experts"``: share of training cells encoded from one modality alone,
        drawn at random per cell, so that every expert learns to encode cells by itself
        (:data:`EXPERT_DROPOUT`).

    Examples
    --------
    >>> module = GlassVAE({"rna": 200}, {"rna": "X"}, {"rna": "nb"}, n_latent=8)
    >>> module.posterior_mean({"rna": torch.ones(4, 200)}).shape
    torch.Size([4, 8])
    """

    #: decoder class of every modality; subclasses may swap in a masked/indexed decoder
    _decoder_cls = LinearFeatureDecoder
    #: encoder of a module with several modalities when ``encoder=None``
    _multiome_encoder = "joint"

    def __init__(
        self,
        n_features: Mapping[str, int],
        registry_keys: Mapping[str, str],
        likelihoods: Mapping[str, str],
        library_log_means: Mapping[str, float] | None = None,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        n_batch: int = 0,
        n_labels: int = 0,
        n_cats_per_cov: list[int] | None = None,
        n_continuous_cov: int = 0,
        dispersion: str = "gene",
        masks: Mapping[str, torch.Tensor] | None = None,
        mask_mode: str = "hard",
        nonnegative: bool = False,
        use_layer_norm: bool = True,
        classifier: bool = False,
        classification_ratio: float = 50.0,
        modality_weights: Mapping[str, float] | None = None,
        feature_open_share: Mapping[str, np.ndarray] | None = None,
        zero_sample_fraction: float = ZERO_SAMPLE_FRACTION,
        zero_sample: str = ZERO_SAMPLE,
        encoder: str | None = None,
        expert_dropout: float = EXPERT_DROPOUT,
    ):
        super().__init__()
        if encoder is None:
            encoder = self._multiome_encoder if len(n_features) > 1 else "joint"
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}.")
        if encoder == "experts" and len(n_features) < 2:
            raise ValueError(
                "encoder='experts' combines one encoder per modality and needs at least two "
                f"modalities, got {list(n_features)}."
            )
        if not 0.0 <= expert_dropout <= 1.0:
            raise ValueError(f"expert_dropout must lie in [0, 1], got {expert_dropout}.")
        self.encoder_kind = encoder
        if not 0.0 < zero_sample_fraction <= 1.0:
            raise ValueError(
                f"zero_sample_fraction must lie in (0, 1], got {zero_sample_fraction}."
            )
        if zero_sample not in ZERO_SAMPLES:
            raise ValueError(f"zero_sample must be one of {ZERO_SAMPLES}, got {zero_sample!r}.")
        self.zero_sample_fraction = float(zero_sample_fraction)
        self.zero_sample = zero_sample
        self.modalities = list(n_features)
        self.n_features = dict(n_features)
        self.registry_keys = dict(registry_keys)
        self.likelihoods = dict(likelihoods)
        for mod, lik in self.likelihoods.items():
            if lik not in LIKELIHOODS:
                raise ValueError(
                    f"Unknown likelihood {lik!r} for {mod}; choose from {LIKELIHOODS}."
                )
        if dispersion not in ("gene", "gene-batch"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-batch', got {dispersion!r}.")
        self.n_latent = n_latent
        self.n_batch = n_batch
        self.n_labels = n_labels
        self.dispersion = dispersion
        self.n_continuous_cov = n_continuous_cov
        self.n_cats_per_cov = list(n_cats_per_cov or [])
        # not saved: rebuilt from the init parameters, so older saved models still load
        self.register_buffer(
            "modality_weights",
            resolve_modality_weights(modality_weights, self.n_features),
            persistent=False,
        )
        log_means = dict(library_log_means or {})
        self.register_buffer(
            "library_log_means",
            torch.tensor([float(log_means.get(m, 0.0)) for m in self.modalities]),
        )

        n_input = sum(self.n_features.values()) + n_continuous_cov
        cat_list = [n_batch] + self.n_cats_per_cov
        encoder_kwargs = {
            "n_cat_list": cat_list,
            "n_layers": n_layers,
            "n_hidden": n_hidden,
            "dropout_rate": dropout_rate,
            "use_batch_norm": False,
            "use_layer_norm": use_layer_norm,
            "return_dist": True,
        }
        # Bernoulli inputs are read at their non-zero entries in training (see inference)
        if encoder == "experts":
            self.z_encoder = ModalityExpertsEncoder(
                self.n_features,
                n_latent,
                n_continuous_cov=n_continuous_cov,
                feature_major=[m for m, lik in self.likelihoods.items() if lik == "bernoulli"],
                expert_dropout=expert_dropout,
                **encoder_kwargs,
            )
        else:
            self.z_encoder = SparseInputEncoder(
                n_input,
                n_latent,
                feature_major="bernoulli" in self.likelihoods.values(),
                **encoder_kwargs,
            )
        if classifier and n_labels < 2:
            raise ValueError(
                f"A classifier head needs at least two label classes, got n_labels={n_labels}."
            )
        if classification_ratio < 0:
            raise ValueError(f"classification_ratio must be >= 0, got {classification_ratio}.")
        self.classification_ratio = float(classification_ratio)
        self.classifier = nn.Linear(n_latent, n_labels) if classifier else None
        masks = dict(masks or {})
        self.decoders = nn.ModuleDict(
            {
                mod: self._decoder_cls(
                    n_latent,
                    n_feat,
                    n_batch=n_batch,
                    n_cats_per_cov=self.n_cats_per_cov,
                    n_continuous_cov=n_continuous_cov,
                    mask=masks.get(mod),
                    mask_mode=mask_mode,
                    nonnegative=nonnegative,
                )
                for mod, n_feat in self.n_features.items()
            }
        )
        with torch.no_grad():
            for mod, share in (feature_open_share or {}).items():
                share = torch.as_tensor(np.asarray(share), dtype=torch.float32)
                share = share.reshape(self.n_features[mod]).clamp(1e-4, 1.0 - 1e-4)
                self.decoders[mod].bias.copy_(torch.log(share) - torch.log1p(-share))
        n_disp_rows = max(n_batch, 1) if dispersion == "gene-batch" else 1
        self.log_theta = nn.ParameterDict(
            {
                mod: nn.Parameter(torch.zeros(n_disp_rows, n))
                for mod, n in self.n_features.items()
                if self.likelihoods[mod] in ("nb", "zinb")
            }
        )
        self.zi_logits = nn.ParameterDict(
            {
                mod: nn.Parameter(torch.full((n,), -2.0))
                for mod, n in self.n_features.items()
                if self.likelihoods[mod] == "zinb"
            }
        )

    # ----------------------------------------------------------------------------- inputs
    @staticmethod
    def _covariates(tensors: dict) -> dict:
        return {
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
        }

    #: whether a training step reads Bernoulli modalities at their stored entries only
    _sparse_training_inputs = True

    def sparse_input_keys(self) -> list[str]:
        """Registry keys of the counts that a training step reads at their stored entries only.

        These are the Bernoulli (accessibility) modalities: in training, the encoder, the
        library size and the sampled likelihood read them at the positions of their entries
        (plus their shape), so a data loader may pass their training minibatches as sparse CSR
        tensors with those positions (:class:`~glassvi.train.GlassDataSplitter`'s
        ``sparse_training_keys``) instead of dense minibatches, which cost a zero-filled
        cells x peaks array each. Every other path (validation, accessors, attributions)
        reads dense minibatches; a sparse one is densified where it is read densely.

        Examples
        --------
        >>> GlassVAE({"rna": 20, "atac": 50}, {"rna": "rna", "atac": "atac"},
        ...          {"rna": "nb", "atac": "bernoulli"}).sparse_input_keys()
        ['atac']
        """
        if not self._sparse_training_inputs:
            return []
        return [
            key for mod, key in self.registry_keys.items() if self.likelihoods[mod] == "bernoulli"
        ]

    def _get_inference_input(self, tensors: dict) -> dict:
        inputs = {
            "x": {mod: tensors[key] for mod, key in self.registry_keys.items()},
            **self._covariates(tensors),
        }
        nonzero = self._bernoulli_positions(tensors)
        if nonzero:
            inputs["nonzero"] = nonzero
        return inputs

    def _bernoulli_positions(self, tensors: dict) -> dict:
        """Positions of the non-zero entries of Bernoulli modalities, where the loader has them."""
        found = {
            mod: tensors.get(nonzero_key(key))
            for mod, key in self.registry_keys.items()
            if self.likelihoods[mod] == "bernoulli"
        }
        return {mod: pos for mod, pos in found.items() if pos is not None}

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict:
        inputs = {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "size_factor": tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
            **self._covariates(tensors),
        }
        if self.training and self.zero_sample_fraction < 1.0:
            # the ones, evaluated exactly by the sampled likelihood (stored zeros dropped)
            ones = {}
            for mod, positions in self._bernoulli_positions(tensors).items():
                is_one = values_at(tensors[self.registry_keys[mod]], positions) > 0
                ones[mod] = positions if bool(is_one.all()) else positions[is_one]
            inputs["nonzero"] = ones
        return inputs

    # ----------------------------------------------------------------------------- encoder
    def encoder_input(
        self,
        x: Mapping[str, torch.Tensor],
        cont_covs: torch.Tensor | None = None,
        binarised: bool = False,
    ) -> torch.Tensor:
        """Concatenate the transformed counts of every modality (and continuous covariates).

        With ``binarised=True`` the inputs of Bernoulli modalities are taken as already
        binarised and passed through unchanged.
        """
        parts = [
            x[m]
            if binarised and self.likelihoods[m] == "bernoulli"
            else transform_counts(x[m], self.likelihoods[m])
            for m in self.modalities
        ]
        if cont_covs is not None and self.n_continuous_cov > 0:
            parts.append(cont_covs)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def encoder_blocks(
        self,
        x: Mapping[str, torch.Tensor],
        nonzero: Mapping[str, torch.Tensor],
        cont_covs: torch.Tensor | None = None,
        values: Mapping[str, torch.Tensor] | None = None,
    ) -> list:
        """The encoder input as blocks: Bernoulli modalities as their non-zero entries.

        Each modality in ``nonzero`` (flat positions of its non-zero entries; ``values``: the
        counts there, when already read) becomes a
        :class:`~glassvi.module._sparse_input.SparseBlock` of its binarised counts, which the
        encoder's first layer reads at those entries only; the others are transformed as in
        :meth:`encoder_input`. Concatenated densely, the blocks equal :meth:`encoder_input`.
        """
        values = values or {}
        blocks = [
            SparseBlock.from_positions(x[m], nonzero[m], True, values.get(m))
            if m in nonzero
            else transform_counts(x[m], self.likelihoods[m])
            for m in self.modalities
        ]
        if cont_covs is not None and self.n_continuous_cov > 0:
            blocks.append(cont_covs)
        return blocks

    def _encoder_parts(self) -> dict[str, SparseInputEncoder]:
        """The encoders in ``z_encoder`` by state-dict prefix: itself, or each modality's."""
        experts = getattr(self.z_encoder, "experts", None)
        if experts is None:
            return {"z_encoder.": self.z_encoder}
        return {f"z_encoder.experts.{mod}.": expert for mod, expert in experts.items()}

    def _cat_list(self, batch_index, cat_covs) -> list[torch.Tensor]:
        cats = [batch_index] if batch_index is not None else []
        if cat_covs is not None and self.n_cats_per_cov:
            cats.extend(torch.split(cat_covs, 1, dim=1))
        return cats

    def posterior_mean(
        self,
        x: Mapping[str, torch.Tensor],
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posterior mean of the latent units; differentiable in the input counts."""
        qz, _ = self.z_encoder(
            self.encoder_input(x, cont_covs), *self._cat_list(batch_index, cat_covs)
        )
        return qz.loc

    def latent_from_inputs(
        self,
        inputs: Mapping[str, torch.Tensor],
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posterior mean from attribution inputs; differentiable in every input.

        ``inputs`` holds the counts of count modalities and the *binarised* accessibility of
        Bernoulli modalities (the encoder's own view of them, which has a gradient; the
        thresholding in :meth:`posterior_mean` has none). On counts this equals
        :meth:`posterior_mean`.
        """
        enc = self.encoder_input(inputs, cont_covs, binarised=True)
        qz, _ = self.z_encoder(enc, *self._cat_list(batch_index, cat_covs))
        return qz.loc

    def classifier_input(self, z: torch.Tensor) -> torch.Tensor:
        """The latent units the classification head reads (all of them here)."""
        return z

    def classify(
        self,
        x: Mapping[str, torch.Tensor],
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits of the classification head, from the posterior mean of ``z``."""
        if self.classifier is None:
            raise ValueError("This module has no classifier head.")
        z = self.posterior_mean(x, batch_index, cat_covs, cont_covs)
        return self.classifier(self.classifier_input(z))

    @auto_move_data
    def inference(
        self,
        x: Mapping[str, torch.Tensor],
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        n_samples: int = 1,
        nonzero: Mapping[str, torch.Tensor] | None = None,
    ) -> dict:
        """Encode counts into the posterior ``q(z | x)`` and observed log library sizes.

        ``nonzero`` (Bernoulli modality -> flat positions of its non-zero entries, as the data
        loader passes them for sparse minibatches) lets the encoder's first layer read those
        modalities at their non-zero entries only; the result is the same.
        """
        nonzero = {m: p for m, p in (nonzero or {}).items() if m in self.modalities}
        # sparse minibatches are read at the positions of their entries only
        x = {m: v if m in nonzero else as_dense(v) for m, v in x.items()}
        values = {m: values_at(x[m], p) for m, p in nonzero.items()}
        if nonzero:
            encoder_input = self.encoder_blocks(x, nonzero, cont_covs, values)
        else:
            encoder_input = self.encoder_input(x, cont_covs)
        qz, z = self.z_encoder(encoder_input, *self._cat_list(batch_index, cat_covs))
        if n_samples > 1:
            z = qz.rsample((n_samples,))
        library = {}
        for m in self.modalities:
            if m in nonzero:
                rows = _rows_of(nonzero[m], x[m].shape[-1])
                total = values[m].new_zeros(x[m].shape[0]).index_add_(0, rows, values[m])
                total = total.unsqueeze(-1)
            else:
                total = x[m].sum(dim=-1, keepdim=True)
            library[m] = torch.log(total.clamp(min=1.0))
        return {"qz": qz, "z": z, "library": library}

    # ----------------------------------------------------------------------------- decoder
    def _library(self, mod: str, library: dict, size_factor: torch.Tensor | None):
        i = self.modalities.index(mod)
        if size_factor is not None and size_factor.shape[-1] > i:
            return torch.log(size_factor[..., i : i + 1].clamp(min=1e-8))
        return library[mod]

    def _feature_generator(self, device: torch.device) -> torch.Generator:
        """Generator of the features sampled for the likelihood, apart from torch's own.

        Seeded from torch's seed (``scvi.settings.seed``) when first used, so that the draws
        are reproducible and leave the random numbers of the rest of training (dropout, the
        latent samples) as they would be with the exact likelihood.
        """
        generator = getattr(self, "_sampling_generator", None)
        if generator is None or generator.device != torch.device(device):
            generator = torch.Generator(device=device)
            generator.manual_seed(torch.initial_seed())
            self._sampling_generator = generator
        return generator

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: dict,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        size_factor: torch.Tensor | None = None,
        nonzero: Mapping[str, torch.Tensor | None] | None = None,
    ) -> dict:
        """Decode ``z`` into the likelihood of every modality.

        ``nonzero`` (modality -> flat positions of the minibatch's non-zero entries) turns on
        the sampled likelihood of Bernoulli modalities while training (see
        ``zero_sample_fraction``).
        """
        px = {}
        nonzero = dict(nonzero or {}) if self.training else {}
        for i, mod in enumerate(self.modalities):
            z_mod = z
            if self.modality_weights[i] != 1.0:
                # same value; the modality's gradient reaches z (and the encoder) scaled by
                # its weight, while its own decoder still fits its counts fully
                z_mod = torch.lerp(z.detach(), z, self.modality_weights[i])
            lib = self._library(mod, library, size_factor)
            lik = self.likelihoods[mod]
            if lik == "bernoulli":
                # depth enters as a logit offset, centred on the training data's mean depth
                offset = lib - self.library_log_means[i]
                ones = nonzero.get(mod)
                if ones is not None and self.zero_sample_fraction < 1.0 and z_mod.dim() == 2:
                    px[mod] = self._sampled_bernoulli(
                        mod, z_mod, offset, ones, batch_index, cat_covs, cont_covs
                    )
                    continue
                eta = self.decoders[mod](z_mod, batch_index, cat_covs, cont_covs)
                px[mod] = FeatureBernoulli(eta + offset)
                continue
            eta = self.decoders[mod](z_mod, batch_index, cat_covs, cont_covs)
            log_mu, mu = _log_softmax_and_mean(eta, lib)
            if lik == "poisson":
                px[mod] = FeaturePoisson(log_mu, mu)
                continue
            log_theta = self.log_theta[mod]
            rows = None
            if self.dispersion == "gene-batch" and batch_index is not None:
                rows = batch_index.reshape(-1).long()
            else:
                log_theta = log_theta[:1]
            if lik == "nb":
                px[mod] = FeatureNegativeBinomial(log_mu, log_theta, rows, mu=mu)
            else:
                theta = torch.exp(log_theta[0] if rows is None else log_theta[rows])
                px[mod] = ZeroInflatedNegativeBinomial(
                    mu=mu, theta=theta, zi_logits=self.zi_logits[mod].expand_as(mu)
                )
        return {"px": px, "pz": Normal(torch.zeros_like(z), torch.ones_like(z))}

    def _sampled_bernoulli(
        self, mod, z, offset, ones, batch_index, cat_covs, cont_covs
    ) -> SampledBernoulli:
        """Training likelihood of a Bernoulli modality: its ones and a uniform feature sample."""
        n_feat = self.n_features[mod]
        decoder = self.decoders[mod]
        fraction = self.zero_sample_fraction
        if self.zero_sample == "open_rate":
            # features whose zeros weigh more (open more often) are drawn more often
            fraction = feature_draw_probabilities(torch.sigmoid(decoder.bias.detach()), fraction)
        columns = draw_features(n_feat, fraction, self._feature_generator(z.device), z.device)
        rows = _rows_of(ones, n_feat)
        eta, pair = decoder.sampled_logits(
            z, columns, rows, ones - rows * n_feat, batch_index, cat_covs, cont_covs, offset
        )
        return SampledBernoulli(eta, columns, fraction, pair, ones)

    # ----------------------------------------------------------------------------- loss
    def reconstruction_nll(self, tensors: dict, generative_outputs: dict) -> dict:
        """Negative log-likelihood of each modality's counts, per cell."""
        out = {}
        for mod, key in self.registry_keys.items():
            x = tensors[key]
            px = generative_outputs["px"][mod]
            # the data loader passes the positions of the non-zero counts along
            nonzero = tensors.get(nonzero_key(key))
            if isinstance(px, FeatureBernoulli):
                out[mod] = -px.cell_log_prob(x, nonzero=nonzero)
                continue
            x = as_dense(x)
            if isinstance(px, FeatureNegativeBinomial | FeaturePoisson):
                log_prob = px.log_prob(x, nonzero=nonzero)
            else:
                log_prob = px.log_prob(x)
            out[mod] = -log_prob.sum(-1)
        return out

    def penalty(self) -> torch.Tensor:
        """Differentiable regulariser added to the loss (none for a plain linear decoder)."""
        return torch.zeros((), device=self.library_log_means.device)

    def loss(
        self,
        tensors: dict,
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """ELBO loss: summed reconstruction NLL of all modalities plus weighted KL of ``z``."""
        rec = self.reconstruction_nll(tensors, generative_outputs)
        kl_z = kl(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
        rec_total = torch.stack(list(rec.values()), dim=0).sum(0)
        loss = torch.mean(rec_total + kl_weight * kl_z) + self.penalty()
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        if self.classifier is None or labels is None:
            return LossOutput(
                loss=loss,
                reconstruction_loss=rec,
                kl_local={"kl_divergence_z": kl_z},
            )
        labels = labels.reshape(-1).long()
        labelled = labels < self.n_labels
        logits = self.classifier(self.classifier_input(inference_outputs["qz"].loc))[labelled]
        if labelled.any():
            ce = F.cross_entropy(logits, labels[labelled])
        else:
            ce = logits.sum() * 0.0
        return LossOutput(
            loss=loss + self.classification_ratio * ce,
            reconstruction_loss=rec,
            kl_local={"kl_divergence_z": kl_z},
            classification_loss=ce,
            logits=logits,
            true_labels=labels[labelled].unsqueeze(-1),
            extra_metrics={"classification_loss": ce.detach()},
        )

    # ----------------------------------------------------------------------------- constraints
    @torch.no_grad()
    def constrain_(self, lr: float | None = None) -> None:
        """Apply the decoders' constraints after an optimiser step."""
        for dec in self.decoders.values():
            dec.project_()

    def train_new_categories_(self, ref_state: Mapping[str, torch.Tensor]) -> None:
        """After reference mapping, train only the offsets of categories new to ``ref_state``.

        ``ref_state`` is the reference module's state dict; see
        :meth:`glassvi.model.LinearVI.load_query_data`.
        """
        train_new_categories_(self, ref_state)

    def loadings(self, modality: str) -> torch.Tensor:
        """Decoder weights (features x latent) of one modality, as used in the forward pass."""
        return self.decoders[modality].effective_weight().detach()
