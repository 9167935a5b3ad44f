"""A reduced copy of real SNARE-seq multiome data, bundled for tutorials and tests."""

from __future__ import annotations

import mudata as md

from ._datasets import data_path


def snareseq_cortex() -> md.MuData:
    """2,000 adult mouse cortex cells with RNA and ATAC measured in each (SNARE-seq).

    A reduced copy of the SNARE-seq data of Chen, Lake & Zhang (2019), Nat Biotechnol 37:1452
    (GEO GSE126074), as prepared by the scMoMaT authors (MIT): every cell of the cell types
    with fewer than 150 cells and a random sample of the others, all 1,677 genes of the
    authors' panel and the 5,000 most often accessible of 25,734 regions (mm10). Please cite
    Chen, Lake & Zhang 2019 when you use it. No network access is needed.

    Returns
    -------
    MuData with modalities ``"rna"`` (integer UMI counts, 1,677 genes) and ``"atac"``
    (integer counts, 5,000 regions named ``chr:start-end``; ``var`` has ``chrom``, ``start``,
    ``end`` and ``linked_genes``: the gene each region is linked to), and ``obs`` columns
    ``sample`` (6 batches) and ``cell_type`` (15 types: L2/3, L4/5, L6, Pvalb, Sst, Npy, CGE,
    Oligo, OPC, Astro, MGC (microglia), Endo, Peri, Clau, Mis).

    Examples
    --------
    >>> mdata = glassvi.data.snareseq_cortex()
    >>> mdata["atac"].var["linked_genes"].head(2)  # doctest: +SKIP
    >>> glassvi.pp.add_peak_programs(mdata, links="linked_genes")  # doctest: +SKIP
    """
    # the file holds the shared annotations; pulling the modalities' columns into them would only
    # add prefixed copies (and mudata warns that it stops doing so by default)
    with md.set_options(pull_on_update=False):
        return md.read_h5mu(data_path("snareseq_cortex.h5mu"))
