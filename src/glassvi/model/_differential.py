"""Differential program activity between two groups of cells: a Bayesian test on q(z | x)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData

from .. import _keys
from ..explain import write_results


class DifferentialProgramsMixin:
    """``differential_programs`` for models whose latent units are named programs."""

    @torch.inference_mode()
    def differential_programs(
        self,
        groupby: str,
        group1: str | Sequence[str],
        group2: str | Sequence[str] | None = None,
        *,
        mode: Literal["change", "vanilla"] = "change",
        delta: float = 0.25,
        fdr_target: float = 0.05,
        n_samples: int = 5000,
        adata: AnnData | MuData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        key_added: str | None = _keys.differential(_keys.PROGRAMVI),
    ) -> pd.DataFrame:
        """Bayesian test of differential program activity between two groups of cells.

        Activities are drawn from the approximate posterior ``q(z | x)`` of cells drawn at
        random from each group, and paired (as in scvi-tools' differential expression). With
        ``mode="change"``, the probability that a program differs is ``P(|z1 - z2| > delta)``;
        with ``mode="vanilla"`` it is ``max(P(z1 > z2), P(z1 < z2))``. The Bayes factor is
        ``log(p / (1 - p))`` of the probability ``p`` of the hypothesis tested (``|z1 - z2| >
        delta``, or ``z1 > z2`` for vanilla, so negative values favour ``z1 < z2``). Programs are
        called significant by controlling the posterior expected false discovery rate at
        ``fdr_target``: the programs with the highest probabilities are selected while the mean
        of ``1 - p`` over the selection stays below the target.

        Parameters
        ----------
        groupby
            ``obs`` column (``mdata.obs`` for MuData) with the groups.
        group1
            Category (or list of categories) of the first group.
        group2
            Category (or list) of the second group; ``None`` compares with all other cells.
        mode
            ``"change"`` (default) or ``"vanilla"``.
        delta
            Smallest difference of activity, in latent (prior standard deviation) units, that
            counts as a change in ``"change"`` mode.
        fdr_target
            Target posterior expected false discovery rate.
        n_samples
            Number of paired posterior samples per program.
        adata
            Data set up like the training data; default the training data.
        batch_size
            Minibatch size for the encoder.
        seed
            Seed of the random draws; the result is deterministic for a given seed.
        key_added
            Key of ``adata.uns`` where the result (``{"params": ..., "results": DataFrame}``)
            is recorded; ``None`` records nothing.

        Returns
        -------
        DataFrame indexed by program (latent unit), sorted by decreasing probability, with
        columns ``proba`` (probability of a difference), ``proba_not`` (``1 - proba``),
        ``bayes_factor``, ``effect_size`` (posterior mean of ``z1 - z2``), ``effect_median``,
        ``effect_std``, ``mean1`` and ``mean2`` (mean posterior-mean activity of each group),
        ``frac_up`` (``P(z1 > z2)``) and ``is_significant``.

        Examples
        --------
        >>> res = model.differential_programs("cell_type", "MDC", ["CD4_T", "CD8_T"])
        >>> res[res.is_significant].head()
        """
        if mode not in ("change", "vanilla"):
            raise ValueError(f"mode must be 'change' or 'vanilla', got {mode!r}.")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}.")
        if not 0 < fdr_target < 1:
            raise ValueError(f"fdr_target must be in (0, 1), got {fdr_target}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        adata = self._validate_anndata(adata)
        idx1, idx2, labels = _group_indices(adata.obs, groupby, group1, group2)

        rng = np.random.default_rng(seed)
        draws = []
        for idx in (idx1, idx2):
            loc, var = self.get_latent_representation(
                adata, indices=idx, batch_size=batch_size, return_dist=True
            )
            pick = rng.integers(0, len(idx), size=n_samples)
            noise = rng.standard_normal((n_samples, loc.shape[1])).astype(loc.dtype)
            draws.append((loc[pick] + np.sqrt(var[pick]) * noise, loc.mean(0)))
        (z1, mean1), (z2, mean2) = draws
        diff = z1 - z2
        frac_up = (diff > 0).mean(0)
        eps = 1e-8
        if mode == "change":
            proba = (np.abs(diff) > delta).mean(0)
            bayes = np.log(proba + eps) - np.log(1 - proba + eps)
        else:
            proba = np.maximum(frac_up, 1 - frac_up)
            bayes = np.log(frac_up + eps) - np.log(1 - frac_up + eps)
        result = pd.DataFrame(
            {
                "proba": proba,
                "proba_not": 1 - proba,
                "bayes_factor": bayes,
                "effect_size": diff.mean(0),
                "effect_median": np.median(diff, axis=0),
                "effect_std": diff.std(0),
                "mean1": mean1,
                "mean2": mean2,
                "frac_up": frac_up,
            },
            index=pd.Index(self._latent_names(), name="program"),
        )
        result = result.sort_values("proba", ascending=False, kind="stable")
        expected_fdr = np.cumsum(result["proba_not"].to_numpy()) / np.arange(1, len(result) + 1)
        n_sig = int(np.sum(expected_fdr <= fdr_target)) and int(
            np.max(np.flatnonzero(expected_fdr <= fdr_target)) + 1
        )
        result["is_significant"] = np.arange(len(result)) < n_sig
        if key_added is not None:
            params = {
                "groupby": groupby,
                "group1": labels[0],
                "group2": labels[1],
                "mode": mode,
                "delta": float(delta),
                "fdr_target": float(fdr_target),
                "n_samples": int(n_samples),
                "n_cells1": len(idx1),
                "n_cells2": len(idx2),
                "seed": int(seed),
            }
            write_results(
                self,
                adata,
                {
                    "obsm": {},
                    "varm": {},
                    "uns": {key_added: {"params": params, "results": result}},
                },
            )
        return result


def _group_indices(obs: pd.DataFrame, groupby: str, group1, group2):
    """Cell indices of the two groups, with clear errors for unknown keys or categories."""
    if groupby not in obs.columns:
        raise KeyError(
            f"groupby {groupby!r} is not a column of obs (columns: {list(obs.columns)})."
        )
    values = obs[groupby].astype(str).to_numpy()
    categories = pd.unique(values)

    def as_list(group, which):
        items = [group] if isinstance(group, str) or not isinstance(group, Sequence) else group
        items = [str(g) for g in items]
        missing = [g for g in items if g not in categories]
        if missing:
            raise KeyError(
                f"{which} {missing} not found in obs[{groupby!r}] (categories: "
                f"{sorted(categories)[:20]})."
            )
        return items

    g1 = as_list(group1, "group1")
    in1 = np.isin(values, g1)
    if group2 is None:
        g2 = None
        in2 = ~in1
    else:
        g2 = as_list(group2, "group2")
        overlap = set(g1) & set(g2)
        if overlap:
            raise ValueError(f"group1 and group2 share categories {sorted(overlap)}.")
        in2 = np.isin(values, g2)
    idx1, idx2 = np.flatnonzero(in1), np.flatnonzero(in2)
    if len(idx1) == 0 or len(idx2) == 0:
        raise ValueError(
            f"both groups need cells: group1 has {len(idx1)}, group2 has {len(idx2)}."
        )
    label1 = g1[0] if len(g1) == 1 else ",".join(g1)
    label2 = "rest" if g2 is None else (g2[0] if len(g2) == 1 else ",".join(g2))
    return idx1, idx2, (label1, label2)
