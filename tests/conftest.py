import sys
from pathlib import Path

import numpy as np
import pytest
import scvi

# make the test helpers (tests/tenx.py) importable from every test folder
sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0
    np.random.seed(0)  # noqa: NPY002 - seeds code that uses the legacy global RNG


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
