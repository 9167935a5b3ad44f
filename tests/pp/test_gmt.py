import gzip
import logging
from pathlib import Path

import pytest

from glassvi.pp import read_gmt, write_gmt

GENE_SETS = {
    "T cell activation": ["CD3E", "CD3D", "CD2", "CD28"],
    "B cell": ["MS4A1", "CD79A"],
    "empty set": [],
}


@pytest.mark.parametrize("name", ["sets.gmt", "sets.gmt.gz"])
def test_round_trip(tmp_path, name):
    path = tmp_path / name
    write_gmt(GENE_SETS, path, descriptions={"B cell": "B markers"})
    assert read_gmt(path) == GENE_SETS
    assert list(read_gmt(str(path))) == list(GENE_SETS)  # order kept, str path accepted
    raw = gzip.open(path, "rt").read() if name.endswith(".gz") else path.read_text()
    lines = raw.split("\n")
    assert lines[0] == "T cell activation\tna\tCD3E\tCD3D\tCD2\tCD28"
    assert lines[1] == "B cell\tB markers\tMS4A1\tCD79A"


def test_gzip_output_is_reproducible(tmp_path):
    write_gmt(GENE_SETS, tmp_path / "a.gmt.gz")
    first = (tmp_path / "a.gmt.gz").read_bytes()
    write_gmt(GENE_SETS, tmp_path / "a.gmt.gz")
    assert (tmp_path / "a.gmt.gz").read_bytes() == first


def test_messy_file(tmp_path, caplog):
    path = tmp_path / "messy.gmt"
    content = (
        "set one\tdesc with spaces\tA\tB\t\tC\t\t\r\n"
        "\r\n"
        "   \n"
        "set two\t\tB\tB\tD\tB\r\n"
        "set three\tno genes\n"
        "set four\tx\t A \tE\t\n"
    )
    path.write_bytes(content.encode())
    with caplog.at_level(logging.INFO, logger="glassvi.pp"):
        gene_sets = read_gmt(path)
    assert gene_sets == {
        "set one": ["A", "B", "C"],
        "set two": ["B", "D"],
        "set three": [],
        "set four": ["A", "E"],
    }
    assert "removed 2 duplicate gene entries from 1 gene sets" in caplog.text
    assert "'set two'" in caplog.text


def test_gzip_input_with_crlf(tmp_path):
    path = tmp_path / "sets.gmt.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"a b\tdesc\tX\tY\r\nc\td\tZ\r\n")
    assert read_gmt(path) == {"a b": ["X", "Y"], "c": ["Z"]}


def test_line_with_one_field_names_the_line(tmp_path):
    path = tmp_path / "bad.gmt"
    path.write_text("ok\tdesc\tA\n\njust_a_name\nother\td\tB\n")
    with pytest.raises(ValueError, match=r"line 3: expected at least 2"):
        read_gmt(path)


def test_empty_name_names_the_line(tmp_path):
    path = tmp_path / "bad.gmt"
    path.write_text("ok\tdesc\tA\n\tdesc\tB\n")
    with pytest.raises(ValueError, match=r"line 2: the gene set name is empty"):
        read_gmt(path)


def test_duplicate_set_names_name_both_lines(tmp_path):
    path = tmp_path / "dup.gmt"
    path.write_text("a\td\tX\nb\td\tY\na\td\tZ\n")
    with pytest.raises(ValueError, match=r"'a' is defined twice, on lines 1 and 3"):
        read_gmt(path)


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.gmt"
    with pytest.raises(FileNotFoundError, match="nope.gmt"):
        read_gmt(missing)


def test_write_rejects_tabs_and_strings(tmp_path):
    with pytest.raises(ValueError, match="tab or a line break"):
        write_gmt({"a": ["X\tY"]}, tmp_path / "x.gmt")
    with pytest.raises(ValueError, match="tab or a line break"):
        write_gmt({"a\nb": ["X"]}, tmp_path / "x.gmt")
    with pytest.raises(TypeError, match="single string"):
        write_gmt({"a": "CD3E"}, tmp_path / "x.gmt")


def test_hallmark(shared_data):
    hallmark = read_gmt(shared_data / "hallmark.gmt")
    assert len(hallmark) == 50
    assert len(set().union(*hallmark.values())) == 4383
    assert len(hallmark["HALLMARK_HYPOXIA"]) == 200
    assert hallmark["HALLMARK_TNFA_SIGNALING_VIA_NFKB"][:3] == ["JUNB", "CXCL2", "ATF3"]
    bundled = Path(__file__).resolve().parents[2] / "src/glassvi/data/_files/hallmark.gmt.gz"
    if bundled.is_file():
        assert read_gmt(bundled) == hallmark


def test_go_bp_names_with_spaces(shared_data):
    go = read_gmt(shared_data / "go_bp.gmt")
    assert len(go) == 5233
    assert all(" " in name for name in go)
    first = go["GO:0000002 mitochondrial genome maintenance"]
    assert len(first) == 31
    assert first[:3] == ["AKT3", "DNA2", "DNAJA3"]
    assert all(15 <= len(genes) <= 500 for genes in go.values())


def test_binary_or_wrongly_encoded_files_name_the_file(tmp_path):
    latin1 = tmp_path / "latin1.gmt"
    latin1.write_bytes("SET_\xe9\tdesc\tCD3E\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.gmt is not a UTF-8 text file"):
        read_gmt(latin1)
    binary = tmp_path / "model.gmt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"model\.gmt"):
        read_gmt(binary)
    zeros = tmp_path / "zeros.gmt"
    zeros.write_bytes(b"A\tB\x00\x00\tC\n")
    with pytest.raises(ValueError, match=r"zeros\.gmt, line 1: contains NUL bytes"):
        read_gmt(zeros)
    fake_gz = tmp_path / "sets.gmt.gz"
    fake_gz.write_text("SET\tdesc\tCD3E\n")
    with pytest.raises(ValueError, match=r"sets\.gmt\.gz could not be read as a gzip"):
        read_gmt(fake_gz)
