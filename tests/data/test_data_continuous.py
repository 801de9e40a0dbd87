"""Continuous data: the 2-D toy sets, float matrices (.npy / .npz / .parquet), event-shape
checks, and MNIST as float images in [-1, 1]."""

from __future__ import annotations

import gzip
import io
import math
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raybm.data.dataset import Dataset
from raybm.data.floats import check_event_shape, load_float_matrix, save_float_matrix
from raybm.data.idx import read_idx
from raybm.data.mnist_float import class_counts, load_mnist_float
from raybm.data.toy2d import TOY2D, toy2d

N = 4000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def polar(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.norm(dim=1), torch.atan2(x[:, 1], x[:, 0])


def circular_distance(angle: torch.Tensor, period: float) -> torch.Tensor:
    """Distance of ``angle`` to the nearest multiple of ``period``."""
    phi = torch.remainder(angle, period)
    return torch.minimum(phi, period - phi)


# ---------------------------------------------------------------- toy sets


@pytest.mark.parametrize("name", list(TOY2D))
def test_toy_shape_dtype_finite_and_scale(name):
    data = toy2d(name, gen(), N + 3)  # an n not divisible by the number of parts
    assert data.x.shape == (N + 3, 2) and data.x.dtype == torch.float32
    assert data.n_states == 0 and data.continuous and data.event_shape == (2,)
    assert torch.isfinite(data.x).all()
    assert data.source == f"synthetic:{name}" and data.info["format"] == name
    # The common scale: (almost) everything inside [-4, 4]^2, and the set is not a dot.
    assert (data.x.abs() > 4).any(dim=1).float().mean() < 0.01
    assert (data.x.abs() > 5).sum() == 0
    assert (data.x.std(dim=0) > 0.5).all()


@pytest.mark.parametrize("name", list(TOY2D))
def test_toy_reproducible_by_seed(name):
    a, b, c = toy2d(name, gen(1), 500), toy2d(name, gen(1), 500), toy2d(name, gen(2), 500)
    assert a.x.numpy().tobytes() == b.x.numpy().tobytes()
    assert not torch.equal(a.x, c.x)
    if a.labels is not None:
        assert torch.equal(a.labels, b.labels)


def test_toy_draws_only_from_the_generator():
    """The global RNG neither influences the data nor is consumed by drawing it."""
    before = torch.get_rng_state()
    first = [toy2d(name, gen(3), 50).x for name in TOY2D]
    torch.rand(7)  # move the global stream
    second = [toy2d(name, gen(3), 50).x for name in TOY2D]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    torch.set_rng_state(before)
    state = torch.get_rng_state()
    for name in TOY2D:
        toy2d(name, gen(3), 50)
    assert torch.equal(state, torch.get_rng_state())


def test_toy_unknown_name_and_bad_size(input_error):
    with input_error("data.toy", "name") as caught:
        toy2d("9gaussians", gen(), 10)
    assert "9gaussians" in str(caught.value) and "2spirals" in str(caught.value)
    for bad in (0, -5, 2.5, True):
        with input_error("data.toy", "n_samples"):
            toy2d("rings", gen(), bad)


def test_toy_mixtures_take_unequal_weights_in_their_modes_order():
    """``data.toy.weights`` (1 : ... : 8 for 8gaussians, 0.1 / 0.9 for two_modes): each mode's
    share of the draws within 4 binomial standard errors, the normalised weights recorded for
    the mode metrics; the default draws are unchanged by the option."""
    weights = list(range(1, 9))
    data = toy2d("8gaussians", gen(), N, weights)
    expected = torch.tensor(weights, dtype=torch.float64) / 36
    assert data.info["weights"] == pytest.approx(expected.tolist())
    counts = torch.bincount(data.labels, minlength=8).double()
    assert ((counts / N - expected).abs() < 4 * (expected * (1 - expected) / N).sqrt()).all()
    two = toy2d("two_modes", gen(), N, [0.1, 0.9])
    assert two.info["weights"] == pytest.approx([0.1, 0.9])
    assert abs(float((two.labels == 0).double().mean()) - 0.1) < 4 * math.sqrt(0.09 / N)
    assert torch.equal(toy2d("8gaussians", gen(), 50).x,
                       toy2d("8gaussians", gen(), 50, [1.0] * 8).x)


def test_toy_weights_that_do_not_fit_are_one_line(input_error):
    with input_error("data.toy", "weights"):
        toy2d("rings", gen(), 10, [0.5, 0.5])
    with input_error("data.toy", "weights"):
        toy2d("8gaussians", gen(), 10, [0.5, 0.5])
    from raybm.config import load_config
    from raybm.errors import InputError

    for sets, said in ((["data.toy.name=moons", "data.toy.weights=[1, 2]"], "not moons"),
                       (["data.toy.name=two_modes", "data.toy.weights=[1, 2, 3]"],
                        "3 weights for the 2 modes"),
                       (["data.toy.name=two_modes", "data.toy.weights=[0, 1]"], "greater")):
        with pytest.raises(InputError, match="data.toy") as caught:
            load_config(None, ["data.format=toy2d", *sets])
        assert said in str(caught.value) and "\n" not in str(caught.value)


def test_eight_gaussians_clusters():
    data = toy2d("8gaussians", gen(), N)
    assert data.label_names == [str(k) for k in range(8)]
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = 2 * math.sqrt(2) * torch.stack([angles.cos(), angles.sin()], dim=1)
    nearest = torch.cdist(data.x.double(), centres).argmin(dim=1)
    # Neighbours are 2.16 apart, 3.06 std to the midline each way: ~0.22 % cross it.
    assert (nearest == data.labels).float().mean() > 0.995
    counts = torch.bincount(data.labels, minlength=8).double()
    se = math.sqrt(N * (1 / 8) * (7 / 8))
    assert ((counts - N / 8).abs() < 4 * se).all(), counts
    for k in range(8):
        members = data.x[data.labels == k].double()
        assert (members.mean(dim=0) - centres[k]).norm() < 0.06
        assert abs(members.std(dim=0).mean() - 0.5 / math.sqrt(2)) < 0.03


def test_two_modes_weight_fraction():
    n = 20_000
    data = toy2d("two_modes", gen(), n)
    assert data.label_names == ["0", "1"]
    minor = (data.labels == 0).double().mean().item()
    assert abs(minor - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n), minor
    # The modes are 8 std apart: the sign of x1 is the mode, and the centres and std are right.
    assert torch.equal(data.x[:, 0] > 0, data.labels == 1)
    for k, centre in enumerate(([-2.0, 0.0], [2.0, 0.0])):
        members = data.x[data.labels == k].double()
        assert (members.mean(dim=0) - torch.tensor(centre, dtype=torch.float64)).norm() < 0.05
        assert abs(members.std(dim=0).mean() - 0.5) < 0.03


def test_two_modes_other_weights():
    data = TOY2D["two_modes"](gen(), 8000, weights=(3.0, 1.0))
    assert data.info["weights"] == [0.75, 0.25]
    assert abs((data.labels == 0).double().mean().item() - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 8000)


def test_rings_radii_cluster():
    data = toy2d("rings", gen(), N)
    r, _ = polar(data.x)
    radii = torch.tensor([3.0, 2.25, 1.5, 0.75], dtype=torch.float64)
    dist = (r[:, None] - radii).abs()
    assert dist.min(dim=1).values.max() < 0.375  # half the gap between rings
    assert torch.bincount(dist.argmin(dim=1), minlength=4).tolist() == [N // 4] * 4
    # Shuffled: the first rows are not all from the outer ring.
    assert len(set(dist[:40].argmin(dim=1).tolist())) == 4


def test_moons_on_two_half_circles():
    data = toy2d("moons", gen(), N)
    u = (data.x.double() - torch.tensor([-1.0, -0.2], dtype=torch.float64)) / 2
    upper = (u.norm(dim=1) - 1).abs()
    lower = ((u - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs()
    assert torch.minimum(upper, lower).max() < 0.5  # noise 0.1: 5 std
    on_upper = upper < lower
    assert abs(on_upper.double().mean().item() - 0.5) < 0.03
    assert u[on_upper, 1].mean() > 0.5 and u[~on_upper, 1].mean() < 0.0


def test_swissroll_radius_follows_angle():
    r, theta = polar(toy2d("swissroll", gen(), N).x)
    # A point at t (cos t, sin t) / 5 has 5 r = t = theta mod 2 pi; uniform data gives ~pi/2.
    assert circular_distance(5 * r - theta, 2 * math.pi).median() < 1.0
    assert (r < 0.4).double().mean() < 0.01 and r.max() < 4.5 * math.pi / 5 + 1.0


def test_checkerboard_parity_and_balance():
    x = toy2d("checkerboard", gen(), N).x.double()
    assert (x.abs() <= 4).all()
    cell = torch.floor(x / 2).long()  # -2 .. 1 on each axis
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()  # only the dark squares
    counts = torch.bincount((cell[:, 0] + 2) * 4 + (cell[:, 1] + 2), minlength=16)
    dark = counts[counts > 0]
    assert len(dark) == 8
    assert ((dark.double() - N / 8).abs() < 4 * math.sqrt(N / 8 * 7 / 8)).all()


def test_pinwheel_arms():
    r, theta = polar(toy2d("pinwheel", gen(), N).x)
    # Arm k lies at angle -(2 pi k / 5 + 0.25 exp(r / 2)); uniform data gives ~0.31.
    assert circular_distance(-theta - 0.25 * torch.exp(r / 2), 2 * math.pi / 5).median() < 0.15
    assert abs(r.median() - 2.0) < 0.15


def test_two_spirals_phase():
    x = toy2d("2spirals", gen(), N).x
    r, theta = polar(x)
    # Spiral points (-t cos t, t sin t) / 3 have theta = pi - t, their mirrors -t: theta + 3 r
    # is a multiple of pi (up to jitter and noise); uniform data gives ~pi / 4.
    assert circular_distance(theta + 3 * r, math.pi).median() < 0.45
    assert x.double().mean(dim=0).norm() < 0.1  # the two spirals mirror each other


# ---------------------------------------------------------------- float matrices


def float_data(shape=(6, 3), labels=True, weights=True) -> Dataset:
    x = torch.randn(shape, generator=gen(5))
    x[0, ...] = -0.0  # bit-exact: the sign of zero survives
    return Dataset(
        x=x, n_states=0,
        labels=torch.tensor([2, 0, 1, 2, 0, 1][: shape[0]]) if labels else None,
        label_names=["b", "c", "a"] if labels else None,  # an order sorting would not give
        weights=torch.rand(shape[0], generator=gen(6)) if weights else None,
        source="test",
    )


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
@pytest.mark.parametrize("shape", [(6, 3), (6, 1, 4, 5)])
def test_round_trip_with_labels_and_weights(tmp_path, suffix, shape):
    data = float_data(shape)
    path = tmp_path / f"d{suffix}"
    save_float_matrix(path, data)
    back = load_float_matrix(path)
    assert same_bits(back.x, data.x) and back.n_states == 0
    assert torch.equal(back.labels, data.labels) and back.label_names == data.label_names
    assert same_bits(back.weights, data.weights)
    assert back.source == str(path) and back.info["format"] == suffix[1:]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("shape", [(6, 3), (6, 1, 4, 5)])
def test_round_trip_npy(tmp_path, shape):
    data = float_data(shape, labels=False, weights=False)
    path = tmp_path / "d.npy"
    save_float_matrix(path, data)
    assert same_bits(load_float_matrix(path).x, data.x)
    zipped = tmp_path / "d.npy.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert same_bits(load_float_matrix(zipped).x, data.x)


def test_save_refuses_what_a_format_cannot_hold(tmp_path, input_error):
    path = tmp_path / "d.npy"
    with input_error(path, "labels"):
        save_float_matrix(path, float_data())
    assert not path.exists()
    binary = Dataset(x=torch.zeros(2, 3, dtype=torch.uint8), n_states=2)
    with input_error(tmp_path / "b.npz", "x"):
        save_float_matrix(tmp_path / "b.npz", binary)
    with input_error(tmp_path / "d.csv", "format"):
        save_float_matrix(tmp_path / "d.csv", float_data())


def test_other_numeric_dtypes_become_float32(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.array([[0, 255], [7, 9]], dtype=np.uint8))
    data = load_float_matrix(path)
    assert data.x.dtype == torch.float32 and data.x.tolist() == [[0, 255], [7, 9]]
    assert data.info["array"] == "pixels" and data.info["dtype"] == "uint8"
    np.save(tmp_path / "d.npy", np.array([[0.1, 0.2]]))
    assert load_float_matrix(tmp_path / "d.npy").x.tolist() == [[np.float32(0.1), np.float32(0.2)]]


def test_npz_numeric_labels_sorted_numerically(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 2), dtype=np.float32), labels=np.array([10, 9, 10]))
    data = load_float_matrix(path)
    assert data.label_names == ["9", "10"] and data.labels.tolist() == [1, 0, 1]


def test_parquet_written_by_others(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.5, 2.5], "b": [1, 2], "label": ["x", "y"],
                             "weight": [1.0, 2.0]}), path)
    data = load_float_matrix(path)
    assert data.x.tolist() == [[1.5, 1.0], [2.5, 2.0]] and data.label_names == ["x", "y"]
    assert data.weights.tolist() == [1.0, 2.0]


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


