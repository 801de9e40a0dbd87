"""The real data sets of ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import torch

from raybm.data.csvaln import load_csv_alignment
from raybm.data.fasta import load_fasta
from raybm.data.hapt import load_hapt
from raybm.data.idx import load_idx
from raybm.data.inspect import detect_format, inspect, load_any
from raybm.data.split import train_test_split

MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SUPER_POP = {"AFR": 1322, "EAS": 1008, "EUR": 1006, "SAS": 978, "AMR": 694}


def counts(data) -> dict[str, int]:
    values = torch.bincount(data.labels, minlength=len(data.label_names)).tolist()
    return dict(zip(data.label_names, values))


def test_mnist(shared_file):
    images = shared_file("mnist/t10k-images-idx3-ubyte.gz")
    labels = shared_file("mnist/t10k-labels-idx1-ubyte.gz")
    assert detect_format(images) == "idx"  # by magic number: the name has no known suffix
    data = load_idx(images, labels)
    assert data.x.shape == (10000, 784) and data.n_states == 2
    assert torch.bincount(data.labels).tolist() == MNIST_COUNTS
    assert 0.10 < data.x.float().mean() < 0.17  # ~13% of binarised MNIST pixels are on
    train, test = train_test_split(data, 0.2, seed=0)
    assert (train.n_samples, test.n_samples) == (8000, 2000)


def test_hgd(shared_file):
    hapt = shared_file("hgd/805_SNP_1000G_real.hapt.gz")
    panel = shared_file("hgd/integrated_call_samples_v3.20130502.ALL.panel")
    data = load_hapt(hapt, panel)
    assert data.x.shape == (5008, 805) and data.n_states == 2
    assert counts(data) == SUPER_POP
    assert data.label_names == sorted(SUPER_POP)
    assert len(data.sub_label_names) == 26  # the 1000 Genomes populations
    assert data.info["tags"] == {"Real": 5008}


def test_pf00014(shared_file):
    path = shared_file("protein/PF00014.fasta")
    data = load_fasta(path, alphabet="protein", nonstandard="gap", reweight_identity=0.8)
    assert data.x.shape == (4915, 53) and data.n_states == 21
    assert data.info["raw_columns"] == 219 and data.info["match_columns"] == 53
    report = data.info["nonstandard"]
    assert report["letters"] == {"B": 1, "X": 7}
    assert report["removed_with_inserts"] == {"x": 7, "z": 1}
    assert report["n_sequences_affected"] == 6 and report["n_dropped"] == 0
    assert 1.0 < data.info["n_eff"] < 4915
    dropped = load_fasta(path, nonstandard="drop")
    assert dropped.x.shape == (4915 - 6, 53) and dropped.info["nonstandard"]["n_dropped"] == 6
    text = inspect(path)
    assert "B 1, X 7" in text and "removed with inserts: x 7, z 1" in text


def test_rf00379(shared_file):
    data = load_any(shared_file("rna/RF00379.fasta"))  # alphabet auto-detected
    assert data.n_samples == 3827 and data.n_states == 5 and data.alphabet == "-ACGU"
    assert data.info["nonstandard"]["letters"] == {}


def test_sam(shared_file):
    data = load_csv_alignment(shared_file("rna/SAM.csv"))
    assert data.x.shape == (9693, 108) and data.n_states == 5 and data.alphabet == "-ACGU"
    assert data.label_names[0] == "53.0" and data.label_names[-1] == "126.0"
    assert sum(counts(data).values()) == 9693
