"""Real data bundled with glassvi (see ``_files/README.md`` for sources and licenses)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pandas as pd

from .._genome import read_gene_positions
from ..pp import read_gmt

_FILES = Path(__file__).parent / "_files"


def data_path(name: str) -> Path:
    """Path of a file bundled with glassvi.

    Parameters
    ----------
    name
        File name inside the package's data folder, e.g. ``"hallmark.gmt.gz"``.

    Returns
    -------
    The absolute path.

    Examples
    --------
    >>> glassvi.data.data_path("hallmark.gmt.gz").exists()
    True
    """
    path = _FILES / name
    if not path.exists():
        available = sorted(p.name for p in _FILES.iterdir() if p.name != "README.md")
        raise FileNotFoundError(f"No bundled file {name!r}; available: {available}.")
    return path


def pbmc68k() -> ad.AnnData:
    """700 human PBMCs x 765 highly variable genes, raw UMI counts (10x Genomics).

    Counts were rebuilt exactly from scanpy's bundled ``pbmc68k_reduced`` (Zheng et al. 2017).
    ``obs["bulk_labels"]`` holds 10 FACS-sorted populations; also ``louvain``, ``phase``,
    ``n_counts``. No network access is needed.

    Returns
    -------
    AnnData with integer counts in ``X`` (sparse float32) and a copy in ``layers["counts"]``.

    Examples
    --------
    >>> adata = glassvi.data.pbmc68k()
    >>> adata.obs["bulk_labels"].value_counts().head(3)
    """
    adata = ad.read_h5ad(data_path("pbmc68k_counts.h5ad"))
    adata.layers["counts"] = adata.X.copy()
    return adata


def immune1k() -> ad.AnnData:
    """1,000 tumour-infiltrating immune cells x 6,397 genes, integer counts.

    Rebuilt from the sample data of the scspectra package (MIT). ``obs["cell_type_annotations"]``
    holds 14 cell types (CD8_T, CD4_T, Treg, NK, B_naive, B_memory, plasma, MDC, DC, pDC, ...).
    This is the default data set of ``glassvi run``.

    Returns
    -------
    AnnData with integer counts in ``X`` (sparse float32) and a copy in ``layers["counts"]``.

    Examples
    --------
    >>> adata = glassvi.data.immune1k()
    >>> adata.shape
    (1000, 6397)
    """
    adata = ad.read_h5ad(data_path("immune1k_counts.h5ad"))
    adata.layers["counts"] = adata.X.copy()
    return adata


def immune1k_markers() -> dict[str, list[str]]:
    """Marker genes of ten :func:`immune1k` cell types, written from biology knowledge.

    Eight or nine canonical markers per type (not selected from the data), for checking that a
    program or score picks out its type. Keys are the values of
    ``immune1k().obs["cell_type_annotations"]``, except ``"B"``, which stands for the merged
    ``B_naive``, ``B_memory`` and ``B_GC`` types. Some markers are not among the most variable
    genes; keep those present in your data.

    Returns
    -------
    Dict mapping cell type to its marker genes (human symbols).

    Examples
    --------
    >>> markers = glassvi.data.immune1k_markers()
    >>> markers["DC"][:3]
    ['CD1C', 'FCER1A', 'CLEC10A']
    """
    return read_gmt(data_path("immune1k_markers.gmt"))


def _gene_sets(name: str) -> dict[str, list[str]]:
    return read_gmt(data_path(f"{name}.gmt.gz"))


def hallmark() -> dict[str, list[str]]:
    """MSigDB Hallmark gene sets v7.5.1 (50 sets, human symbols; CC BY 4.0).

    Returns
    -------
    Dict mapping set name (e.g. ``"HALLMARK_INTERFERON_ALPHA_RESPONSE"``) to its genes.

    Examples
    --------
    >>> sets = glassvi.data.hallmark()
    >>> len(sets)
    50
    """
    return _gene_sets("hallmark")


def reactome() -> dict[str, list[str]]:
    """Reactome pathways as distributed in MSigDB C2:CP v7.5.1 (1,615 sets; CC BY 4.0).

    Returns
    -------
    Dict mapping pathway name to its genes.

    Examples
    --------
    >>> len(glassvi.data.reactome())
    1615
    """
    return _gene_sets("reactome")


def go_bp() -> dict[str, list[str]]:
    """GO Biological Process sets of 15-500 genes (5,233 sets, human symbols; CC BY 4.0).

    Set names are ``"GO:xxxxxxx term"`` (they contain spaces).

    Returns
    -------
    Dict mapping set name to its genes.

    Examples
    --------
    >>> len(glassvi.data.go_bp())
    5233
    """
    return _gene_sets("go_bp")


def gene_positions() -> pd.DataFrame:
    """Positions of 28,257 human genes on hg38 (gene, chrom, start, end, strand).

    For linking ATAC peaks to genes with :func:`glassvi.pp.link_peaks`.

    Returns
    -------
    DataFrame with columns ``gene``, ``chrom``, ``start``, ``end``, ``strand``.

    Examples
    --------
    >>> glassvi.data.gene_positions().head(2)
    """
    return read_gene_positions(data_path("genes_hg38.tsv.gz"))