BAD_NPY = {
    "nan": (np.array([[0.0, 1.0, 2.0], [3.0, np.nan, np.nan]]), "x", "NaN at index (1, 1)"),
    "inf": (np.array([[0.0, -np.inf]], dtype=np.float32), "x", "-inf at index (0, 1)"),
    "overflow": (np.array([[1.0, 1e300]]), "x", "overflows float32"),
    "ragged": (np.array([[1.0, 2.0], [3.0]], dtype=object), "x", "object array"),
    "strings": (np.array([["a", "b"]]), "x", "not a real number type"),
    "complex": (np.ones((2, 2), dtype=np.complex64), "x", "not a real number type"),
    "empty": (np.zeros((0, 3), dtype=np.float32), "x", "empty"),
    "no features": (np.zeros((4, 0), dtype=np.float32), "x", "empty"),
    "1-D": (np.arange(5, dtype=np.float32), "x", "shape (5,)"),
}


@pytest.mark.parametrize("case", list(BAD_NPY))
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_bad_arrays(tmp_path, input_error, case, suffix):
    array, field, words = BAD_NPY[case]
    path = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        path.write_bytes(npy_bytes(array, allow_pickle=array.dtype.hasobject))
    else:
        with open(path, "wb") as f:
            np.savez(f, x=array)
    with input_error(path, field) as caught:
        load_float_matrix(path)
    assert words in str(caught.value)


