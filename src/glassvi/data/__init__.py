"""Simulated and bundled example data.

:func:`simulate` draws RNA, ATAC or multiome counts with planted gene programs and stores the
ground truth on the returned object. The loaders return real data bundled with glassvi (no
network needed) and :func:`read_10x_multiome` reads Cell Ranger ARC output.
"""

from ._datasets import (
    data_path,
    gene_positions,
    go_bp,
    hallmark,
    immune1k,
    immune1k_markers,
    pbmc68k,
    reactome,
)
from ._io import read_10x_multiome
from ._simulate import simulate
from ._snareseq import snareseq_cortex

__all__ = [
    "simulate",
    "pbmc68k",
    "immune1k",
    "immune1k_markers",
    "snareseq_cortex",
    "hallmark",
    "reactome",
    "go_bp",
    "gene_positions",
    "data_path",
    "read_10x_multiome",
]
