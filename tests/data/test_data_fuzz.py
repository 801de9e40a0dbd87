"""Whatever bytes a user hands a loader, the outcome is a Dataset or an InputError, never a
bare ValueError / IndexError / UnicodeDecodeError / gzip error."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raybm.data.dataset import Dataset
from raybm.data.inspect import load_any
from raybm.errors import InputError

SUFFIXES = ["a.fasta", "a.hapt", "a.csv", "a.txt", "a.npz", "a.parquet", "images-idx3-ubyte"]
# Text drawn from the characters that matter to the parsers reaches deeper than random bytes.
TEXTY = st.text(alphabet=" \n\t01239>ACDGTUXacgx-.,*#_\u00e9", max_size=120)
STRUCT_IDX = st.builds(
    lambda magic, dims, body: magic + dims + body,
    st.sampled_from([b"\x00\x00\x08\x03", b"\x00\x00\x08\x01", b"\x00\x00\x0d\x02", b"\x00\x00\x09\x00"]),
    st.binary(min_size=0, max_size=12),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(SUFFIXES),
    content=st.one_of(st.binary(max_size=200), TEXTY.map(str.encode), STRUCT_IDX),
    compress=st.booleans(),
)
def test_only_dataset_or_input_error(name, content, compress):
    if compress:
        content = gzip.compress(content)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        fmt = "idx" if name.startswith("images") else "auto"
        try:
            result = load_any(path, format=fmt)
        except InputError as err:
            assert "\n" not in str(err) and str(path) in str(err)
        else:
            assert isinstance(result, Dataset)