def test_pickled_npy_is_never_unpickled(tmp_path, input_error):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with input_error(path, "x") as caught:
        load_float_matrix(path)
    assert "pickle" in str(caught.value)
    raw = tmp_path / "raw.npy"  # a bare pickle, no .npy header at all
    raw.write_bytes(pickle.dumps(np.zeros((2, 2))))
    with input_error(raw, "npy"):
        load_float_matrix(raw)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".parquet"])
def test_unreadable_files(tmp_path, input_error, suffix):
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x93NUMPY\x01\x00garbage" if suffix == ".npy" else b"not a file at all")
    with input_error(garbage, suffix[1:]):
        load_float_matrix(garbage)
    with input_error(tmp_path / f"missing{suffix}", "path"):
        load_float_matrix(tmp_path / f"missing{suffix}")


def test_truncated_npy(tmp_path, input_error):
    path = tmp_path / "cut.npy"
    path.write_bytes(npy_bytes(np.ones((50, 4), dtype=np.float32))[:-10])
    with input_error(path, "npy"):
        load_float_matrix(path)


def test_bad_npz_companions(tmp_path, input_error):
    path = tmp_path / "d.npz"
    x = np.ones((3, 2), dtype=np.float32)
    np.savez(path, x=x, labels=np.array([1, 2]))
    with input_error(path, "labels"):
        load_float_matrix(path)
    np.savez(path, x=x, weights=np.array([1.0, -1.0, 1.0]))
    with input_error(path, "weights"):
        load_float_matrix(path)
    np.savez(path, a=x, b=x)
    with input_error(path, "x") as caught:
        load_float_matrix(path)
    assert "a, b" in str(caught.value)
    with input_error(tmp_path / "d.txt", "format"):
        load_float_matrix(tmp_path / "d.txt")


