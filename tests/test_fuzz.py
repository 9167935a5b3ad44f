"""Property-based fuzzing of the parsers and of input validation (hypothesis)."""

import string

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassvi._genome import parse_peak_names
from glassvi._validation import check_obs_values
from glassvi.pp import read_gmt, write_gmt

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s.strip())
gene_sets = st.dictionaries(field_text, st.lists(field_text, max_size=6, unique=True), max_size=6)


@FUZZ
@given(sets=gene_sets, gz=st.booleans())
def test_gmt_round_trip(tmp_path_factory, sets, gz):
    path = tmp_path_factory.mktemp("gmt") / ("sets.gmt.gz" if gz else "sets.gmt")
    write_gmt(sets, path)
    assert read_gmt(path) == sets


@FUZZ
@given(content=st.binary(max_size=300))
def test_gmt_arbitrary_bytes_parse_or_fail_naming_the_file(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("gmt") / "fuzzed.gmt"
    path.write_bytes(content)
    try:
        sets = read_gmt(path)
    except ValueError as err:
        assert "fuzzed.gmt" in str(err)
        return
    assert all(isinstance(genes, list) for genes in sets.values())
    assert all(name and "\t" not in name for name in sets)


chrom = st.text(alphabet=string.ascii_letters + string.digits + "_.", min_size=1, max_size=10)
position = st.integers(min_value=0, max_value=10**9)


@FUZZ
@given(c=chrom, start=position, length=st.integers(0, 10**6), sep=st.sampled_from(":-_"))
def test_peak_names_parse_back(c, start, length, sep):
    end_sep = "-" if sep == ":" else sep
    parsed = parse_peak_names([f"{c}{sep}{start}{end_sep}{start + length}"])
    assert parsed.loc[0, "chrom"] == c
    assert parsed.loc[0, "start"] == start and parsed.loc[0, "end"] == start + length


@FUZZ
@given(names=st.lists(st.text(max_size=20), max_size=8))
def test_peak_names_arbitrary_text_never_crash(names):
    parsed = parse_peak_names(names)
    assert len(parsed) == len(names)
    ok = parsed["chrom"].notna().to_numpy()
    assert np.all(np.isnan(parsed["start"].to_numpy()[~ok]))
    assert np.all(parsed["start"].to_numpy()[ok] >= 0)


scalar = st.one_of(
    st.none(),
    st.just(np.nan),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.text(max_size=4),
)
KEYS = {
    "batch_key": "batch_key",
    "labels_key": "labels_key",
    "categorical_covariate_keys": "categorical_covariate_keys",
    "continuous_covariate_keys": "continuous_covariate_keys",
    "size_factor_key": "size_factor_key",
}


@FUZZ
@given(
    values=st.lists(scalar, min_size=1, max_size=12),
    arg=st.sampled_from(sorted(KEYS)),
    categorical=st.booleans(),
)
def test_obs_validation_refuses_with_one_line_or_accepts(values, arg, categorical):
    column = pd.Series(values, dtype=object)
    if categorical:
        column = column.astype(str).where(column.notna(), None).astype("category")
    obs = pd.DataFrame({"col": column.to_numpy()})
    try:
        check_obs_values(obs, {arg: "col"}, "adata")
    except ValueError as err:
        message = str(err)
        assert "\n" not in message and f"{arg}='col'" in message
        return
    series = obs["col"]
    if arg in ("continuous_covariate_keys", "size_factor_key"):
        numbers = pd.to_numeric(series).to_numpy(dtype=float)
        assert np.all(np.isfinite(numbers))
        if arg == "size_factor_key":
            assert np.all(numbers > 0)
    else:
        assert series.notna().all()
        kinds = {type(v).__name__ for v in series.dropna()}
        if arg == "labels_key":
            assert kinds <= {"str"}


def _tiny(n_cells, n_genes, seed):
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(rng.poisson(1.0, (n_cells, n_genes)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    return adata


@FUZZ
@given(
    batch=st.lists(scalar, min_size=6, max_size=6),
    size_factor=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=6, max_size=6),
    use_mudata=st.booleans(),
)
def test_setup_registers_or_refuses_without_side_effects(batch, size_factor, use_mudata):
    from glassvi.model import LinearVI

    adata = _tiny(6, 5, seed=0)
    data = md.MuData({"rna": adata}) if use_mudata else adata
    data.obs["batch"] = pd.Series(batch, index=data.obs_names, dtype=object)
    data.obs["sf"] = np.asarray(size_factor)
    before = (list(data.obs.columns), set(data.uns))
    setup = LinearVI.setup_mudata if use_mudata else LinearVI.setup_anndata
    try:
        setup(data, batch_key="batch", size_factor_key="sf")
    except (ValueError, KeyError) as err:
        assert "\n" not in str(err)
        assert (list(data.obs.columns), set(data.uns)) == before
        return
    assert np.all(np.isfinite(data.obs["sf"].to_numpy(dtype=float)))
    assert data.obs["batch"].notna().all()


@pytest.mark.parametrize("n_cells", [0])
def test_empty_data_refused(n_cells):
    from glassvi.model import LinearVI

    with pytest.raises(ValueError, match="empty"):
        LinearVI.setup_anndata(_tiny(n_cells, 5, seed=0))
