"""A negative binomial with a fast log-likelihood for per-feature dispersions and integer counts.

The NB log-likelihood of a count ``x`` with mean ``mu`` and inverse dispersion ``theta`` is

    theta * log(theta / (theta + mu)) + x * log(mu / (theta + mu))
        + lgamma(x + theta) - lgamma(theta) - lgamma(x + 1).

Evaluated directly on a cells x features minibatch, the three ``lgamma`` terms and the two
``digamma`` terms of the gradient dominate the cost of a training step on CPU. Here ``theta``
depends only on the feature (and optionally the batch), and ``x`` is a whole number, so

    lgamma(x + theta) - lgamma(theta) = sum_{j < x} log(theta + j)
    digamma(x + theta) - digamma(theta) = sum_{j < x} 1 / (theta + j)

are read from small per-feature tables for ``x < table_size`` (cumulative sums over ``j``, built
once per step from the features' ``theta``) and evaluated directly only for the few larger counts.
Both vanish at ``x = 0``: when the data loader passes the positions of the non-zero counts (it
knows them from the sparse matrix), they are evaluated there only. The value and the gradients
(written out by hand, so no autograd graph of intermediates is kept) equal those of
:class:`scvi.distributions.NegativeBinomial` up to float32 rounding.

The Bernoulli log-likelihood of binary accessibility, summed over the features of a cell, is
``sum over the ones of the logits - sum over all features of softplus(logits)``
(:class:`FeatureBernoulli`): the first sum is read at the non-zero positions only, the second is
one pass over the logits that also gives the gradient. In training, :class:`SampledBernoulli`
estimates it from the ones (as cell-feature pairs) and a random sample of the features, so that
its cost follows the non-zero entries. Features are drawn uniformly or, with lower variance for
the same expected number, more often where zeros weigh more: a zero entry costs ``softplus(l)``,
about the feature's open probability when it is small, and peaks' open rates span orders of
magnitude (:func:`feature_draw_probabilities`).
"""

from __future__ import annotations

import numpy as np
import torch
from scvi.distributions import NegativeBinomial
from torch.distributions import Bernoulli, Poisson
from torch.nn import functional as F

from ._sparse_input import _rows_of

#: counts below this are read from the tables; larger ones are evaluated directly
TABLE_SIZE = 32


def nonzero_key(key: str) -> str:
    """Minibatch key under which data loaders pass the non-zero positions of field ``key``.

    Parameters
    ----------
    key
        Registry key of a count matrix.

    Returns
    -------
    The key of a 1-D int64 tensor of flat (row-major) positions of the minibatch's non-zero
    entries.

    Examples
    --------
    >>> nonzero_key("X")
    'X__nonzero'
    """
    return f"{key}__nonzero"


def values_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Entries of a minibatch ``x`` at flat (row-major) ``positions``.

    ``x`` is dense, or a sparse CSR tensor whose stored entries ``positions`` lists in storage
    order (as data loaders pass fields that they never densify): its stored values are then
    returned as they are.
    """
    if x.layout == torch.sparse_csr:
        values = x.values()
        if values.numel() != positions.numel():
            raise ValueError(
                f"{positions.numel()} positions given for a sparse minibatch of "
                f"{values.numel()} stored entries; they must list its entries in order."
            )
        return values
    return x.reshape(-1).take(positions)


def as_dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a dense tensor (a sparse minibatch is densified)."""
    return x if x.layout == torch.strided else x.to_dense()


