"""Every public name of glassvi's subpackages has a numpy-style docstring.

The API page of the documentation is written from the same ``__all__`` lists (see
``docs/conf.py``), so a name that passes here has a page with a summary, its parameters and
an example.
"""

import importlib
import inspect
import re

import pytest

SUBPACKAGES = ["model", "data", "pp", "tl", "pl", "explain", "metrics", "module", "train"]


def _public_objects():
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"glassvi.{sub}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield pytest.param(obj, id=f"{sub}.{name}")


def _sections(doc: str) -> dict[str, str]:
    """Numpy docstring sections: title -> body."""
    parts = re.split(r"^(\w[\w ]*)\n-{3,}\n", doc, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _documented(body: str) -> set[str]:
    """Names on the unindented lines of a section; ``a, b`` and ``x : int`` count too."""
    names = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            for part in line.split(" : ")[0].split(","):
                names.add(part.strip())
    return names


def _parameters(obj) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    names = []
    for p in signature.parameters.values():
        if p.name in ("self", "cls"):
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def test_api_lists_are_not_empty():
    assert len(list(_public_objects())) > 20


@pytest.mark.parametrize("obj", _public_objects())
def test_public_name_has_numpy_docstring(obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{obj.__qualname__} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and not summary.startswith(" "), "no one-line summary"
    sections = _sections(doc)
    params = _parameters(obj)
    if inspect.isclass(obj) and obj.__init__ is object.__init__:
        params = []
    if params:
        # classes holding results (dataclasses) may list their fields as Attributes
        titles = ["Parameters", "Attributes"] if inspect.isclass(obj) else ["Parameters"]
        body = "".join(sections.get(t, "") for t in titles)
        assert body, f"{obj.__qualname__} lacks a Parameters section"
        documented = _documented(body)
        missing = [p for p in params if p not in documented and p.lstrip("*") not in documented]
        assert not missing, f"{obj.__qualname__}: parameters not documented: {missing}"
    if inspect.isfunction(obj):
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None", inspect.Signature.empty):
            assert "Returns" in sections or "Yields" in sections, (
                f"{obj.__qualname__} lacks a Returns section"
            )
    assert "Examples" in sections, f"{obj.__qualname__} lacks an Examples section"


def test_api_page_lists_only_the_public_surface():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    for internal in ("MinibatchSampler", "MinibatchDataset", "tune_cpu_allocator", "nonzero_key"):
        assert internal not in page
    for public in ("LinearVI", "ProgramVI", "rank_features", "write_report", "GlassTrainingPlan"):
        assert public in page


def test_offline_inventories_name_the_linked_objects():
    import zlib
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "_inv"
    names = {}
    for path in folder.glob("*.inv"):
        raw = path.read_bytes()
        header_end = 0
        for _ in range(4):
            header_end = raw.index(b"\n", header_end) + 1
        assert raw[:header_end].startswith(b"# Sphinx inventory version 2")
        body = zlib.decompress(raw[header_end:]).decode()
        names[path.stem] = {line.split(" ", 1)[0] for line in body.splitlines()}
    assert "anndata.AnnData" in names["anndata"]
    assert "scanpy.pl.embedding" in names["scanpy"]
    assert "scanpy.get.rank_genes_groups_df" in names["scanpy"]
    assert "scvi.model.base.RNASeqMixin.get_normalized_expression" in names["scvi-tools"]
    assert {"numpy.ndarray", "pandas.DataFrame", "torch.Tensor"} <= (
        names["numpy"] | names["pandas"] | names["torch"]
    )
