"""Seconds per training update on MNIST, end to end, against ``rbms`` in the same run.

Methods (784 visible x 512 hidden Bernoulli RBM, 2,000 walkers, batch 2,000, k = 10, SGD):

- ``pcd``: PCD-10 (persistent walkers, centred gradient);
- ``ff``: F&F-10 with a label unit (generation and classification updates, chains restarted
  from noise; Carbone et al. 2023, arXiv 2307.06797);
- ``jarzynski``: Jarzynski-weighted walkers (Carbone et al. 2023, arXiv 2305.19414), with
  resampling.

Each at ``sampler.precision`` fp32, bf16 and auto (what auto picks on this CPU is printed),
or digits (``--precisions fp32,digits``).
The peer is ``rbms`` 0.5.0 (``pip install rbms==0.5.0 h5py``; never imported by raybm),
``rbms train`` on the same binarised images, PCD-10 with the same sizes.

Whole processes: each case runs twice, ``--short`` and ``--long`` updates, and the time per
update is the difference of the two wall times over the difference of the update counts, so
that start-up, data loading, the end-of-run evaluation and saves cancel. The processes are
interleaved (rbms, raybm, rbms, ...) so that load on the machine hits every case alike. Peak
memory is each process's maximum resident set (``wait4``), of the long run.

Then, in this process, a breakdown of one update by part (``--breakdown``): the sweeps (the
kernel; F&F's label sweeps with the visibles clamped apart), the gradient statistics (positive and negative phase, closed form), the hidden
offsets of the centred gradient (positive-phase fields), the centring transform, the
optimizer step, and the rest (bookkeeping: minibatch, checks, walker state). And
(``--ab N``) an in-process A/B of each method against PCD: the trainers side by side, one
update of each in turn for ``N`` rounds, the ratio per round (what "within 1.2x of PCD" asks,
measured where the machine's drift cannot enter it); ``--ab-after M`` first trains each
trainer ``M`` updates, untimed, for the state most of a long run's updates see.

    python benchmarks/train_throughput.py                       # everything (~10 min)
    python benchmarks/train_throughput.py --methods pcd --precisions fp32 --short 10 --long 60
    python benchmarks/train_throughput.py --device cuda --shard 30   # on a GPU (torch alone)

``RAYBM_MNIST=DIR`` reads the images from another folder than ``../shared/data/mnist``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("RAYBM_MNIST", ROOT.parent / "shared" / "data" / "mnist"))
IMAGES, LABELS = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
SIZES = {"n_hidden": 512, "n_walkers": 2000, "batch": 2000, "k": 10}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    """The CPU's model and the flags that decide the matmul paths."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "unknown", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags]
    named = " ".join(have) or "none of " + ", ".join(FLAGS)
    # Caps on what torch's kernels may use (oneDNN's, ATen's and Inductor's, MKL's): a run
    # under them mimics an older CPU (acceptance 2's AVX2 figures on a newer one).
    from raybm.cpu import ISA_CAP_VARIABLES

    caps = [f"{k}={os.environ[k]}" for k in (*ISA_CAP_VARIABLES, "ATEN_CPU_CAPABILITY",
                                              "MKL_ENABLE_INSTRUCTIONS")
            if os.environ.get(k)]
    capped = f"; capped: {' '.join(caps)}" if caps else ""
    return f"{model}; {os.cpu_count()} cores; flags: {named}{capped}"


def raybm_sets(method: str, precision: str, n_updates: int, device: str,
               compiled: str = "auto") -> list[str]:
    """``raybm train`` settings of one case: quiet (no tracking, one log, one checkpoint),
    with the smallest end-of-run evaluation (it cancels in the difference anyway)."""
    sets = [f"data.path={IMAGES}", f"data.labels_path={LABELS}", "data.test_fraction=0.1",
            f"model.n_hidden={SIZES['n_hidden']}", f"algorithm.k={SIZES['k']}",
            f"train.batch_size={SIZES['batch']}", f"train.n_updates={n_updates}",
            f"train.log_every={n_updates}", f"train.checkpoint_every={n_updates}",
            "train.eval_samples=2", "train.eval_t=[1]", "train.eval_k_long=1",
            "train.eval_chain_rounds=0", "train.threads=auto", "train.progress=false",
            "tracking.enabled=false", "distributed.workers=0", "optimizer.name=sgd",
            "optimizer.lr=0.01", f"sampler.precision={precision}",
            f"sampler.compile={compiled}"]
    if device != "cpu":
        sets.append("distributed.use_gpu=true")
    if method == "pcd":
        sets += ["algorithm.name=pcd", f"algorithm.n_walkers={SIZES['n_walkers']}",
                 "model.labels=false"]
    elif method == "ff":
        sets += ["algorithm.name=kstep", "model.labels=true"]
    elif method == "jarzynski":
        sets += ["algorithm.name=jarzynski", f"algorithm.n_walkers={SIZES['n_walkers']}",
                 "model.labels=false"]
    else:
        raise ValueError(method)
    return sets