def test_bad_parquet(tmp_path, input_error):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [0.5, float("nan")]}), path)
    with input_error(path, "column 'b'") as caught:
        load_float_matrix(path)
    assert "NaN at index (1, 1)" in str(caught.value)
    pq.write_table(pa.table({"a": [1.0, None]}), path)
    with input_error(path, "column 'a'"):
        load_float_matrix(path)
    pq.write_table(pa.table({"a": ["1.0", "2.0"]}), path)
    with input_error(path, "column 'a'"):
        load_float_matrix(path)
    pq.write_table(pa.table({"label": ["x"]}), path)
    with input_error(path, "x"):
        load_float_matrix(path)


# ---------------------------------------------------------------- event shapes


def test_check_event_shape_reshapes_or_refuses(input_error):
    flat = Dataset(x=torch.arange(2 * 784, dtype=torch.float32).reshape(2, 784), n_states=0)
    image = check_event_shape(flat, (1, 28, 28), "model.event_shape")
    assert image.x.shape == (2, 1, 28, 28) and torch.equal(image.x.reshape(2, 784), flat.x)
    assert check_event_shape(image, (784,), "model").x.shape == (2, 784)
    assert check_event_shape(image, [1, 28, 28], "model") is image
    small = Dataset(x=torch.zeros(3, 5), n_states=0)
    with input_error("model.event_shape", "event_shape") as caught:
        check_event_shape(small, (1, 28, 28), "model.event_shape", what="a conv model")
    assert "data of shape (5,) per sample" in str(caught.value)
    assert "does not fit a conv model's (1, 28, 28)" in str(caught.value)
    binary = Dataset(x=torch.zeros(3, 4, dtype=torch.uint8), n_states=2)
    assert check_event_shape(binary, (4,), "model") is binary
    with input_error("model", "event_shape"):
        check_event_shape(binary, (2, 2), "model")


