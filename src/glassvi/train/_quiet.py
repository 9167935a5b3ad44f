"""Quiet training: Lightning's start-up chatter off, the loss on the progress bar.

A plain ``model.train()`` through scvi-tools and Lightning prints a GPU/TPU banner, an
advertisement, a deprecation from Lightning's own use of torch's pytree API and a hint about
``log_every_n_steps`` (glassvi's plan logs once per epoch, so the hint never applies). None of
these is about the user's data or model. :func:`quiet_training` silences exactly these, only
while glassvi trains: every other warning, and Lightning's messages at WARNING level and above,
still reach the user, and the logging levels and warning filters are restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from lightning.pytorch.callbacks import ProgressBar
from scvi.utils import track

#: Lightning loggers whose INFO messages (device banner, tips, "fit stopped") are start-up chatter
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")

#: warnings that are about Lightning's internals or settings glassvi chose, not the user's run
IGNORED_WARNINGS = (
    # Lightning's pytree helper uses a torch API that torch has deprecated
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # glassvi's plan logs its training metrics once per epoch; the logging interval is unused
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # glassvi loads minibatches in the main process on purpose (no worker copies of the data)
    r".*does not have many workers which may be a bottleneck",
)


@contextlib.contextmanager
def quiet_training() -> Iterator[None]:
    """Silence Lightning's start-up chatter for the duration of a ``with`` block.

    INFO messages of Lightning's loggers are held back (unless the user set a logger's level
    below INFO, asking for them) and the warnings in :data:`IGNORED_WARNINGS` are ignored; both
    are restored on exit, whatever happens inside the block.

    Yields
    ------
    Nothing; the settings apply inside the ``with`` block.

    Examples
    --------
    >>> with quiet_training():
    ...     trainer.fit(plan, datamodule)
    """
    saved = {}
    for name in LIGHTNING_LOGGERS:
        lightning_logger = logging.getLogger(name)
        if lightning_logger.level in (logging.NOTSET, logging.INFO):
            saved[name] = lightning_logger.level
            lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class GlassProgressBar(ProgressBar):
    """A progress bar over epochs that shows the last epoch's losses.

    Like scvi-tools' bar it advances once per epoch; instead of Lightning's ``v_num`` it shows
    ``train_loss`` and, when cells are held out, ``validation_loss``.

    Parameters
    ----------
    refresh_rate
        0 hides the bar, 1 shows it.

    Examples
    --------
    glassvi models add it themselves; ``enable_progress_bar=False`` turns it off:

    >>> model.train(max_epochs=10)  # Epoch 10/10: 100%|...| train_loss=612, validation_loss=630
    """

    #: logged metrics shown on the bar, in this order
    SHOWN = ("train_loss", "validation_loss")

    def __init__(self, refresh_rate: int = 1):
        super().__init__()
        self._enabled = refresh_rate > 0
        self._bar = None

    @property
    def is_enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._enabled

    def disable(self) -> None:
        """Hide the bar (Lightning calls this on processes other than the first)."""
        self._enabled = False

    def enable(self) -> None:
        """Show the bar."""
        self._enabled = True

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_bar"] = None  # tqdm objects cannot be pickled
        return state

    def get_metrics(self, trainer, pl_module) -> dict[str, str]:
        """The last epoch's training and validation losses, formatted for the bar."""
        metrics = trainer.callback_metrics
        return {
            key: f"{float(metrics[key]):.4g}" for key in self.SHOWN if metrics.get(key) is not None
        }

    def on_train_start(self, trainer, pl_module) -> None:
        """Open the bar over the epochs."""
        super().on_train_start(trainer, pl_module)
        self._bar = track(
            None,
            total=trainer.max_epochs,
            description="Training",
            style="tqdm",
            disable=not self.is_enabled,
        )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Name the epoch and show the previous epoch's losses."""
        super().on_train_epoch_start(trainer, pl_module)
        if self._bar is not None and self.is_enabled:
            self._bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
            self._bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Advance the bar by one epoch."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._bar is not None and self.is_enabled:
            self._bar.update()

    def on_train_end(self, trainer, pl_module) -> None:
        """Show the final losses and close the bar."""
        super().on_train_end(trainer, pl_module)
        if self._bar is not None:
            if self.is_enabled:
                self._bar.set_postfix(self.get_metrics(trainer, pl_module))
            self._bar.close()
            self._bar = None


def progress_bar_kwargs(trainer_kwargs: dict) -> dict:
    """Trainer keyword arguments that put :class:`GlassProgressBar` in place of scvi-tools' bar.

    Nothing changes when the user turns the bar off, asks for Lightning's own bar
    (``simple_progress_bar=False``) or passes a progress bar callback.

    Parameters
    ----------
    trainer_kwargs
        Keyword arguments given to ``model.train`` for the trainer.

    Returns
    -------
    A copy of ``trainer_kwargs`` with ``simple_progress_bar=False`` and the bar added to
    ``callbacks`` (or unchanged, see above).

    Examples
    --------
    >>> progress_bar_kwargs({})["simple_progress_bar"]
    False
    """
    kwargs = dict(trainer_kwargs)
    callbacks = list(kwargs.get("callbacks") or [])
    if (
        not kwargs.get("enable_progress_bar", True)
        or "simple_progress_bar" in kwargs
        or any(isinstance(c, ProgressBar) for c in callbacks)
    ):
        return kwargs
    refresh = kwargs.pop("progress_bar_refresh_rate", 1)
    kwargs["simple_progress_bar"] = False
    kwargs["callbacks"] = [*callbacks, GlassProgressBar(refresh_rate=refresh)]
    return kwargs
