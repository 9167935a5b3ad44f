"""Sphinx configuration of the glassvi documentation.

At build time this file writes ``api.md`` from the ``__all__`` list of every public
subpackage (so new functions appear without editing the docs), each section followed by the
notes in ``_api/<subpackage>.md``; it copies the tutorial notebooks from ``tutorials/`` and
gathers the benchmark tables from ``benchmarks/results/`` into
``generated/`` (which is not kept under version control).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import sys
from datetime import date
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "generated"
if (ROOT / "src").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

import glassvi  # noqa: E402

# ----------------------------------------------------------------------------- project
project = "glassvi"
author = "glassvi developers"
copyright = f"{date.today().year}, {author}"
release = glassvi.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
    "sphinx_copybutton",
    "sphinx.ext.intersphinx",
]
# .rst first: autosummary writes its stub pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
templates_path = ["_templates"]
# generated/benchmarks holds text included into benchmarks.md, not pages of its own
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "Thumbs.db",
    ".DS_Store",
    "generated/benchmarks/**",
    "_inv/**",
    "_api/**",
]
master_doc = "index"

# ----------------------------------------------------------------------------- API docs
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "comma"
typehints_document_rtype = False
always_document_param_types = False
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

# ----------------------------------------------------------------------------- links
# links to the other projects' documentation through inventories kept in _inv/ (written by
# _inv/build_inventories.py from the installed packages): the build never goes online
_INVENTORIES = {
    "anndata": "https://anndata.readthedocs.io/en/stable/",
    "scanpy": "https://scanpy.readthedocs.io/en/1.10.x/",
    "scvi-tools": "https://docs.scvi-tools.org/en/stable/",
    "mudata": "https://mudata.readthedocs.io/stable/",
    "numpy": "https://numpy.org/doc/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
    "torch": "https://docs.pytorch.org/docs/stable/",
}
intersphinx_mapping = {
    name: (url, str(DOCS / "_inv" / f"{name}.inv")) for name, url in _INVENTORIES.items()
}
intersphinx_disabled_reftypes = ["std:doc"]

# ----------------------------------------------------------------------------- notebooks
# every build executes the tutorials (CI's included), so the pages show what the current code
# does; a cell that fails fails the build. GLASSVI_DOCS_EXECUTE=off shows the stored outputs.
nb_execution_mode = os.environ.get("GLASSVI_DOCS_EXECUTE", "cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_output_stderr = "remove"
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
# benchmark and changelog text is included from files written elsewhere in the repository;
# their heading levels and links to non-document files are not under the docs' control
suppress_warnings = ["myst.header", "myst.xref_missing", "mystnb.unknown_mime_type"]

# ----------------------------------------------------------------------------- HTML
html_theme = "furo"
html_title = f"glassvi {release}"
html_static_path = ["_static"]
html_css_files = ["glassvi.css"]
# copy code without the prompts of docstring examples and shell lines
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
html_theme_options = {"sidebar_hide_name": False}

# ----------------------------------------------------------------------------- generated pages
#: public subpackages in the order the API page lists them, with a section title
API_SECTIONS = [
    ("model", "Models"),
    ("data", "Data"),
    ("pp", "Preprocessing"),
    ("tl", "Tools"),
    ("pl", "Plotting and reports"),
    ("explain", "Post-hoc explanations"),
    ("metrics", "Metrics"),
    ("module", "Torch modules"),
    ("train", "Training plan"),
]


#: names that subpackages export for glassvi's own parts or for benchmarks, not for users: the
#: API page leaves them out (they keep their docstrings)
NOT_DOCUMENTED = {
    "module": {
        "FeatureNegativeBinomial",
        "FeaturePoisson",
        "LinearFeatureDecoder",
        "ProgramDecoder",
        "nonzero_key",
    },
}
#: subpackages whose other exports all serve glassvi's own parts: the API page shows only these
ONLY_DOCUMENTED = {"train": {"GlassTrainingPlan"}}


def public_api() -> dict[str, list[str]]:
    """Subpackage -> documented public names (functions and classes in ``__all__``)."""
    api = {}
    for name, _ in API_SECTIONS:
        try:
            module = importlib.import_module(f"glassvi.{name}")
        except ImportError:  # a subpackage that does not exist yet
            continue
        names = [
            n
            for n in getattr(module, "__all__", [])
            if (
                inspect.isclass(getattr(module, n, None))
                or inspect.isfunction(getattr(module, n, None))
            )
            and n not in NOT_DOCUMENTED.get(name, ())
            and n in ONLY_DOCUMENTED.get(name, {n})
        ]
        if names:
            api[name] = names
    return api


def _summary(module_name: str) -> str:
    doc = inspect.getdoc(importlib.import_module(f"glassvi.{module_name}")) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def write_api_page() -> None:
    lines = [
        "# API",
        "",
        "Import glassvi as `import glassvi`; the subpackages below are its namespaces, "
        "e.g. `glassvi.model.LinearVI` or `glassvi.pl.activity`.",
        "",
    ]
    titles = dict(API_SECTIONS)
    for name, names in public_api().items():
        lines += [f"## {titles[name]}: `glassvi.{name}`", "", _summary(name), ""]
        lines += ["```{eval-rst}", f".. currentmodule:: glassvi.{name}", ""]
        lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in names]
        lines += ["```", ""]
        notes = DOCS / "_api" / f"{name}.md"
        if notes.exists():
            lines += [notes.read_text(encoding="utf-8").strip(), ""]
    text = "\n".join(lines)
    page = DOCS / "api.md"
    if not page.exists() or page.read_text() != text:
        page.write_text(text)


def copy_tutorials() -> None:
    target = GENERATED / "tutorials"
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in (ROOT / "tutorials").glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        copy = target / notebook.name
        if not copy.exists() or copy.read_bytes() != notebook.read_bytes():
            shutil.copyfile(notebook, copy)


def _demote(text: str) -> str:
    """Nest a markdown file's headings one level deeper (its title becomes a section)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and re.match(r"#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out)


def write_benchmark_page() -> None:
    source = ROOT / "benchmarks"
    target = GENERATED / "benchmarks"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    parts = []
    results = sorted((source / "results").glob("*.md")) if (source / "results").is_dir() else []
    if (source / "results").is_dir():
        # files the tables refer to (figures, csv), next to the gathered tables so that
        # relative links keep working; the folder is excluded from the documents
        shutil.copytree(
            source / "results",
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.md", "*.tmp", "*.h5ad", "*.h5mu", "*.pt"),
        )
    for table in results:
        parts.append(_demote(table.read_text(encoding="utf-8")))
    if not parts:
        parts.append(
            "No benchmark results are available in this build. Run the scripts in "
            "`benchmarks/` to write `benchmarks/results/*.md`; they appear here."
        )
    (target / "tables.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")


write_api_page()
copy_tutorials()
write_benchmark_page()
