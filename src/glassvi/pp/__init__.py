"""Preprocessing: gene sets in, program masks out.

- :func:`read_gmt`, :func:`write_gmt`: gene sets as GMT files.
- :func:`add_programs`: gene sets -> boolean features x programs mask in ``adata.varm``.
- :func:`link_peaks`: ATAC peaks -> nearby genes, from gene positions.
- :func:`peak_gene_links`, :func:`read_peak_annotation`: peak-gene links users already have
  (Cell Ranger ARC's peak annotation, a ``var`` column of linked genes, any peak-gene table).
- :func:`add_peak_programs`: gene programs -> peak programs through peak-gene links.
- :func:`add_peak_sets`: user peak sets (e.g. motif hits) -> peak mask.
"""

from ._annotation import peak_gene_links, read_peak_annotation
from ._gmt import read_gmt, write_gmt
from ._links import link_peaks
from ._peak_programs import add_peak_programs, add_peak_sets
from ._programs import add_programs

__all__ = [
    "add_peak_programs",
    "add_peak_sets",
    "add_programs",
    "link_peaks",
    "peak_gene_links",
    "read_gmt",
    "read_peak_annotation",
    "write_gmt",
]
