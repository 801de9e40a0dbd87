"""PNG figures for the generation metrics: sample grids, PCA projections, score curves.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), not
through ``pyplot``: no global backend switch, no figure registry to leak from, safe in Ray
workers without a display. Every file is written to a temporary name in the target folder and
moved into place with ``os.replace``, so a reader (a tracking UI, a concurrent job) never sees
half a PNG.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raybm.metrics.generation import features, infer_n_states, principal_axes

# Where each score is perfect, drawn as a dashed line on its panel.
_IDEAL = {"aa_truth": 0.5, "aa_syn": 0.5, "aai": 0.5, "entropy_ratio": 1.0}


def sample_grid(
    samples: torch.Tensor,
    shape: tuple[int, int],
    path: str | os.PathLike,
    ncol: int = 10,
    value_range: tuple[float, float] | None = None,
) -> None:
    """Tile ``samples (n, N)`` as ``rows x cols`` images, ``ncol`` per row of the grid.

    States (uint8) are drawn in grey levels from 0 (black) to the largest state (white);
    continuous pixels from ``value_range[0]`` (black) to ``value_range[1]`` (white), clipped.
    Images are separated by one-pixel mid-grey lines.
    """
    x = np.asarray(torch.as_tensor(samples).cpu(), dtype=np.float64)
    rows, cols = shape
    if x.ndim != 2 or x.shape[1] != rows * cols:
        raise ValueError(f"samples of shape {x.shape} are not images of shape {shape}")
    n = len(x)
    ncol = max(1, min(ncol, n))
    nrow = max(1, -(-n // ncol))
    if value_range is not None:
        low, high = value_range
        x = np.clip((x - low) / (high - low), 0.0, 1.0)
    else:
        x = x / max(1.0, float(x.max()) if n else 1.0)
    mosaic = np.full((nrow * (rows + 1) + 1, ncol * (cols + 1) + 1), 0.5)
    for i, img in enumerate(x.reshape(n, rows, cols)):
        top_left = divmod(i, ncol)
        r0, c0 = 1 + top_left[0] * (rows + 1), 1 + top_left[1] * (cols + 1)
        mosaic[r0 : r0 + rows, c0 : c0 + cols] = img
    height = 8.0 * mosaic.shape[0] / mosaic.shape[1]
    fig = Figure(figsize=(8.0, max(1.0, height)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    _save(fig, path)


def pca_plot(
    data: torch.Tensor,
    samples: torch.Tensor,
    path: str | os.PathLike,
    n_states: int | None = None,
) -> None:
    """Scatter data and samples projected on the data's top two principal components (of the
    one-hot features for categorical data), the F&F view of mode coverage."""
    data, samples = torch.as_tensor(data), torch.as_tensor(samples)
    n_states = n_states or infer_n_states(data, samples)
    mean, axes, variances = principal_axes(data, 2, n_states)
    total = float(torch.linalg.vector_norm(features(data, n_states) - mean) ** 2 / len(data))
    proj_d = ((features(data, n_states) - mean) @ axes).numpy()
    proj_s = ((features(samples, n_states) - mean) @ axes).numpy()
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot()
    ax.scatter(proj_d[:, 0], proj_d[:, 1], s=4, alpha=0.4, color="0.4", label="data")
    ax.scatter(proj_s[:, 0], proj_s[:, 1], s=4, alpha=0.4, color="tab:red", label="samples")
    for i, axis_label in enumerate((ax.set_xlabel, ax.set_ylabel)):
        share = float(variances[i]) / total if total > 0 else 0.0
        axis_label(f"PC{i + 1} ({100 * share:.1f}% of data variance)")
    ax.legend(loc="best", markerscale=3)
    fig.tight_layout()
    _save(fig, path)


def score_curve_plot(
    curves: Mapping[str, Sequence[float]],
    t_list: Sequence[int],
    path: str | os.PathLike,
) -> None:
    """One panel per score against the number of Gibbs sweeps ``t_G`` (log axis when they span
    more than a decade, symlog if one is 0), with the ideal value dashed."""
    names = list(curves)
    if not names:
        raise ValueError("no curves to plot")
    t = np.asarray(t_list, dtype=np.float64)
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig = Figure(figsize=(3.2 * ncol, 2.6 * nrow))
    # t_G spans decades in F&F's curves; symlog keeps a t_G = 0 point on a log-like axis.
    x_scale = "linear"
    if len(t) > 1 and t.min() >= 0 and t.max() > 10 * max(t.min(), 1.0):
        x_scale = "log" if t.min() > 0 else "symlog"
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        values = np.asarray(curves[name], dtype=np.float64)
        if len(values) != len(t):
            raise ValueError(f"curve {name!r} has {len(values)} points for {len(t)} times")
        ax.plot(t, values, marker="o", markersize=3)
        ax.axhline(_IDEAL.get(name, 0.0), color="0.5", linestyle="--", linewidth=0.8)
        if x_scale == "symlog":
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            ax.set_xscale(x_scale)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("Gibbs sweeps $t_G$", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def training_curves_plot(
    history: Mapping[str, Sequence[tuple[int, float]]],
    path: str | os.PathLike,
    events: Sequence[int] = (),
) -> None:
    """One panel per logged metric against the update (e.g. Jarzynski's ESS, running log Z,
    weight entropy and live test log-likelihood), with resampling updates as faint lines."""
    names = [n for n in history if history[n]]
    if not names:
        raise ValueError("no curves to plot")
    ncol = min(2, len(names))
    nrow = -(-len(names) // ncol)
    fig = Figure(figsize=(4.2 * ncol, 2.6 * nrow))
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        steps, values = zip(*sorted(history[name]))
        for step in events:
            ax.axvline(step, color="0.85", linewidth=0.6)
        ax.plot(steps, values, linewidth=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def density_plot(
    log_density: np.ndarray,
    extent: tuple[float, float, float, float],
    data: np.ndarray,
    path: str | os.PathLike,
    samples: np.ndarray | None = None,
    name: str = "",
) -> None:
    """A 2-D model density ``exp(log_density)`` on its grid (``(ny, nx)`` over ``extent =
    (x0, x1, y0, y1)``) as a heat map, with up to 2,000 data points (white) and model samples
    (red) overlaid; beside it the log-density, where the tails and spurious modes show.
    ``name`` prefixes the titles (whose density: e.g. "flow")."""
    fig = Figure(figsize=(9.0, 4.2))
    prefix = f"{name} " if name else ""
    for i, (values, title) in enumerate([(np.exp(log_density), f"{prefix}density"),
                                         (log_density, f"{prefix}log density")]):
        ax = fig.add_subplot(1, 2, i + 1)
        lo = np.percentile(values, 1) if i else 0.0
        ax.imshow(values, origin="lower", extent=extent, cmap="viridis", vmin=lo,
                  aspect="auto", interpolation="nearest")
        ax.scatter(data[:2000, 0], data[:2000, 1], s=1.0, c="white", alpha=0.5,
                   linewidths=0)
        if samples is not None:
            ax.scatter(samples[:2000, 0], samples[:2000, 1], s=1.0, c="red", alpha=0.5,
                       linewidths=0)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(title + ("" if samples is None else
                              " (data white, samples red)"), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def density_panels(
    rows: Sequence[Sequence[tuple[str, np.ndarray]]],
    extent: tuple[float, float, float, float],
    path: str | os.PathLike,
) -> None:
    """Densities side by side: ``rows`` of ``(title, log_density)`` panels, each a heat map of
    ``exp(log_density)`` on its grid over ``extent`` (one scale per panel: where the mass
    is, not how peaked; e.g. one row per data set, one panel per method)."""
    ncol = max(len(r) for r in rows)
    fig = Figure(figsize=(2.4 * ncol, 2.5 * len(rows)))
    for i, row in enumerate(rows):
        for j, (title, log_density) in enumerate(row):
            ax = fig.add_subplot(len(rows), ncol, i * ncol + j + 1)
            ax.imshow(np.exp(log_density), origin="lower", extent=extent, cmap="viridis",
                      aspect="equal", interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig renders through it
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a plot is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
