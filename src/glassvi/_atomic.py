"""Output directories that are replaced as a whole, so a failed run never leaves half a result."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputDirectoryError(ValueError):
    """The output directory cannot be used (not writable, not empty, or holds the inputs)."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_output_dir(
    out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Check, before any work, that ``out`` can receive a new set of results.

    The results are built in a sibling folder and swapped in at the end, so the folder that
    holds ``out`` must be writable. An existing non-empty ``out`` is refused unless
    ``overwrite`` is set, and never replaced if it holds one of the ``inputs``.

    Parameters
    ----------
    out
        Output directory (need not exist).
    overwrite
        Allow replacing a non-empty ``out`` and everything in it.
    inputs
        Files the run reads; ``out`` may not contain them (replacing it would delete them).

    Returns
    -------
    ``out`` as an absolute path.

    Raises
    ------
    OutputDirectoryError
        With a one-line reason.

    Examples
    --------
    >>> check_output_dir("results", overwrite=True)  # doctest: +SKIP
    PosixPath('/home/me/results')
    """
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise OutputDirectoryError(f"--out {str(out)!r} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputDirectoryError(
                f"--out {str(out)!r} is not empty; pass --overwrite to replace its contents, "
                "or choose another directory"
            )
        cwd = Path.cwd().resolve()
        resolved = out.resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise OutputDirectoryError(
                f"--out {str(out)!r} is the working directory or holds it; it cannot be replaced"
            )
        for item in inputs:
            if item is None:
                continue
            path = Path(item).resolve()
            if resolved in path.parents:
                raise OutputDirectoryError(
                    f"--out {str(out)!r} holds the input {str(item)!r}; --overwrite would delete "
                    "it, so choose another directory"
                )
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputDirectoryError(
            f"--out {str(out)!r} cannot be created: {str(parent)!r} is not a directory"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".glassvi-write-test-", dir=parent)
    except OSError as err:
        raise OutputDirectoryError(
            f"--out {str(out)!r} is not writable: cannot create files in {str(parent)!r} "
            f"({err.strerror or err})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return out


def replace_file(write, path: str | os.PathLike) -> Path:
    """Write a file through a temporary file in the same directory, then rename it into place.

    Parameters
    ----------
    write
        Callable that writes to the path it is given.
    path
        Final path; it is replaced only once ``write`` has finished.

    Returns
    -------
    ``path``.

    Examples
    --------
    >>> replace_file(adata.write_h5ad, "out/results.h5ad")  # doctest: +SKIP
    """
    path = Path(path)
    # the real suffix stays last: writers pick the format from it
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
    )
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def staged_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Build a set of outputs in a temporary sibling folder, then swap it in for ``out``.

    Inside the ``with`` block, write everything into the yielded folder. When the block
    finishes, the folder replaces ``out`` (the previous ``out`` and every file in it go away,
    so no stale output stays). If the block raises or is interrupted, the temporary folder is
    removed and ``out`` is left exactly as it was.

    Parameters
    ----------
    out
        Final output directory; created if missing.

    Examples
    --------
    >>> with staged_output_dir("results") as stage:  # doctest: +SKIP
    ...     adata.write_h5ad(stage / "results.h5ad")
    """
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    os.chmod(stage, 0o777 & ~_umask())
    if not out.exists():
        os.replace(stage, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(old, out)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
