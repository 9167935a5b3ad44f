"""Registration of AnnData/MuData with glassvi models: checks, scvi-tools fields, shared setup."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields

from .._validation import (
    RestoreOnError,
    check_counts,
    check_layer,
    check_obs_keys,
    check_obs_values,
    get_matrix,
)
from ._classifier import DEFAULT_UNLABELED_CATEGORY

#: default likelihood of each modality role
DEFAULT_LIKELIHOOD = {"rna": "nb", "atac": "bernoulli"}
#: registry key of each modality's counts when one or two modalities are registered
FIRST_KEY, SECOND_KEY = REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.ATAC_X_KEY
#: setup arguments naming ``obs`` columns
OBS_KEY_ARGS = (
    "batch_key",
    "labels_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
    "size_factor_key",
)


def _validate_adata_for_setup(
    adata: AnnData,
    layer: str | None,
    where: str,
    obs_keys: dict[str, Any],
    allow_missing_labels: bool = False,
) -> None:
    check_layer(adata, layer, where)
    check_obs_keys(adata.obs, obs_keys, where)
    check_obs_values(adata.obs, obs_keys, where, allow_missing_labels=allow_missing_labels)
    what = f"{where}.layers[{layer!r}]" if layer is not None else f"{where}.X"
    check_counts(get_matrix(adata, layer), what)


class SetupMixin:
    """Registration helpers of glassvi models (mixed into the model base class)."""

    @classmethod
    def _setup_anndata_fields(
        cls,
        layer: str | None,
        batch_key: str | None,
        labels_key: str | None,
        categorical_covariate_keys: list[str] | None,
        continuous_covariate_keys: list[str] | None,
        size_factor_key: str | None,
        unlabeled_category: str = DEFAULT_UNLABELED_CATEGORY,
    ) -> list:
        if labels_key is None:
            labels_field = fields.CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        else:
            labels_field = fields.LabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category
            )
        return [
            fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            labels_field,
            fields.NumericalObsField(
                REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False
            ),
            fields.CategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys
            ),
            fields.NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]

    @classmethod
    def _register(cls, adata, anndata_fields: list, setup_method_args: dict, **kwargs) -> None:
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        # scvi-tools logs at INFO which column names of glassvi's own masks it uses (in colour,
        # even into files); glassvi always uses the masks' names, so that is no news to users
        scvi_logger = logging.getLogger("scvi")
        level = scvi_logger.level
        if level <= logging.INFO:
            scvi_logger.setLevel(logging.WARNING)
        try:
            # a field failing half-way would leave the _scvi_* columns of the earlier ones
            with RestoreOnError(adata):
                adata_manager.register_fields(adata, **kwargs)
        finally:
            scvi_logger.setLevel(level)
        cls.register_manager(adata_manager)

    @classmethod
    def _check_setup_anndata(
        cls, adata, modality, layer, obs_keys, allow_missing_labels: bool = False
    ) -> None:
        if not isinstance(adata, AnnData):
            raise TypeError(
                f"setup_anndata expects an AnnData, got {type(adata).__name__}; "
                "use setup_mudata for MuData."
            )
        if modality not in DEFAULT_LIKELIHOOD:
            raise ValueError(f"modality must be 'rna' or 'atac', got {modality!r}.")
        _validate_adata_for_setup(adata, layer, "adata", obs_keys, allow_missing_labels)

    @classmethod
    def _resolve_mudata_modalities(
        cls,
        mdata: MuData,
        rna_layer,
        atac_layer,
        obs_keys: dict,
        modalities: dict | None,
        allow_missing_labels: bool = False,
    ) -> dict:
        if not isinstance(mdata, MuData):
            raise TypeError(f"setup_mudata expects a MuData, got {type(mdata).__name__}.")
        if modalities is None:
            modalities = {f"{m}_layer": m for m in ("rna", "atac") if m in mdata.mod}
        modalities = dict(modalities)
        roles = {r: modalities.get(f"{r}_layer") for r in ("rna", "atac")}
        if all(v is None for v in roles.values()):
            raise KeyError(
                "No modality to model: pass modalities={'rna_layer': ..., 'atac_layer': ...} "
                f"naming modalities of the MuData (it has {list(mdata.mod)})."
            )
        for role, mod in roles.items():
            if mod is None:
                continue
            if mod not in mdata.mod:
                raise KeyError(
                    f"modality {mod!r} (for {role}) is not in the MuData (modalities: "
                    f"{list(mdata.mod)})."
                )
            sub = mdata[mod]
            if sub.n_obs != mdata.n_obs or not sub.obs_names.equals(mdata.obs_names):
                raise ValueError(
                    f"Cells are not aligned across modalities: {mod!r} has {sub.n_obs} cells, "
                    f"the MuData has {mdata.n_obs}, or they are in another order. Keep the "
                    "cells measured in every modality first, e.g. muon.pp.intersect_obs(mdata)."
                )
            layer = rna_layer if role == "rna" else atac_layer
            _validate_adata_for_setup(sub, layer, f"mdata[{mod!r}]", {})
        for arg, value in obs_keys.items():
            mod = modalities.get(arg)
            obs = mdata[mod].obs if mod is not None else mdata.obs
            where = f"mdata[{mod!r}]" if mod is not None else "mdata"
            check_obs_keys(obs, {arg: value}, where)
            check_obs_values(obs, {arg: value}, where, allow_missing_labels=allow_missing_labels)
        return modalities

    @classmethod
    def _setup_mudata_fields(
        cls,
        modalities: Mapping[str, str | None],
        rna_layer,
        atac_layer,
        batch_key,
        labels_key,
        categorical_covariate_keys,
        continuous_covariate_keys,
        size_factor_key,
        unlabeled_category: str = DEFAULT_UNLABELED_CATEGORY,
    ) -> list:
        size_keys = [size_factor_key] if isinstance(size_factor_key, str) else size_factor_key
        if labels_key is None:
            labels_field = fields.MuDataCategoricalObsField(
                REGISTRY_KEYS.LABELS_KEY, None, mod_key=modalities.get("labels_key")
            )
        else:
            labels_field = fields.MuDataLabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY,
                labels_key,
                unlabeled_category,
                mod_key=modalities.get("labels_key"),
            )
        mudata_fields = [
            fields.MuDataCategoricalObsField(
                REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=modalities.get("batch_key")
            ),
            labels_field,
            fields.MuDataNumericalJointObsField(
                REGISTRY_KEYS.SIZE_FACTOR_KEY,
                size_keys,
                mod_key=modalities.get("size_factor_key"),
                required=False,
            ),
            fields.MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY,
                categorical_covariate_keys,
                mod_key=modalities.get("categorical_covariate_keys"),
            ),
            fields.MuDataNumericalJointObsField(
                REGISTRY_KEYS.CONT_COVS_KEY,
                continuous_covariate_keys,
                mod_key=modalities.get("continuous_covariate_keys"),
            ),
        ]
        keys = iter([FIRST_KEY, SECOND_KEY])
        for role, layer in (("rna", rna_layer), ("atac", atac_layer)):
            mod = modalities.get(f"{role}_layer")
            if mod is None:
                continue
            mudata_fields.append(
                fields.MuDataLayerField(
                    next(keys), layer, mod_key=mod, is_count_data=True, mod_required=True
                )
            )
        return mudata_fields

    # ------------------------------------------------------------------------- shared bodies
    @classmethod
    def _setup_anndata_from(
        cls,
        adata: AnnData,
        setup_method_args: dict,
        extra_fields: Callable[[], list] | None = None,
        **kwargs,
    ) -> None:
        """Check and register an AnnData from the arguments of a ``setup_anndata``.

        ``extra_fields`` runs after the data checks and returns model-specific fields (it may
        raise to refuse the data); nothing is written to ``adata`` if a check fails.
        """
        args = setup_method_args["setup_args"]
        obs_keys = {name: args[name] for name in OBS_KEY_ARGS}
        # query data (load_query_data) may have missing labels: they become unlabelled
        allow_missing = bool(kwargs.get("allow_missing_labels", False))
        cls._check_setup_anndata(adata, args["modality"], args["layer"], obs_keys, allow_missing)
        extra = extra_fields() if extra_fields is not None else []
        anndata_fields = cls._setup_anndata_fields(
            args["layer"],
            args["batch_key"],
            args["labels_key"],
            args["categorical_covariate_keys"],
            args["continuous_covariate_keys"],
            args["size_factor_key"],
            unlabeled_category=args["unlabeled_category"],
        )
        cls._register(adata, anndata_fields + extra, setup_method_args, **kwargs)

    @classmethod
    def _setup_mudata_from(
        cls,
        mdata: MuData,
        setup_method_args: dict,
        extra_fields: Callable[[dict], list] | None = None,
        **kwargs,
    ) -> None:
        """Check and register a MuData from the arguments of a ``setup_mudata``.

        ``extra_fields`` gets the resolved modalities (argument -> MuData modality), runs after
        the data checks and returns model-specific fields (it may raise to refuse the data).
        """
        args = setup_method_args["setup_args"]
        obs_keys = {name: args[name] for name in OBS_KEY_ARGS}
        modalities = cls._resolve_mudata_modalities(
            mdata,
            args["rna_layer"],
            args["atac_layer"],
            obs_keys,
            args["modalities"],
            allow_missing_labels=bool(kwargs.get("allow_missing_labels", False)),
        )
        extra = extra_fields(modalities) if extra_fields is not None else []
        args["modalities"] = modalities
        mudata_fields = cls._setup_mudata_fields(
            modalities,
            args["rna_layer"],
            args["atac_layer"],
            args["batch_key"],
            args["labels_key"],
            args["categorical_covariate_keys"],
            args["continuous_covariate_keys"],
            args["size_factor_key"],
            unlabeled_category=args["unlabeled_category"],
        )
        cls._register(mdata, mudata_fields + extra, setup_method_args, **kwargs)
