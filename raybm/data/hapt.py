"""Haplotype matrices (``.hapt``, the HGD format of Yelmen et al. 2021) with population labels.

Format (gzip or plain text), one haplotype a line, whitespace separated::

    <tag> <haplotype id> v_1 v_2 ... v_n        e.g.  Real HG00096_A 1 1 0 1 ...

with every ``v`` in {0, 1} and the same ``n`` on every line. The id is a 1000 Genomes sample
with an ``_A`` / ``_B`` suffix for its two haplotypes.

Panel (optional; tab or space separated, header line first)::

    sample  pop  super_pop  gender
    HG00096 GBR  EUR        male

Labels come from the panel column ``label`` (default ``super_pop``, the continent label of the
research; ``pop`` gives the 26 populations) with sorted ``label_names``; with the default, the
finer ``pop`` becomes ``sub_labels``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from raybm.data._io import PathLike, read_text
from raybm.data._labels import encode_labels
from raybm.data.dataset import Dataset
from raybm.errors import InputError

_SUFFIXES = ("_A", "_B")


def sample_of(haplotype_id: str) -> str:
    """The panel sample of a haplotype id: ``HG00096_A -> HG00096`` (ids without a suffix are
    taken as the sample itself)."""
    return haplotype_id[:-2] if haplotype_id.endswith(_SUFFIXES) else haplotype_id


def read_panel(path: PathLike, columns: list[str]) -> dict[str, list[str]]:
    """``{sample: [value of each of columns]}`` from a 1000 Genomes panel file."""
    lines = [(n, line.split()) for n, line in enumerate(read_text(path).splitlines(), 1)]
    lines = [(n, words) for n, words in lines if words]
    if not lines:
        raise InputError(path, "header", "empty panel file")
    header = lines[0][1]
    for name in ["sample", *columns]:
        if name not in header:
            raise InputError(path, f"column {name!r}", f"missing (the header has {' '.join(header)})")
    index = [header.index(name) for name in ["sample", *columns]]
    panel: dict[str, list[str]] = {}
    for lineno, words in lines[1:]:
        if len(words) <= max(index):
            raise InputError(
                path, f"line {lineno}", f"{len(words)} fields, fewer than the header's columns need"
            )
        sample, *values = (words[i] for i in index)
        if sample in panel and panel[sample] != values:
            raise InputError(path, f"line {lineno}", f"sample {sample!r} listed twice with different values")
        panel[sample] = values
    return panel


def load_hapt(
    hapt_path: PathLike, panel_path: PathLike | None = None, label: str = "super_pop"
) -> Dataset:
    """Binary haplotype matrix ``(n_haplotypes, n_snps)``, labelled from the panel if given."""
    ids: list[str] = []
    linenos: list[int] = []
    tags: Counter[str] = Counter()
    rows: list[str] = []
    n_visible = first_line = None
    for lineno, line in enumerate(read_text(hapt_path).splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 3:
            raise InputError(
                hapt_path, f"line {lineno}", "expected a tag, a haplotype id, then 0/1 values"
            )
        values = words[2:]
        if n_visible is None:
            n_visible, first_line = len(values), lineno
        elif len(values) != n_visible:
            raise InputError(
                hapt_path,
                f"line {lineno}",
                f"{len(values)} values, but {n_visible} on line {first_line} (ragged rows)",
            )
        # Fast path: every value is the single character 0 or 1, so the joined string has one
        # character per value and nothing but 0/1 in it.
        joined = "".join(values)
        if len(joined) != len(values) or joined.strip("01"):
            j, bad = next((j, v) for j, v in enumerate(values) if v not in ("0", "1"))
            raise InputError(
                hapt_path, f"line {lineno}", f"value {bad!r} at SNP {j + 1} is not 0 or 1"
            )
        rows.append(joined)
        tags[words[0]] += 1
        ids.append(words[1])
        linenos.append(lineno)
    if not rows:
        raise InputError(hapt_path, "haplotypes", "no haplotypes (empty file)")

    codes = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8) - ord("0")
    x = torch.from_numpy(codes.reshape(len(rows), n_visible).copy())
    info: dict = {"format": "hapt", "tags": dict(tags)}

    labels = label_names = sub_labels = sub_label_names = None
    if panel_path is not None:
        sub = "pop" if label != "pop" else None
        panel = read_panel(panel_path, [label] + ([sub] if sub else []))
        missing = [(hid, n) for hid, n in zip(ids, linenos) if sample_of(hid) not in panel]
        if missing:
            hid, n = missing[0]
            more = f" (and {len(missing) - 1} more haplotypes)" if len(missing) > 1 else ""
            raise InputError(
                panel_path,
                f"sample {sample_of(hid)!r}",
                f"missing, needed by haplotype {hid!r} on line {n} of {hapt_path}{more}",
            )
        rows_of = [panel[sample_of(hid)] for hid in ids]
        labels, label_names = encode_labels([r[0] for r in rows_of])
        if sub:
            sub_labels, sub_label_names = encode_labels([r[1] for r in rows_of])
        info.update({"panel_path": str(panel_path), "label": label})

    return Dataset(
        x=x,
        n_states=2,
        labels=labels,
        label_names=label_names,
        source=str(hapt_path),
        info=info,
        sub_labels=sub_labels,
        sub_label_names=sub_label_names,
    )
