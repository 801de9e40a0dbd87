"""Smoke test of benchmarks/reproduce_ff.py: a tiny F&F-10 vs PCD-100 run on real HGD rows.

Skipped when the shared data sets (../shared/data, beside the repository) are absent.
"""

from __future__ import annotations


import pytest
import torch

from benchmarks.reproduce_ff import DATA_FILES, TABLE_HEADER, main
from tests.conftest import SHARED_DATA



def _need_data(dataset: str) -> None:
    missing = [rel for rel in DATA_FILES[dataset].values() if not (SHARED_DATA / rel).is_file()]
    if missing:
        pytest.skip(f"real data not found under {SHARED_DATA}: {', '.join(missing)} "
                    "(the shared data sets live beside the repository)")


def test_tiny_run_writes_the_table(tmp_path, capsys):
    _need_data("hgd")
    out = tmp_path / "RESULTS_ff.md"
    threads = torch.get_num_threads()
    code = main(["--data-root", str(SHARED_DATA), "--datasets", "hgd", "--updates", "10",
                 "--set", "data.max_samples=200", "--set", "train.eval_samples=100",
                 "--set", "train.eval_k_long=100", "--output", str(out)])
    assert code == 0
    assert torch.get_num_threads() == threads  # main restores the thread setting
    text = out.read_text()
    assert TABLE_HEADER in text
    rows = [line for line in text.splitlines() if line.startswith("| hgd |")]
    assert [row.split(" | ")[1] for row in rows] == ["F&F-10", "PCD-100"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == TABLE_HEADER.count("|") - 1
        assert cells[2] == "10"  # updates
        assert all(0.0 <= float(c) <= 1.0 for c in cells[5:10])  # accuracies, AAI t10
    assert "python benchmarks/reproduce_ff.py --data-root" in text
    assert "anchor" in text
    assert TABLE_HEADER in capsys.readouterr().out


def test_missing_data_exits_2(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path / "nowhere"), "--datasets", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "data files not found" in err and "t10k-images-idx3-ubyte.gz" in err
