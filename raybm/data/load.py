"""Loading a run's data from its ``data:`` config section: the file or built-in set it
names, subsampled, split into train and test, in the shape the model takes."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from raybm.config import BUILT_IN_FORMATS, Config
from raybm.data.dataset import Dataset
from raybm.errors import InputError
from raybm.streams import generator


def load_data(config: Config) -> tuple[Dataset, Dataset]:
    """The train and test sets the config names (digits when ``data.path`` is unset), in the
    shape the model takes (vectors for dense energies, images for conv)."""
    from raybm.data.split import train_test_split

    dataset = _load_dataset(config)
    d = config.data
    if d.max_samples is not None and dataset.n_samples > d.max_samples:
        g = generator(d.split_seed, "subsample")
        dataset = dataset.subset(torch.randperm(dataset.n_samples, generator=g)[: d.max_samples])
    dataset = _model_shaped(config, dataset)
    if d.test_fraction == 0:
        return dataset, dataset.subset(torch.arange(0))
    return train_test_split(dataset, d.test_fraction, d.split_seed)


def _load_dataset(config: Config) -> Dataset:
    d = config.data
    if d.path is not None and d.format in BUILT_IN_FORMATS:
        raise InputError("data.path", "", f"format {d.format} is built in and takes no path")
    if d.path is None and d.format in ("floats", "mnist"):
        raise InputError("data.path", "", f"format {d.format} reads a file: set data.path")
    for key, value in (("labels_path", d.labels_path), ("panel_path", d.panel_path)):
        if value is not None and d.path is None:
            raise InputError(f"data.{key}", "", "goes with a data.path (the built-in data "
                             "sets have their own labels)")
    if d.format == "bimodal":
        from raybm.data.synthetic import bimodal_prototypes, prototype_mixture

        s = d.synthetic
        return prototype_mixture(generator(s.seed, "synthetic"), s.n_samples,
                                 bimodal_prototypes(s.n_visible),
                                 torch.tensor(s.weights, dtype=torch.float64), s.flip_prob)
    if d.format == "gaussian_mixture":
        from raybm.data.continuous import gaussian_mixture, mixture_means

        m = d.mixture
        return gaussian_mixture(generator(m.seed, "synthetic"), m.n_samples,
                                mixture_means(m.centers, m.dim), torch.tensor(m.weights),
                                m.std if m.stds is None else m.stds)
    if d.format == "toy2d":
        from raybm.data.toy2d import toy2d

        return toy2d(d.toy.name, generator(d.toy.seed, "synthetic"), d.toy.n_samples,
                     d.toy.weights)
    if d.path is None:
        from raybm.data.digits import load_digits

        return load_digits(threshold=d.threshold)
    if not Path(d.path).exists():
        raise InputError(d.path, "data.path", "file not found")
    if d.format == "mnist":
        from raybm.data.inspect import idx_labels_beside
        from raybm.data.mnist_float import load_mnist_float

        labels = d.labels_path or idx_labels_beside(d.path)
        return load_mnist_float(d.path, labels, d.digits, d.proportions,
                                gen=generator(d.split_seed, "subsample"))
    if d.format == "floats" or (d.format == "auto" and config.model.kind != "rbm"):
        from raybm.data.floats import load_float_matrix

        return load_float_matrix(d.path)
    from raybm.data.inspect import load_any

    return load_any(
        d.path, format=d.format, labels_path=d.labels_path, panel_path=d.panel_path,
        threshold=d.threshold, alphabet=d.alphabet, nonstandard=d.nonstandard,
        reweight_identity=d.reweight_identity, label=d.label,
    )


def _model_shaped(config: Config, dataset: Dataset) -> Dataset:
    """Continuous samples in the shape the model takes: flat vectors for a dense energy
    (``(n, 1, 28, 28)`` images become ``(n, 784)``), square images for the conv energy
    (``(n, 784)`` rows become ``(n, 1, 28, 28)``); one-line errors naming the data."""
    kind = config.model.kind
    if kind == "rbm" or not dataset.continuous:
        return dataset
    from raybm.data.dataset import grey_image_side
    from raybm.data.floats import check_event_shape

    where = dataset.source or "data.path"
    shape = dataset.event_shape
    if kind in ("mlp", "gaussian_mixture"):
        return check_event_shape(dataset, (math.prod(shape),), where, f"a {kind} model")
    if len(shape) == 3 and shape[1] == shape[2]:  # any number of channels
        return dataset
    side = grey_image_side(shape)
    if side is not None:
        return check_event_shape(dataset, (1, side, side), where, "a conv model")
    raise InputError(where, "model.kind", f"conv takes square images (channels, side, side) "
                     f"or flattened square ones, not samples of shape {shape}")
