import doctest
import importlib
import inspect

import pytest

import glassvi.metrics

MODULES = ["_programs", "_attribution", "_stability", "_markers", "_program_stability"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"glassvi.metrics.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", glassvi.metrics.__all__)
def test_public_functions_documented(name):
    func = getattr(glassvi.metrics, name)
    doc = inspect.getdoc(func)
    for section in ("Parameters", "Returns", "Examples"):
        assert section in doc, f"{name} lacks a {section} section"