def timed_process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-3000:])
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode})")
    return wall, usage.ru_maxrss / 1024.0


def write_rbms_data(directory: Path) -> Path:
    """The binarised images as ``rbms`` reads them (HDF5, ``samples`` and ``labels``)."""
    import h5py
    import numpy as np

    from raybm.data.idx import load_idx

    data = load_idx(IMAGES, LABELS)
    path = directory / "mnist.h5"
    with h5py.File(path, "w") as f:
        f["samples"] = data.x.numpy().astype(np.float32)
        f["labels"] = data.labels.numpy()
    return path


def rbms_argv(data: Path, n_updates: int, out: Path, device: str) -> list[str] | None:
    """``rbms train`` (its script run as a module: the same as the ``rbms`` command)."""
    import importlib.util

    if importlib.util.find_spec("rbms") is None:
        return None
    return [sys.executable, "-m", "rbms.scripts.train_rbm", "--dataset", str(data),
            "--num_hiddens", str(SIZES["n_hidden"]),
            "--batch_size", str(SIZES["batch"]), "--num_chains", str(SIZES["n_walkers"]),
            "--gibbs_steps", str(SIZES["k"]), "--num_updates", str(n_updates),
            "--learning_rate", "0.01", "--device", device, "--n_save", "1",
            "-o", str(out)]


def whole_processes(args, env: dict[str, str], work: Path) -> list[dict]:
    cases: list[tuple[str, str]] = []
    data = None
    if "rbms" in args.peers:
        try:
            data = write_rbms_data(work)
        except ImportError:
            print("rbms comparison skipped: h5py is not installed (pip install rbms==0.5.0 "
                  "h5py)")
    for method in args.methods:
        if method == "pcd" and data is not None:
            cases.append(("rbms 0.5.0 PCD-10", "fp32"))
        if _has_config_deps():  # raybm train itself (a GPU machine may have torch alone)
            cases += [(method, precision) for precision in args.precisions]
    rows = []
    if args.compile == "true" and cases:
        # The compiled kernels into Inductor's on-disk cache first, so that the short and
        # the long run of each case find them alike (a cold compilation, ~15 s, would fall
        # on whichever ran first). Every precision of the run: fp32 and bf16 compile
        # different kernels, and warming bf16 alone left a cold fp32 compilation in the
        # first fp32 short run (AMD EPYC, 2026-12-07: 17.6 s against 11.3 s).
        for method in args.methods:
            for precision in args.precisions:
                timed_process([sys.executable, "-m", "raybm.cli", "train", "--no-progress",
                               "--out", str(work / f"warm-{method}-{precision}"),
                               *[f"--set={s}" for s in raybm_sets(method, precision, 2,
                                                                  args.device, "true")]], env)
    samples: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    peaks: dict[tuple[str, str], float] = {c: 0.0 for c in cases}
    for repeat in range(args.repeats):  # every case once per round: load hits all alike
        for name, precision in cases:
            walls = []
            for n in (args.short, args.long):
                if name.startswith("rbms"):
                    argv = rbms_argv(data, n, work / f"rbms{n}.h5",
                                     "cuda" if args.device != "cpu" else "cpu")
                    if argv is None:
                        print("rbms comparison skipped: rbms is not installed")
                        break
                else:
                    argv = [sys.executable, "-m", "raybm.cli", "train", "--no-progress",
                            "--out", str(work / f"{name}-{precision}-{n}-{repeat}"),
                            *[f"--set={s}" for s in raybm_sets(name, precision, n,
                                                               args.device, args.compile)]]
                wall, rss = timed_process(argv, env)
                walls.append(wall)
                peaks[(name, precision)] = max(peaks[(name, precision)], rss)
            if len(walls) == 2:
                per = (walls[1] - walls[0]) / (args.long - args.short)
                samples[(name, precision)].append(per)
                print(f"  round {repeat + 1}: {name:<18} {precision:<5} {per * 1000:8.1f} "
                      f"ms/update ({walls[0]:.1f} s / {walls[1]:.1f} s)", flush=True)
    for (name, precision), values in samples.items():
        if values:
            rows.append({"case": name, "precision": precision,
                         "s_per_update": statistics.median(values),
                         "s_min": min(values), "s_max": max(values), "runs": values,
                         "peak_mib": peaks[(name, precision)]})
    return rows


