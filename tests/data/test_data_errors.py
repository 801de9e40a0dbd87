"""One test per kind of bad input: each must raise InputError whose one-line message names
the file and the field (line, record, column, ...) that is wrong."""

from __future__ import annotations

import gzip
import struct

import numpy as np

from raybm.data.csvaln import load_csv_alignment
from raybm.data.fasta import load_fasta
from raybm.data.hapt import load_hapt
from raybm.data.idx import load_idx
from raybm.data.matrix import load_matrix

PANEL = "sample\tpop\tsuper_pop\tgender\nHG1\tGBR\tEUR\tmale\nHG2\tYRI\tAFR\tfemale\n"


def write(path, text: str):
    path.write_text(text)
    return path


def test_truncated_idx(tmp_path, input_error):
    path = tmp_path / "images.gz"
    # The header announces 5 images of 4x4 but only 3.5 images follow.
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 5, 4, 4) + bytes(56)))
    with input_error(path, "length") as caught:
        load_idx(path)
    assert "truncated" in str(caught.value)


def test_wrong_magic_number(tmp_path, input_error):
    path = tmp_path / "labels-as-images"
    path.write_bytes(struct.pack(">II", 2049, 3) + bytes(3))  # a valid IDX1 labels file
    with input_error(path, "magic number") as caught:
        load_idx(path)
    assert "2051" in str(caught.value)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with input_error(junk, "magic number"):
        load_idx(junk)


def test_labels_of_the_wrong_length(tmp_path, input_error):
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.write_bytes(struct.pack(">IIII", 2051, 4, 2, 2) + bytes(16))
    labels.write_bytes(struct.pack(">II", 2049, 3) + bytes(3))
    with input_error(labels, "count") as caught:
        load_idx(images, labels)
    assert "3 labels for 4 images" in str(caught.value)


def test_ragged_matrix(tmp_path, input_error):
    path = write(tmp_path / "m.txt", "0 1 1\n1 0 1\n1 0\n")
    with input_error(path, "line 3") as caught:
        load_matrix(path)
    assert "ragged" in str(caught.value)


def test_ragged_hapt(tmp_path, input_error):
    path = write(tmp_path / "h.hapt", "Real HG1_A 0 1 1\nReal HG1_B 0 1\n")
    with input_error(path, "line 2"):
        load_hapt(path)


def test_non_binary_values_in_hapt(tmp_path, input_error):
    path = tmp_path / "h.hapt.gz"
    path.write_bytes(gzip.compress(b"Real HG1_A 0 1 1\nReal HG1_B 0 2 1\n"))
    with input_error(path, "line 2") as caught:
        load_hapt(path)
    assert "'2'" in str(caught.value) and "SNP 2" in str(caught.value)


def test_empty_fasta(tmp_path, input_error):
    path = write(tmp_path / "empty.fasta", "\n\n")
    with input_error(path, "records"):
        load_fasta(path)


def test_unequal_aligned_lengths(tmp_path, input_error):
    # After removing the inserts (lower case, '.') seq2 keeps 5 match columns, seq1 4.
    path = write(tmp_path / "a.a2m", ">seq1\nAC-D..\n>seq2\nACaDE.-\n")
    with input_error(path, "record 'seq2'") as caught:
        load_fasta(path)
    assert "5 aligned columns" in str(caught.value)


def test_unknown_letters(tmp_path, input_error):
    path = write(tmp_path / "a.fasta", ">ok\nACDE\n>bad one\nAC*E\n")
    with input_error(path, "record 'bad'") as caught:
        load_fasta(path)
    assert "'*'" in str(caught.value) and "column 3" in str(caught.value)
    digits = write(tmp_path / "b.fasta", ">r1\nACGU\n>r2\nAC1U\n")
    with input_error(digits, "record 'r2'"):
        load_fasta(digits, alphabet="rna")


def test_missing_column_in_csv(tmp_path, input_error):
    path = write(tmp_path / "a.csv", "header,seq,label\nr1,ACGU,1\n")
    with input_error(path, "column 'sequence'"):
        load_csv_alignment(path)
    no_label = write(tmp_path / "b.csv", "header,sequence\nr1,ACGU\n")
    with input_error(no_label, "column 'label'"):
        load_csv_alignment(no_label)


def test_haplotype_missing_from_panel(tmp_path, input_error):
    hapt = write(tmp_path / "h.hapt", "Real HG1_A 0 1\nReal HG3_B 1 1\nReal HG4_A 1 0\n")
    panel = write(tmp_path / "p.panel", PANEL)
    with input_error(panel, "sample 'HG3'") as caught:
        load_hapt(hapt, panel)
    message = str(caught.value)
    assert "HG3_B" in message and str(hapt) in message and "1 more" in message


def test_panel_missing_column(tmp_path, input_error):
    hapt = write(tmp_path / "h.hapt", "Real HG1_A 0 1\n")
    panel = write(tmp_path / "p.panel", "sample\tpop\tgender\nHG1\tGBR\tmale\n")
    with input_error(panel, "column 'super_pop'"):
        load_hapt(hapt, panel)


def test_negative_values_in_matrix(tmp_path, input_error):
    path = write(tmp_path / "m.txt", "0 1\n1 -1\n")
    with input_error(path, "line 2") as caught:
        load_matrix(path)
    assert "negative" in str(caught.value)
    npz = tmp_path / "m.npz"
    np.savez(npz, x=np.array([[0, 1], [-2, 1]]))
    with input_error(npz, "x") as caught:
        load_matrix(npz)
    assert "negative" in str(caught.value)
