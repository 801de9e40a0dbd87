"""IDX reading and MNIST-style loading on small files written here."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from raybm.data.idx import load_idx, read_idx, write_idx


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand (independent of write_idx): big-endian magic, dims, data."""
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_handwritten_idx_round_trip(tmp_path, pixels, compress):
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    images = idx_bytes(2051, pixels.shape, pixels.tobytes())
    label_data = idx_bytes(2049, labels.shape, labels.tobytes())
    if compress:
        images, label_data = gzip.compress(images), gzip.compress(label_data)
    # Names without .gz even when compressed: the magic bytes decide.
    img_path, lab_path = tmp_path / "images-idx3", tmp_path / "labels-idx1"
    img_path.write_bytes(images)
    lab_path.write_bytes(label_data)

    data = load_idx(str(img_path), lab_path, threshold=0.5)
    assert data.x.dtype == torch.uint8 and data.x.shape == (7, 12)
    expected = (pixels.reshape(7, 12) / 255.0 > 0.5).astype(np.uint8)
    assert np.array_equal(data.x.numpy(), expected)
    assert data.labels.tolist() == labels.tolist()
    # Label names run 0..max so that digit d is label d even if some digit is absent.
    assert data.label_names == [str(d) for d in range(10)]
    assert data.n_states == 2 and data.source == str(img_path)
    assert data.info["image_shape"] == [4, 3]


def test_threshold_moves_binarisation(tmp_path, pixels):
    path = write_idx(tmp_path / "img.gz", pixels)
    low, high = load_idx(path, threshold=0.1), load_idx(path, threshold=0.9)
    assert low.labels is None
    assert low.x.sum() > high.x.sum()
    assert np.array_equal(high.x.numpy(), (pixels.reshape(7, -1) / 255.0 > 0.9).astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_read_idx_any_type(tmp_path, dtype, name):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    back = read_idx(write_idx(tmp_path / name, array))
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_write_idx_is_byte_exact(tmp_path, pixels):
    path = write_idx(tmp_path / "x.idx", pixels)
    assert path.read_bytes() == idx_bytes(2051, pixels.shape, pixels.tobytes())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.5, 2.0])
def test_threshold_outside_unit_interval(tmp_path, pixels, threshold, input_error):
    path = write_idx(tmp_path / "img", pixels)
    with input_error(path, "threshold"):
        load_idx(path, threshold=threshold)


def test_extra_bytes_after_data(tmp_path, pixels, input_error):
    path = tmp_path / "img"
    path.write_bytes(idx_bytes(2051, pixels.shape, pixels.tobytes() + b"\x00\x00"))
    with input_error(path, "length"):
        load_idx(path)


def test_truncated_gzip_stream(tmp_path, pixels, input_error):
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(2051, pixels.shape, pixels.tobytes()))[:-10])
    with input_error(path, "gzip"):
        load_idx(path)


def test_missing_file(tmp_path, input_error):
    with input_error(tmp_path / "nope.gz", "file not found"):
        load_idx(tmp_path / "nope.gz")