def _tables(theta: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables of the count-dependent terms, for ``k = 0 .. size - 1`` along the last axis.

    For every row ``r`` and feature ``g`` of ``theta`` (shape ``(R, G)``), returns
    ``lgamma(theta + k) - lgamma(theta) - lgamma(k + 1)`` and
    ``digamma(theta + k) - digamma(theta)``, each of shape ``(R * G, size)``.
    """
    steps = torch.arange(size, dtype=theta.dtype, device=theta.device)
    # column k >= 1 holds theta + k - 1; column 0 contributes nothing to the sums
    shifted = theta.reshape(-1, 1) + (steps - 1.0)
    shifted[:, 0] = 1.0
    # sum_{j < k} log((theta + j) / (j + 1)) = lgamma(theta + k) - lgamma(theta) - lgamma(k + 1)
    lg = torch.cumsum(torch.log(shifted / steps.clamp(min=1.0)), dim=1)
    inv = torch.reciprocal(shifted)
    inv[:, 0] = 0.0
    return lg, torch.cumsum(inv, dim=1)


def _table_columns(flat, theta_rows, n_feat):
    """Column of the flattened ``(R * G, size)`` tables (dispersion row x feature) of entries.

    ``flat`` holds flat (row-major) positions of entries of the cells x features minibatch.
    """
    column = flat % n_feat
    if theta_rows is not None:
        column = column + theta_rows[_rows_of(flat, n_feat)] * n_feat
    return column


def _table_positions(x, flat, values, theta_rows, n_feat, size):
    """Positions in the flattened tables: of the listed entries, or of every entry of ``x``."""
    if flat is not None:
        column = _table_columns(flat, theta_rows, n_feat)
        return column * size + values.clamp(max=size - 1).to(torch.long)
    # every entry: the column offsets broadcast over cells (or come per cell and feature)
    offset = torch.arange(n_feat, device=x.device) * size
    if theta_rows is not None:
        offset = offset + (theta_rows * (n_feat * size)).unsqueeze(-1)
    return x.clamp(max=size - 1).to(torch.long).add_(offset).reshape(-1)


class _NBLogProb(torch.autograd.Function):
    """Element-wise NB log-likelihood, differentiable in ``log_mu`` and ``log_theta``.

    ``mu`` must equal ``exp(log_mu)``; it is passed in so that it is not computed twice, and the
    whole gradient of the mean is returned through ``log_mu``. ``x`` holds whole numbers. With
    ``flat`` (the flat positions of the non-zero entries of ``x``) and ``values`` (their values),
    the count-dependent terms, which vanish at zero counts, are evaluated at these entries only;
    with ``flat=None`` at every entry.
    """

    @staticmethod
    def forward(ctx, x, log_mu, mu, log_theta, theta_rows, flat, values, table_size):
        n_feat = log_theta.shape[1]
        # flat positions index row-major storage
        log_mu, mu = log_mu.contiguous(), mu.contiguous()
        theta_all = torch.exp(log_theta)
        if theta_rows is None:
            theta, lt = theta_all[0], log_theta[0]
        else:
            theta, lt = theta_all[theta_rows], log_theta[theta_rows]
        tpm = mu + theta
        log_tpm = torch.log(tpm)
        tpx = x + theta
        # theta * log(theta / (theta + mu)) + x * log(mu / (theta + mu)), regrouped
        ll = x * log_mu
        ll.addcmul_(tpx, log_tpm, value=-1.0)
        ll.add_(theta * lt)

        # lgamma(x + theta) - lgamma(theta) - lgamma(x + 1): read from the tables for small
        # counts, evaluated directly for the few larger ones
        if flat is None:
            values = x.reshape(-1)
        position = _table_positions(x, flat, values, theta_rows, n_feat, table_size)
        lg_table, dg_table = _tables(theta_all, table_size)
        lg = lg_table.take(position)
        large = None
        if values.numel() and float(values.max()) >= table_size:
            large = (values >= table_size).nonzero().squeeze(1)
            entries = large if flat is None else flat[large]
            xl = values[large]
            tl = theta_all.reshape(-1)[_table_columns(entries, theta_rows, n_feat)]
            lg[large] = torch.lgamma(xl + tl) - torch.lgamma(tl) - torch.lgamma(xl + 1)
        if flat is None:
            ll.view(-1).add_(lg)
        else:
            ll.view(-1).index_add_(0, flat, lg)
        ctx.save_for_backward(x, tpm, log_tpm, tpx, theta, lt, theta_all, position)
        ctx.large = None if large is None else (large, xl, tl)
        ctx.flat = flat
        ctx.dg_table = dg_table
        ctx.theta_rows = theta_rows
        return ll

    @staticmethod
    def backward(ctx, grad):
        x, tpm, log_tpm, tpx, theta, lt, theta_all, position = ctx.saved_tensors
        q = tpx / tpm
        # d ll / d log_mu = theta * (x - mu) / (theta + mu) = theta * (q - 1)
        grad_log_mu = (q - 1.0).mul_(theta).mul_(grad)
        # d ll / d theta = log(theta) + 1 - log(theta + mu) - q
        #                  + digamma(x + theta) - digamma(theta)
        h = (lt + 1.0) - log_tpm
        h.sub_(q)
        dg = ctx.dg_table.take(position)
        if ctx.large is not None:
            large, xl, tl = ctx.large
            dg[large] = torch.digamma(xl + tl) - torch.digamma(tl)
        if ctx.flat is None:
            h.view(-1).add_(dg)
        else:
            h.view(-1).index_add_(0, ctx.flat, dg)
        h.mul_(grad)
        if ctx.theta_rows is None:
            grad_theta = h.sum(0, keepdim=True)
        else:
            grad_theta = torch.zeros_like(theta_all).index_add_(0, ctx.theta_rows, h)
        return None, grad_log_mu, None, grad_theta * theta_all, None, None, None, None


class FeatureNegativeBinomial(NegativeBinomial):
    """Negative binomial whose inverse dispersion is one value per feature (or feature and batch).

    A :class:`scvi.distributions.NegativeBinomial` (same ``mu``/``theta`` attributes, sampling
    and moments) whose :meth:`log_prob` reads the count-dependent terms from per-feature tables,
    at the non-zero counts only when their positions are given, as described in this module.
    Fractional values and counts that require a gradient use scvi-tools' own evaluation.

    Parameters
    ----------
    log_mu
        Log mean, shape ``(n_cells, n_features)``.
    log_theta
        Log inverse dispersion, shape ``(n_rows, n_features)``: one row shared by all cells, or
        one row per batch.
    theta_rows
        Row of ``log_theta`` of each cell (shape ``(n_cells,)``); ``None`` when ``log_theta`` has
        one row.
    mu
        ``exp(log_mu)``, when the caller has it already.
    table_size
        Counts below this are read from per-feature tables.

    Examples
    --------
    >>> px = FeatureNegativeBinomial(torch.zeros(2, 3), torch.zeros(1, 3))
    >>> px.log_prob(torch.ones(2, 3)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        log_mu: torch.Tensor,
        log_theta: torch.Tensor,
        theta_rows: torch.Tensor | None = None,
        mu: torch.Tensor | None = None,
        table_size: int = TABLE_SIZE,
    ):
        if log_theta.dim() != 2 or log_theta.shape[-1] != log_mu.shape[-1]:
            raise ValueError(
                f"log_theta must have shape (n_rows, {log_mu.shape[-1]}), "
                f"got {tuple(log_theta.shape)}."
            )
        if theta_rows is None and log_theta.shape[0] != 1:
            raise ValueError("theta_rows is required when log_theta has more than one row.")
        if table_size < 2:
            raise ValueError(f"table_size must be at least 2, got {table_size}.")
        theta = torch.exp(log_theta[0] if theta_rows is None else log_theta[theta_rows])
        mu = torch.exp(log_mu) if mu is None else mu
        super().__init__(mu=mu, theta=theta, validate_args=False)
        self.log_mu = log_mu
        self.log_theta = log_theta
        self.theta_rows = theta_rows
        self.table_size = int(table_size)

    def log_prob(self, value: torch.Tensor, nonzero: torch.Tensor | None = None) -> torch.Tensor:
        """Element-wise log-likelihood of ``value`` (same shape as ``mu``).

        Parameters
        ----------
        value
            Counts, shape ``(n_cells, n_features)``.
        nonzero
            Flat (row-major) positions of the non-zero entries of ``value``, for example from
            the data loader, which knows them from the sparse matrix; the count-dependent terms
            are then evaluated at these entries only (positions of zero entries may be
            included). With ``None`` they are evaluated at every entry.

        Returns
        -------
        Log-likelihood of every entry.
        """
        if value.requires_grad or value.shape != self.log_mu.shape:
            return super().log_prob(value)
        value = value.to(self.log_mu.dtype).contiguous()
        # without the positions of the non-zero entries, the count-dependent terms are read at
        # every entry (a scan for them costs more than it saves)
        values = value.reshape(-1) if nonzero is None else value.reshape(-1).take(nonzero)
        if not torch.equal(values, torch.floor(values)):
            return super().log_prob(value)
        return _NBLogProb.apply(
            value,
            self.log_mu,
            self.mu,
            self.log_theta,
            self.theta_rows,
            nonzero,
            None if nonzero is None else values,
            self.table_size,
        )


class FeaturePoisson(Poisson):
    """Poisson distribution of counts parameterised by its log rate.

    A :class:`torch.distributions.Poisson` whose :meth:`log_prob` uses the log rate directly
    and evaluates ``lgamma(x + 1)``, which vanishes at zero counts and has no gradient, at the
    non-zero counts only when their positions are given (as the data loader passes them for
    sparse minibatches).

    Parameters
    ----------
    log_rate
        Log rate, shape ``(n_cells, n_features)``.
    rate
        ``exp(log_rate)``, when the caller has it already.

    Examples
    --------
    >>> px = FeaturePoisson(torch.zeros(2, 3))
    >>> px.log_prob(torch.ones(2, 3)).shape
    torch.Size([2, 3])
    """

    def __init__(self, log_rate: torch.Tensor, rate: torch.Tensor | None = None):
        super().__init__(torch.exp(log_rate) if rate is None else rate, validate_args=False)
        self.log_rate = log_rate

    def log_prob(self, value: torch.Tensor, nonzero: torch.Tensor | None = None) -> torch.Tensor:
        """Element-wise log-likelihood of ``value`` (same shape as the rate).

        Parameters
        ----------
        value
            Counts, shape ``(n_cells, n_features)``.
        nonzero
            Flat (row-major) positions of the non-zero entries of ``value``; ``lgamma(x + 1)``
            is then evaluated at these entries only. With ``None``, at every entry.

        Returns
        -------
        Log-likelihood of every entry.
        """
        if value.shape != self.log_rate.shape:
            return super().log_prob(value)
        ll = value * self.log_rate - self.rate
        if nonzero is None or value.requires_grad:
            return ll - torch.lgamma(value + 1.0)
        ll = ll.contiguous()
        values = value.contiguous().reshape(-1).take(nonzero)
        return ll.view(-1).index_add(0, nonzero, -torch.lgamma(values + 1.0)).view_as(ll)


class _BernoulliCellLogProb(torch.autograd.Function):
    """Per-cell Bernoulli log-likelihood from the logits and the positions of the ones.

    ``log p(x_c) = sum_{g: x_cg = 1} l_cg - sum_g softplus(l_cg)``: the first sum runs over the
    ones only (a gather), the second over all entries is one pass over the logits, read as
    ``log(sigmoid(-l))``. That pass also gives ``1 - sigmoid(l)``, which is all the backward
    pass needs: ``d / d l_cg = x_cg - sigmoid(l_cg)``. ``weight`` (one value per listed
    position, 1 for a one and 0 for a stored zero) lets the positions include stored zeros.
    ``column_weight`` (one value per column, or ``None`` for all ones) weighs each column's
    softplus term; columns holding ones must weigh 1.
    """

    @staticmethod
    def forward(ctx, logits, flat, weight, column_weight):
        n_feat = logits.shape[-1]
        q = torch.neg(logits).sigmoid_()  # 1 - sigmoid(logits)
        # sigmoid(-l) is 0 in float32 for l > 88; softplus(l) is then read as -log(tiny) = 87.3
        log_q = torch.log(q.clamp_min_(torch.finfo(q.dtype).tiny))
        ll = log_q.sum(-1) if column_weight is None else log_q @ column_weight
        rows = _rows_of(flat, n_feat)
        ll.index_add_(0, rows, logits.reshape(-1).take(flat) * weight)
        ctx.save_for_backward(q, flat, rows, weight, column_weight)
        return ll

    @staticmethod
    def backward(ctx, grad):
        q, flat, rows, weight, column_weight = ctx.saved_tensors
        # d ll_c / d l_cg = x_cg - sigmoid(l_cg) = x_cg - 1 + q_cg
        out = q.sub(1.0)
        if column_weight is not None:
            out.mul_(column_weight)
        out.mul_(grad.unsqueeze(-1))
        out.view(-1).index_add_(0, flat, grad[rows] * weight)
        return out, None, None, None


class FeatureBernoulli(Bernoulli):
    """Bernoulli distribution of binary accessibility whose summed log-likelihood is fused.

    A :class:`torch.distributions.Bernoulli` (same ``logits``/``probs``, sampling and moments)
    with :meth:`cell_log_prob`, the log-likelihood summed over the features of each cell,
    computed as ``sum over the ones of the logits - sum over all entries of softplus(logits)``.
    With the positions of the non-zero entries (which the data loader passes for sparse
    minibatches) the first sum costs one gather per non-zero and the binarised target is never
    built; the second is one pass over the logits that also yields the gradient. Value and
    gradient equal those of ``Bernoulli(logits=...).log_prob(x > 0).sum(-1)`` up to float32
    rounding.

    The logits may cover a subset of the features only (``columns``), each weighing
    ``column_weight`` in the sum of the zero entries: every feature holding a one in the
    minibatch at weight 1, plus features drawn at random with probability ``p`` at weight
    ``1 / p`` give an unbiased estimate of the log-likelihood of all features.

    Parameters
    ----------
    logits
        Logits, shape ``(n_cells, n_features)`` (or with leading sample dimensions), or
        ``(n_cells, len(columns))``.
    columns
        Features (sorted indices) the logits hold; ``None`` for all.
    column_weight
        Weight of each column in the log-likelihood; ``None`` for all ones.

    Examples
    --------
    >>> px = FeatureBernoulli(torch.zeros(2, 3))
    >>> px.cell_log_prob(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    tensor([-2.0794, -2.0794])
    """

    def __init__(
        self,
        logits: torch.Tensor,
        columns: torch.Tensor | None = None,
        column_weight: torch.Tensor | None = None,
    ):
        super().__init__(logits=logits, validate_args=False)
        if columns is not None and columns.numel() != logits.shape[-1]:
            raise ValueError(
                f"{columns.numel()} columns given for logits of {logits.shape[-1]} features."
            )
        self.columns = columns
        self.column_weight = column_weight

    def cell_log_prob(
        self, value: torch.Tensor, nonzero: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-likelihood of ``value > 0`` summed over features, one value per cell.

        Parameters
        ----------
        value
            Counts or binary accessibility of all features, shape ``(n_cells, n_features)``;
            entries above zero count as ones.
        nonzero
            Flat (row-major) positions of the non-zero entries of ``value``, for example from
            the data loader (positions of stored zeros may be included). With ``None`` they are
            found by a scan of ``value``.

        Returns
        -------
        Log-likelihood of every cell, shape ``(n_cells,)`` (an unbiased estimate when the
        logits cover a random subset of the features).
        """
        logits = self.logits
        n_feat = value.shape[-1]
        columns = self.columns
        if nonzero is None or logits.dim() != 2:
            value = as_dense(value)
        if logits.dim() != 2 or value.dim() != 2 or value.requires_grad:
            x = value if columns is None else value[..., columns]
            ll = super().log_prob((x > 0).to(logits.dtype))
            return ll.sum(-1) if self.column_weight is None else ll @ self.column_weight
        if nonzero is None:
            nonzero = (value > 0).reshape(-1).nonzero().squeeze(1)
            weight = torch.ones(nonzero.numel(), dtype=logits.dtype, device=logits.device)
        else:
            weight = (values_at(value, nonzero) > 0).to(logits.dtype)
        if columns is not None:
            # positions in the columns held; stored zeros outside them are dropped
            position = torch.full((n_feat,), -1, dtype=torch.int64, device=logits.device)
            position[columns] = torch.arange(columns.numel(), device=logits.device)
            rows = _rows_of(nonzero, n_feat)
            held = position[nonzero - rows * n_feat]
            keep = held >= 0
            if not bool((keep | (weight == 0)).all()):
                raise ValueError("The columns must include every feature with a one.")
            nonzero = rows[keep] * columns.numel() + held[keep]
            weight = weight[keep]
        elif logits.shape != value.shape:
            raise ValueError(f"logits of shape {tuple(logits.shape)} for values {value.shape}.")
        return _BernoulliCellLogProb.apply(
            logits.contiguous(), nonzero, weight, self.column_weight
        )


class SampledBernoulli(FeatureBernoulli):
    """Bernoulli likelihood estimated from the ones and a random sample of the features.

    The log-likelihood of a cell, ``sum over the ones of log(sigmoid(l))`` plus ``- sum over
    the zeros of softplus(l)``, is estimated by evaluating

    - the ones exactly, as (cell, feature) pairs whose logits ``pair_logits`` cost one dot
      product each (see :meth:`~glassvi.module.LinearFeatureDecoder.pair_logits`), and
    - the zeros on features drawn independently, each with probability ``fraction`` (one
      value, or one per feature) (``logits`` holds every cell's logits at these ``columns``),
      weighted by ``1 / fraction``: the softplus summed over all entries of the drawn columns,
      less that of the ones among them.

    The estimate is unbiased, and so is its gradient; its cost follows the non-zero entries
    plus ``fraction`` x cells x features, without evaluating every feature open in some cell
    of the minibatch for all cells.

    Parameters
    ----------
    logits
        Logits of every cell at the drawn features, shape ``(n_cells, len(columns))``.
    columns
        Drawn features (sorted indices).
    fraction
        Probability with which each feature was drawn, in ``(0, 1]``: one value for all, or a
        tensor of one per feature (``n_features``).
    pair_logits
        Logits at the ones, one per entry of ``pair_positions``.
    pair_positions
        Flat (row-major) positions of the ones in the ``(n_cells, n_features)`` minibatch.

    Examples
    --------
    >>> logits = torch.zeros(2, 3)
    >>> px = SampledBernoulli(logits, torch.arange(3), 1.0, torch.zeros(1), torch.tensor([0]))
    >>> px.cell_log_prob(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    tensor([-2.0794, -2.0794])
    """

    def __init__(
        self,
        logits: torch.Tensor,
        columns: torch.Tensor,
        fraction: float,
        pair_logits: torch.Tensor,
        pair_positions: torch.Tensor,
    ):
        super().__init__(logits, columns)
        if isinstance(fraction, torch.Tensor):
            if fraction.dim() != 1:
                raise ValueError("fraction must be one value or one value per feature.")
            # each drawn column weighs 1 / its probability (in the softplus sum of its zeros)
            self.feature_weight = torch.reciprocal(fraction.to(logits.dtype))
            self.column_weight = self.feature_weight.index_select(0, columns)
        else:
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
            self.feature_weight = None
            fraction = float(fraction)
        if pair_logits.shape != pair_positions.shape:
            raise ValueError("pair_logits and pair_positions must have the same shape.")
        self.fraction = fraction
        self.pair_logits = pair_logits
        self.pair_positions = pair_positions

    def cell_log_prob(
        self, value: torch.Tensor, nonzero: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unbiased estimate of the log-likelihood of each cell, shape ``(n_cells,)``.

        Parameters
        ----------
        value
            The minibatch, shape ``(n_cells, n_features)``; its ones are those at
            ``pair_positions`` (``nonzero`` is not read).
        nonzero
            Unused; the ones were given as ``pair_positions``.

        Returns
        -------
        Estimated log-likelihood of every cell.
        """
        logits = self.logits
        n_cells, n_feat = value.shape[-2:]
        if value.dim() != 2 or logits.dim() != 2 or logits.shape[0] != n_cells:
            raise ValueError(f"logits of shape {tuple(logits.shape)} for values {value.shape}.")
        empty = self.pair_positions[:0]
        # - sum over the drawn columns of softplus (weighted), for every cell
        zeros = _BernoulliCellLogProb.apply(
            logits.contiguous(), empty, logits.new_zeros(0), self.column_weight
        )
        rows = _rows_of(self.pair_positions, n_feat)
        drawn = torch.zeros(n_feat, dtype=logits.dtype, device=logits.device)
        if self.feature_weight is None:
            drawn[self.columns] = 1.0 / self.fraction
            zeros = zeros / self.fraction
        else:
            if self.feature_weight.numel() != n_feat:
                raise ValueError(
                    f"{self.feature_weight.numel()} draw probabilities for {n_feat} features."
                )
            drawn[self.columns] = self.column_weight
        pair = self.pair_logits
        # the ones: log(sigmoid(l)) exactly, and their softplus taken back out of the drawn sum
        ones = F.logsigmoid(pair) + drawn[self.pair_positions - rows * n_feat] * F.softplus(pair)
        return zeros.index_add(0, rows, ones)


#: share of the expected draw of :func:`feature_draw_probabilities` spread evenly over the
#: features (the rest follows their open probability)
UNIFORM_DRAW_SHARE = 1.0 / 6.0


def feature_draw_probabilities(
    open_probability: torch.Tensor, fraction: float, uniform_share: float = UNIFORM_DRAW_SHARE
) -> torch.Tensor:
    """Probability of drawing each feature for :class:`SampledBernoulli`, ``fraction`` on average.

    A zero entry of feature ``g`` adds ``softplus(l)`` to the negative log-likelihood, about
    the feature's open probability where that is small: drawing features in proportion to it
    estimates the sum of the zeros with a lower variance than a uniform draw of the same
    expected size (importance sampling; the optimal probabilities are proportional to the
    terms). A share ``uniform_share`` of the draw is spread evenly, so that every feature,
    also one never seen open, keeps a probability of at least ``uniform_share * fraction``.
    Probabilities are capped at 1 (the expected draw is then a little smaller).

    Parameters
    ----------
    open_probability
        Typical open probability of each feature (e.g. the sigmoid of the decoder's bias).
    fraction
        Expected share of the features drawn, in ``(0, 1]``.
    uniform_share
        Share of the draw spread evenly over the features, in ``(0, 1]``.

    Returns
    -------
    One probability per feature.

    Examples
    --------
    >>> p = feature_draw_probabilities(torch.tensor([0.1, 0.1, 0.0, 0.2]), 0.5, 0.2)
    >>> [round(x, 3) for x in p.tolist()]
    [0.5, 0.5, 0.1, 0.9]
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    if not 0.0 < uniform_share <= 1.0:
        raise ValueError(f"uniform_share must lie in (0, 1], got {uniform_share}.")
    mean = open_probability.mean()
    if not bool(mean > 0):
        return torch.full_like(open_probability, fraction)
    share = open_probability * ((1.0 - uniform_share) / mean) + uniform_share
    return share.mul_(fraction).clamp_(max=1.0)


def draw_features(
    n_features: int,
    fraction: float | torch.Tensor,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Features drawn independently with probability ``fraction``, as sorted indices.

    ``fraction`` is one probability for every feature or a tensor of one per feature.

    Examples
    --------
    >>> draw_features(4, 1.0).tolist()
    [0, 1, 2, 3]
    """
    if isinstance(fraction, torch.Tensor):
        if fraction.shape != (n_features,):
            raise ValueError(f"fraction must hold one probability per feature ({n_features}).")
    elif not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    drawn = torch.rand(n_features, device=device, generator=generator) < fraction
    if drawn.device.type == "cpu":
        # NumPy's scan is several times faster than torch's nonzero on one CPU thread
        return torch.from_numpy(np.flatnonzero(drawn.numpy()))
    return drawn.nonzero().squeeze(1)
