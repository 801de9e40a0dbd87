"""Haplotype files joined with a 1000 Genomes panel."""

from __future__ import annotations

import gzip

import pytest
import torch

from raybm.data.hapt import load_hapt, sample_of

# Trailing tabs as in the real panel file (it has two empty columns after the header).
PANEL = (
    "sample\tpop\tsuper_pop\tgender\t\t\n"
    "HG1\tGBR\tEUR\tmale\n"
    "HG2\tYRI\tAFR\tfemale\n"
    "HG3\tCHB\tEAS\tmale\n"
    "HG4\tFIN\tEUR\tfemale\n"
)
HAPT = (
    "Real HG1_A 1 0 1 1\n"
    "Real HG1_B 0 0 1 1\n"
    "Real HG2_A 1 1 1 1\n"
    "\n"  # blank lines are skipped
    "Real HG3_B 0 0 0 0\n"
    "Real HG4_A 0 1 0 1\n"
)


@pytest.fixture
def files(tmp_path):
    hapt = tmp_path / "toy.hapt.gz"
    hapt.write_bytes(gzip.compress(HAPT.encode()))
    panel = tmp_path / "toy.panel"
    panel.write_text(PANEL)
    return hapt, panel


def test_round_trip_with_panel(files):
    hapt, panel = files
    data = load_hapt(hapt, panel)
    assert data.x.dtype == torch.uint8 and data.n_states == 2
    assert data.x.tolist() == [[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1]]
    assert data.label_names == ["AFR", "EAS", "EUR"]  # sorted
    assert [data.label_names[i] for i in data.labels] == ["EUR", "EUR", "AFR", "EAS", "EUR"]
    assert data.sub_label_names == ["CHB", "FIN", "GBR", "YRI"]
    assert [data.sub_label_names[i] for i in data.sub_labels] == ["GBR", "GBR", "YRI", "CHB", "FIN"]
    assert data.info["tags"] == {"Real": 5}
    assert data.source == str(hapt)


def test_plain_file_without_panel(tmp_path):
    path = tmp_path / "toy.hapt"
    path.write_text(HAPT)
    data = load_hapt(str(path))
    assert data.x.shape == (5, 4) and data.labels is None and data.sub_labels is None


def test_label_pop(files):
    hapt, panel = files
    data = load_hapt(hapt, panel, label="pop")
    assert data.label_names == ["CHB", "FIN", "GBR", "YRI"]
    assert data.sub_labels is None


def test_unknown_label_column(files, input_error):
    hapt, panel = files
    with input_error(panel, "column 'continent'"):
        load_hapt(hapt, panel, label="continent")


def test_sample_of():
    assert sample_of("HG00096_A") == "HG00096" and sample_of("HG00096_B") == "HG00096"
    assert sample_of("NA12878") == "NA12878"


def test_empty_file(tmp_path, input_error):
    path = tmp_path / "empty.hapt.gz"
    path.write_bytes(gzip.compress(b""))
    with input_error(path, "haplotypes"):
        load_hapt(path)


def test_line_without_values(tmp_path, input_error):
    path = tmp_path / "short.hapt"
    path.write_text("Real HG1_A 0 1\nReal HG1_B\n")
    with input_error(path, "line 2"):
        load_hapt(path)


@pytest.mark.parametrize("token", ["01", "x", "1.0", "é"])
def test_multi_character_or_odd_values(tmp_path, token, input_error):
    path = tmp_path / "odd.hapt"
    path.write_text(f"Real HG1_A 0 1 1\nReal HG1_B 0 {token} 1\n", encoding="utf-8")
    with input_error(path, "line 2"):
        load_hapt(path)


def test_conflicting_panel_rows(files, input_error):
    hapt, panel = files
    panel.write_text(PANEL + "HG1\tYRI\tAFR\tmale\n")
    with input_error(panel, "line 6"):
        load_hapt(hapt, panel)


def test_not_utf8(tmp_path, input_error):
    path = tmp_path / "bin.hapt"
    path.write_bytes(b"Real HG1_A 0 1\n\xff\xfe 0 1\n")
    with input_error(path, "line 2"):
        load_hapt(path)
