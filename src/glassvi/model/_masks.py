"""Program masks of ProgramVI: reading them from the data, matching programs across modalities."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from scvi.data import fields

from .._validation import to_bool_values
from .._varm import entry_columns, has_slash

logger = logging.getLogger(__name__)

#: modality roles that can carry a program mask
ROLES = ("rna", "atac")


def program_registry_key(role: str) -> str:
    """Registry key of the program mask of one modality role."""
    return f"program_mask_{role}"


PROGRAM_REGISTRY_KEYS = tuple(program_registry_key(r) for r in ROLES)


def read_mask(container: AnnData, key: str, where: str) -> tuple[np.ndarray, list[str]]:
    """Validated boolean mask (features x programs) and program names of one modality."""
    if key not in container.varm:
        available = list(container.varm.keys())
        raise KeyError(
            f"program mask {key!r} not found in {where}.varm (keys: {available}); build it "
            "with glassvi.pp.add_programs (or glassvi.pp.add_peak_programs for peaks) or pass "
            "program_key=..."
        )
    stored = container.varm[key]
    what = f"{where}.varm[{key!r}]"
    if isinstance(stored, pd.DataFrame):
        names = [str(c) for c in stored.columns]
        values = stored.to_numpy()
    else:
        values = stored
        if getattr(values, "ndim", 2) != 2:
            raise ValueError(f"{what} must be a 2-d features x programs mask.")
        # glassvi.pp keeps the names in uns[key]["names"]
        names = entry_columns(container, container, key) or [
            f"program_{i}" for i in range(values.shape[1])
        ]
    if values.shape[0] != container.n_vars or values.ndim != 2:
        raise ValueError(
            f"{what} has shape {values.shape}, expected ({container.n_vars}, n_programs)."
        )
    if values.shape[1] == 0:
        raise ValueError(f"{what} has no programs (0 columns).")
    duplicated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{what} has duplicated program names, e.g. {list(duplicated[:3])}; names must be "
            "unique."
        )
    mask = to_bool_values(values, names, what)
    if sparse.issparse(mask):
        mask = mask.toarray()
    return np.ascontiguousarray(mask, dtype=bool), names


def check_mask_names(container: AnnData, key: str, where: str) -> None:
    """Warn about program names a mask cannot keep: a "/" in a DataFrame, or none recorded.

    h5ad writes a DataFrame's columns as h5 keys, which may not hold a "/"; an array's names
    live in ``.uns[key]["names"]``, which some operations drop (e.g. ``anndata.concat``
    without ``uns_merge``), leaving the programs numbered.
    """
    stored = container.varm[key]
    if isinstance(stored, pd.DataFrame):
        slashed = has_slash(stored.columns)
        if slashed:
            warnings.warn(
                f"{where}.varm[{key!r}] is a DataFrame with {len(slashed)} program names "
                f"holding a '/' (e.g. {slashed[0]!r}); h5ad writes DataFrame columns as keys "
                "that may not hold a '/' (anndata warns, and will refuse it). Store the mask as "
                f"glassvi.pp does: a boolean array, its names in {where}.uns[{key!r}]['names'] "
                "(glassvi.pp.add_programs takes the DataFrame as gene sets).",
                UserWarning,
                stacklevel=5,  # the user's setup_anndata/setup_mudata call
            )
    elif entry_columns(container, container, key) is None:
        logger.warning(
            "%s.varm[%r] is an array and %s.uns[%r]['names'] does not name its columns; the "
            "programs are named program_0, program_1, ...",
            where,
            key,
            where,
            key,
        )


class ProgramMaskField(fields.VarmField):
    """The ``varm`` field of a program mask, registered with its program names.

    A mask is either a boolean array with its names in ``.uns[key]["names"]`` (as
    :mod:`glassvi.pp` writes it) or a DataFrame whose columns are the names. scvi-tools'
    :class:`~scvi.data.fields.VarmField` records numbered columns for an array and compares
    names only with a DataFrame; this field records and compares the program names of
    either form, so a model and data whose masks are stored differently still match.
    """

    def __init__(self, registry_key: str, attr_key: str) -> None:
        super().__init__(registry_key, attr_key, correct_data_format=False)

    def _setup_column_names(self, adata: AnnData) -> list[str]:
        return read_mask(adata, self.attr_key, "adata")[1]

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        self.validate_field(adata_target)
        source = [str(c) for c in state_registry[self.COLUMN_NAMES_KEY]]
        _, target = read_mask(adata_target, self.attr_key, "adata")
        what = f"the program mask adata.varm[{self.attr_key!r}]"
        if len(source) != len(target):
            raise ValueError(
                f"{what} has {len(target)} programs; the model was set up with {len(source)}."
            )
        # names that cannot be compared: a model registered by scvi-tools' own field from an
        # unnamed array (numbered), or an array whose names were dropped with its .uns record
        numbered = source == [str(i) for i in range(len(source))]
        unnamed = entry_columns(adata_target, adata_target, self.attr_key) is None
        if unnamed and not numbered:
            logger.info("%s has no recorded program names; matched by position", what)
        if not (numbered or unnamed) and source != target:
            differ = next(t for s, t in zip(source, target) if s != t)
            raise ValueError(
                f"the program names of {what} do not match the model's (e.g. {differ!r}); "
                "use the model's programs, in its order."
            )
        return {self.COLUMN_NAMES_KEY: list(source)}


#: :class:`ProgramMaskField` for one modality of a MuData
MuDataProgramMaskField = fields.MuDataWrapper(ProgramMaskField)


def align_programs(
    per_role: dict[str, tuple[np.ndarray, list[str]]],
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Match programs across modalities by name (union, first modality's order first)."""
    roles = list(per_role)
    names: list[str] = list(per_role[roles[0]][1])
    seen = set(names)
    for role in roles[1:]:
        for name in per_role[role][1]:
            if name not in seen:
                names.append(name)
                seen.add(name)
    aligned = {}
    for role in roles:
        mask, own = per_role[role]
        if own == names:
            aligned[role] = mask
            continue
        position = {n: i for i, n in enumerate(names)}
        out = np.zeros((mask.shape[0], len(names)), dtype=bool)
        out[:, [position[n] for n in own]] = mask
        aligned[role] = out
    if len(roles) > 1:
        sets = [set(per_role[r][1]) for r in roles]
        shared = set.intersection(*sets)
        if len(shared) < len(names):
            logger.info(
                "programs matched by name across modalities: %d shared, %d in one modality only",
                len(shared),
                len(names) - len(shared),
            )
        if not shared:
            logger.warning(
                "no program name is shared between modalities; every program is decoded in one "
                "modality only."
            )
    return names, aligned


