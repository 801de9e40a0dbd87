"""Denoising MNIST with energies trained by DCD-VE and by CD-k (issue 19, acceptance 4).

Both methods train the same conv energy (``model.kind: conv``, the Jarzynski research's) on
MNIST's 10,000 test-file images as floats in ``[-1, 1]`` (``../shared/data/mnist``; a tenth
held out), with Adam (lr 1e-3, betas 0 / 0.999, gradient norm clipped at 1), batch 64, the
same number of updates and an energy penalty 0.1 (what keeps an image energy from running
away on this budget, README):

- **DCD-VE**: the heat-equation route with one Hutchinson probe of the Laplacian (an exact one
  is 784 backward passes) under a VE schedule ``sigma_t`` log-uniform in ``[0.05, 0.5]``
  (absolute, in ``[-1, 1]`` units), so one energy has seen every noise level it denoises;
- **CD-k**: ``k`` ULA steps of ``--cd-step`` (0.001) from the data, in the box (a Langevin
  kernel at the energy's own temperature, so that the energy is a log-density whose score can
  denoise: with short-run Langevin, configs/mnist236_conv_buffer.yaml's sampler, a first run
  learned an energy too flat to move a noisy image, Tweedie's estimate equal to the input).

Each trained energy denoises ``y = x + sigma eps`` for ``sigma`` in 0.1, 0.2, 0.4 on 1,000
held-out images by

- **Tweedie**: one step ``x_hat = y - sigma^2 grad E(y)`` (``metrics.continuous.denoise_rmse``),
  and the same clamped to ``[-1, 1]``;
- **MAP**: ``--map-steps`` gradient steps on the posterior energy ``E(x) + |y - x|^2 /
  (2 sigma^2)`` from ``y`` (step ``0.2 sigma^2``), clamped to ``[-1, 1]``;

and reports the RMSE per pixel beside the noisy input's (``~sigma``) and the trivial
denoiser's (``y`` clamped to ``[-1, 1]``). Lower is better; a denoiser that is no better than
clamping has learned nothing about digits.

    python benchmarks/dcd_mnist_denoise.py --out DIR [--updates 500] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.threads import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"  # --data: elsewhere
SIGMAS = (0.1, 0.2, 0.4)


def configs(updates: int, k: int, data: Path, cd_step: float = 0.001,
            cd_penalty: float = 0.1) -> dict[str, dict]:
    common = {
        "data": {"format": "mnist", "path": str(data / "t10k-images-idx3-ubyte.gz"),
                 "labels_path": str(data / "t10k-labels-idx1-ubyte.gz"),
                 "test_fraction": 0.1},
        "model": {"kind": "conv", "activation": "silu", "base_scale": 0.0},
        "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.0, 0.999], "clip_norm": 1.0},
        "train": {"n_updates": updates, "batch_size": 64, "log_every": 50,
                  "checkpoint_every": updates, "threads": 1, "progress": False,
                  "eval_samples": 16},
        "tracking": {"enabled": False},
        "distributed": {"workers": 0},
    }
    return {
        "dcd": common | {
            "algorithm": {"name": "dcd_ve", "route": "taylor", "probes": 1,
                          "sigma_unit": "absolute", "sigma": 0.05, "sigma_max": 0.5,
                          "energy_penalty": 0.1},
            "sampler": {"name": "short_run", "step_size": 10.0, "noise_std": 0.005,
                        "grad_clamp": 0.03, "box": [-1.0, 1.0]}},
        "cd": common | {
            "algorithm": {"name": "cd", "k": k, "energy_penalty": cd_penalty},
            "sampler": {"name": "ula", "step_size": cd_step, "box": [-1.0, 1.0]}},
    }


def map_denoise(model, y: torch.Tensor, sigma: float, steps: int) -> torch.Tensor:
    """``steps`` gradient steps on ``E(x) + |y - x|^2 / (2 sigma^2)`` from ``y``, in the box."""
    x, h = y.clone(), 0.2 * sigma * sigma
    for _ in range(steps):
        _, grad = model.energy_and_grad(x)
        x = (x - h * (grad.detach() + (x - y) / (sigma * sigma))).clamp(-1.0, 1.0)
    return x


def evaluate(run_dir: Path, n: int, map_steps: int) -> dict[str, float]:
    from raybm.checkpoint import load_checkpoint
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.metrics.continuous import denoise_rmse

    model = load_checkpoint(run_dir).model
    config = load_config(run_dir / "config.yaml")
    _, test = load_data(config)
    x = test.x[:n]
    out: dict[str, float] = {}
    for sigma in SIGMAS:
        gen = torch.Generator().manual_seed(int(sigma * 1000))
        tweedie, noisy = denoise_rmse(model, test, sigma, torch.Generator().manual_seed(
            int(sigma * 1000)), n=n)
        y = x + sigma * torch.randn(x.shape, generator=gen)
        clamped = y.clamp(-1.0, 1.0)
        x_map = torch.cat([map_denoise(model, part, sigma, map_steps)
                           for part in y.split(250)])
        # Tweedie's estimate clamped to the box, as the MAP descent's is (same noise draw)
        x_tw = (y + sigma * sigma * torch.cat([model.score(part) for part in y.split(250)])
                ).clamp(-1.0, 1.0)
        rmse = lambda a: math.sqrt(float((a - x).double().square().mean()))  # noqa: E731
        out |= {f"noisy_{sigma}": noisy, f"clamp_{sigma}": rmse(clamped),
                f"tweedie_{sigma}": tweedie, f"tweedie_clamped_{sigma}": rmse(x_tw),
                f"map_{sigma}": rmse(x_map)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--k", type=int, default=10, help="CD-k's Langevin steps")
    parser.add_argument("--n", type=int, default=1000, help="held-out images denoised")
    parser.add_argument("--map-steps", type=int, default=30)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cd-step", type=float, default=0.001, help="CD-k's ULA step")
    parser.add_argument("--cd-penalty", type=float, default=0.1, help="CD-k's energy penalty")
    parser.add_argument("--methods", nargs="+", default=["dcd", "cd"], choices=["dcd", "cd"])
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"needs MNIST at {args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    running = {}
    for method, config in configs(args.updates, args.k, args.data.resolve(),
                                  args.cd_step, args.cd_penalty).items():
        if method not in args.methods or (method in results
                                           and "failed" not in results[method]):
            continue
        config_file = args.out / f"{method}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.rmtree(args.out / method, ignore_errors=True)
        log = (args.out / f"{method}.log").open("w")
        running[method] = (time.perf_counter(), log, subprocess.Popen(
            [sys.executable, "-m", "raybm.cli", "train", str(config_file), "--out",
             str(args.out / method)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    ended = {}
    try:
        while len(ended) < len(running):  # the two trainings side by side, each timed
            for method, (start, log, proc) in running.items():
                if method not in ended and proc.poll() is not None:
                    ended[method] = time.perf_counter() - start
                    log.close()
            time.sleep(0.5)
    finally:
        for _, log, proc in running.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            log.close()
    for method, (_, log, proc) in running.items():
        seconds = round(ended[method], 1)
        if proc.returncode != 0:
            lines = Path(log.name).read_text().strip().splitlines()
            results[method] = {"failed": (lines or ["no output"])[-1][-300:],
                               "seconds": seconds}
        else:
            summary = json.loads((args.out / method / "summary.json").read_text())
            results[method] = {"seconds": seconds,
                               "updates_per_s": summary.get("updates_per_s"),
                               "sm_loss_test": summary.get("sm_loss_test")}
            results[method] |= evaluate(args.out / method, args.n, args.map_steps)
        results_file.write_text(json.dumps(results, indent=2))
    print(f"CPU {cpu_model()}; {args.updates} updates each, batch 64, one thread each, side by side")
    print("| method | s | " + " | ".join(
        f"sigma {s}: noisy / clamp / Tweedie / Tweedie clamped / MAP" for s in SIGMAS) + " |")
    for method, r in results.items():
        if "failed" in r:
            print(f"| {method} | {r['seconds']} | failed: {r['failed']} |")
            continue
        cells = [f"{r[f'noisy_{s}']:.3f} / {r[f'clamp_{s}']:.3f} / {r[f'tweedie_{s}']:.3f} / "
                 f"{r[f'tweedie_clamped_{s}']:.3f} / {r[f'map_{s}']:.3f}" for s in SIGMAS]
        print(f"| {method} | {r['seconds']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
