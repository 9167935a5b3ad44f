"""Explanation targets: what the attributions explain (latent units, label logits, a callable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: names of the built-in targets
TARGETS = ("latent", "labels")


def check_target(target: str | Callable) -> str:
    """Validate an explanation target and return its name as used in result keys.

    Examples
    --------
    >>> check_target("latent")
    'latent'
    """
    if callable(target):
        return target_label(target)
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(
            f"Unknown explain target {target!r}; choose from {', '.join(TARGETS)} or a "
            "callable of the latent posterior mean."
        )
    return target


class TargetModel(nn.Module):
    """A glassvi module seen as a function of its inputs with one output per target.

    The inputs are one tensor per modality, in the module's modality order: counts for count
    modalities and binarised accessibility for Bernoulli modalities. Covariates (batch index,
    categorical and continuous covariates) follow the inputs as extra positional arguments, as
    captum passes ``additional_forward_args``; when they are left out, ``fixed_covariates``
    (one row, broadcast to every input row) are used, which is how the SHAP explainers call it.

    Parameters
    ----------
    module
        A :class:`~glassvi.module.GlassVAE` (or subclass).
    target
        ``"latent"`` (posterior mean of every latent unit), ``"labels"`` (logits of the
        classification head) or a callable mapping the posterior mean ``z`` (cells x latent) to
        a tensor of shape ``(cells,)`` or ``(cells, n_outputs)``.

    Examples
    --------
    >>> f = TargetModel(model.module, "latent")
    >>> f(torch.ones(3, 200)).shape  # three cells, 200 genes
    torch.Size([3, 10])
    """

    def __init__(self, module: nn.Module, target: str | Callable):
        super().__init__()
        check_target(target)
        if target == "labels" and getattr(module, "classifier", None) is None:
            raise ValueError("target='labels' needs a model with a classifier head.")
        self.module = module
        self.target = target
        self.n_inputs = len(module.modalities)
        self.fixed_covariates: tuple = (None, None, None)

    def latent(self, inputs: Sequence[torch.Tensor], *covariates) -> torch.Tensor:
        """Posterior mean of the latent units for attribution inputs."""
        return self.module.latent_from_inputs(
            dict(zip(self.module.modalities, inputs)), *covariates
        )

    def _covariates(self, n: int) -> tuple:
        return tuple(
            c.expand(n, *c.shape[1:]) if isinstance(c, torch.Tensor) else c
            for c in self.fixed_covariates
        )

    def forward(self, *args) -> torch.Tensor:
        """Target outputs, cells x targets."""
        inputs = args[: self.n_inputs]
        covariates = args[self.n_inputs :] or self._covariates(inputs[0].shape[0])
        z = self.latent(inputs, *covariates)
        if self.target == "latent":
            return z
        if self.target == "labels":
            return self.module.classifier(z)
        out = self.target(z)
        if not isinstance(out, torch.Tensor) or out.shape[0] != z.shape[0] or out.ndim > 2:
            raise ValueError(
                "A callable target must map z (cells x latent) to a tensor of shape (cells,) or "
                f"(cells, n_outputs); got {getattr(out, 'shape', type(out))}."
            )
        return out.unsqueeze(-1) if out.ndim == 1 else out


def target_label(target: str | Callable) -> str:
    """Name of a target as used in result keys (a callable's ``__name__``, else ``"custom"``)."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", "")
    return name if name.isidentifier() else "custom"
