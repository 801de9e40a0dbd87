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
from raybm.data.floats import check_event_shape, load_float_matrix, save_float_matrix
from raybm.data.hapt import load_hapt
from raybm.data.idx import load_idx, read_idx, write_idx
from raybm.data.inspect import detect_format, load_any, summarize
from raybm.data.matrix import load_matrix, save_matrix_parquet
from raybm.data.mnist_float import load_mnist_float
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
from raybm.data.toy2d import TOY2D, toy2d

__all__ = [
    "DNA",
    "PROTEIN",
    "RNA",
    "TOY2D",
    "Alphabet",
    "Dataset",
    "bimodal_prototypes",
    "check_event_shape",
    "detect_format",
    "encode_sequences",
    "enumerate_states",
    "identity_weights",
    "load_any",
    "load_csv_alignment",
    "load_digits",
    "load_fasta",
    "load_float_matrix",
    "load_hapt",
    "load_idx",
    "load_matrix",
    "load_mnist_float",
    "prototype_mixture",
    "prototype_mixture_logprob",
    "random_teacher",
    "read_fasta",
    "read_idx",
    "resolve_alphabet",
    "save_float_matrix",
    "save_matrix_parquet",
    "state_index",
    "summarize",
    "teacher_log_z",
    "teacher_logprob",
    "teacher_rbm_samples",
    "toy2d",
    "train_test_split",
    "write_idx",
]
