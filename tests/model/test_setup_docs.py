import inspect

import pytest

from glassvi.model import LinearVI, ProgramVI


@pytest.mark.parametrize("cls", [LinearVI, ProgramVI])
@pytest.mark.parametrize("method", ["setup_anndata", "setup_mudata"])
def test_setup_docs_are_filled_and_complete(cls, method):
    func = getattr(cls, method)
    doc = inspect.getdoc(func)
    assert "%(" not in doc
    params = [p for p in inspect.signature(func).parameters if p not in ("kwargs",)]
    section = doc.split("Parameters\n----------\n")[1].split("\n\n")[0]
    documented = {line.split(" : ")[0] for line in section.splitlines() if not line[:1].isspace()}
    assert set(params) <= documented
