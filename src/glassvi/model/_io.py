"""Saving and loading glassvi models without running code from the file.

scvi-tools writes ``model.pt`` with :func:`torch.save` and reads it back with
``torch.load(weights_only=False)``, which unpickles arbitrary objects: a crafted file runs its
payload on load. glassvi writes the same file, but its attributes hold only tensors, NumPy
arrays and Python built-ins (tables such as the training history are stored as arrays), and
reads it with ``torch.load(weights_only=True)`` and an explicit allow-list of NumPy's array
types. A file that needs anything else is refused unless the caller says it is trusted.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scvi.data import AnnDataManager

from .._atomic import replace_file
from ._features import align_features

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
#: marks a table (pandas DataFrame) stored as plain arrays
_FRAME_MARK = "__glassvi_frame__"
#: the globals a glassvi model file may reference besides what torch allows by default
_ALLOWED_GLOBALS = (
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    # an array's raw data and a dtype's byte order, in pickle protocol 2
    "builtins.bytes",
)


class UnsafeModelFileError(pickle.UnpicklingError):
    """A model file references types outside glassvi's allow-list; it was not loaded.

    Raised by ``load``, ``load_query_data`` and the other readers of saved models. The message
    names the file and the types it needs. Nothing from the file has run. Load a file you
    trust with ``trusted=True``.

    Parameters
    ----------
    *args
        The message, as for any exception.
    **kwargs
        Keyword arguments of :class:`pickle.UnpicklingError`.

    Examples
    --------
    >>> try:
    ...     model = glassvi.model.LinearVI.load("downloaded_model", adata=adata)
    ... except glassvi.model.UnsafeModelFileError as err:
    ...     print(err)  # names the file and the types it needs
    """


def safe_globals() -> list:
    """The allow-list of ``weights_only`` loading: NumPy arrays, their dtypes and scalars.

    Returns
    -------
    The objects to pass to :func:`torch.serialization.safe_globals`; names missing from the
    installed NumPy (``numpy.core`` vs ``numpy._core``) are skipped.

    Examples
    --------
    >>> with torch.serialization.safe_globals(safe_globals()):  # doctest: +SKIP
    ...     torch.load("model.pt", weights_only=True)
    """
    found = []
    for name in _ALLOWED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        # dtype classes (Float32DType, ...) are plain types, reconstructed by name
        found += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n[0].isupper()
        ]
    return found


# ------------------------------------------------------------------------------ attributes
def to_portable(value: Any) -> Any:
    """Convert a saved attribute to tensors, arrays and built-ins only.

    DataFrames (the training history) become a marked dict of arrays, ``defaultdict`` and
    other mappings plain dicts, an ``Index`` an array, NumPy scalars Python scalars. Other
    values are returned unchanged (and refused when loading if they need code).

    Examples
    --------
    >>> to_portable({"a": np.float32(1.5)})
    {'a': 1.5}
    """
    if isinstance(value, pd.DataFrame):
        return {
            _FRAME_MARK: True,
            "index": to_portable(value.index),
            "index_name": None if value.index.name is None else str(value.index.name),
            "columns": [str(c) for c in value.columns],
            "values": [np.asarray(value[c].to_numpy()) for c in value.columns],
        }
    if isinstance(value, pd.Index):
        return np.asarray(value.to_numpy())
    if isinstance(value, Mapping):
        return {k: to_portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        converted = [to_portable(v) for v in value]
        return converted if isinstance(value, list) else tuple(converted)
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_portable(value: Any) -> Any:
    """Inverse of :func:`to_portable` for the stored tables (marked dicts -> DataFrames).

    Examples
    --------
    >>> from_portable(to_portable(pd.DataFrame({"x": [1.0]}))).equals(pd.DataFrame({"x": [1.0]}))
    True
    """
    if isinstance(value, dict):
        if value.get(_FRAME_MARK) is True:
            index = pd.Index(value["index"], name=value["index_name"])
            return pd.DataFrame(dict(zip(value["columns"], value["values"])), index=index)
        return {k: from_portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_portable(v) for v in value]
    return value


def portable_attributes(attributes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Model attributes as scvi-tools lists them, the saved ones (``name_``) made portable."""
    return [(n, to_portable(v) if n.endswith("_") else v) for n, v in attributes]


def restore_attributes(attr_dict: dict) -> dict:
    """Attributes read from a file, with tables and scvi-tools' registry types restored."""
    out = {k: from_portable(v) for k, v in attr_dict.items()}
    registry = out.get("registry_")
    if isinstance(registry, dict) and isinstance(registry.get("field_registries"), dict):
        # scvi-tools builds it as a defaultdict(dict); keep its behaviour for missing fields
        registry["field_registries"] = defaultdict(dict, registry["field_registries"])
    return out


