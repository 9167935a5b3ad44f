"""Training plan: scvi-tools' ELBO training plus the decoders' proximal/projection steps."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan

from .._compiled import numba_available
from ._allocator import restore_cpu_allocator, tune_cpu_allocator
from ._lazy_adam import RowSparseAdam

#: default of ``GlassTrainingPlan(lazy_feature_rows=...)``
LAZY_FEATURE_ROWS = True
#: default of ``GlassTrainingPlan(row_second_moment=...)``, chosen on real SNARE-seq cortex
#: (benchmarks/multiome.py, part ``sampling``; ProgramVI, 9 runs): held-out likelihood within 0.1
#: nats per cell of element-wise moments (of ~560), marker programs within seed noise, a cheaper
#: update of the rows
ROW_SECOND_MOMENT = True


class GlassTrainingPlan(TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` that constrains the decoders after each optimiser step.

    After every optimiser step the module's ``constrain_`` method is called with the current
    learning rate. It applies projections (hard masks, non-negativity) and proximal operators
    (L1 on weights outside a soft mask, group lasso on whole programs), so that constrained
    weights are exactly zero rather than merely small.

    Three things make a training step cheaper than scvi-tools' plan, with the same results:

    * the epoch-level training metrics (``train_loss``, ``elbo_train``,
      ``reconstruction_loss_train``, ``kl_local_train``, ``kl_global_train`` and any extra
      metrics of the loss such as ``classification_loss_train``) are summed on the device during
      the epoch and logged once at its end, instead of going through Lightning's logging at every
      step. They are the same cell-weighted epoch means, summed over processes under
      distributed training. The KL weight is logged once per epoch as ``kl_weight``. With
      ``on_step=True`` scvi-tools' per-step logging is used unchanged.
    * Adam and AdamW use PyTorch's fused implementation (``fused=True``) where the parameters'
      device supports it.
    * With sparse (ATAC) inputs, the rows of the encoder's first-layer weight (one per input
      feature) take a "lazy" Adam step: only the rows of features present in the minibatch
      are updated (see ``lazy_feature_rows``), so that the layer's gradient and update cost
      follow the minibatch's non-zero entries rather than the number of peaks.
    * Optionally (``tune_allocator=True``), on CPU under Linux/glibc, the allocator keeps
      freed memory between steps instead of returning it to the system and faulting it back
      in at the next step. These settings are process-wide; they are put back to their
      start-up values and free memory is returned when training ends.

    Parameters
    ----------
    module
        A :class:`~glassvi.module.GlassVAE`.
    weight_decay
        L2 weight decay of the optimiser (default 0).
    tune_allocator
        Raise glibc's mmap and trim thresholds while training on CPU (no effect on GPUs or
        other systems); off by default, because they are settings of the whole process.
    lazy_feature_rows
        With Adam, update the rows of the encoder's first-layer weight only when the
        minibatch reaches them (a feature with an entry, every dense feature, a category
        present): lazy Adam, as :class:`torch.optim.SparseAdam` and the usual optimiser of
        embedding tables. Exact Adam also moves the rows of absent features with their
        decaying momentum at every step. Every other parameter takes the exact (fused) Adam
        step. Applies on CPU to modules with a Bernoulli (sparse) modality whose minibatches
        come with the positions of their non-zero entries; exact Adam is used instead with
        weight decay, gradient clipping, distributed training, precision other than 32-bit,
        other optimisers, and while the weight has gradient hooks (reference mapping).
    row_second_moment
        With ``lazy_feature_rows``, the rows updated lazily keep one Adam second moment per
        row (the mean squared gradient over the row) and their first moment per element:
        row-wise Adam, as used for embedding tables.
        A row's elements then share one step size, and its update moves a third less memory.
    **kwargs
        Keyword arguments of :class:`~scvi.train.TrainingPlan`.

    Examples
    --------
    glassvi models use this plan automatically; training options reach it through
    ``plan_kwargs``:

    >>> model.train(max_epochs=50, plan_kwargs={"lr": 2e-3})
    """

    def __init__(
        self,
        module,
        *,
        weight_decay: float = 0.0,
        tune_allocator: bool = False,
        lazy_feature_rows: bool = LAZY_FEATURE_ROWS,
        row_second_moment: bool = ROW_SECOND_MOMENT,
        **kwargs,
    ):
        # no L2 decay by default: frozen reference rows stay exactly fixed in query mapping,
        # and sparsity of the decoders is controlled by the proximal steps alone
        super().__init__(module, weight_decay=weight_decay, **kwargs)
        self.tune_allocator = bool(tune_allocator)
        self.lazy_feature_rows = bool(lazy_feature_rows)
        self.row_second_moment = bool(row_second_moment)
        self._epoch_sums: torch.Tensor | None = None
        self._extra_keys: list[str] = []

    def on_train_start(self) -> None:
        """Tune the CPU allocator when asked to and training on CPU."""
        if self.tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()

    # ----------------------------------------------------------------------------- optimiser
    def get_optimizer_creator(self):
        """Adam/AdamW with the fused update where available; a custom creator is kept."""
        if self.optimizer_name not in ("Adam", "AdamW"):
            return super().get_optimizer_creator()
        cls = torch.optim.Adam if self.optimizer_name == "Adam" else torch.optim.AdamW

        def create(params):
            params = list(params)
            fused = all(p.device.type in ("cpu", "cuda") for p in params)
            optimizer_cls = cls
            if fused:
                # the fused kernel copies non-contiguous tensors at every step: a matrix stored
                # transposed (the encoder's first layer, feature-major) is updated through its
                # contiguous transpose instead, with the same values
                by_rows = self._lazy_rows_weight()
                aliases = [transposed_alias(p) for p in params]
                for param, alias in zip(params, aliases):
                    if param is by_rows and alias is not param:
                        # the optimiser sums each row's gradient as it updates the row
                        self.module.z_encoder.set_row_gradient_weight(alias, factored=True)
                        optimizer_cls = RowSparseAdam
                params = aliases
            kwargs = {}
            if optimizer_cls is RowSparseAdam:
                kwargs["row_second_moment"] = self.row_second_moment
            return optimizer_cls(
                params,
                lr=self.lr,
                eps=self.eps,
                weight_decay=self.weight_decay,
                fused=fused,
                **kwargs,
            )

        return create

    def _lazy_rows_weight(self) -> torch.Tensor | None:
        """The encoder weight to update by feature rows (see ``lazy_feature_rows``), if any."""
        encoder = getattr(self.module, "z_encoder", None)
        if (
            not self.lazy_feature_rows
            or not hasattr(encoder, "set_row_gradient_weight")
            or self.optimizer_name != "Adam"
            or self.weight_decay != 0.0
            or not numba_available()
        ):
            return None
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and (
            trainer.world_size > 1
            or trainer.gradient_clip_val
            or str(trainer.precision) not in ("32-true", "32")
        ):
            return None
        weight = encoder.first_linear.weight
        if (
            weight.device.type != "cpu"
            or weight.dtype != torch.float32
            or weight._backward_hooks
            or weight.is_contiguous()
            or not weight.t().is_contiguous()
        ):
            # not stored feature-major: no sparse (Bernoulli) input
            return None
        return weight

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer) -> None:
        """Zero the gradients, also of parameters the optimiser updates through an alias."""
        optimizer.zero_grad()
        for param in self.module.parameters():
            if hasattr(param, _ALIAS_HOOKS):
                param.grad = None

    def on_train_end(self) -> None:
        """Put the allocator settings back and return free memory to the system."""
        release_aliases(self.module)
        restore_cpu_allocator()

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        """One ELBO step; metrics are accumulated for the end of the epoch."""
        if self.on_step:
            return super().training_step(batch, batch_idx)
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs["kl_weight"] = self.kl_weight
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        n_obs = out.n_obs_minibatch
        extra = {
            k: v
            for k, v in (out.extra_metrics or {}).items()
            if torch.is_tensor(v) and v.dim() == 0
        }
        if self._epoch_sums is None:
            self._extra_keys = list(extra)
        loss = out.loss.detach()
        step = torch.stack(
            [
                loss * n_obs,
                _as_tensor(out.reconstruction_loss_sum, loss),
                _as_tensor(out.kl_local_sum, loss),
                _as_tensor(out.kl_global_sum, loss),
                *(_as_tensor(extra.get(k, 0.0), loss) * n_obs for k in self._extra_keys),
            ]
        )
        # the last two entries count cells and minibatches
        step = torch.cat([step, step.new_tensor([n_obs, 1.0])])
        self._epoch_sums = step if self._epoch_sums is None else self._epoch_sums + step
        return out.loss

    def validation_step(self, batch, batch_idx):
        """Validation loss and ELBO metrics, weighted by the cells of each minibatch."""
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self.log(
            "validation_loss",
            out.loss,
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            batch_size=out.n_obs_minibatch,
            sync_dist=self.use_sync_dist,
        )
        self.compute_and_log_metrics(out, self.val_metrics, "validation")
        if out.extra_metrics:
            self.prepare_scib_autotune(out.extra_metrics, "validation")

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics (cell-weighted means, as scvi-tools computes them)."""
        sums, self._epoch_sums = self._epoch_sums, None
        if sums is None:
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        n_obs, n_batches = sums[-2], sums[-1]
        loss, rec, kl_local, kl_global = sums[0], sums[1], sums[2], sums[3]
        n_total = self.n_obs_training if self.n_obs_training and self.n_obs_training > 0 else 1
        metrics = {
            "train_loss": loss / n_obs,
            "elbo_train": rec / n_obs + kl_local / n_obs + kl_global / n_batches / n_total,
            "reconstruction_loss_train": rec / n_obs,
            "kl_local_train": kl_local / n_obs,
            "kl_global_train": kl_global / n_batches,
        }
        for i, key in enumerate(self._extra_keys):
            metrics[f"{key}_train"] = sums[4 + i] / n_obs
        if "kl_weight" in self.loss_kwargs:
            metrics["kl_weight"] = torch.as_tensor(self.kl_weight, dtype=sums.dtype)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=1)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Apply the module's constraints with the optimiser's current learning rate."""
        optimizer = self.optimizers(use_pl_optimizer=False)
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else self.lr
        self.module.constrain_(lr=lr)


