"""Gibbs sweeps per second: raybm's exact and fast paths against ``rbms`` and scikit-learn.

One sweep = ``h ~ p(h | v)`` then ``v ~ p(v | h)`` for every walker. Cases, all in one run on
the same sizes and the same random parameters:

- raybm ``precision="fp32"`` (exact reference) and ``"bf16"`` (fast; eager, and fused by
  ``torch.compile`` unless ``--no-compile``; compile time is reported, never timed);
- ``rbms==0.5.0`` (optional benchmark dependency, ``pip install rbms==0.5.0``): its public
  ``BBRBM`` / ``PBRBM`` ``sample_hiddens`` + ``sample_visibles``;
- scikit-learn's ``BernoulliRBM.gibbs`` (float32 parameters, numpy RNG);
- the floor: the two matmuls of a sweep plus generating its random bits (32-bit halves of the
  generator's int64 words for fp32, 16-bit quarters for bf16, one per unit) and nothing else.
  For Potts the floor's first matmul is the one-hot product, which raybm replaces by a gather
  (so raybm can come in under its "floor" there).

Bernoulli: 4096 walkers x 784 visibles x 512 hiddens, ``W ~ N(0, 0.01^2)`` (``rbms``'
default initial variance), ``a ~ N(0, 1)``, ``b ~ N(0, 0.1^2)``. Potts: 1024 walkers x 100
sites x 21 states x 256 hiddens. Each timing is ``--k`` sweeps in one call (how training calls
the kernel), after ``--warmup`` calls; the median over ``--repeats`` calls, divided by ``k``.
Threads: ``torch.set_num_threads(2)`` (and numpy's BLAS limited to 2 where threadpoolctl is
installed).

Run: ``python benchmarks/gibbs_throughput.py`` (prints a markdown table). Other jobs on the
machine distort every number: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from raybm.models.rbm import BernoulliRBM, PottsRBM
from raybm.samplers import fused, gibbs
from raybm.samplers.random_bits import random_words


@dataclass
class Row:
    case: str
    ms: float | None  # per sweep; None when the case could not run
    note: str = ""


def timed(fn: Callable[[], object], k: int, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` (which runs ``k`` sweeps) per sweep, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / k * 1e3


# ------------------------------------------------------------------------------ models
def bernoulli_model(n_visible: int, n_hidden: int, seed: int = 0) -> BernoulliRBM:
    gen = torch.Generator().manual_seed(seed)
    m = BernoulliRBM(n_visible, n_hidden)
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)
        m.vbias.copy_(torch.randn(m.vbias.shape, generator=gen))
        m.hbias.copy_(torch.randn(m.hbias.shape, generator=gen) * 0.1)
    return m


def potts_model(n_visible: int, n_states: int, n_hidden: int, seed: int = 0) -> PottsRBM:
    gen = torch.Generator().manual_seed(seed)
    m = PottsRBM(n_visible, n_states, n_hidden)
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)
        m.vbias.copy_(torch.randn(m.vbias.shape, generator=gen))
        m.hbias.copy_(torch.randn(m.hbias.shape, generator=gen) * 0.1)
    return m


# ------------------------------------------------------------------------------ raybm
def raybm_case(model, n: int, precision: str, k: int, warmup: int, repeats: int) -> float:
    gen = torch.Generator().manual_seed(1)
    state = gibbs.init_uniform(gen, model, n)
    return timed(lambda: gibbs.step(gen, state, model, k, precision=precision), k, warmup,
                 repeats)


def raybm_compiled(model, n, k, warmup, repeats) -> Row:
    fused.set_compile(True)
    try:
        gen = torch.Generator().manual_seed(1)
        state = gibbs.init_uniform(gen, model, n)
        t0 = time.perf_counter()
        gibbs.step(gen, state, model, 1, precision="bf16")  # compiles (both half-step shapes)
        compile_s = time.perf_counter() - t0
        status = fused.compile_status()
        if status != "on":
            return Row("raybm bf16 (torch.compile)", None, status)
        ms = timed(lambda: gibbs.step(gen, state, model, k, precision="bf16"), k, warmup,
                   repeats)
        return Row("raybm bf16 (torch.compile)", ms,
                   f"first call {compile_s:.1f} s (compiles unless Inductor's cache has it)")
    finally:
        fused.set_compile(False)


# ------------------------------------------------------------------------------ rbms
def rbms_case(model, n: int, k: int, warmup: int, repeats: int) -> Row:
    name = "rbms 0.5.0 " + ("BBRBM" if isinstance(model, BernoulliRBM) else "PBRBM")
    try:
        import importlib.metadata as md

        version = md.version("rbms")
        if isinstance(model, BernoulliRBM):
            from rbms.bernoulli_bernoulli.classes import BBRBM as cls
        else:
            from rbms.potts_bernoulli.classes import PBRBM as cls
    except Exception as err:  # noqa: BLE001 - report why, never fake a number
        return Row(name, None, f"not run: {type(err).__name__}: {err}")
    if version != "0.5.0":
        name = f"rbms {version} " + name.split()[-1]
    params = cls(
        weight_matrix=model.weight.detach().clone(),
        vbias=model.vbias.detach().clone(),
        hbias=model.hbias.detach().clone(),
    )
    torch.manual_seed(1)  # rbms draws from torch's global generator
    chains = params.init_chains(n)

    def sweeps():
        c = chains
        for _ in range(k):
            c = params.sample_hiddens(c)
            c = params.sample_visibles(c)
        return c

    return Row(name, timed(sweeps, k, warmup, repeats))


# ------------------------------------------------------------------------------ sklearn
def sklearn_case(model: BernoulliRBM, n: int, k: int, warmup: int, repeats: int) -> Row:
    try:
        from sklearn import __version__ as skv
        from sklearn.neural_network import BernoulliRBM as SkRBM
    except Exception as err:  # noqa: BLE001
        return Row("scikit-learn BernoulliRBM.gibbs", None, f"not run: {err}")
    rbm = SkRBM(n_components=model.n_hidden, random_state=1)
    rbm.components_ = model.weight.detach().T.contiguous().numpy().astype(np.float32)
    rbm.intercept_hidden_ = model.hbias.detach().numpy().astype(np.float32)
    rbm.intercept_visible_ = model.vbias.detach().numpy().astype(np.float32)
    v0 = np.random.default_rng(1).random((n, model.n_visible)) < 0.5

    def sweeps():
        v = v0
        for _ in range(k):
            v = rbm.gibbs(v)
        return v

    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=2):
            ms = timed(sweeps, k, warmup, repeats)
    except ImportError:
        ms = timed(sweeps, k, warmup, repeats)
    return Row(f"scikit-learn {skv} BernoulliRBM.gibbs", ms, "float32 parameters")


# ------------------------------------------------------------------------------ floors
def floor_case(model, n: int, dtype: torch.dtype, k: int, warmup: int, repeats: int) -> float:
    """Two matmuls (one-hot x W for Potts) and a sweep's random bits, nothing else."""
    gen = torch.Generator().manual_seed(1)
    m = model.n_hidden
    w = model.weight.detach().reshape(-1, m).to(dtype)
    wt = w.T.contiguous()  # the layout raybm prepares once per parameter change
    n_in = w.shape[0]
    x = torch.randint(0, 2, (n, n_in), generator=gen).to(dtype)
    h = torch.randint(0, 2, (n, m), generator=gen).to(dtype)
    n_draws = n * (m + model.n_visible)

    # The random bits each raybm path draws: 16-bit uniforms for bf16 (four per word), 32-bit
    # halves for fp32 (two per word; torch.rand would cost about twice as much here).
    per_word = 4 if dtype == torch.bfloat16 else 2
    n_words = (n_draws + per_word - 1) // per_word
    # Preallocated outputs: a fresh multi-megabyte tensor page-faults on every first touch here.
    words = torch.empty(n_words, dtype=torch.int64)
    yh = torch.empty(n, m, dtype=dtype)
    yv = torch.empty(n, n_in, dtype=dtype)

    def sweeps():
        for _ in range(k):
            torch.mm(x, w, out=yh)
            torch.mm(h, wt, out=yv)
            random_words(gen, n_words, out=words)

    return timed(sweeps, k, warmup, repeats)


