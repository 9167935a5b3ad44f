"""Differential program activity between groups of cells: a Bayesian test on q(z | x)."""

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
from ._ranking import ranking_record


class DifferentialProgramsMixin:
    """``differential_programs`` for models whose latent units are named programs."""

    @torch.inference_mode()
    def differential_programs(
        self,
        groupby: str,
        group1: str | Sequence[str] | None = None,
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
        """Bayesian test of differential program activity between groups of cells.

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
            Category (or list of categories) of the first group; ``None`` tests every category
            of ``groupby`` in turn against ``group2`` (as :func:`scanpy.tl.rank_genes_groups`).
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
            Key of ``adata.uns`` where the result is recorded (see Notes); ``None`` records
            nothing.

        Returns
        -------
        DataFrame indexed by program (latent unit), sorted by decreasing probability within
        each comparison, with columns ``proba`` (probability of a difference), ``proba_not``
        (``1 - proba``), ``bayes_factor``, ``effect_size`` (posterior mean of ``z1 - z2``),
        ``effect_median``, ``effect_std``, ``mean1`` and ``mean2`` (mean posterior-mean
        activity of each group), ``frac_up`` (``P(z1 > z2)``), ``expected_fdr`` (posterior
        expected false discovery rate of the programs ranked up to this one),
        ``is_significant``, ``denovo`` (``True`` for the de novo units, which have no gene set:
        read them as unnamed axes of variation, not as programs), ``comparison``, ``group1`` and
        ``group2``.

        Notes
        -----
        ``uns[key_added]`` follows the layout of :func:`scanpy.tl.rank_genes_groups`, one
        field per tested group, so that :func:`scanpy.get.rank_genes_groups_df` and
        ``scanpy.pl.rank_genes_groups*`` read it: ``names`` (programs in ranking order),
        ``scores`` (log Bayes factor), ``logfoldchanges`` (the effect size: a difference of
        activity, not a log fold change), ``pvals`` (``proba_not``, the posterior probability
        of no difference) and ``pvals_adj`` (``expected_fdr``). These are posterior
        quantities, not frequentist p-values. ``params`` records the test (with ``groups``,
        the tested groups, and ``n_cells1``/``n_cells2``, their cell counts, aligned with it)
        and ``results`` holds the returned table.

        Examples
        --------
        >>> res = model.differential_programs("cell_type", "MDC", ["CD4_T", "CD8_T"])
        >>> res[res.is_significant].head()
        >>> model.differential_programs("cell_type")  # every cell type against the rest
        >>> sc.get.rank_genes_groups_df(adata, "MDC", key="programvi_differential")
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
        if group1 is None:
            if groupby not in adata.obs.columns:
                raise KeyError(
                    f"groupby {groupby!r} is not a column of obs (columns: "
                    f"{list(adata.obs.columns)})."
                )
            column = adata.obs[groupby]
            categories = (
                column.cat.categories if hasattr(column, "cat") else pd.unique(column.dropna())
            )
            excluded = set() if group2 is None else set(_as_list(group2))
            comparisons = [[str(c)] for c in categories if str(c) not in excluded]
            comparisons = [c for c in comparisons if (column.astype(str) == c[0]).any()]
        else:
            comparisons = [group1]
        groups = [_group_indices(adata.obs, groupby, g1, group2) for g1 in comparisons]

        loc, var = self.get_latent_representation(adata, batch_size=batch_size, return_dist=True)
        rng = np.random.default_rng(seed)
        tables = {}
        for idx1, idx2, (label1, label2) in groups:
            table = _differential_table(
                loc, var, idx1, idx2, rng, mode, delta, fdr_target, n_samples
            )
            # de novo units follow the annotated programs: they have no gene set
            denovo = table.index.to_numpy() >= len(self.program_names)
            table.index = pd.Index(self._latent_names(), name="program")[table.index]
            table["denovo"] = denovo
            table["comparison"] = f"{label1} vs {label2}"
            table["group1"] = label1
            table["group2"] = label2
            tables[label1] = table
        result = pd.concat(list(tables.values()), axis=0)
        if key_added is not None:
            params = {
                "groupby": groupby,
                "reference": groups[0][2][1] if len(groups) else "rest",
                "method": f"programvi_{mode}",
                "use_raw": False,
                "layer": None,
                "corr_method": "posterior expected FDR",
                "mode": mode,
                "delta": float(delta),
                "fdr_target": float(fdr_target),
                "n_samples": int(n_samples),
                "seed": int(seed),
                # lists aligned with "groups", not dicts keyed by group: h5ad writes dict
                # keys as h5 keys, which may not hold the "/" of names such as "L2/3"
                "groups": [g[2][0] for g in groups],
                "n_cells1": [len(g[0]) for g in groups],
                "n_cells2": [len(g[1]) for g in groups],
            }
            record = ranking_record(tables, params)
            record["results"] = result
            write_results(self, adata, {"obsm": {}, "varm": {}, "uns": {key_added: record}})
        return result


def _differential_table(
    loc: np.ndarray,
    var: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    rng: np.random.Generator,
    mode: str,
    delta: float,
    fdr_target: float,
    n_samples: int,
) -> pd.DataFrame:
    """Paired posterior draws of two groups of cells -> one table, rows in ranking order.

    The index holds the positions of the latent units.
    """
    draws = []
    for idx in (idx1, idx2):
        pick = idx[rng.integers(0, len(idx), size=n_samples)]
        noise = rng.standard_normal((n_samples, loc.shape[1])).astype(loc.dtype)
        draws.append((loc[pick] + np.sqrt(var[pick]) * noise, loc[idx].mean(0)))
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
        }
    )
    result = result.sort_values("proba", ascending=False, kind="stable")
    expected_fdr = np.cumsum(result["proba_not"].to_numpy()) / np.arange(1, len(result) + 1)
    n_sig = int(np.sum(expected_fdr <= fdr_target)) and int(
        np.max(np.flatnonzero(expected_fdr <= fdr_target)) + 1
    )
    result["expected_fdr"] = expected_fdr
    result["is_significant"] = np.arange(len(result)) < n_sig
    return result


def _as_list(group) -> list[str]:
    items = [group] if isinstance(group, str) or not isinstance(group, Sequence) else group
    return [str(g) for g in items]


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
