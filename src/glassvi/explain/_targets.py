"""Explanation targets: what the attributions explain (latent units, label logits, a callable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: names of the built-in targets
TARGETS = ("latent", "labels")
#: what each class's output is contrasted with, for ``target="labels"``
LABEL_CONTRASTS = ("rest", "mean", "none")
#: which class each cell is explained for, for ``target="labels"``
LABEL_TARGETS = ("annotated", "predicted")


def check_label_options(contrast: str, label_target: str) -> None:
    """Validate ``label_contrast`` and ``label_target``.

    Examples
    --------
    >>> check_label_options("rest", "annotated")
    """
    if contrast not in LABEL_CONTRASTS:
        raise ValueError(
            f"Unknown label_contrast {contrast!r}; choose from {', '.join(LABEL_CONTRASTS)}."
        )
    if label_target not in LABEL_TARGETS:
        raise ValueError(
            f"Unknown label_target {label_target!r}; choose from {', '.join(LABEL_TARGETS)}."
        )


def _others(logits: torch.Tensor) -> torch.Tensor:
    """``(cells, K, K)`` logits with row ``c`` holding every class but ``c`` (``c`` at -inf)."""
    k = logits.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=logits.device)
    return logits.unsqueeze(1).expand(-1, k, -1).masked_fill(eye, float("-inf"))


def label_margins(logits: torch.Tensor, contrast: str = "rest") -> torch.Tensor:
    """Per-class outputs of a cell-label head that contrast each class with the others.

    The softmax of a classifier does not change when the same amount is added to every logit,
    so that shared part of the logits is left free by training and differs between training
    runs; contrasting a class with the others removes it.

    Parameters
    ----------
    logits
        ``(cells, K)`` logits.
    contrast
        ``"rest"``: ``logit_c - logsumexp_{j != c} logit_j``, the log-odds of class ``c``
        against all others. ``"mean"``: ``logit_c - mean_{j != c} logit_j`` (the logit minus
        the part shared by all classes, scaled by ``K / (K - 1)``). ``"none"``: the logits.

    Returns
    -------
    ``(cells, K)`` tensor.

    Examples
    --------
    >>> label_margins(torch.tensor([[2.0, 0.0, 0.0]]), "mean")
    tensor([[ 2., -1., -1.]])
    """
    if contrast == "none":
        return logits
    k = logits.shape[1]
    if contrast == "mean":
        return logits - (logits.sum(dim=1, keepdim=True) - logits) / (k - 1)
    return logits - torch.logsumexp(_others(logits), dim=2)


def contrast_weights(logits: torch.Tensor, classes: torch.Tensor, contrast: str) -> torch.Tensor:
    """Weights ``q`` of the other classes: the margin's gradient in the logits is ``e_c - q``.

    For ``"rest"`` ``q`` is the softmax over the classes other than ``c``; for ``"mean"`` it is
    uniform over them; for ``"none"`` it is zero. With a linear head ``W``, the margin of
    class ``c`` then changes with the latent as ``W[c] - q @ W``.

    Examples
    --------
    >>> contrast_weights(torch.zeros(1, 3), torch.tensor([0]), "rest")
    tensor([[0.0000, 0.5000, 0.5000]])
    """
    if contrast == "none":
        return torch.zeros_like(logits)
    own = torch.nn.functional.one_hot(classes, logits.shape[1]).bool()
    if contrast == "mean":
        return (~own).to(logits.dtype) / (logits.shape[1] - 1)
    return torch.softmax(logits.masked_fill(own, float("-inf")), dim=1)


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
        ``"latent"`` (posterior mean of every latent unit), ``"labels"`` (one output per class
        of the classification head, see ``label_contrast``) or a callable mapping the
        posterior mean ``z`` (cells x latent) to a tensor of shape ``(cells,)`` or
        ``(cells, n_outputs)``.
    label_contrast
        Output of class ``c`` for ``target="labels"`` (see :func:`label_margins`):
        ``"rest"`` (default, log-odds against the other classes), ``"mean"`` or ``"none"``
        (the raw logit).

    Examples
    --------
    >>> f = TargetModel(model.module, "latent")
    >>> f(torch.ones(3, 200)).shape  # three cells, 200 genes
    torch.Size([3, 10])
    """

    def __init__(self, module: nn.Module, target: str | Callable, label_contrast: str = "rest"):
        super().__init__()
        check_target(target)
        check_label_options(label_contrast, "predicted")
        if target == "labels" and getattr(module, "classifier", None) is None:
            raise ValueError("target='labels' needs a model with a classifier head.")
        self.module = module
        self.target = target
        self.label_contrast = label_contrast
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
            return label_margins(self.module.classifier(z), self.label_contrast)
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
