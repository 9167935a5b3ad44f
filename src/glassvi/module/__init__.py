"""Torch modules: encoder, linear and masked decoders, likelihood heads."""

from ._anchor import expression_moments
from ._decoders import LinearFeatureDecoder
from ._distributions import (
    FeatureBernoulli,
    FeatureNegativeBinomial,
    FeaturePoisson,
    SampledBernoulli,
    feature_draw_probabilities,
    nonzero_key,
)
from ._experts import ModalityExpertsEncoder
from ._program import ProgramDecoder, ProgramVAE
from ._vae import (
    EXPERT_DROPOUT,
    LIKELIHOODS,
    MULTIOME_ATAC_WEIGHT,
    MULTIOME_ENCODER,
    ZERO_SAMPLE,
    ZERO_SAMPLE_FRACTION,
    GlassVAE,
    resolve_modality_weights,
)

__all__ = [
    "EXPERT_DROPOUT",
    "FeatureBernoulli",
    "FeatureNegativeBinomial",
    "FeaturePoisson",
    "GlassVAE",
    "LinearFeatureDecoder",
    "LIKELIHOODS",
    "MULTIOME_ATAC_WEIGHT",
    "MULTIOME_ENCODER",
    "ModalityExpertsEncoder",
    "ProgramDecoder",
    "ProgramVAE",
    "SampledBernoulli",
    "expression_moments",
    "feature_draw_probabilities",
    "nonzero_key",
    "resolve_modality_weights",
    "ZERO_SAMPLE",
    "ZERO_SAMPLE_FRACTION",
]
