"""Docstring pieces shared by the model classes' ``setup_anndata`` and ``setup_mudata``.

A docstring line that holds only ``%(name)s`` is replaced by the block ``name`` of
:data:`SETUP_PARAMS`, indented like the placeholder:

>>> @setup_docs
... def setup_anndata(cls, adata, layer=None):
...     '''Register an AnnData.
...
...     Parameters
...     ----------
...     %(adata)s
...     %(layer)s
...     '''
"""

from __future__ import annotations

from .._docs import fill_docs

#: parameter blocks: name line, then its description
SETUP_PARAMS = {
    "adata": """
        adata
            AnnData of raw counts (cells x genes, or cells x peaks).
        """,
    "layer": """
        layer
            Layer holding the counts; ``None`` uses ``adata.X``.
        """,
    "batch_key": """
        batch_key
            ``obs`` column of batches.
        """,
    "labels_key": """
        labels_key
            ``obs`` column of cell labels; with two or more labels the model trains a cell-label
            head (see ``classifier``).
        """,
    "covariate_keys": """
        categorical_covariate_keys
            ``obs`` columns of extra categorical covariates.
        continuous_covariate_keys
            ``obs`` columns of extra continuous covariates.
        """,
    "size_factor_key": """
        size_factor_key
            ``obs`` column of per-cell size factors used instead of the observed library size.
        """,
    "modality": """
        modality
            ``"rna"`` (default) or ``"atac"``: sets the default likelihood and the encoder's input
            transform.
        """,
    "unlabeled_category": """
        unlabeled_category
            Value of ``labels_key`` that marks unlabelled cells (semi-supervised training).
        """,
    "mdata": """
        mdata
            MuData whose modalities hold raw counts of the same cells in the same order.
        """,
    "rna_layer": """
        rna_layer
            Layer of the RNA modality holding counts; ``None`` uses its ``.X``.
        """,
    "atac_layer": """
        atac_layer
            Layer of the ATAC modality holding counts (or binary accessibility).
        """,
    "mudata_batch_key": """
        batch_key
            Column of batches, in ``mdata.obs`` or in the modality named by
            ``modalities["batch_key"]``.
        """,
    "mudata_labels_key": """
        labels_key
            Column of cell labels; with two or more labels the model trains a cell-label head.
        """,
    "mudata_covariate_keys": """
        categorical_covariate_keys
            Columns of extra categorical covariates.
        continuous_covariate_keys
            Columns of extra continuous covariates.
        """,
    "mudata_size_factor_key": """
        size_factor_key
            Column(s) of size factors, one per modelled modality in the order RNA, ATAC.
        """,
    "modalities": """
        modalities
            Which MuData modality holds each input, e.g.
            ``{"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"}``. Defaults to the
            modalities named ``"rna"`` and ``"atac"`` that the MuData has. Leave out
            ``rna_layer`` or ``atac_layer`` to model one modality only.
        """,
}

#: fills the ``%(name)s`` lines of a docstring with :data:`SETUP_PARAMS` blocks
setup_docs = fill_docs(SETUP_PARAMS)
