"""Reference mapping (scArches surgery) on glassvi modules: frozen rows, reference state dicts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

#: state-dict key of an encoder's first layer (its columns: features, then covariates), after
#: the encoder's own prefix (``z_encoder.``, or ``z_encoder.experts.<modality>.``)
_FIRST_ENCODER_WEIGHT = "encoder.fc_layers.Layer 0.0.weight"


def freeze_rows_hook(n_frozen: int):
    """Gradient hook that keeps the first ``n_frozen`` rows of a parameter fixed."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:n_frozen] = 0
        return grad

    return hook


def freeze_columns_hook(n_frozen: int):
    """Gradient hook that keeps the first ``n_frozen`` columns of a parameter fixed."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:, :n_frozen] = 0
        return grad

    return hook


def train_new_categories_(module, ref_state: Mapping[str, torch.Tensor]) -> None:
    """After scArches surgery: train only the new batches' and covariate categories' offsets.

    The decoders' offset rows of the reference categories stay fixed (a gradient hook), those
    of the new categories are trained. A single-batch reference has no batch column in the
    encoder (scvi-tools drops one-category covariates); the new column is zeroed so the
    reference's cells keep a zero effect rather than its random initial weights.
    """
    for prefix, encoder in module._encoder_parts().items():
        n_ref_cols = ref_state[prefix + _FIRST_ENCODER_WEIGHT].shape[1]
        first = encoder.encoder.fc_layers[0][0]
        n_input = first.weight.shape[1] - sum(encoder.encoder.n_cat_list)
        if n_ref_cols == n_input and module.n_batch > 1:
            with torch.no_grad():
                first.weight[:, n_input] = 0.0
    for role, decoder in module.decoders.items():
        params = {"batch_offset": decoder.batch_offset}
        params.update({f"cat_offsets.{j}": p for j, p in enumerate(decoder.cat_offsets)})
        for name, param in params.items():
            n_ref = ref_state[f"decoders.{role}.{name}"].shape[0]
            if param.shape[0] > n_ref:
                param.requires_grad = True
                param.register_hook(freeze_rows_hook(n_ref))


def program_mask_from_state(
    ref_state: Mapping[str, torch.Tensor], role: str, shape: tuple[int, int]
) -> np.ndarray | None:
    """The features x programs mask of modality ``role`` stored in a ProgramVAE state dict.

    Hard (indexed) masks are stored as member rows and columns, soft masks as a dense
    boolean buffer. ``None`` when the reference has another number of programs than
    ``shape[1]``.
    """
    prefix = f"decoders.{role}."
    if f"{prefix}program_rows" not in ref_state:
        return ref_state[f"{prefix}program_mask"].numpy()
    if ref_state["group_weights"].shape[0] != shape[1]:
        return None
    mask = np.zeros(shape, dtype=bool)
    mask[
        ref_state[f"{prefix}program_rows"].numpy(),
        ref_state[f"{prefix}program_cols"].numpy(),
    ] = True
    return mask
