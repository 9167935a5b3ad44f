"""Differential-program results in scanpy's ``rank_genes_groups`` layout.

scanpy keeps a ranking as structured arrays with one field per group (``names``, ``scores``,
``logfoldchanges``, ``pvals``, ``pvals_adj``) and a ``params`` record, so that
:func:`scanpy.get.rank_genes_groups_df` and the ``scanpy.pl.rank_genes_groups*`` plots read
it. The Bayesian test of differential programs fills the same fields with its posterior
quantities (see :func:`ranking_record`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: scanpy field -> column of a differential-programs table
SCANPY_FIELDS = {
    "names": None,  # the index
    "scores": "bayes_factor",
    "logfoldchanges": "effect_size",
    "pvals": "proba_not",
    "pvals_adj": "expected_fdr",
}
#: further per-group fields kept next to scanpy's
EXTRA_FIELDS = ("proba", "mean1", "mean2", "is_significant")


def _structured(columns: Mapping[str, np.ndarray], dtype) -> np.ndarray:
    groups = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.zeros(n, dtype=[(str(g), dtype) for g in groups])
    for g in groups:
        out[str(g)] = columns[g]
    return out


def ranking_record(tables: Mapping[str, pd.DataFrame], params: Mapping) -> dict:
    """Build a ``rank_genes_groups``-shaped record from one results table per group.

    Parameters
    ----------
    tables
        Group name -> differential-programs table of that group against its reference,
        indexed by program, in ranking order, with the columns named in
        :data:`SCANPY_FIELDS` and :data:`EXTRA_FIELDS`.
    params
        The record's ``params``; ``groupby``, ``reference`` and ``method`` are required by
        scanpy's readers.

    Returns
    -------
    dict with ``params`` and one structured array per field (rows are ranks, one field per
    group). ``scores`` holds the log Bayes factor, ``logfoldchanges`` the mean activity
    difference (latent units, not a log fold change), ``pvals`` the posterior probability of no
    difference and ``pvals_adj`` the posterior expected false discovery rate of the programs
    ranked up to that one.
    """
    record: dict = {"params": dict(params)}
    for field, column in SCANPY_FIELDS.items():
        if column is None:
            values = {g: t.index.astype(str).to_numpy(dtype=object) for g, t in tables.items()}
            longest = max((len(v) for vals in values.values() for v in vals), default=1)
            record[field] = _structured(values, f"U{max(longest, 1)}")
        else:
            values = {g: t[column].to_numpy(dtype=np.float32) for g, t in tables.items()}
            record[field] = _structured(values, np.float32)
    for column in EXTRA_FIELDS:
        dtype = bool if column == "is_significant" else np.float32
        values = {g: t[column].to_numpy(dtype=dtype) for g, t in tables.items()}
        record[column] = _structured(values, dtype)
    return record