# ------------------------------------------------------------------------------ report
def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def table(title: str, rows: list[Row], ref: str, floor: dict[str, float]) -> str:
    """Markdown table; ``ref`` names the rbms row, ``floor`` maps a precision to its floor."""
    ref_ms = next((r.ms for r in rows if r.case.startswith(ref) and r.ms), None)
    lines = [f"**{title}**", "",
             "| case | ms / sweep | sweeps / s | speed-up vs rbms | x floor | note |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.ms is None:
            lines.append(f"| {r.case} | - | - | - | - | {r.note} |")
            continue
        vs = f"{ref_ms / r.ms:.2f}x" if ref_ms else "-"
        fl = next((f for key, f in floor.items() if key in r.case), None)
        xf = f"{r.ms / fl:.2f}" if fl and not r.case.startswith("floor") else "-"
        lines.append(f"| {r.case} | {r.ms:.2f} | {1e3 / r.ms:.1f} | {vs} | {xf} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--walkers", type=int, default=4096)
    ap.add_argument("--visible", type=int, default=784)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--potts", type=str, default="1024,100,21,256",
                    help="walkers,sites,states,hidden ('' to skip)")
    ap.add_argument("--k", type=int, default=10, help="sweeps per timed call")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile case")
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kw = dict(k=args.k, warmup=args.warmup, repeats=args.repeats)

    print(f"CPU: {cpu_name()}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"load average before: {load_average()}")
    n, nv, nh = args.walkers, args.visible, args.hidden
    model = bernoulli_model(nv, nh)
    rows = [
        Row("raybm fp32 (exact)", raybm_case(model, n, "fp32", **kw)),
        Row("raybm bf16 (fast, eager)", raybm_case(model, n, "bf16", **kw)),
    ]
    if not args.no_compile:
        rows.append(raybm_compiled(model, n, **kw))
    rows.append(rbms_case(model, n, **kw))
    if not args.no_sklearn:
        skw = dict(kw, k=max(1, args.k // 5), repeats=max(3, args.repeats // 2))
        rows.append(sklearn_case(model, n, **skw))
    floors = {"fp32": floor_case(model, n, torch.float32, **kw),
              "bf16": floor_case(model, n, torch.bfloat16, **kw)}
    rows += [Row("floor fp32: 2 fp32 matmuls + 32-bit draws", floors["fp32"]),
             Row("floor bf16: 2 bf16 matmuls + 16-bit draws", floors["bf16"])]
    print()
    print(table(f"Bernoulli: {n} walkers x {nv} visible x {nh} hidden", rows, "rbms", floors))

    if args.potts:
        pn, ps, pq, ph = (int(x) for x in args.potts.split(","))
        pm = potts_model(ps, pq, ph)
        prow = [
            Row("raybm fp32 (exact)", raybm_case(pm, pn, "fp32", **kw)),
            Row("raybm bf16 (fast, eager)", raybm_case(pm, pn, "bf16", **kw)),
        ]
        if not args.no_compile:
            prow.append(raybm_compiled(pm, pn, **kw))
        prow.append(rbms_case(pm, pn, **kw))
        pfloors = {"fp32": floor_case(pm, pn, torch.float32, **kw),
                   "bf16": floor_case(pm, pn, torch.bfloat16, **kw)}
        prow += [Row("floor fp32: 2 one-hot fp32 matmuls + 32-bit draws", pfloors["fp32"]),
                 Row("floor bf16: 2 one-hot bf16 matmuls + 16-bit draws", pfloors["bf16"])]
        print()
        print(table(f"Potts: {pn} walkers x {ps} sites x {pq} states x {ph} hidden", prow,
                    "rbms", pfloors))
    print()
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
