"""Smoke tests: each plot writes one valid PNG, atomically (no temporary file left behind)."""

from __future__ import annotations

import os

import matplotlib.image
import pytest
import torch

from raybm.metrics.plots import pca_plot, sample_grid, score_curve_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, folder) -> None:
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10
    assert sorted(os.listdir(folder)) == [os.path.basename(path)]


def test_sample_grid(tmp_path):
    x = torch.randint(0, 2, (23, 8 * 8), generator=torch.Generator().manual_seed(0))
    path = tmp_path / "grid.png"
    sample_grid(x.to(torch.uint8), (8, 8), path, ncol=5)
    _check_png(path, tmp_path)
    with pytest.raises(ValueError):
        sample_grid(x.to(torch.uint8), (7, 8), tmp_path / "bad.png")


def test_pca_plot_binary_and_categorical(tmp_path):
    gen = torch.Generator().manual_seed(1)
    for n_states, name in ((2, "pca_bin.png"), (4, "pca_cat.png")):
        folder = tmp_path / name.removesuffix(".png")
        data = torch.randint(0, n_states, (120, 20), generator=gen).to(torch.uint8)
        samples = torch.randint(0, n_states, (80, 20), generator=gen).to(torch.uint8)
        pca_plot(data, samples, folder / name)
        _check_png(folder / name, folder)


def test_score_curve_plot_overwrites(tmp_path):
    t_list = [1, 10, 100, 1000]
    curves = {"aai": [0.9, 0.7, 0.55, 0.5], "entropy_ratio": [1.5, 1.2, 1.0, 1.0],
              "first_moment_error": [0.2, 0.1, 0.05, 0.04]}
    path = tmp_path / "curve.png"
    score_curve_plot(curves, t_list, path)
    first = path.read_bytes()
    score_curve_plot({"aai": [0.5, 0.5, 0.5, 0.5]}, [0, 10, 100, 1000], path)  # replaced
    assert path.read_bytes() != first
    _check_png(path, tmp_path)
    with pytest.raises(ValueError):
        score_curve_plot({"aai": [0.5]}, t_list, tmp_path / "bad.png")
    assert sorted(os.listdir(tmp_path)) == ["curve.png"]  # the failed call left nothing
