"""Optional dependencies: imported where they are needed, with an error that says what to do."""

from __future__ import annotations

import importlib
from types import ModuleType

#: optional package -> extra of glassvi that installs it
EXTRAS = {"captum": "attribution", "shap": "attribution"}


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError naming the extra that installs it.

    Parameters
    ----------
    package
        Importable name, e.g. ``"captum"``.
    purpose
        What needs it, for the message (e.g. ``"method='integrated_gradients'"``).

    Returns
    -------
    The imported module.

    Examples
    --------
    >>> attr = require("captum", "integrated gradients").attr
    """
    try:
        return importlib.import_module(package)
    except ImportError as err:
        extra = EXTRAS.get(package.split(".")[0])
        how = f'pip install "glassvi[{extra}]"' if extra else f"pip install {package}"
        raise ImportError(
            f"{purpose} needs the optional package {package.split('.')[0]!r}, which is not "
            "installed; "
            f"install it with: {how}"
        ) from err


def available(package: str) -> bool:
    """Whether an optional dependency can be imported.

    Parameters
    ----------
    package
        Importable name.

    Returns
    -------
    ``True`` if ``import package`` works.

    Examples
    --------
    >>> available("captum")
    True
    """
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True
