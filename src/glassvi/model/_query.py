"""Reference mapping (scArches surgery): the reference's saved state and the query's masks."""

from __future__ import annotations

import logging
from copy import deepcopy

import numpy as np
from mudata import MuData

from ..module import ProgramVAE
from ._io import read_saved_model
from ._masks import ROLES, program_key_for, program_masks_of

logger = logging.getLogger(__name__)


def reference_state(reference_model) -> tuple[dict, dict]:
    """Saved attributes and module state dict of a reference model (object or directory).

    A directory is read safely (see :func:`~glassvi.model._io.read_saved_model`); scvi-tools'
    own reader would unpickle it with ``weights_only=False``.
    """
    from scvi.model.base._archesmixin import _get_loaded_data

    reference_model = read_saved_model(reference_model)

    attr_dict, _, ref_state, _ = _get_loaded_data(reference_model, device="cpu")
    return attr_dict, ref_state


def prepare_query_masks(adata, reference, setup_args: dict, ref_state, n_decoys: int = 0) -> None:
    """Copy the reference's masks into a query that lacks them; refuse different ones.

    ``reference`` is the reference model object, or ``None`` when only its saved directory
    was given (its masks cannot be copied then). The reference's ``n_decoys`` hidden decoy
    programs follow its annotated programs in the saved masks and are not compared.
    """
    if isinstance(adata, MuData):
        mods = setup_args.get("modalities") or {}
        targets = {
            r: (mods[f"{r}_layer"], f"mdata[{mods[f'{r}_layer']!r}]")
            for r in ROLES
            if mods.get(f"{r}_layer") is not None
        }
    else:
        targets = {setup_args.get("modality", "rna"): (None, "adata")}
    for role, (mod, where) in targets.items():
        key = program_key_for(setup_args["program_key"], role)
        container = adata[mod] if mod is not None else adata
        if key in container.varm:
            continue
        if reference is None:
            raise KeyError(
                f"the query has no program mask {key!r} in {where}.varm; add the "
                "reference's mask (same features, same programs) or pass the reference "
                "model object instead of its directory."
            )
        ref_container = reference._container(reference.adata, role)
        if not ref_container.var_names.equals(container.var_names):
            raise ValueError(
                f"the query's features in {where} differ from the reference's; subset and "
                "order them like the reference first (ProgramVI.prepare_query_anndata)."
            )
        container.varm[key] = ref_container.varm[key].copy()
        if key in ref_container.uns:  # the mask's record, with the program names of an array
            container.uns[key] = deepcopy(ref_container.uns[key])
        logger.info("copied the reference's program mask into %s.varm[%r]", where, key)
    _, masks = program_masks_of(adata, setup_args)
    for role, mask in masks.items():
        ref = ProgramVAE.mask_from_state(
            ref_state, role, (mask.shape[0], mask.shape[1] + n_decoys)
        )
        ref = None if ref is None else ref[:, : ref.shape[1] - n_decoys]
        if ref is None or ref.shape != mask.shape or not np.array_equal(ref, mask):
            n_diff = "all" if ref is None or ref.shape != mask.shape else int((ref != mask).sum())
            raise ValueError(
                f"the query's program mask for {role} differs from the reference's "
                f"({n_diff} feature-program entries differ); reference programs are fixed, "
                "so the query must use the same mask."
            )