# ---------------------------------------------------------------- MNIST as floats


@pytest.fixture
def mnist(shared_file):
    return (shared_file("mnist/t10k-images-idx3-ubyte.gz"),
            shared_file("mnist/t10k-labels-idx1-ubyte.gz"))


def test_mnist_float_all(mnist):
    images_path, labels_path = mnist
    data = load_mnist_float(images_path, labels_path)
    pixels, digits = read_idx(images_path), read_idx(labels_path)
    assert data.x.shape == (10_000, 1, 28, 28) and data.x.dtype == torch.float32
    assert data.x.min() == -1.0 and data.x.max() == 1.0 and data.n_states == 0
    expected = torch.from_numpy(pixels[:3].astype(np.float32)) / 255 * 2 - 1
    assert torch.equal(data.x[:3, 0], expected)
    assert data.labels.tolist() == digits.tolist() and data.label_names == list("0123456789")


def test_mnist_float_digits_in_proportions(mnist):
    images_path, labels_path = mnist
    data = load_mnist_float(images_path, labels_path, digits=[2, 3, 6], proportions=[4, 2, 1],
                            gen=gen())
    pixels, digits = read_idx(images_path), read_idx(labels_path)
    counts = torch.bincount(data.labels, minlength=3).tolist()
    total = sum(counts)
    assert all(abs(c - p / 7 * total) <= 1 for c, p in zip(counts, (4, 2, 1))), counts
    assert counts[0] == int((digits == 2).sum())  # the limiting class is kept whole
    assert data.label_names == ["2", "3", "6"] and sorted(set(data.labels.tolist())) == [0, 1, 2]
    assert data.x.shape == (total, 1, 28, 28)
    assert data.x.min() >= -1 and data.x.max() <= 1
    # Each image really is one of its digit's: match the pixel bytes back to the file.
    by_digit = {d: {pixels[i].tobytes() for i in np.flatnonzero(digits == d)} for d in (2, 3, 6)}
    back = np.rint((data.x.numpy() + 1) / 2 * 255).astype(np.uint8)
    for image, label in zip(back, data.labels.tolist()):
        assert image[0].tobytes() in by_digit[(2, 3, 6)[label]]
    again = load_mnist_float(images_path, labels_path, [2, 3, 6], [4, 2, 1], gen=gen())
    other = load_mnist_float(images_path, labels_path, [2, 3, 6], [4, 2, 1], gen=gen(1))
    assert same_bits(again.x, data.x) and not torch.equal(other.x, data.x)


