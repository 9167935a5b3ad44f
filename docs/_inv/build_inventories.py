"""Write the Sphinx inventories that link glassvi's docs to scanpy, anndata, mudata, scvi-tools...

The documentation builds without network access, so ``intersphinx`` cannot download the other
projects' ``objects.inv``. This script writes small inventories instead, from the packages
installed here: every public class, function and method of the namespaces glassvi's docs
refer to, each with the address that project's documentation gives it (its autosummary page
layout, checked against the published sites). Run it after upgrading one of these packages::

    python docs/_inv/build_inventories.py

An object missing here is shown as plain text in the docs, never as a broken link.
"""

from __future__ import annotations

import importlib
import inspect
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (documentation root, [(namespace, page of an object, page of a member)])
#: pages are relative to the root; "{name}" is the full dotted name of the object
PROJECTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "anndata": (
        "https://anndata.readthedocs.io/en/stable/",
        [("anndata", "generated/{name}.html", "generated/{name}.html")],
    ),
    "scanpy": (
        "https://scanpy.readthedocs.io/en/1.10.x/",
        [
            (f"scanpy.{sub}", "generated/{name}.html", "generated/{name}.html")
            for sub in ("pp", "tl", "pl", "get")
        ],
    ),
    "scvi-tools": (
        "https://docs.scvi-tools.org/en/stable/",
        [
            (ns, "api/reference/{name}.html", "api/reference/{owner}.html#{name}")
            for ns in (
                "scvi.model",
                "scvi.model.base",
                "scvi.train",
                "scvi.distributions",
                "scvi.dataloaders",
                "scvi.module.base",
                "scvi.nn",
            )
        ],
    ),
    "mudata": (
        "https://mudata.readthedocs.io/stable/",
        [("mudata", "generated/{name}.html", "generated/{owner}.html#{name}")],
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        [("numpy", "reference/generated/{name}.html", "reference/generated/{name}.html")],
    ),
    "pandas": (
        "https://pandas.pydata.org/docs/",
        [("pandas", "reference/api/{name}.html", "reference/api/{name}.html")],
    ),
}

#: objects whose page does not follow their project's pattern, and aliases (the module where
#: a class is defined, which type hints name): name -> (project, role, page)
EXTRA = {
    "torch.Tensor": ("torch", "class", "tensors.html#torch.Tensor"),
    "torch.nn.Module": ("torch", "class", "generated/torch.nn.Module.html"),
    "torch.utils.data.DataLoader": ("torch", "class", "data.html#torch.utils.data.DataLoader"),
    "torch.utils.data.DistributedSampler": (
        "torch",
        "class",
        "data.html#torch.utils.data.distributed.DistributedSampler",
    ),
    "torch.distributions.Poisson": (
        "torch",
        "class",
        "distributions.html#torch.distributions.poisson.Poisson",
    ),
    "torch.distributions.Normal": (
        "torch",
        "class",
        "distributions.html#torch.distributions.normal.Normal",
    ),
    "pandas.core.frame.DataFrame": ("pandas", "class", "reference/api/pandas.DataFrame.html"),
    "pandas.core.series.Series": ("pandas", "class", "reference/api/pandas.Series.html"),
    "pandas.core.indexes.base.Index": ("pandas", "class", "reference/api/pandas.Index.html"),
    "anndata._core.anndata.AnnData": ("anndata", "class", "generated/anndata.AnnData.html"),
    "mudata._core.mudata.MuData": ("mudata", "class", "generated/mudata.MuData.html"),
}
ROOTS = {"torch": "https://docs.pytorch.org/docs/stable/"}


def _public(module) -> Iterator[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
            yield name, obj
        elif callable(obj) and type(obj).__name__ == "ufunc":
            yield name, obj


def _entries(namespace: str, page: str, member_page: str) -> Iterator[tuple[str, str, str]]:
    module = importlib.import_module(namespace)
    package = namespace.split(".")[0]
    for name, obj in _public(module):
        if package == "mudata" and not getattr(obj, "__module__", "").startswith(package):
            continue  # re-exported from anndata: documented there
        full = f"{namespace}.{name}"
        role = "class" if inspect.isclass(obj) else "function"
        yield full, role, page.format(name=full)
        if not inspect.isclass(obj):
            continue
        for member, value in vars(obj).items():
            if member.startswith("_"):
                continue
            kind = "method" if callable(value) or isinstance(value, classmethod) else "attribute"
            yield (
                f"{full}.{member}",
                kind,
                member_page.format(name=f"{full}.{member}", owner=full),
            )


def write_inventory(project: str, version: str, entries: list[tuple[str, str, str]]) -> Path:
    """Write ``<project>.inv`` in Sphinx's inventory format (version 2)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    seen, lines = set(), []
    for name, role, uri in entries:
        if name in seen:
            continue
        seen.add(name)
        lines.append(f"{name} py:{role} 1 {uri} -\n")
    path = HERE / f"{project}.inv"
    path.write_bytes(header.encode() + zlib.compress("".join(sorted(lines)).encode(), 9))
    return path


def main(version_of: Callable[[str], str] | None = None) -> None:
    """Write every inventory next to this script."""
    from importlib import metadata

    version_of = version_of or metadata.version
    per_project: dict[str, list[tuple[str, str, str]]] = {p: [] for p in PROJECTS}
    per_project["torch"] = []
    for project, (_, namespaces) in PROJECTS.items():
        for namespace, page, member_page in namespaces:
            per_project[project].extend(_entries(namespace, page, member_page))
    for name, (project, role, uri) in EXTRA.items():
        per_project[project].append((name, role, uri))
    for project, entries in per_project.items():
        path = write_inventory(project, version_of(project), entries)
        print(f"{path.name}: {len(entries)} objects")


if __name__ == "__main__":
    main()
