"""One encoder per modality, combined as a product of Gaussian experts.

A joint encoder reads the concatenated inputs of every modality through one set of hidden
layers. In a multiome model those layers are shaped mostly by the modality with the most
features (tens of thousands of peaks against a few thousand genes), whatever each modality
says about a given cell. Here every modality has its own encoder (an *expert*), which gives a
Gaussian posterior of the latent units from that modality alone. The posterior of a cell is the
product of the experts' Gaussians and the standard normal prior: its precision is the sum of
their precisions, its mean their precision-weighted mean. A modality that is uncertain about a
cell (a large posterior variance) moves it little; one that is sure of it decides it.

Experts trained only through their product can lean on each other (one modality's expert
stays vague because the other decides). With ``expert_dropout`` a share of the training cells
is encoded from one modality alone, drawn at random per cell, so each expert must also explain
the cells by itself (as in multimodal VAEs trained on subsets of modalities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.distributions import Normal

from ._sparse_input import SparseInputEncoder

#: encoders of a multi-modality module (``GlassVAE(encoder=...)``)
ENCODERS = ("joint", "experts")


class ModalityExpertsEncoder(nn.Module):
    """Encoder of several modalities as a product of per-modality Gaussian experts.

    ``forward(x, *cat_list)`` takes what a joint :class:`SparseInputEncoder` over the
    concatenated modalities takes: a dense tensor whose columns are the modalities' features in
    order, then the continuous covariates, or the same as a list of input blocks (one per
    modality, then the covariates). It returns ``(Normal posterior, sample)``.

    Parameters
    ----------
    n_features
        Ordered mapping modality name -> number of input features.
    n_output
        Number of latent units.
    n_continuous_cov
        Number of continuous covariates; every expert reads them after its features.
    feature_major
        Modalities whose expert stores its first layer feature-major (inputs read at their
        non-zero entries, see :class:`SparseInputEncoder`).
    expert_dropout
        Share of training cells encoded from one modality alone (drawn at random per cell).
    **kwargs
        Arguments of :class:`scvi.nn.Encoder` for every expert (``n_cat_list``,
        ``n_layers``, ``n_hidden``, ``dropout_rate``, ...).

    Examples
    --------
    >>> enc = ModalityExpertsEncoder({"rna": 4, "atac": 6}, 2, n_hidden=8)
    >>> qz, z = enc(torch.ones(3, 10))
    >>> qz.loc.shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        n_features: Mapping[str, int],
        n_output: int,
        n_continuous_cov: int = 0,
        feature_major: Sequence[str] = (),
        expert_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__()
        if len(n_features) < 2:
            raise ValueError(
                f"A product of experts needs at least two modalities, got {list(n_features)}."
            )
        if not 0.0 <= expert_dropout <= 1.0:
            raise ValueError(f"expert_dropout must lie in [0, 1], got {expert_dropout}.")
        kwargs.setdefault("return_dist", True)
        self.n_features = dict(n_features)
        self.n_continuous_cov = int(n_continuous_cov)
        self.n_output = n_output
        self.expert_dropout = float(expert_dropout)
        self.experts = nn.ModuleDict(
            {
                mod: SparseInputEncoder(
                    n + self.n_continuous_cov,
                    n_output,
                    feature_major=mod in feature_major,
                    **kwargs,
                )
                for mod, n in self.n_features.items()
            }
        )
        #: set by a module whose loss reads the posterior mean from detached hidden layers
        self.keep_detached_output = False

    # ------------------------------------------------------------------------- inputs
    def _inputs(self, x) -> list:
        """Each expert's input: its modality's columns (or block), then the covariates."""
        n_mods = len(self.n_features)
        if isinstance(x, torch.Tensor):
            parts, start = [], 0
            for n in self.n_features.values():
                parts.append(x[..., start : start + n])
                start += n
            if self.n_continuous_cov:
                cont = x[..., start:]
                parts = [torch.cat([p, cont], dim=-1) for p in parts]
            return parts
        blocks = list(x)
        if len(blocks) != n_mods + (1 if self.n_continuous_cov else 0):
            raise ValueError(
                f"Expected {n_mods} modality blocks"
                + (" and the continuous covariates" if self.n_continuous_cov else "")
                + f", got {len(blocks)} blocks."
            )
        cont = blocks[n_mods:]
        return [[block, *cont] for block in blocks[:n_mods]]

    # ------------------------------------------------------------------------- experts
    @staticmethod
    def _hidden(expert: SparseInputEncoder, inputs, cat_list) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return expert.encoder(inputs, *cat_list)
        return expert._hidden_from_blocks(inputs, cat_list)

    @staticmethod
    def _heads(expert: SparseInputEncoder, h: torch.Tensor):
        mean = expert.mean_encoder(h)
        var = expert.var_activation(expert.var_encoder(h)) + expert.var_eps
        return mean, var

    @staticmethod
    def product(means: Sequence[torch.Tensor], variances: Sequence[torch.Tensor], keep=None):
        """Mean and variance of the product of the experts' Gaussians and the N(0, 1) prior.

        ``keep`` (optional, one ``(cells, 1)`` 0/1 tensor per expert) leaves experts out of
        the product for some cells.
        """
        precision = torch.ones_like(means[0])
        weighted = torch.zeros_like(means[0])
        for i, (mean, var) in enumerate(zip(means, variances, strict=True)):
            p = 1.0 / var if keep is None else keep[i] / var
            precision = precision + p
            weighted = weighted + p * mean
        return weighted / precision, 1.0 / precision

    def _keep(self, n_cells: int, device) -> list | None:
        """Per expert, the training cells it encodes (``expert_dropout``), or ``None``."""
        if not (self.training and torch.is_grad_enabled()) or self.expert_dropout <= 0:
            return None
        n_mods = len(self.n_features)
        alone = torch.rand(n_cells, 1, device=device) < self.expert_dropout
        which = torch.randint(n_mods, (n_cells, 1), device=device)
        return [(~alone | (which == i)).float() for i in range(n_mods)]

    def forward(self, x, *cat_list):
        """Posterior of the latent units (product of the experts) and a sample from it."""
        means, variances, detached = [], [], []
        track = self.keep_detached_output and self.training and torch.is_grad_enabled()
        for expert, inputs in zip(self.experts.values(), self._inputs(x), strict=True):
            h = self._hidden(expert, inputs, cat_list)
            mean, var = self._heads(expert, h)
            means.append(mean)
            variances.append(var)
            if track:
                # the output layers on detached hidden layers; the precisions fixed
                detached.append((expert.mean_encoder(h.detach()), var.detach()))
        keep = self._keep(means[0].shape[0], means[0].device)
        loc, var = self.product(means, variances, keep)
        if track:
            self.output_on_detached_input = self.product(
                [m for m, _ in detached], [v for _, v in detached], keep
            )[0]
        dist = Normal(loc, var.sqrt())
        return dist, dist.rsample()

    def expert_posteriors(self, x, *cat_list) -> dict[str, Normal]:
        """Each modality's own posterior (its expert alone, without the prior).

        Examples
        --------
        >>> enc = ModalityExpertsEncoder({"rna": 4, "atac": 6}, 2, n_hidden=8)
        >>> sorted(enc.eval().expert_posteriors(torch.ones(3, 10)))
        ['atac', 'rna']
        """
        out = {}
        for mod, inputs in zip(self.n_features, self._inputs(x), strict=True):
            expert = self.experts[mod]
            mean, var = self._heads(expert, self._hidden(expert, inputs, cat_list))
            out[mod] = Normal(mean, var.sqrt())
        return out

    # ------------------------------------------------------------------------- training
    def _sparse_expert(self) -> SparseInputEncoder:
        """The expert whose first layer is stored feature-major (else the first)."""
        for expert in self.experts.values():
            weight = expert.first_linear.weight
            if not weight.is_contiguous() and weight.t().is_contiguous():
                return expert
        return next(iter(self.experts.values()))

    @property
    def first_linear(self) -> nn.Linear:
        """First layer of the expert read at its non-zero entries (updated by rows in training)."""
        return self._sparse_expert().first_linear

    def set_row_gradient_weight(
        self, weight_t: torch.Tensor | None, factored: bool = False
    ) -> None:
        """:meth:`SparseInputEncoder.set_row_gradient_weight` of that expert."""
        self._sparse_expert().set_row_gradient_weight(weight_t, factored=factored)
