"""Program evidence (``uns[prefix]["evidence"]``) as short labels for plot titles."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import _keys

#: programs carried by fewer effective genes than this are labelled "1-2 genes"
FEW_GENES = 3.0


def find_evidence(adata: Any, *, latent_key: str | None = None, weights_key: str | None = None):
    """The evidence table written by ``model.explain()`` next to the given keys, or ``None``."""
    for entry in adata.uns.values():
        if not isinstance(entry, dict):
            continue
        evidence = entry.get(_keys.EVIDENCE)
        if not isinstance(evidence, pd.DataFrame):
            continue
        if latent_key is not None and entry.get("latent_key") == latent_key:
            return evidence
        if weights_key is not None and entry.get("weights_key") == weights_key:
            return evidence
    return None


def evidence_label(evidence: pd.DataFrame | None, program: str) -> str | None:
    """One line such as ``"q 0.003, 12.4 effective genes"`` (with a warning when weak)."""
    if evidence is None or program not in evidence.index:
        return None
    row = evidence.loc[program]
    parts = []
    if pd.notna(row.get("fdr")):
        parts.append(f"q {row['fdr']:.2g}")
    parts.append(f"{row['effective_genes']:.1f} effective genes")
    label = ", ".join(parts)
    if pd.notna(row.get("fdr")) and not bool(row.get("significant", False)):
        label += " (not supported)"
    elif row["effective_genes"] < FEW_GENES:
        label += f" (1-2 genes: {row.get('top_gene', '')})"
    return label


def with_evidence(title: str, evidence: pd.DataFrame | None, program: str) -> str:
    """``title`` with the program's evidence on a second line, when there is evidence."""
    label = evidence_label(evidence, program)
    return title if label is None else f"{title}\n{label}"