# ------------------------------------------------------------------------------ reading
def _offending_globals(path: Path, message: str) -> list[str]:
    names: list[str] = []
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - only used to word the error message
        names = []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in safe_globals()} | set(_ALLOWED_GLOBALS)
    names = [n for n in names if n not in allowed and not n.startswith("builtins.")] or names
    if not names:
        names = re.findall(r"(?:GLOBAL|global|type) ([\w.]+)", message)
        names += re.findall(r"but got <class '([\w.]+)'>", message)
    return sorted(set(names))


def read_model_file(
    path: str | os.PathLike, *, map_location=None, trusted: bool = False
) -> dict[str, Any]:
    """Read a saved ``model.pt`` without running code from it (unless ``trusted``).

    Parameters
    ----------
    path
        The model file.
    map_location
        Device to load the tensors onto (see :func:`torch.load`).
    trusted
        Read with ``weights_only=False``: the file may hold any Python object, and loading it
        may run code. Only for files you trust.

    Returns
    -------
    The file's dict: ``model_state_dict``, ``var_names`` and ``attr_dict`` (the saved model
    attributes, tables restored).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is empty, truncated or not a glassvi model file.
    UnsafeModelFileError
        If the file references types outside the allow-list (named in the message).

    Examples
    --------
    >>> content = read_model_file("my_model/model.pt")  # doctest: +SKIP
    >>> content["attr_dict"]["registry_"]["model_name"]  # doctest: +SKIP
    'LinearVI'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} not found.")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"model file {str(path)!r} is empty (0 bytes); it was not saved completely."
        )
    try:
        if trusted:
            content = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(safe_globals()):
                content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "weights_only" in message.lower() or "weights only" in message.lower():
            offending = _offending_globals(path, message)
            reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", message)
            unchecked = f"content it cannot check ({reason.group(1) if reason else 'unknown'})"
            shown = ", ".join(offending[:5]) or unchecked
            raise UnsafeModelFileError(
                f"model file {str(path)!r} was not loaded: it needs {shown}, outside the "
                "types glassvi saves (tensors, NumPy arrays, Python built-ins), and loading it "
                "could run code. If you trust this file (you saved it, e.g. with an older "
                "glassvi), load it with trusted=True and save it again."
            ) from None
        raise ValueError(
            f"model file {str(path)!r} ({size} bytes) is damaged or not a model file: {err}"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"model file {str(path)!r} ({size} bytes) is truncated, damaged or not a model "
            f"file ({type(err).__name__}: {str(err)[:200]})."
        ) from None
    expected = ("model_state_dict", "var_names", "attr_dict")
    if not isinstance(content, dict) or any(k not in content for k in expected):
        found = list(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(
            f"model file {str(path)!r} is not a saved scvi-tools/glassvi model (expected a "
            f"dict with {list(expected)}, found {found})."
        )
    attr_dict = content["attr_dict"]
    if not isinstance(attr_dict, dict) or "registry_" not in attr_dict:
        raise ValueError(f"model file {str(path)!r} has no model registry; it cannot be loaded.")
    content["attr_dict"] = restore_attributes(attr_dict)
    return content


def model_file(dir_path: str | os.PathLike, prefix: str | None = None) -> Path:
    """Path of the model file in a directory written by ``model.save``.

    Examples
    --------
    >>> model_file("my_model")
    PosixPath('my_model/model.pt')
    """
    dir_path = Path(dir_path)
    if not dir_path.is_dir():
        raise FileNotFoundError(f"saved model directory {str(dir_path)!r} not found.")
    return dir_path / f"{prefix or ''}{MODEL_FILE}"


#: state-dict key that only a joint encoder has (one first layer over every modality)
_JOINT_ENCODER_KEY = "z_encoder.encoder.fc_layers.Layer 0.0.weight"


def with_saved_encoder(attr_dict: dict, state_dict: Mapping) -> dict:
    """``attr_dict`` whose init parameters name the encoder that ``state_dict`` was trained with.

    Models saved before the encoder became an init parameter all have the joint encoder, while
    ProgramVI's default with several modalities is now a product of experts: without this such a
    model would be rebuilt with the other encoder and its weights would not load.
    """
    params = attr_dict.get("init_params_")
    non_kwargs = params.get("non_kwargs") if isinstance(params, dict) else None
    if non_kwargs is None or "encoder" in non_kwargs or _JOINT_ENCODER_KEY not in state_dict:
        return attr_dict
    params = {**params, "non_kwargs": {**non_kwargs, "encoder": "joint"}}
    return {**attr_dict, "init_params_": params}


class SavedModel:
    """A saved model read safely, standing in for a model object in scvi-tools' query mapping.

    Given a directory, scvi-tools would read the file itself with ``weights_only=False``.

    Parameters
    ----------
    content
        What :func:`read_model_file` returned.
    path
        The directory it was read from.
    """

    def __init__(self, content: dict[str, Any], path: str | os.PathLike):
        self.path = str(path)
        self.state_dict = content["model_state_dict"]
        self.attr_dict = with_saved_encoder(content["attr_dict"], self.state_dict)
        self.var_names = content["var_names"]
        self.module = _StateHolder(self.state_dict)

    @property
    def registry(self) -> dict:
        """The saved registry (setup arguments and field states)."""
        return self.attr_dict["registry_"]

    def _get_user_attributes(self) -> list[tuple[str, Any]]:
        return list(self.attr_dict.items())

    def get_var_names(self, legacy_mudata_format: bool = False):
        """Feature names saved with the model (per modality for MuData)."""
        return self.var_names


class _StateHolder:
    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return {k: v for k, v in self._state.items() if k != "pyro_param_store"}


def read_saved_model(
    reference, *, prefix: str | None = None, map_location=None, trusted: bool = False
):
    """A model object, or the directory it was saved to read safely into a :class:`SavedModel`.

    Examples
    --------
    >>> reference = read_saved_model("reference_model/")  # doctest: +SKIP
    """
    if isinstance(reference, str | os.PathLike):
        path = model_file(reference, prefix)
        content = read_model_file(path, map_location=map_location, trusted=trusted)
        return SavedModel(content, reference)
    return reference


# ------------------------------------------------------------------------------ save / load
def save_model(
    model,
    dir_path: str | os.PathLike,
    prefix: str | None = None,
    overwrite: bool = False,
    save_anndata: bool = False,
    save_kwargs: dict | None = None,
    legacy_mudata_format: bool = False,
    **anndata_write_kwargs,
) -> None:
    """Write ``model`` to ``dir_path`` in scvi-tools' layout, holding no pickled code.

    Each file is written to a temporary name and renamed into place, so an interrupted save
    never leaves a truncated ``model.pt``.
    """
    from scvi.model.base._constants import SAVE_KEYS

    dir_path = Path(dir_path)
    if dir_path.exists() and not overwrite:
        raise ValueError(
            f"{str(dir_path)!r} already exists; pass overwrite=True or another directory."
        )
    dir_path.mkdir(parents=True, exist_ok=True)
    prefix = prefix or ""
    if save_anndata:
        name = SAVE_KEYS.MDATA_FNAME if isinstance(model.adata, MuData) else SAVE_KEYS.ADATA_FNAME
        replace_file(
            lambda p: model.adata.write(p, **anndata_write_kwargs), dir_path / f"{prefix}{name}"
        )
    attributes = {
        name: to_portable(value)
        for name, value in model._get_user_attributes()
        if name.endswith("_")
    }
    content = {
        SAVE_KEYS.MODEL_STATE_DICT_KEY: model.module.state_dict(),
        SAVE_KEYS.VAR_NAMES_KEY: to_portable(
            model.get_var_names(legacy_mudata_format=legacy_mudata_format)
        ),
        SAVE_KEYS.ATTR_DICT_KEY: attributes,
    }
    replace_file(
        lambda p: torch.save(content, p, **(save_kwargs or {})),
        dir_path / f"{prefix}{SAVE_KEYS.MODEL_FNAME}",
    )


def saved_feature_names(var_names, registry: dict) -> dict[str | None, pd.Index] | None:
    """Modality name -> saved feature names of the modelled modalities (None if unknown)."""
    if registry.get("setup_method_name") != "setup_mudata":
        return {None: pd.Index(np.asarray(var_names).astype(str))}
    if not isinstance(var_names, dict):
        return None  # legacy flat MuData layout: modalities cannot be told apart
    mods = registry.get("setup_args", {}).get("modalities") or {}
    modelled = [mods.get(f"{r}_layer") for r in ("rna", "atac")]
    return {m: pd.Index(np.asarray(var_names[m]).astype(str)) for m in modelled if m}


def _read_saved_data(dir_path: Path, prefix: str, registry: dict):
    from scvi.model.base._constants import SAVE_KEYS

    if registry.get("setup_method_name") == "setup_mudata":
        import mudata

        path = dir_path / f"{prefix}{SAVE_KEYS.MDATA_FNAME}"
        reader = mudata.read_h5mu
    else:
        import anndata

        path = dir_path / f"{prefix}{SAVE_KEYS.ADATA_FNAME}"
        reader = anndata.read_h5ad
    if not path.exists():
        raise ValueError(
            f"{str(dir_path)!r} holds no saved data ({path.name}); pass the data with adata=."
        )
    return reader(path)


def load_model(
    cls,
    dir_path: str | os.PathLike,
    adata=None,
    *,
    accelerator: str = "auto",
    device: int | str = "auto",
    prefix: str | None = None,
    trusted: bool = False,
    allowed_classes_names_list: list[str] | None = None,
):
    """Load a model of class ``cls`` from ``dir_path`` (see ``GlassModelBase.load``)."""
    from scvi.model._utils import parse_device_args
    from scvi.model.base._save_load import _initialize_model

    _, _, torch_device = parse_device_args(
        accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
    )
    path = model_file(dir_path, prefix)
    content = read_model_file(path, map_location=torch_device, trusted=trusted)
    attr_dict = dict(with_saved_encoder(content["attr_dict"], content["model_state_dict"]))
    registry = attr_dict.pop("registry_")
    saved_name = registry.get("model_name")
    if saved_name is not None and saved_name != cls.__name__:
        if saved_name not in (allowed_classes_names_list or []):
            raise ValueError(
                f"{str(path)!r} holds a {saved_name}, not a {cls.__name__}; load it with "
                f"{saved_name}.load."
            )
    if "setup_args" not in registry or "init_params_" not in attr_dict:
        raise ValueError(f"{str(path)!r} lacks the setup arguments needed to rebuild the model.")
    if adata is None:
        adata = _read_saved_data(Path(dir_path), prefix or "", registry)
    reference = saved_feature_names(content["var_names"], registry)
    if reference is not None:
        adata = align_features(adata, reference)
    method = registry.get("setup_method_name", "setup_anndata")
    if method not in ("setup_anndata", "setup_mudata"):
        raise ValueError(f"{str(path)!r} was set up with {method}, which glassvi cannot load.")
    getattr(cls, method)(adata, source_registry=registry, **registry["setup_args"])
    model = _initialize_model(cls, adata, registry, attr_dict, None)
    state = dict(content["model_state_dict"])
    state.pop("pyro_param_store", None)
    model.module.on_load(model)
    model.module.load_state_dict(state)
    model.to_device(torch_device)
    model.module.eval()
    model._validate_anndata(adata)
    return model


def _query_docs(kind: str, argument: str, method: str):
    """Docstring of ``prepare_query_<method>``, the same for AnnData and MuData queries."""

    def document(func):
        func.__doc__ = f"""\
        Pad and order a query {kind} like the reference (scvi-tools), reading it safely.

        Parameters
        ----------
        {argument}
            Query {kind}.
        reference_model
            A trained model, or the directory it was saved to (read as in :meth:`load`).
        *args, **kw
            Further arguments of
            :meth:`scvi.model.base.ArchesMixin.prepare_query_{method}`.
        trusted
            Allow types outside the allow-list (see :meth:`load`).

        Examples
        --------
        >>> glassvi.model.LinearVI.prepare_query_{method}(query, "my_model")
        """
        return func

    return document


class SaveLoadMixin:
    """Saving and safe loading of glassvi models (mixed into the model base class).

    Overrides scvi-tools' ``save``, ``load`` and every reader of a saved directory, so that a
    model file is read with ``weights_only=True`` and the allow-list of :func:`safe_globals`.
    """

    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_kwargs: dict | None = None,
        legacy_mudata_format: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model to a directory (scvi-tools' layout, a file that holds no code).

        ``model.pt`` holds the weights (tensors), the feature names and the model's attributes
        as NumPy arrays and Python built-ins only, so :meth:`load` can read it without running
        code. Files are written under a temporary name and renamed into place.

        Parameters
        ----------
        dir_path
            Directory to write (created if needed).
        prefix
            Prefix of the file names.
        overwrite
            Allow writing into an existing directory.
        save_anndata
            Also write the registered data (``adata.h5ad`` or ``mdata.h5mu``).
        save_kwargs
            Keyword arguments of :func:`torch.save`.
        legacy_mudata_format
            Save MuData feature names as one flat array instead of one array per modality.
        **anndata_write_kwargs
            Keyword arguments of the AnnData/MuData ``write``.

        Examples
        --------
        >>> model.save("my_model", overwrite=True)
        >>> model = glassvi.model.LinearVI.load("my_model", adata=adata)
        """
        save_model(
            self,
            dir_path,
            prefix=prefix,
            overwrite=overwrite,
            save_anndata=save_anndata,
            save_kwargs=save_kwargs,
            legacy_mudata_format=legacy_mudata_format,
            **anndata_write_kwargs,
        )

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        allowed_classes_names_list: list[str] | None = None,
        *,
        trusted: bool = False,
    ):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Directory the model was saved to.
        adata
            Data organised like the training data; ``None`` reads the data saved with the
            model. Features are matched by name: data with the model's features in another
            order (or with extra features) are used through a copy in the model's order, which
            becomes ``model.adata``; the object passed in is not changed. Data missing one of
            the model's features are refused, naming them.
        accelerator
            Accelerator of the model (``"auto"``, ``"cpu"``, ``"gpu"``...).
        device
            Device of the model (``"auto"`` or an index).
        prefix
            Prefix of the saved file names.
        allowed_classes_names_list
            Other model class names accepted besides this class.
        trusted
            Read the file with ``torch.load(weights_only=False)``, which can run code stored in
            it. Only for files you trust, e.g. models saved by an older glassvi; save such a
            model again to get the safe format.

        Returns
        -------
        The model, in evaluation mode.

        Raises
        ------
        UnsafeModelFileError
            If the file references types outside the allow-list (named in the message).
        ValueError
            If the file is empty, truncated or damaged, or the data lack model features.

        Notes
        -----
        **Safety.** scvi-tools reads ``model.pt`` with ``torch.load(weights_only=False)``, which
        unpickles arbitrary objects: a crafted file runs its payload on load. glassvi reads it
        with ``weights_only=True`` and an explicit allow-list of the types it saves (tensors,
        NumPy arrays and their dtypes, Python built-ins), in :meth:`load`,
        :meth:`load_query_data`, :meth:`prepare_query_anndata`, :meth:`prepare_query_mudata`
        and :meth:`load_registry`. A file that needs any other type is refused with
        :class:`~glassvi.model.UnsafeModelFileError` naming the file and the types, unless
        ``trusted=True``.

        Examples
        --------
        >>> model = glassvi.model.LinearVI.load("my_model", adata=adata)
        """
        return load_model(
            cls,
            dir_path,
            adata,
            accelerator=accelerator,
            device=device,
            prefix=prefix,
            trusted=trusted,
            allowed_classes_names_list=allowed_classes_names_list,
        )

    @staticmethod
    def load_registry(dir_path: str, prefix: str | None = None, *, trusted: bool = False) -> dict:
        """The registry (setup arguments, field states) saved with a model, read safely.

        Parameters
        ----------
        dir_path
            Directory the model was saved to.
        prefix
            Prefix of the saved file names.
        trusted
            Allow types outside the allow-list (see :meth:`load`).

        Examples
        --------
        >>> glassvi.model.LinearVI.load_registry("my_model")["setup_args"]
        """
        return read_saved_model(dir_path, prefix=prefix, trusted=trusted).registry

    @staticmethod
    def view_setup_args(dir_path: str, prefix: str | None = None, *, trusted: bool = False):
        """Print the setup arguments saved with a model, read safely (see :meth:`load`).

        Examples
        --------
        >>> glassvi.model.LinearVI.view_setup_args("my_model")
        """
        registry = read_saved_model(dir_path, prefix=prefix, trusted=trusted).registry
        AnnDataManager.view_setup_method_args(registry)

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs):
        """Not supported: glassvi never wrote scvi-tools' pre-0.15 (pickled) format."""
        raise NotImplementedError(
            "glassvi models are never in scvi-tools' legacy format; nothing to convert."
        )

    @classmethod
    @_query_docs("AnnData", "adata", "anndata")
    def prepare_query_anndata(cls, adata, reference_model, *args, trusted: bool = False, **kw):
        reference = read_saved_model(reference_model, trusted=trusted)
        return super().prepare_query_anndata(adata, reference, *args, **kw)

    @classmethod
    @_query_docs("MuData", "mdata", "mudata")
    def prepare_query_mudata(cls, mdata, reference_model, *args, trusted: bool = False, **kw):
        reference = read_saved_model(reference_model, trusted=trusted)
        return super().prepare_query_mudata(mdata, reference, *args, **kw)

    # ------------------------------------------------------------------------- reference mapping
    @classmethod
    def _align_query(cls, adata, reference):
        """The query with the reference's features in the reference's order (maybe a copy)."""
        if adata is None:
            return None
        names = saved_feature_names(reference.get_var_names(), reference.registry)
        return adata if names is None else align_features(adata, names)
