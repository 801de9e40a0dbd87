"""Integer matrices from .npz / .txt / .parquet, and the atomic Parquet writer."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from raybm.data import matrix as matrix_module
from raybm.data.dataset import Dataset
from raybm.data.matrix import load_matrix, save_matrix_parquet


def test_npz_with_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([[0, 1, 1], [1, 0, 0]], dtype=np.int64), labels=np.array([7, 3]))
    data = load_matrix(path)
    assert data.x.dtype == torch.uint8 and data.x.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert data.n_states == 2
    assert data.label_names == ["3", "7"] and data.labels.tolist() == [1, 0]


def test_npz_single_array_any_name_and_images(tmp_path):
    path = tmp_path / "d.npz"
    images = np.zeros((4, 2, 3), dtype=np.uint8)
    images[1, 1, 2] = 3
    np.savez(path, images=images)
    data = load_matrix(path)
    assert data.x.shape == (4, 6) and data.n_states == 4
    assert data.info["sample_shape"] == [2, 3]


def test_npz_integral_floats_and_bools(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x=np.array([[0.0, 2.0]]))
    assert load_matrix(path).n_states == 3
    np.savez(path, x=np.array([[True, False]]))
    assert load_matrix(path).n_states == 2


def test_txt_with_comments_and_gzip(tmp_path):
    text = "# a comment\n0 1 2\n\n2 2 0\n"
    plain = tmp_path / "m.txt"
    plain.write_text(text)
    zipped = tmp_path / "m.txt.gz"
    zipped.write_bytes(gzip.compress(text.encode()))
    for path in (plain, zipped):
        data = load_matrix(path)
        assert data.x.tolist() == [[0, 1, 2], [2, 2, 0]] and data.n_states == 3


def test_parquet_round_trip_keeps_everything(tmp_path):
    data = Dataset(
        x=torch.tensor([[0, 1, 2], [3, 0, 1], [1, 1, 1]], dtype=torch.uint8),
        n_states=5,  # more than max + 1: only the metadata can carry this
        labels=torch.tensor([2, 0, 1]),
        label_names=["zeta", "alpha", "mid"],  # deliberately not sorted
        weights=torch.tensor([0.5, 1.0, 0.25]),
        alphabet="-ACGU",
        sub_labels=torch.tensor([0, 0, 1]),
        sub_label_names=["a", "b"],
    )
    path = tmp_path / "d.parquet"
    save_matrix_parquet(data, path)
    back = load_matrix(path)
    assert torch.equal(back.x, data.x) and back.n_states == 5 and back.alphabet == "-ACGU"
    assert back.label_names == data.label_names and torch.equal(back.labels, data.labels)
    assert back.sub_label_names == ["a", "b"] and torch.equal(back.sub_labels, data.sub_labels)
    assert torch.equal(back.weights, data.weights)
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]  # no temporary file left


def test_foreign_parquet_with_label_column(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"a": [0, 1, 1], "b": [1, 1, 0], "label": [10, 9, 10]}), path)
    data = load_matrix(path)
    assert data.x.tolist() == [[0, 1], [1, 1], [1, 0]]
    assert data.label_names == ["9", "10"] and data.labels.tolist() == [1, 0, 1]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    good = Dataset(x=torch.ones(2, 3, dtype=torch.uint8))
    save_matrix_parquet(good, path)
    before = path.read_bytes()

    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(matrix_module.pq, "write_table", crash)
    with pytest.raises(OSError):
        save_matrix_parquet(Dataset(x=torch.zeros(5, 3, dtype=torch.uint8)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


@settings(max_examples=25, deadline=None, database=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6)),
       st.sampled_from(["npz", "txt", "parquet"]))
def test_any_matrix_round_trips(x, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m.{fmt}"
        if fmt == "npz":
            np.savez(path, x=x)
        elif fmt == "txt":
            path.write_text("\n".join(" ".join(map(str, row)) for row in x.tolist()) + "\n")
        else:
            n_states = 2 if x.max() <= 1 else int(x.max()) + 1
            save_matrix_parquet(Dataset(x=torch.from_numpy(x.copy()), n_states=n_states), path)
        data = load_matrix(path)
    assert np.array_equal(data.x.numpy(), x)
    assert data.n_states == (2 if x.max() <= 1 else int(x.max()) + 1)


@pytest.mark.parametrize("token", ["1.5", "a", "0x1", "+-3"])
def test_non_integer_text(tmp_path, token, input_error):
    path = tmp_path / "m.txt"
    path.write_text(f"0 1\n1 {token}\n")
    with input_error(path, "line 2") as caught:
        load_matrix(path)
    assert "non-integer" in str(caught.value)


def test_non_integer_npz(tmp_path, input_error):
    path = tmp_path / "m.npz"
    np.savez(path, x=np.array([[0.0, 0.5]]))
    with input_error(path, "x"):
        load_matrix(path)


def test_value_too_large(tmp_path, input_error):
    path = tmp_path / "m.txt"
    path.write_text("0 300\n")
    with input_error(path, "x"):
        load_matrix(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_text(tmp_path, text, input_error):
    path = tmp_path / "m.txt"
    path.write_text(text)
    with input_error(path, "empty"):
        load_matrix(path)


def test_npz_problems(tmp_path, input_error):
    path = tmp_path / "m.npz"
    np.savez(path, a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with input_error(path, "'x'"):
        load_matrix(path)
    np.savez(path, x=np.zeros(3))
    with input_error(path, "x"):
        load_matrix(path)
    np.savez(path, x=np.zeros((0, 3)))
    with input_error(path, "empty"):
        load_matrix(path)
    np.savez(path, x=np.zeros((2, 2)), labels=np.array([1, 2, 3]))
    with input_error(path, "labels"):
        load_matrix(path)
    path.write_bytes(b"not a zip")
    with input_error(path, "npz"):
        load_matrix(path)


def test_parquet_problems(tmp_path, input_error):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"a": ["x", "y"]}), path)
    with input_error(path, "column 'a'"):
        load_matrix(path)
    pq.write_table(pa.table({"a": [0, None]}), path)
    with input_error(path, "column 'a'"):
        load_matrix(path)
    pq.write_table(pa.table({"a": [0, -1]}), path)
    with input_error(path, "negative"):
        load_matrix(path)
    path.write_bytes(b"garbage")
    with input_error(path, "parquet"):
        load_matrix(path)


def test_unknown_suffix(tmp_path, input_error):
    path = tmp_path / "m.xlsx"
    path.write_text("0 1\n")
    with input_error(path, "format"):
        load_matrix(path)


def test_save_refuses_inconsistent_dataset(tmp_path, input_error):
    path = tmp_path / "bad.parquet"
    with input_error(path, "n_states"):
        save_matrix_parquet(Dataset(x=torch.tensor([[0, 2]], dtype=torch.uint8), n_states=2), path)
    assert not path.exists()
