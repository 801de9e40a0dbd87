"""CSV alignments (header,sequence,label)."""

from __future__ import annotations

import pytest

from raybm.data.alphabet import RNA
from raybm.data.csvaln import load_csv_alignment

CSV = """header,sequence,label
r1,ACGU-,10.0
r2,ACGUN,9.0
r3,-CGUA,100.0
r4,ACGTA,9.0
"""


def states(text: str) -> list[int]:
    return [RNA.index(ch) for ch in text]


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "aln.csv"
    path.write_text(CSV)
    return path


def test_round_trip(csv_path):
    data = load_csv_alignment(csv_path)
    assert data.n_states == 5 and data.alphabet == RNA
    assert data.x.tolist() == [states("ACGU-"), states("ACGU-"), states("-CGUA"), states("ACGUA")]
    # Numeric labels sort numerically (9 < 10 < 100) and keep their text.
    assert data.label_names == ["9.0", "10.0", "100.0"]
    assert data.labels.tolist() == [1, 0, 2, 0]
    assert data.info["nonstandard"]["letters"] == {"N": 1}


def test_drop_keeps_labels_aligned(csv_path):
    data = load_csv_alignment(csv_path, nonstandard="drop")
    assert data.x.tolist() == [states("ACGU-"), states("-CGUA"), states("ACGUA")]
    assert [data.label_names[i] for i in data.labels] == ["10.0", "100.0", "9.0"]


def test_text_labels_and_no_labels(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sequence,label\nACGU,phylum B\nACGA,phylum A\n")
    data = load_csv_alignment(path)
    assert data.label_names == ["phylum A", "phylum B"] and data.labels.tolist() == [1, 0]
    assert load_csv_alignment(path, label_column=None).labels is None


def test_reweighting(csv_path):
    data = load_csv_alignment(csv_path, reweight_identity=0.8)
    assert data.weights is not None and data.info["n_eff"] == pytest.approx(float(data.weights.sum()))


def test_unequal_lengths(tmp_path, input_error):
    path = tmp_path / "u.csv"
    path.write_text("header,sequence,label\nr1,ACGU,1\nr2,ACG,1\n")
    with input_error(path, "record 'r2'"):
        load_csv_alignment(path)


def test_wrong_field_count(tmp_path, input_error):
    path = tmp_path / "f.csv"
    path.write_text("header,sequence,label\nr1,ACGU,1\nr2,ACGU\n")
    with input_error(path, "line 3"):
        load_csv_alignment(path)


def test_empty_label(tmp_path, input_error):
    path = tmp_path / "l.csv"
    path.write_text("header,sequence,label\nr1,ACGU,\n")
    with input_error(path, "line 2"):
        load_csv_alignment(path)


def test_empty_file_and_header_only(tmp_path, input_error):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with input_error(empty, "header"):
        load_csv_alignment(empty)
    header_only = tmp_path / "h.csv"
    header_only.write_text("header,sequence,label\n")
    with input_error(header_only, "rows"):
        load_csv_alignment(header_only)
