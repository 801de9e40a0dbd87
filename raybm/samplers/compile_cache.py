"""Where Inductor keeps raybm's compiled kernels: a directory per torch version, vector
instruction set and CPU.

Inductor's on-disk cache (torch 2.13) does not tell apart kernels compiled for different vector
instruction sets. Kernels compiled under AVX-512, then served to a process that runs with AVX2
(``ATEN_CPU_CAPABILITY=avx2``, which Inductor follows too), computed garbage: the gradient
statistics' operand off by ~4e21, and a PCD run that diverged at its second update (AMD EPYC,
torch 2.13, 2026-12-07; ``tests/samplers/test_compile_cache.py``). A cache directory shared
by machines with different CPUs (a cluster's network home, a container image shipped with a
warm cache) is open to the same. So before its first compilation a process moves Inductor's
directory (``TORCHINDUCTOR_CACHE_DIR``, or torch's default) into a subdirectory named for all
three: a new CPU or setting compiles afresh once, never reuses another's kernels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import MutableMapping

import torch

from raybm.cpu import cpu_flags

_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def cache_key() -> str:
    """``raybm-<torch version>-<torch's CPU capability>-<hash of the CPU's flags>``."""
    flags = cpu_flags()
    digest = ("noflags" if flags is None else
              hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12])
    capability = torch.backends.cpu.get_cpu_capability().lower()
    version = torch.__version__.replace("+", "_")
    return f"raybm-{version}-{capability}-{digest}"


def use_keyed_cache_dir(environ: MutableMapping[str, str] | None = None) -> str:
    """Point Inductor at this process's keyed subdirectory of its cache directory and return
    it. Idempotent, and a child process that inherits the setting keeps it."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    environ = os.environ if environ is None else environ
    base = environ.get(_VARIABLE) or default_cache_dir()
    key = cache_key()
    if os.path.basename(os.path.normpath(base)) != key:
        base = os.path.join(base, key)
    environ[_VARIABLE] = os.path.abspath(base)
    return environ[_VARIABLE]
