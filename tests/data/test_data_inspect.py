"""Format detection, load_any (config keyword names) and the inspect summary."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from raybm.data.inspect import detect_format, inspect, load_any

PANEL = "sample\tpop\tsuper_pop\tgender\nHG1\tGBR\tEUR\tmale\nHG2\tYRI\tAFR\tfemale\n"


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.hapt", "hapt"),
        ("a.hapt.gz", "hapt"),
        ("a.fasta", "fasta"),
        ("a.fa.gz", "fasta"),
        ("a.a2m", "fasta"),
        ("a.afa", "fasta"),
        ("A.CSV", "csv"),
        ("a.npz", "matrix"),
        ("a.txt", "matrix"),
        ("a.parquet", "matrix"),
    ],
)
def test_detect_by_name(name, fmt):
    assert detect_format(name) == fmt  # by name alone: the file need not exist


def test_detect_by_content(tmp_path, input_error):
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 2, 2, 2) + bytes(8)))
    assert detect_format(images) == "idx"
    fasta = tmp_path / "family.aln"
    fasta.write_text("\n>a\nACDE\n")
    assert detect_format(fasta) == "fasta"
    other = tmp_path / "notes.dat"
    other.write_text("hello")
    with input_error(other, "format"):
        detect_format(other)


def test_load_any_dispatches_with_config_names(tmp_path):
    hapt = tmp_path / "h.hapt"
    hapt.write_text("Real HG1_A 0 1\nReal HG2_B 1 1\n")
    panel = tmp_path / "p.panel"
    panel.write_text(PANEL)
    data = load_any(hapt, format="auto", panel_path=panel, label="pop")
    assert data.label_names == ["GBR", "YRI"]
    fasta = tmp_path / "r.fasta"
    fasta.write_text(">a\nACGU\n>b\nACGN\n")
    data = load_any(str(fasta), nonstandard="drop", reweight_identity=0.8)
    assert data.alphabet == "-ACGU" and data.n_samples == 1  # alphabet=None -> auto
    assert load_any(None).source == "sklearn:digits"
    assert load_any(format="digits", threshold=0.3).n_visible == 64


def test_load_any_csv_label_column(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("header,sequence,family\nr1,ACGU,x\nr2,ACGA,y\n")
    assert load_any(path).labels is None  # no 'label' column: no labels
    assert load_any(path, label="family").label_names == ["x", "y"]


def test_load_any_rejects_misplaced_options(tmp_path, input_error):
    fasta = tmp_path / "r.fasta"
    fasta.write_text(">a\nACGU\n")
    with input_error(tmp_path / "p.panel", "data.panel_path"):
        load_any(fasta, panel_path=tmp_path / "p.panel")
    with input_error("data.format", "'fastq'"):
        load_any(fasta, format="fastq")
    with input_error("data.path", "needs a file path"):
        load_any(None, format="fasta")


def test_inspect_summary(tmp_path):
    hapt = tmp_path / "h.hapt.gz"
    hapt.write_bytes(gzip.compress(b"Real HG1_A 0 1 1\nReal HG1_B 1 1 1\nReal HG2_A 0 0 0\n"))
    panel = tmp_path / "p.panel"
    panel.write_text(PANEL)
    text = inspect(hapt, panel=panel)
    assert "3 samples x 3 visible units" in text
    assert "AFR 1, EUR 2" in text and "GBR 2, YRI 1" in text
    assert str(hapt) in text

    fasta = tmp_path / "p.a2m"
    fasta.write_text(">a\nACxDE\n>b\nACXE\n>c\nACDE\n")
    text = " ".join(inspect(fasta, alphabet="protein", reweight_identity=0.8).split())
    assert "21 (alphabet '-ACDEFGHIKLMNPQRSTVWY'" in text
    assert "X 1; policy gap (mapped to gap); sequences affected: 1, dropped: 0" in text
    assert "removed with inserts: x 1" in text
    assert "n_eff 2.0 of 3" in text


def test_inspect_matrix_and_idx_labels(tmp_path, input_error):
    npz = tmp_path / "m.npz"
    np.savez(npz, x=np.eye(3, dtype=np.uint8))
    assert "n_states     2 (binary; fraction of ones 0.3333)" in inspect(npz)
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.write_bytes(struct.pack(">IIII", 2051, 2, 1, 1) + bytes([0, 255]))
    labels.write_bytes(struct.pack(">II", 2049, 2) + bytes([4, 1]))
    text = inspect(images, labels=labels)
    assert "labels       5 classes: 0 0, 1 1, 2 0, 3 0, 4 1" in text
    with input_error("inspect", "colour"):
        inspect(npz, colour=True)


def test_continuous_files_are_detected_and_summarised(tmp_path, capsys):
    import numpy as np

    from raybm.cli import main

    np.save(tmp_path / "pts.npy", np.arange(12, dtype=np.float32).reshape(4, 3) / 4)
    assert main(["data", "inspect", str(tmp_path / "pts.npy")]) == 0
    out = capsys.readouterr().out
    assert "4 samples of shape (3,) (float32)" in out and "min 0, max 2.75" in out
    np.savez(tmp_path / "f.npz", x=np.full((5, 2), 0.5, dtype=np.float32))
    assert main(["data", "inspect", str(tmp_path / "f.npz"), "--format", "floats"]) == 0
    assert "5 samples of shape (2,)" in capsys.readouterr().out
    # Read as an integer state matrix (--format matrix), the float values are refused.
    assert main(["data", "inspect", str(tmp_path / "f.npz"), "--format", "matrix"]) == 2
    assert "non-integer value" in capsys.readouterr().err


def test_an_npz_of_float_images_with_labels_is_detected_as_floats(tmp_path, capsys):
    """No --format: an .npz whose x holds fractions reads as floats (as an .npy does), its
    labels counted; one of whole-number floats stays integer states."""
    from raybm.cli import main

    x = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "img.npz", x=x, labels=np.array([3, 1, 3, 3, 1, 7]))
    assert detect_format(tmp_path / "img.npz") == "floats"
    assert main(["data", "inspect", str(tmp_path / "img.npz")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == ["format       npz",
                        "shape        6 samples of shape (28, 28) (float32)",
                        "dtype        float32 in the file, read as floats (float32)"]
    assert "labels       3 classes: 1 2, 3 3, 7 1" in out
    assert load_any(tmp_path / "img.npz").x.numpy().tobytes() == x.tobytes()

    np.savez(tmp_path / "bin.npz", x=np.eye(3, dtype=np.float32))
    assert detect_format(tmp_path / "bin.npz") == "matrix"
    text = " ".join(inspect(tmp_path / "bin.npz").split())
    assert ("dtype float32 in the file, read as binary states (0/1) by an rbm, as floats "
            "(float32) by a continuous model") in text


@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_integer_numpy_files_show_their_own_dtype_and_the_reading(tmp_path, capsys, dtype):
    """Integers 1..254: an .npy says its dtype and that it is read as floats; the same array in
    an .npz is Potts states (255 of them) for an rbm."""
    from raybm.cli import main

    x = np.arange(1, 255, dtype=dtype).reshape(127, 2)
    np.save(tmp_path / "a.npy", x)
    assert main(["data", "inspect", str(tmp_path / "a.npy")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (f"shape 127 samples of shape (2,) (float32) dtype {dtype} in the file, read as "
            "floats (float32), never as states (save it as .npz for an rbm) values min 1, "
            "max 254") in text
    np.savez(tmp_path / "a.npz", x=x)
    assert main(["data", "inspect", str(tmp_path / "a.npz")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (f"dtype {dtype} in the file, read as Potts states (255 states) by an rbm, as "
            "floats (float32) by a continuous model n_states 255") in text
