"""Data sets for raybm: loaders for real files, synthetic generators, splits.

Every loader returns a :class:`~raybm.data.dataset.Dataset` and reports bad input as a
:class:`~raybm.errors.InputError` naming the file and what is wrong.

The summary function lives in :mod:`raybm.data.inspect` (``from raybm.data.inspect import
inspect``); it is not re-exported here because the name would hide that submodule.
"""

from raybm.data.alphabet import DNA, PROTEIN, RNA, Alphabet, encode_sequences, resolve_alphabet
from raybm.data.csvaln import load_csv_alignment
from raybm.data.dataset import Dataset
from raybm.data.digits import load_digits
from raybm.data.fasta import load_fasta, read_fasta
from raybm.data.hapt import load_hapt
from raybm.data.idx import load_idx, read_idx, write_idx
from raybm.data.inspect import detect_format, load_any, summarize
from raybm.data.matrix import load_matrix, save_matrix_parquet
from raybm.data.reweight import identity_weights
from raybm.data.split import train_test_split
from raybm.data.synthetic import (
    bimodal_prototypes,
    enumerate_states,
    prototype_mixture,
    prototype_mixture_logprob,
    random_teacher,
    state_index,
    teacher_log_z,
    teacher_logprob,
    teacher_rbm_samples,
)

__all__ = [
    "DNA",
    "PROTEIN",
    "RNA",
    "Alphabet",
    "Dataset",
    "bimodal_prototypes",
    "detect_format",
    "encode_sequences",
    "enumerate_states",
    "identity_weights",
    "load_any",
    "load_csv_alignment",
    "load_digits",
    "load_fasta",
    "load_hapt",
    "load_idx",
    "load_matrix",
    "prototype_mixture",
    "prototype_mixture_logprob",
    "random_teacher",
    "read_fasta",
    "read_idx",
    "resolve_alphabet",
    "save_matrix_parquet",
    "state_index",
    "summarize",
    "teacher_log_z",
    "teacher_logprob",
    "teacher_rbm_samples",
    "train_test_split",
    "write_idx",
]
