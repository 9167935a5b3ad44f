"""Docstring blocks shared by several functions.

A docstring line that holds only ``%(name)s`` is replaced by the block ``name``, indented like
the placeholder, so that a parameter described the same way in several functions is written
once (see ``model/_docs.py`` and ``pl/_utils.py``).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def fill_docs(blocks: Mapping[str, str]) -> Callable:
    """A decorator filling the ``%(name)s`` lines of a docstring with ``blocks[name]``."""

    def block(match: re.Match) -> str:
        text = textwrap.dedent(blocks[match["name"]]).strip("\n")
        return textwrap.indent(text, match["indent"])

    def decorate(func):
        if func.__doc__:
            func.__doc__ = _PLACEHOLDER.sub(block, func.__doc__)
        return func

    return decorate
