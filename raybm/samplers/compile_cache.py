"""Compiled kernels are never served to another CPU or instruction set: this process's key in
the key of every entry of torch's compile caches.

Inductor's on-disk cache (torch 2.13) does not tell apart kernels compiled for different vector
instruction sets. Kernels compiled under AVX-512, then served to a process that runs with AVX2
(``ATEN_CPU_CAPABILITY=avx2``, which Inductor follows too), computed garbage: the gradient
statistics' operand off by ~4e21, and PCD runs that diverged within their first updates (AMD
EPYC, torch 2.13, 2026-12-07; ``tests/samplers/test_compile_cache.py``). A cache directory
shared by machines with different CPUs (a cluster's network home, a container image shipped
with a warm cache) is open to the same. So before its first compilation a process adds a key
naming torch's version, its CPU capability and the CPU's flags to
``torch.compiler.config.cache_key_tag``, which torch hashes into its FX graph and AOTAutograd
cache keys (remote caches too): a new CPU or setting compiles afresh once, and the
environment (``TORCHINDUCTOR_CACHE_DIR``, what child processes inherit) is left as it was.
"""

from __future__ import annotations

import functools
import hashlib

import torch
import torch.compiler.config

from raybm.cpu import cpu_flags


@functools.cache  # fixed for the process; asked before each kernel's first compilation
def cache_key() -> str:
    """``raybm-<torch version>-<torch's CPU capability>-<hash of the CPU's flags>``."""
    flags = cpu_flags()
    digest = ("noflags" if flags is None else
              hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12])
    capability = torch.backends.cpu.get_cpu_capability().lower()
    version = torch.__version__.replace("+", "_")
    return f"raybm-{version}-{capability}-{digest}"


def tag_compile_caches() -> str:
    """Add :func:`cache_key` to torch's cache key tag (after a tag of the user's own, which it
    keeps) and return the tag; idempotent."""
    key, tag = cache_key(), torch.compiler.config.cache_key_tag
    if key not in tag.split("+"):
        torch.compiler.config.cache_key_tag = f"{tag}+{key}" if tag else key
    return torch.compiler.config.cache_key_tag
