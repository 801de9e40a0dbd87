"""How far a Jarzynski walker's log-weight drifts from float64 through the rounding of its work.

Each update adds ``-(F_theta'(x) - F_theta(x))`` to every walker's log-weight. This trains the
throughput benchmark's Jarzynski case (MNIST t10k, 784 x 512, 2,000 walkers, k 10) in this
process and, at every update, computes the work three ways for the same walkers and
parameters: in float64 (the reference), as ``raybm`` charges it (``RBM.energy_change``), and
as the difference of the two free energies in the parameters' float32 (the form before
2026-12-07). It prints the error of each summed over the updates, per walker: its mean over
the walkers (a common shift, which moves the running ``log Z`` and no weight) and its spread
about that mean (which moves the normalised weights).

    python benchmarks/jarzynski_work.py --precision auto --updates 400

Not a timing: the float64 references cost more than the update.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput  # noqa: E402

from raybm.algorithms.jarzynski import Jarzynski  # noqa: E402
from raybm.metrics.exact import as_float64  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="auto", help="sampler.precision: fp32, bf16, digits, auto")
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--reports", type=int, default=4, help="lines printed along the way")
    args = parser.parse_args()

    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    if not train_throughput.IMAGES.exists():
        raise SystemExit(f"needs the MNIST t10k files: {train_throughput.IMAGES} is missing")
    config = load_config(None, train_throughput.raybm_sets(
        "jarzynski", args.precision, 10**6, "cpu", "true"))
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    estimator: Jarzynski = trainer.estimator
    print(train_throughput.cpu_line())
    print(f"sampler.precision {args.precision}: the sweeps and the work run in "
          f"{estimator.kernel.precision}; {args.updates} updates")

    errors: dict[str, torch.Tensor] = {}
    before_update, after_update = estimator.before_update, estimator.after_update

    def before(model, walkers):
        # The parameters before the step, in float64, and the float32 free energy.
        start = (as_float64(copy.deepcopy(model)),
                 model.free_energy(walkers.x, walkers.condition).double())
        return start, before_update(model, walkers)

    def after(model, walkers, token):
        (old64, old32), inner = token
        out = after_update(model, walkers, inner)
        with torch.no_grad():
            new64 = as_float64(copy.deepcopy(model))
            exact = (new64.free_energy(walkers.x, walkers.condition)
                     - old64.free_energy(walkers.x, walkers.condition))
            differenced = model.free_energy(walkers.x, walkers.condition).double() - old32
        charged = walkers.log_weight - out.log_weight
        for name, work in (("raybm (closed form)", charged),
                           ("float32 difference", differenced)):
            err = work - exact
            errors[name] = err if name not in errors else errors[name] + err
        return out

    estimator.before_update, estimator.after_update = before, after
    every = max(args.updates // args.reports, 1)
    for step in range(1, args.updates + 1):
        trainer.update(diagnostics=False)
        if step % every == 0 or step == args.updates:
            for name, err in errors.items():
                print(f"update {step:5d}  {name:20s} summed error per walker: mean "
                      f"{float(err.mean()):+.2e}, spread {float(err.std()):.2e} nats")


if __name__ == "__main__":
    main()
