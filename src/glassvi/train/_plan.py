"""Training plan: scvi-tools' ELBO training plus the decoders' proximal/projection steps."""

from __future__ import annotations

from scvi.train import TrainingPlan


class GlassTrainingPlan(TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` that constrains the decoders after each optimiser step.

    After every optimiser step the module's ``constrain_`` method is called with the current
    learning rate. It applies projections (hard masks, non-negativity) and proximal operators
    (L1 on weights outside a soft mask, group lasso on whole programs), so that constrained
    weights are exactly zero rather than merely small.

    Parameters
    ----------
    module
        A :class:`~glassvi.module.GlassVAE`.
    weight_decay
        L2 weight decay of the optimiser (default 0).
    **kwargs
        Keyword arguments of :class:`~scvi.train.TrainingPlan`.

    Examples
    --------
    glassvi models use this plan automatically; training options reach it through
    ``plan_kwargs``:

    >>> model.train(max_epochs=50, plan_kwargs={"lr": 2e-3})
    """

    def __init__(self, module, *, weight_decay: float = 0.0, **kwargs):
        # no L2 decay by default: frozen reference rows stay exactly fixed in query mapping,
        # and sparsity of the decoders is controlled by the proximal steps alone
        super().__init__(module, weight_decay=weight_decay, **kwargs)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Apply the module's constraints with the optimiser's current learning rate."""
        optimizer = self.optimizers(use_pl_optimizer=False)
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else self.lr
        self.module.constrain_(lr=lr)
