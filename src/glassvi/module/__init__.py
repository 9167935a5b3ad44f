"""Torch modules: encoder, linear and masked decoders, likelihood heads."""

from ._decoders import LinearFeatureDecoder
from ._program import ProgramDecoder, ProgramVAE
from ._vae import LIKELIHOODS, GlassVAE

__all__ = ["GlassVAE", "LinearFeatureDecoder", "LIKELIHOODS", "ProgramDecoder", "ProgramVAE"]
