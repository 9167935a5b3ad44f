"""Reading and writing gene sets in the GMT format."""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["read_gmt", "write_gmt"]


def _open_text(path: Path, mode: str) -> io.TextIOBase:
    """Open ``path`` as text, through gzip when its name ends with ``.gz``."""
    if path.name.endswith(".gz"):
        if "w" in mode:
            # mtime=0 keeps the compressed bytes identical across runs
            raw = gzip.GzipFile(filename=path, mode="wb", mtime=0)
            return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=None)
    if "w" in mode:
        return open(path, "w", encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8-sig", newline=None)


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read gene sets from a GMT file.

    Each line of a GMT file holds one set: its name, a description, then its genes, all
    separated by tabs. Only tabs separate fields, so names and descriptions may contain
    spaces. Blank lines, empty fields (for example trailing tabs), Windows line endings and
    gzip compression (a name ending in ``.gz``) are handled. A gene listed twice in a set is
    kept once, at its first position, and the removal is logged.

    Parameters
    ----------
    path
        Path to a ``.gmt`` or ``.gmt.gz`` file.

    Returns
    -------
    Gene sets in file order: set name -> list of unique genes. The descriptions are not
    returned. A set whose line lists no gene maps to an empty list.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line has fewer than two fields or an empty name (the message gives the line
        number), if two lines define the same set name (the message gives both lines), or if
        the file is not UTF-8 text (a binary file, another encoding, a damaged ``.gz``); every
        message names the file.

    Examples
    --------
    >>> import glassvi
    >>> gene_sets = glassvi.pp.read_gmt("hallmark.gmt")  # doctest: +SKIP
    >>> gene_sets["HALLMARK_HYPOXIA"][:3]  # doctest: +SKIP
    ['PGK1', 'PDK1', 'GBE1']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GMT file not found: '{path}'")

    gene_sets: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    duplicates: list[tuple[str, int]] = []
    try:
        with _open_text(path, "r") as handle:
            _parse_gmt_lines(handle, path, gene_sets, first_line, duplicates)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not a UTF-8 text file (undecodable byte at position {err.start}); a GMT "
            "file is tab-separated UTF-8 text. Is it a binary file or in another encoding?"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path} could not be read as a gzip-compressed GMT file: {err}"
        ) from None
    n_duplicate_genes = sum(n for _, n in duplicates)

    if n_duplicate_genes:
        examples = ", ".join(repr(name) for name, _ in duplicates[:3])
        logger.info(
            "removed %d duplicate gene entries from %d gene sets in '%s' (e.g. %s)",
            n_duplicate_genes,
            len(duplicates),
            path,
            examples,
        )
    logger.info("read %d gene sets from '%s'", len(gene_sets), path)
    return gene_sets


def _parse_gmt_lines(
    handle,
    path: Path,
    gene_sets: dict[str, list[str]],
    first_line: dict[str, int],
    duplicates: list[tuple[str, int]],
) -> None:
    """Parse GMT lines into ``gene_sets``, recording each set's line and duplicate genes."""
    for line_number, line in enumerate(handle, start=1):
        line = line.rstrip("\r\n")
        if "\x00" in line:
            raise ValueError(
                f"{path}, line {line_number}: contains NUL bytes; a GMT file is text, this looks "
                "like a binary file"
            )
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(
                f"{path}, line {line_number}: expected at least 2 tab-separated fields "
                f"(name, description, genes...), found {len(fields)}: {line[:80]!r}"
            )
        name = fields[0].strip()
        if not name:
            raise ValueError(f"{path}, line {line_number}: the gene set name is empty")
        if name in gene_sets:
            raise ValueError(
                f"{path}: gene set {name!r} is defined twice, on lines "
                f"{first_line[name]} and {line_number}"
            )
        genes = [gene for field in fields[2:] if (gene := field.strip())]
        unique_genes = list(dict.fromkeys(genes))
        if len(unique_genes) < len(genes):
            duplicates.append((name, len(genes) - len(unique_genes)))
        gene_sets[name] = unique_genes
        first_line[name] = line_number


def _check_field(value: str, what: str) -> str:
    value = str(value)
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {value!r} contains a tab or a line break, which GMT cannot hold")
    return value


def write_gmt(
    gene_sets: Mapping[str, Iterable[str]],
    path: str | os.PathLike,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write gene sets to a GMT file.

    One line per set: name, description, then the genes, separated by tabs, with Unix line
    endings. The file is gzip-compressed when ``path`` ends with ``.gz``.

    Parameters
    ----------
    gene_sets
        Set name -> genes. Sets are written in mapping order and genes in the given order.
    path
        Output path; parent folders must exist.
    descriptions
        Set name -> description. Sets missing from it (or all sets, when it is ``None``) get
        the placeholder description ``"na"``.

    Raises
    ------
    ValueError
        If a name, description or gene contains a tab or a line break, or a name is empty.

    Examples
    --------
    >>> import glassvi
    >>> glassvi.pp.write_gmt(
    ...     {"T cell": ["CD3E", "CD3D"], "B cell": ["MS4A1", "CD79A"]},
    ...     "cells.gmt",
    ...     descriptions={"T cell": "markers"},
    ... )  # doctest: +SKIP
    """
    descriptions = {} if descriptions is None else descriptions
    lines = []
    for name, genes in gene_sets.items():
        name = _check_field(name, "gene set name")
        if not name.strip():
            raise ValueError("gene set names must not be empty")
        if isinstance(genes, str):
            raise TypeError(
                f"the genes of set {name!r} are a single string; pass a list of gene names"
            )
        description = _check_field(descriptions.get(name, "na"), "description")
        fields = [name, description] + [_check_field(gene, "gene") for gene in genes]
        lines.append("\t".join(fields) + "\n")
    with _open_text(Path(path), "w") as handle:
        handle.writelines(lines)
    logger.info("wrote %d gene sets to '%s'", len(lines), path)