def test_mnist_float_cap_and_order(mnist):
    images_path, labels_path = mnist
    data = load_mnist_float(*mnist, digits=[6, 2], proportions=[1, 3], n_samples=401, gen=gen())
    assert torch.bincount(data.labels).tolist() == [100, 301]  # 100.25 : 300.75
    assert data.label_names == ["6", "2"]
    balanced = load_mnist_float(*mnist, digits=[0, 1], n_samples=100, gen=gen())
    n0, n1 = (read_idx(labels_path) == 0).sum(), (read_idx(labels_path) == 1).sum()
    assert abs(torch.bincount(balanced.labels)[0].item() - 100 * n0 / (n0 + n1)) <= 1
    with pytest.raises(ValueError, match="generator"):
        load_mnist_float(*mnist, digits=[0, 1], n_samples=100)


def test_mnist_float_bad_choices(mnist, input_error):
    for digits in ([2, 11], [3, 3], [], ["2"]):
        with input_error("data.digits", ""):
            load_mnist_float(*mnist, digits=digits, gen=gen())
    for proportions in ([1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("nan")]):
        with input_error("data.proportions", ""):
            load_mnist_float(*mnist, digits=[2, 3], proportions=proportions, gen=gen())
    with input_error("data.n_samples", ""):
        load_mnist_float(*mnist, n_samples=0, gen=gen())


def test_class_counts_apportionment():
    assert class_counts([1032, 1010, 958], [4 / 7, 2 / 7, 1 / 7], None) == [1032, 516, 258]
    assert class_counts([2, 100], [0.3, 0.7], None) == [2, 5]  # 4.67 rounds to 5
    assert class_counts([10, 10], [0.5, 0.5], 7) in ([4, 3], [3, 4])
    assert sum(class_counts([5, 50, 500], [1 / 3] * 3, 14)) == 14
    assert class_counts([5, 50, 500], [1 / 3] * 3, 10_000) == [5, 5, 5]


def test_mixture_components_of_unequal_widths():
    from raybm.data.continuous import gaussian_mixture, gaussian_mixture_logprob

    means = torch.tensor([[-30.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    data = gaussian_mixture(torch.Generator().manual_seed(0), 40_000, means,
                            torch.tensor([0.3, 0.7]), [0.5, 2.0])
    for k, std in enumerate((0.5, 2.0)):
        rows = data.x[data.labels == k].double()
        # per-coordinate std over 3 coordinates x m rows: standard error std / sqrt(2 * 3m)
        spread = (rows - means[k].double()).square().mean().sqrt()
        assert abs(float(spread) - std) < 4 * std / math.sqrt(6 * len(rows))
    assert data.info["std"] == [0.5, 2.0] and data.info["labels_are_modes"]
    # The log-density integrates to 1 (1-D: trapezoid on a grid covering both modes).
    grid = torch.linspace(-45, 45, 90_001, dtype=torch.float64).unsqueeze(1)
    density = gaussian_mixture_logprob(grid, means[:, :1], torch.tensor([0.3, 0.7]),
                                       [0.5, 2.0]).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1) < 1e-9


def test_mixture_stds_one_per_center(input_error):
    from raybm.config import load_config

    with input_error("data.mixture", "1 stds for 2 centers"):
        load_config(None, ["data.format=gaussian_mixture", "model.kind=gaussian_mixture", "sampler.name=ula",
                           "data.mixture.stds=[1.0]"])
    cfg = load_config(None, ["data.format=gaussian_mixture", "model.kind=gaussian_mixture", "sampler.name=ula",
                             "data.mixture.stds=[0.5, 2.0]"])
    assert cfg.data.mixture.stds == [0.5, 2.0]


def test_the_width_is_the_rms_of_the_coordinate_stds_with_weights():
    """``Dataset.width``: sqrt of the mean over coordinates of each coordinate's variance; a
    sample weight counts as that many copies; refused for discrete data."""
    import pytest
    import torch

    from raybm.data.dataset import Dataset

    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])
    # variances 8/3 and 32/3: width sqrt(20/3)
    assert Dataset(x, n_states=0).width() == pytest.approx((20 / 3) ** 0.5)
    weighted = Dataset(x, n_states=0, weights=torch.tensor([1.0, 1.0, 2.0]))
    copies = Dataset(torch.cat([x, x[2:]]), n_states=0)
    assert weighted.width() == pytest.approx(copies.width())
    with pytest.raises(ValueError, match="continuous"):
        Dataset(torch.zeros(3, 2, dtype=torch.uint8)).width()
