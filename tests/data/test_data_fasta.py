"""Aligned FASTA / A2M: wrapping, insert removal, alphabets, non-standard letters, weights."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raybm.data.alphabet import PROTEIN, RNA, encode_sequences, resolve_alphabet
from raybm.data.fasta import load_fasta
from raybm.data.reweight import identity_weights

# Three records over 6 match columns "AC-DEF"-like, wrapped over several lines, with A2M
# inserts (lower case and '.'), non-standard X and B in match columns, and a lower-case
# non-standard x inside an insert (removed with it).
A2M = """\
>seq1 first record
AC
-dD
EF
>seq2
A.C-X
..EF
>seq3 description here
ACBDxEFy
"""


def states(text: str, alphabet: str = PROTEIN) -> list[int]:
    return [alphabet.index(ch) for ch in text]


@pytest.fixture
def a2m(tmp_path):
    path = tmp_path / "toy.a2m"
    path.write_text(A2M)
    return path


def test_wrapping_inserts_and_gap_policy(a2m):
    data = load_fasta(a2m)  # protein, nonstandard="gap"
    assert data.n_states == 21 and data.alphabet == "-ACDEFGHIKLMNPQRSTVWY"
    assert data.x.dtype == torch.uint8 and data.x.shape == (3, 6)
    assert data.x.tolist() == [states("AC-DEF"), states("AC--EF"), states("AC-DEF")]
    report = data.info["nonstandard"]
    assert report == {
        "policy": "gap",
        "letters": {"B": 1, "X": 1},
        "n_sequences_affected": 2,
        "n_dropped": 0,
        "removed_with_inserts": {"x": 1},
    }
    assert data.info["match_columns"] == 6 and data.weights is None


def test_drop_policy(a2m):
    data = load_fasta(a2m, nonstandard="drop")
    assert data.x.tolist() == [states("AC-DEF")]
    assert data.info["nonstandard"]["n_dropped"] == 2
    assert data.info["nonstandard"]["letters"] == {"B": 1, "X": 1}


def test_gzip_and_str_path(tmp_path):
    path = tmp_path / "toy.fasta.gz"
    path.write_bytes(gzip.compress(A2M.encode()))
    assert load_fasta(str(path)).x.shape == (3, 6)


def test_rna_maps_t_to_u_and_counts_others(tmp_path):
    path = tmp_path / "rna.fasta"
    path.write_text(">r1\nACGU-\n>r2\nACGTN\n>r3\nacguACG\nUA\n")  # r3: lower-case inserts
    data = load_fasta(path, alphabet="rna")
    assert data.alphabet == RNA and data.n_states == 5
    assert data.x.tolist() == [states("ACGU-", RNA), states("ACGU-", RNA), states("ACGUA", RNA)]
    assert data.info["nonstandard"]["letters"] == {"N": 1}


def test_auto_alphabet(tmp_path):
    rna = tmp_path / "r.fasta"
    rna.write_text(">a\nACGU\n>b\nAC-U\n")
    assert load_fasta(rna, alphabet="auto").alphabet == RNA
    # A few IUPAC ambiguity codes do not make RNA a protein; they are non-standard letters.
    iupac = tmp_path / "i.fasta"
    iupac.write_text(">a\nACGUACGUACGUACGUACGU\n>b\nACGUACGUACGUACGRACGY\n")
    data = load_fasta(iupac, alphabet="auto")
    assert data.alphabet == RNA and data.info["nonstandard"]["letters"] == {"R": 1, "Y": 1}
    dna = tmp_path / "d.fasta"
    dna.write_text(">a\nACGT\n")
    assert load_fasta(dna, alphabet="auto").alphabet == "-ACGT"
    prot = tmp_path / "p.fasta"
    prot.write_text(">a\nACGW\n")
    assert load_fasta(prot, alphabet="auto").alphabet == PROTEIN


def test_explicit_alphabet(tmp_path):
    path = tmp_path / "e.fasta"
    path.write_text(">a\nAB-\n>b\nBA-\n")
    data = load_fasta(path, alphabet="BA-")
    assert data.alphabet == "BA-" and data.n_states == 3
    assert data.x.tolist() == [[1, 0, 2], [0, 1, 2]]


def test_reweighting_counts_neighbours(tmp_path):
    path = tmp_path / "w.fasta"
    # Three identical sequences and one at identity 3/5 to them.
    path.write_text(">a\nACDEF\n>b\nACDEF\n>c\nACDEF\n>d\nACDGH\n")
    data = load_fasta(path, reweight_identity=0.8)
    assert data.weights.dtype == torch.float32
    assert torch.allclose(data.weights, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert data.info["n_eff"] == pytest.approx(2.0)
    # At identity 0.6 everything is one cluster.
    assert load_fasta(path, reweight_identity=0.6).info["n_eff"] == pytest.approx(1.0)


def test_reweighting_matches_brute_force():
    rng = np.random.default_rng(1)
    # Near-duplicates: mutate a few parents so that the threshold matters.
    parents = rng.integers(0, 5, size=(6, 30))
    x = parents[rng.integers(0, 6, size=300)]
    x = np.where(rng.random(x.shape) < 0.15, rng.integers(0, 5, size=x.shape), x)
    same = (x[:, None, :] == x[None, :, :]).mean(-1)
    expected = 1.0 / (same >= 0.8).sum(1)
    got = identity_weights(torch.from_numpy(x.astype(np.uint8)), 5, 0.8, block_size=64)
    assert np.allclose(got.numpy(), expected)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_bad_reweight_identity(a2m, value, input_error):
    with input_error(a2m, "reweight_identity"):
        load_fasta(a2m, reweight_identity=value)


def test_bad_policy(a2m, input_error):
    with input_error(a2m, "nonstandard"):
        load_fasta(a2m, nonstandard="keep")


def test_bad_alphabet(a2m, input_error):
    with input_error(a2m, "alphabet"):
        load_fasta(a2m, alphabet="AC1")
    with input_error(a2m, "alphabet"):
        load_fasta(a2m, alphabet="ACA")


def test_gap_policy_needs_a_gap_state(tmp_path, input_error):
    path = tmp_path / "g.fasta"
    path.write_text(">a\nACX\n>b\nACD\n")
    with input_error(path, "nonstandard"):
        load_fasta(path, alphabet="ACDE")
    assert load_fasta(path, alphabet="ACDE", nonstandard="drop").x.tolist() == [[0, 1, 2]]


def test_all_dropped(tmp_path, input_error):
    path = tmp_path / "x.fasta"
    path.write_text(">a\nAXC\n>b\nXAC\n")
    with input_error(path, "nonstandard"):
        load_fasta(path, nonstandard="drop")


def test_sequence_before_header(tmp_path, input_error):
    path = tmp_path / "h.fasta"
    path.write_text("ACDE\n>a\nACDE\n")
    with input_error(path, "line 1"):
        load_fasta(path)


def test_header_without_sequence(tmp_path, input_error):
    path = tmp_path / "h.fasta"
    path.write_text(">a\nACDE\n>b\n>c\nACDE\n")
    with input_error(path, "record 'b'"):
        load_fasta(path)


def test_only_inserts(tmp_path, input_error):
    path = tmp_path / "lower.fasta"
    path.write_text(">a\nacde\n>b\nacdf\n")
    with input_error(path, "sequences"):
        load_fasta(path)


def test_gap_without_gap_in_alphabet(tmp_path, input_error):
    path = tmp_path / "g.fasta"
    path.write_text(">a\nAC-\n")
    with input_error(path, "record 'a'"):
        load_fasta(path, alphabet="ACDE")


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.text(alphabet=PROTEIN, min_size=7, max_size=7), min_size=1, max_size=12))
def test_encoding_round_trips(sequences):
    enc = encode_sequences(sequences, [f"s{i}" for i in range(len(sequences))], "protein", "gap", "mem")
    assert ["".join(PROTEIN[k] for k in row) for row in enc.x.tolist()] == sequences
    assert enc.nonstandard["n_sequences_affected"] == 0


def test_resolve_alphabet_names():
    assert resolve_alphabet("Protein").letters == PROTEIN
    assert resolve_alphabet("rna").aliases == {"T": "U"}
    assert resolve_alphabet("-acgt").letters == "-ACGT"
