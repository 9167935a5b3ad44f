"""Genomic coordinates shared by the data readers and preprocessing: peak names, gene table."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: the bundled table of hg38 gene positions (shipped in ``glassvi/data/_files``)
HG38_GENES = Path(__file__).parent / "data" / "_files" / "genes_hg38.tsv.gz"

# chr1:100-600, chr1-100-600, chr1_100_600; the greedy chromosome part keeps contig names
# with separators in them (chrUn_KI270742v1_100_600) whole
_PEAK_NAME_PATTERN = r"^(?P<chrom>.+)[:_-](?P<start>\d+)[_-](?P<end>\d+)$"


def parse_peak_names(names: Sequence[str] | pd.Index) -> pd.DataFrame:
    """Parse peak names such as ``chr1:100-600``, ``chr1-100-600`` or ``chr1_100_600``.

    Returns a DataFrame with columns ``chrom`` (object), ``start`` and ``end`` (float, NaN
    where a name does not parse).
    """
    parsed = pd.Series(np.asarray(names, dtype=object)).astype(str).str.extract(_PEAK_NAME_PATTERN)
    return pd.DataFrame(
        {
            "chrom": parsed["chrom"].to_numpy(dtype=object),
            "start": pd.to_numeric(parsed["start"]).to_numpy(dtype=float),
            "end": pd.to_numeric(parsed["end"]).to_numpy(dtype=float),
        }
    )


def read_gene_positions(path: str | Path = HG38_GENES) -> pd.DataFrame:
    """Gene positions (gene, chrom, start, end, strand) from a gzipped tab-separated table."""
    with gzip.open(path, "rt") as fh:
        return pd.read_csv(
            fh,
            sep="\t",
            dtype={"gene": str, "chrom": str, "start": np.int64, "end": np.int64, "strand": str},
        )
