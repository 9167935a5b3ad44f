"""Training curves from a model's history (ELBO, reconstruction, KL, penalties)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ._utils import available, finish, plot_docs

#: curves drawn by default, in panel order, when the history has them
DEFAULT_CURVES = ("elbo", "reconstruction_loss", "kl_local")


def history_frame(history: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-epoch values of every logged curve as one DataFrame (epochs x curves).

    Parameters
    ----------
    history
        ``model.history``: curve name -> single-column DataFrame indexed by epoch.

    Returns
    -------
    DataFrame indexed by epoch with one column per curve.

    Examples
    --------
    >>> glassvi.pl.history_frame(model.history).tail(3)
    """
    columns = {}
    for name, frame in history.items():
        series = frame.iloc[:, 0] if isinstance(frame, pd.DataFrame) else pd.Series(frame)
        columns[name] = pd.to_numeric(series, errors="coerce")
    return pd.DataFrame(columns)


@plot_docs
def history(
    model: Any,
    curves: Sequence[str] | None = None,
    *,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    dpi: int | None = None,
):
    """Training curves of a trained model: ELBO, reconstruction loss and KL by epoch.

    Each curve gets a panel with its training values and, when the model was validated, its
    validation values.

    Parameters
    ----------
    model
        A trained glassvi (or scvi-tools) model, or its ``history`` dict.
    curves
        Curve names without the ``_train``/``_validation`` suffix; default ``"elbo"``,
        ``"reconstruction_loss"``, ``"kl_local"`` and any other ``*_train`` curve logged
        except the totals (e.g. penalties).
    %(show_save)s

    Returns
    -------
    List of Axes, one per curve, when the figure is not shown, else ``None``.

    Raises
    ------
    ValueError
        If the model has no training history (it was not trained).
    KeyError
        If a requested curve was not logged; the message lists the logged curves.

    Examples
    --------
    >>> model.train(max_epochs=100)
    >>> glassvi.pl.history(model)
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    raw = model if isinstance(model, Mapping) else getattr(model, "history", None)
    if not raw:
        raise ValueError("The model has no training history; train it first.")
    frame = history_frame(raw)
    logged = [c.removesuffix("_train") for c in frame.columns if c.endswith("_train")]
    if curves is None:
        skip = {"train_loss", "kl_global"}
        names = [c for c in DEFAULT_CURVES if c in logged]
        names += [c for c in logged if c not in names and c not in skip]
        # a KL that is zero throughout (no global parameters) says nothing
        names = [c for c in names if frame[f"{c}_train"].abs().sum() > 0 or c in DEFAULT_CURVES]
    else:
        names = list(curves)
        missing = [c for c in names if f"{c}_train" not in frame.columns and c not in frame]
        if missing:
            raise KeyError(
                f"{available(missing)} not in the history (logged curves: {available(logged)})."
            )
    if not names:
        raise ValueError(f"No curve to draw; the history has {available(frame.columns)}.")

    fig, grid = plt.subplots(
        1, len(names), figsize=(3.6 * len(names), 3.0), layout="constrained", squeeze=False
    )
    axes = list(grid.ravel())
    for name, ax in zip(names, axes):
        drawn = False
        for suffix, color, label in (
            ("_train", "#2c3e50", "train"),
            ("_validation", "#e67e22", "validation"),
            ("", "#2c3e50", name),
        ):
            column = f"{name}{suffix}"
            if column not in frame.columns or (suffix == "" and drawn):
                continue
            values = frame[column].dropna()
            if values.empty:
                continue
            ax.plot(values.index, values.to_numpy(), color=color, label=label, linewidth=1.4)
            drawn = True
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(fontsize=7, frameon=False)
    return finish(fig, axes, show, save, dpi)