#: attribute holding the hooks of a parameter optimised through a transposed alias
_ALIAS_HOOKS = "_glassvi_alias_hooks"


def transposed_alias(param: torch.Tensor) -> torch.Tensor:
    """``param``, or for a matrix stored transposed, a leaf alias of its contiguous transpose.

    The alias shares the parameter's storage, so an optimiser step on it updates the
    parameter; its gradient is the transpose of the parameter's (a view, set by a hook after
    every accumulation, so gradient clipping and zeroing act on both). Adam's update is
    elementwise, hence the same on the transpose. :func:`release_aliases` removes the hooks.
    """
    if param.dim() != 2 or param.is_contiguous() or not param.t().is_contiguous():
        return param
    alias = torch.nn.Parameter(param.detach().t(), requires_grad=param.requires_grad)

    def link(p: torch.Tensor) -> None:
        # (the hook can fire without a gradient; the alias may hold a row gradient of its own)
        if p.grad is not None:
            alias.grad = p.grad.t()

    handles = getattr(param, _ALIAS_HOOKS, [])
    handles.append(param.register_post_accumulate_grad_hook(link))
    setattr(param, _ALIAS_HOOKS, handles)
    return alias


def release_aliases(module: torch.nn.Module) -> None:
    """Remove the gradient hooks of :func:`transposed_alias` from ``module``'s parameters."""
    for param in module.parameters():
        for handle in getattr(param, _ALIAS_HOOKS, []):
            handle.remove()
        if hasattr(param, _ALIAS_HOOKS):
            delattr(param, _ALIAS_HOOKS)
    for part in module.modules():
        if hasattr(part, "set_row_gradient_weight"):
            part.set_row_gradient_weight(None)


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(value):
        return value.detach().to(like.dtype).reshape(())
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)