def breakdown(method: str, precision: str, device: str, updates: int) -> dict[str, float]:
    """Milliseconds per update by part, in this process (timers around each part)."""
    import torch

    from raybm.algorithms.centering import Centering
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.models.rbm import RBM
    from raybm.train import make_trainer

    sets = raybm_sets(method, precision, 10**6, device)  # compile auto: on, for bf16
    config = load_config(None, [s for s in sets if not s.startswith("distributed.use_gpu")])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    if device != "cpu":
        raise SystemExit("--breakdown runs on the CPU (raybm's trainer moves no model to "
                         "a GPU by itself outside Ray workers)")
    parts: dict[str, float] = {}

    def timed(part, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[part] = parts.get(part, 0.0) + time.perf_counter() - t0
        return wrapper

    kernel = trainer.estimator.kernel
    step = type(kernel).step
    object.__setattr__(kernel, "step", timed("sweeps", lambda *a, **kw: step(kernel, *a, **kw)))
    chain = type(kernel).label_chain  # F&F's classification sweeps, visibles clamped
    object.__setattr__(kernel, "label_chain",
                       timed("label sweeps", lambda *a, **kw: chain(kernel, *a, **kw)))
    grad = RBM.weighted_energy_gradient
    RBM.weighted_energy_gradient = timed("gradient statistics", grad)
    offsets = Centering.update_hidden_offset
    Centering.update_hidden_offset = timed("hidden offsets (positive phase)", offsets)
    transform = Centering.transform_
    Centering.transform_ = timed("centring transform", transform)
    for o in trainer.optimizers.values():
        o.step = timed("optimizer", o.step)
    try:
        for _ in range(3):
            trainer.update(diagnostics=False)
        parts.clear()
        t0 = time.perf_counter()
        for _ in range(updates):
            trainer.update(diagnostics=False)
        total = time.perf_counter() - t0
    finally:
        RBM.weighted_energy_gradient = grad
        Centering.update_hidden_offset = offsets
        Centering.transform_ = transform
    out = {k: 1000 * v / updates for k, v in parts.items()}
    out["other (bookkeeping, autograd)"] = 1000 * total / updates - sum(out.values())
    out["total"] = 1000 * total / updates
    del torch
    return out


def interleaved(methods: list[str], precision: str, rounds: int, after: int = 0
                ) -> tuple[dict[str, list[float]], float | None]:
    """Seconds of one update per round for each method, the trainers built side by side in
    this process and stepped one update each in turn: a ratio between them sees the same
    machine within a second (this VM's speed drifts by 1.5x within minutes, which whole
    processes minutes apart cannot tell from a difference between the methods).

    ``after``: updates each trainer makes, untimed, before the rounds: the state most of a
    long run's updates see, where F&F's sampled labels are mostly right and its
    classification contrast computes only the rows whose label moved
    (``algorithms.base.contrast_rows``); from initialisation nearly every row moves. Also
    returns the fraction of rows that contrast computed during the rounds (None without
    F&F)."""
    import raybm.algorithms.base as algorithms_base

    trainers = {method: built_trainer(method, precision, after) for method in methods}
    rows = [0, 0]  # computed, in all
    contrast_rows = algorithms_base.contrast_rows

    def counted(moved):
        out = contrast_rows(moved)
        rows[0] += len(moved) if out is None else len(out)
        rows[1] += len(moved)
        return out

    algorithms_base.contrast_rows = counted
    try:
        times = in_turn(trainers, rounds)
    finally:
        algorithms_base.contrast_rows = contrast_rows
    return times, (rows[0] / rows[1] if rows[1] else None)


def built_trainer(method: str, precision: str, after: int = 0):
    """A trainer of one case in this process (compiled draws), past its first updates."""
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    config = load_config(None, raybm_sets(method, precision, 10**6, "cpu", "true"))
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    for _ in range(3 + after):  # compiled kernels and first-touch buffers, then `after`
        trainer.update(diagnostics=False)
    return trainer


def in_turn(trainers: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of one update per round for each trainer, stepped one update each in turn."""
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.update(diagnostics=False)
            times[name].append(time.perf_counter() - t0)
    return times


def best_ms(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn`` (after one untimed), in milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def matmul_floor(precision: str, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of the matrix products one PCD-10 update cannot avoid, timed alone in
    this process: per sweep ``v W`` (n x N by N x M) and ``h W^T`` (n x M by M x N); per
    update the fields of data and walkers (two ``x W``) and the two sufficient-statistic
    products ``X^T [P | 1]`` (N x n by n x (M + 1)). Any implementation, ``rbms`` included,
    does at least these; ``rbms``' time over this floor bounds the speed-up any
    implementation can have over it on this CPU."""
    import torch

    n, nv, nh, k = SIZES["n_walkers"], 784, SIZES["n_hidden"], SIZES["k"]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    v = (torch.rand(n, nv, generator=gen) < 0.5).to(dtype)
    h = (torch.rand(n, nh, generator=gen) < 0.5).to(dtype)
    w = torch.randn(nv, nh, generator=gen).to(dtype)
    p = torch.rand(n, nh + 1, generator=gen).to(dtype)
    up = best_ms(lambda: torch.mm(v, w), repeats)
    down = best_ms(lambda: torch.mm(h, w.t()), repeats)
    stats = best_ms(lambda: torch.mm(v.t(), p), repeats)
    return {"vW": up, "hW^T": down, "X^T[P|1]": stats,
            "pcd10_floor": k * (up + down) + 2 * up + 2 * stats}


def int8_sweep_floor(repeats: int = 5) -> dict[str, float] | None:
    """The floor of ``sampler.precision: digits``: every product of :func:`matmul_floor` as
    exact int32 sums of 0/1 states against three int8 digits of each column of the other
    operand (``raybm.samplers.digits``, ``torch._int_mm``), as the digits path runs them:
    the sweeps' two products and the fields against the couplings' digits, ``X^T [P | 1]``
    against digits of ``[P | 1]``. The splits into digits (of the couplings once per
    update, of ``[P | 1]`` per gradient) are not counted. None where int8 sums are not
    exact on this CPU (digits then run as fp32)."""
    import torch

    from raybm.samplers import digits

    if not digits.available(torch.device("cpu")):
        return None
    n, nv, nh, k = SIZES["n_walkers"], 784, SIZES["n_hidden"], SIZES["k"]
    gen = torch.Generator().manual_seed(0)
    v = (torch.rand(n, nv, generator=gen) < 0.5).to(torch.int8)
    h = (torch.rand(n, nh, generator=gen) < 0.5).to(torch.int8)
    w = torch.randn(nv, nh, generator=gen) * 0.05
    p = torch.rand(n, nh + 1, generator=gen)
    up_digits, down_digits = digits.split(w), digits.split(w.T.contiguous())
    p_digits = digits.split(p)
    up = best_ms(lambda: digits.sums(v, up_digits), repeats)
    down = best_ms(lambda: digits.sums(h, down_digits), repeats)
    stats = best_ms(lambda: digits.sums(v.t(), p_digits), repeats)
    return {"vW_3digits": up, "hW^T_3digits": down, "X^T[P|1]_3digits": stats,
            "pcd10_floor": k * (up + down) + 2 * up + 2 * stats}


def load_mnist_tensors():
    """The binarised MNIST test images and labels as torch tensors (no config needed)."""
    from raybm.data.idx import load_idx

    data = load_idx(IMAGES, LABELS)
    return data.x, data.labels


def shard_loop(method: str, precision: str, device: str, updates: int,
               compile_draws: bool = False) -> float:
    """Seconds per update of one shard's work, without the trainer: what a Ray worker runs
    per update on its own device (sweeps, closed-form gradient, centring, SGD, Jarzynski's
    weights), built from raybm's estimator, kernel and model alone (no config, Ray or MLflow:
    it runs where only torch is installed, as on the lent GPU machine)."""
    import torch

    from raybm.algorithms.base import ENERGY, Batch
    from raybm.algorithms.centering import Centering
    from raybm.algorithms.contrastive import KStep, PersistentContrastiveDivergence
    from raybm.algorithms.jarzynski import Jarzynski
    from raybm.models.rbm import BernoulliRBM
    from raybm.samplers.gibbs import GibbsKernel

    x, labels = load_mnist_tensors()
    x, labels = x.to(device), labels.to(device)
    n_labels = 10 if method == "ff" else 0
    torch.manual_seed(0)
    model = BernoulliRBM(784, SIZES["n_hidden"], n_labels)
    model.init_parameters(torch.Generator().manual_seed(0))
    if method == "jarzynski":  # an exact start: no couplings, then the kick
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    model.init_visible_bias(x.cpu())
    model = model.to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    kernel = GibbsKernel(precision, compile=compile_draws)
    k = SIZES["k"]
    if method == "pcd":
        est = PersistentContrastiveDivergence(k=k, kernel=kernel)
    elif method == "ff":
        est = KStep(k=k, kernel=kernel)
    else:
        est = Jarzynski(k=k, kernel=kernel)
    walkers = est.init_walkers(gen, model, SIZES["n_walkers"])
    walkers = est.start(torch.Generator(device=device).manual_seed(2), model, walkers, 0.01)
    centering = Centering(model, x.cpu(), labels.cpu() if n_labels else None)
    centering.visible_offset = centering.visible_offset.to(device)
    centering.hidden_offset = centering.hidden_offset.to(device)
    if centering.label_offset is not None:
        centering.label_offset = centering.label_offset.to(device)
    params = dict(model.named_parameters())

    def update(step: int) -> None:
        nonlocal walkers
        rows = torch.randint(0, x.shape[0], (SIZES["batch"],), generator=gen, device=device)
        batch = Batch(x[rows], labels[rows] if n_labels else None)
        centering.update_hidden_offset(model, batch, precision)
        for phase in est.phases:
            out = est.estimate(gen, model, batch, walkers, phase)
            if out.walkers is not None:
                walkers = out.walkers
            model.zero_grad(set_to_none=True)
            if out.loss is not None and out.loss.requires_grad:
                out.loss.backward()
            for name, g in out.grads.get(ENERGY, {}).items():
                params[name].grad = g if params[name].grad is None else params[name].grad + g
            centering.transform_(model)
            token = est.before_update(model, walkers)
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p.sub_(0.01 * p.grad)
            model.post_update()
            walkers = est.after_update(model, walkers, token)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in range(3):
        update(step)
    sync()
    t0 = time.perf_counter()
    for step in range(updates):
        update(step)
    sync()
    return (time.perf_counter() - t0) / updates


def round_ratios(a: dict, b: dict) -> list[float]:
    """``a``'s time over ``b``'s, round by round (the rounds' runs lie minutes apart)."""
    return [x / y for x, y in zip(a["runs"], b["runs"])]


def ab_line(times: list[float], base: list[float], base_name: str) -> str:
    """``median (quartiles)`` of an A/B's per-round ratios ``times / base``, and both medians."""
    q1, q2, q3 = statistics.quantiles([a / b for a, b in zip(times, base)], n=4)
    return (f"{q2:.3f} ({q1:.3f}-{q3:.3f}); ms per update {1000 * statistics.median(times):.1f}"
            f" against {base_name}'s {1000 * statistics.median(base):.1f}")


def spread(ratios: list[float], unit: str = "") -> str:
    """``median (min-max)`` of per-round ratios."""
    return (f"{statistics.median(ratios):.2f}{unit} ({min(ratios):.2f}-"
            f"{max(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="pcd,ff,jarzynski")
    parser.add_argument("--precisions", default="fp32,bf16,auto")
    parser.add_argument("--peers", default="rbms", help="rbms, or none")
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of every case (the median is reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", default="true", choices=["true", "auto", "false"],
                        help="sampler.compile of the raybm processes (default true: what auto "
                             "gives a run of >= ~870 updates in fp32, ~1,370 in bf16, at this "
                             "size; these runs are shorter)")
    parser.add_argument("--breakdown", type=int, default=10,
                        help="updates per in-process breakdown (0: none)")
    parser.add_argument("--ab", type=int, default=0, metavar="N",
                        help="rounds of the in-process A/B of each method against PCD (one "
                             "update of each in turn; 0: none)")
    parser.add_argument("--ab-after", type=int, default=0, metavar="N",
                        help="untimed updates of each trainer before the A/B rounds (a "
                             "trained state: F&F's classification contrast then computes "
                             "only the rows whose sampled label moved)")
    parser.add_argument("--ab-auto", type=int, default=0, metavar="N",
                        help="rounds of the in-process A/B of sampler.precision auto against "
                             "fp32, each method (acceptance 2: auto never slower where bf16 "
                             "is not native; 0: none)")
    parser.add_argument("--ab-digits", type=int, default=0, metavar="N",
                        help="rounds of the in-process A/B of sampler.precision digits "
                             "against fp32, each method (0: none)")
    parser.add_argument("--no-processes", action="store_true",
                        help="only the in-process breakdown")
    parser.add_argument("--shard", type=int, default=0,
                        help="updates of the trainer-free shard loop per case (0: none; "
                             "what runs on a machine with torch alone, e.g. a GPU)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    for name in ("ab", "ab_auto", "ab_digits"):
        if getattr(args, name) == 1 or getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')}: at least 2 rounds (quartiles of the "
                         "per-round ratios), or 0")
    if args.ab_after < 0:
        parser.error("--ab-after: a number of updates, 0 or more")
    args.methods = args.methods.split(",")
    args.precisions = args.precisions.split(",")
    args.peers = args.peers.split(",")
    if not IMAGES.is_file():
        raise SystemExit(f"needs the MNIST test images at {IMAGES} (../shared/data/mnist)")
    import torch

    from raybm.samplers.gibbs import bf16_native, int8_exact, resolve_precision

    # (the MNIST model is wide enough for both bf16 and the digits: AUTO_*_MIN_WIDTH)
    native, int8 = bf16_native(args.device), int8_exact(args.device)
    print(f"CPU: {cpu_line()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(f"native bf16 matmuls: {native}; exact int8 sums: {int8}; sampler.precision auto "
          f"runs {resolve_precision('auto', native, int8)}")
    print(f"MNIST t10k, {SIZES['n_hidden']} hidden, {SIZES['n_walkers']} walkers, batch "
          f"{SIZES['batch']}, k {SIZES['k']}; whole processes, ({args.long} - {args.short}) "
          "updates")
    results: dict = {"cpu": cpu_line(), "torch": torch.__version__, "device": args.device,
                     "bf16_native": native, "int8_exact": int8, "sizes": SIZES, "processes": [], "breakdown": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="raybm-throughput-") as tmp:
        if not args.no_processes:
            results["processes"] = whole_processes(args, env, Path(tmp))
    rows = results["processes"]
    ref = next((r for r in rows if r["case"].startswith("rbms")), None)
    if rows:
        # Per round too: rbms' time over this case's in the same round (the VMs this runs on
        # drift by 1.5x within minutes; a round's cases run within a few minutes of each
        # other, so the ratio of one round is steadier than the ratio of the medians).
        print(f"\nMedian of {args.repeats} rounds (min-max in brackets); 'per round': the "
              "median (min-max) of rbms' time over the case's, round by round:")
        print("| case | precision | ms / update | vs rbms | vs rbms per round | time over PCD's, "
              "same precision | peak MiB |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            pcd = next((p for p in rows if p["case"] == "pcd"
                        and p["precision"] == r["precision"]), None)
            vs_rbms = f"{ref['s_per_update'] / r['s_per_update']:.2f}x" if ref else "-"
            per_round = vs_pcd = "-"
            if not r["case"].startswith("rbms"):
                if ref:
                    r["vs_rbms_per_round"] = round_ratios(ref, r)
                    per_round = spread(r["vs_rbms_per_round"], "x")
                if pcd:  # and against PCD (the acceptance's "within 1.2x of PCD")
                    r["vs_pcd_per_round"] = round_ratios(r, pcd)
                    vs_pcd = (f"{r['s_per_update'] / pcd['s_per_update']:.2f} (per round "
                              f"{spread(r['vs_pcd_per_round'])})")
            print(f"| {r['case']} | {r['precision']} | {r['s_per_update'] * 1000:.1f} "
                  f"({r['s_min'] * 1000:.0f}-{r['s_max'] * 1000:.0f}) | "
                  f"{vs_rbms} | {per_round} | {vs_pcd} | {r['peak_mib']:.0f} |")
    if args.device == "cpu":
        print("\nMatmul floor of one PCD-10 update (the products alone, best of 5), ms:")
        results["floor"] = {}
        for precision in ("fp32", "bf16") if native else ("fp32",):
            floor = matmul_floor(precision)
            results["floor"][precision] = floor
            parts = ", ".join(f"{k} {v:.1f}" for k, v in floor.items())
            bound = (f"; rbms / floor = {ref['s_per_update'] * 1000 / floor['pcd10_floor']:.2f}x"
                     if ref else "")
            print(f"  {precision}: {parts}{bound}", flush=True)
        digits = int8_sweep_floor()
        if digits is not None:  # where int8 sums are exact here
            results["floor"]["int8_digits"] = digits
            parts = ", ".join(f"{k} {v:.1f}" for k, v in digits.items())
            bound = (f"; rbms / floor = {ref['s_per_update'] * 1000 / digits['pcd10_floor']:.2f}x"
                     if ref else "")
            print(f"  digits (every product from 3 int8 digits): {parts}{bound}", flush=True)
    if args.breakdown and args.device == "cpu":
        print("\nIn-process breakdown, ms per update:")
        for method in args.methods:
            for precision in args.precisions:
                parts = breakdown(method, precision, args.device, args.breakdown)
                results["breakdown"][f"{method}/{precision}"] = parts
                line = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                print(f"  {method} {precision}: {line}", flush=True)
    if args.ab and args.device == "cpu":
        print(f"\nIn-process A/B against PCD, one update of each in turn, {args.ab} rounds "
              f"after {args.ab_after} untimed updates (time over PCD's: median (quartiles)):")
        results["ab"] = {}
        for precision in args.precisions:
            others = [m for m in args.methods if m != "pcd"]
            if not others:
                break
            times, moved = interleaved(["pcd", *others], precision, args.ab, args.ab_after)
            results["ab"][precision] = {**times, "after": args.ab_after,
                                        "classification_rows_computed": moved}
            if moved is not None:
                print(f"  F&F's classification contrast computed {moved:.1%} of its rows "
                      f"({precision})", flush=True)
            for method in others:
                print(f"  {method} {precision}: {ab_line(times[method], times['pcd'], 'PCD')}",
                      flush=True)
    for other, rounds in (("auto", args.ab_auto), ("digits", args.ab_digits)):
        if not rounds or args.device != "cpu":
            continue
        print(f"\nIn-process A/B of {other} against fp32, one update of each in turn, "
              f"{rounds} rounds ({other}'s time over fp32's: median (quartiles)):")
        results[f"ab_{other}"] = {}
        for method in args.methods:
            times = in_turn({precision: built_trainer(method, precision)
                             for precision in ("fp32", other)}, rounds)
            results[f"ab_{other}"][method] = times
            print(f"  {method}: {ab_line(times[other], times['fp32'], 'fp32')}", flush=True)
    if args.shard:
        print(f"\nShard loop (no trainer), ms per update on {args.device}:")
        results["shard"] = {}
        for method in args.methods:
            for precision in args.precisions:
                if precision == "auto":
                    precision = resolve_precision("auto", native, int8)
                for compiled in ((False, True) if precision == "bf16" else (False,)):
                    key = f"{method}/{precision}" + ("/compiled" if compiled else "")
                    try:
                        per = shard_loop(method, precision, args.device, args.shard, compiled)
                    except Exception as err:  # noqa: BLE001 - report and go on
                        print(f"  {key}: failed ({type(err).__name__}: {err})", flush=True)
                        continue
                    results["shard"][key] = per
                    print(f"  {key}: {per * 1000:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _has_config_deps() -> bool:
    """Whether ``raybm train`` can run here (pydantic; a GPU machine may have torch alone)."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
