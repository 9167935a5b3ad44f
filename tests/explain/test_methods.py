import pytest
from captum import attr

from glassvi.explain import (
    ATTRIBUTION_METHODS,
    CAPTUM_METHODS,
    DEFAULT_BASELINE,
    METHODS,
)
from glassvi.explain._methods import method_spec


def test_derived_tuples_follow_the_table():
    assert ATTRIBUTION_METHODS == tuple(METHODS)
    assert set(CAPTUM_METHODS) == {m for m, s in METHODS.items() if s.backend == "captum"}
    assert DEFAULT_BASELINE == {m: s.default_baseline for m, s in METHODS.items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_entries_are_runnable(name):
    spec = METHODS[name]
    assert spec.backend in ("captum", "shap")
    if spec.backend == "captum":
        assert hasattr(attr, spec.captum_class)
    # a method that needs a background distribution defaults to one
    if spec.needs_background:
        assert spec.default_baseline == "background"
    # integrated over steps, or a delta computed from a baseline: both need a baseline
    if spec.uses_n_steps or spec.reports_delta:
        assert spec.default_baseline is not None


def test_unknown_method_is_refused_with_every_name():
    with pytest.raises(ValueError, match="Unknown explain method 'lime'") as err:
        method_spec("lime")
    assert all(name in str(err.value) for name in METHODS)
    assert "'weights'" in str(err.value)