def program_masks_of(
    adata: AnnData | MuData, setup_args: dict
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Program names and aligned masks (role -> features x programs) of registered data."""
    per_role = {}
    if isinstance(adata, MuData):
        mods = setup_args.get("modalities") or {}
        for role in ROLES:
            mod = mods.get(f"{role}_layer")
            if mod is None:
                continue
            key = program_key_for(setup_args["program_key"], role)
            per_role[role] = read_mask(adata[mod], key, f"mdata[{mod!r}]")
    else:
        role = setup_args.get("modality", "rna")
        per_role[role] = read_mask(adata, setup_args["program_key"], "adata")
    return align_programs(per_role)


def program_key_for(program_key: str | dict, role: str) -> str:
    if isinstance(program_key, str):
        return program_key
    if role not in program_key:
        raise KeyError(
            f"program_key has no entry for the {role!r} modality; pass a dict with keys "
            f"{list(ROLES)} (the modelled ones) or one key for all modalities."
        )
    return program_key[role]


def check_masks(masks: dict[str, tuple[np.ndarray, list[str]]]) -> None:
    """No-overlap and empty-program checks over all modalities, before registration."""
    if sum(int(m.sum()) for m, _ in masks.values()) == 0:
        raise ValueError(
            "the program mask has no member at all: no feature belongs to any program "
            "(no overlap between the gene sets and the features?)."
        )
    names, aligned = align_programs(masks)
    members = sum(m.sum(0) for m in aligned.values())
    n_empty = int((members == 0).sum())
    if n_empty:
        logger.warning(
            "%d of %d programs have no member feature; their latent units cannot drive "
            "anything (e.g. %s).",
            n_empty,
            len(names),
            [names[i] for i in np.flatnonzero(members == 0)[:3]],
        )
