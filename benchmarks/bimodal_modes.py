"""Mode weights on a bimodal target: Jarzynski-weighted walkers against PCD-k.

Target (issue 3, after Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414): two
complementary prototypes in 20 visible units, each bit flipped with probability 0.03, weights
0.75 / 0.25, a landscape where persistent chains cannot cross between the modes once they have
formed. After training, the weight of the minor mode is computed *exactly* by enumerating all
2^20 visible states of the trained RBM and giving each state to its nearer prototype (Hamming
distance; ties split evenly).

    python benchmarks/bimodal_modes.py [--seeds 0 1 2] [--updates 2000] \
        [--walkers 2000 8000 32000] [--workers 0 2] [--exact-baseline]

Settings (why they are what they are):

* SGD, lr 0.05, minibatch 1000 (centred gradient, the default). Even the *exact* log-likelihood
  gradient (``--exact-baseline``) with minibatch 200 leaves the minor weight wandering over
  0.23-0.35: the mode fractions of a 200-sample batch have a standard deviation of 0.03 and the
  parameters follow them. Not Adam: Adam's per-coordinate rescaling of the *centred* direction
  (not a gradient) can make it an ascent direction -- from some initial couplings even the exact
  gradient then drives the log-likelihood down without bound and the minor mode to 0.
* k = 5 Gibbs sweeps per update, for both algorithms (the same budget). With k = 10 the PCD
  chains still cross while the modes form and PCD ends 0.15-0.21 below the target; with k = 5
  its chains freeze with too few walkers in the minor basin (0.01 left), while the Jarzynski
  log-weights carry the missing mass.
* Symmetry breaking for Jarzynski: its walkers start from a zero-coupling model (log Z_0 in
  closed form), but ``W = 0`` with data-fitted visible biases is a stationary point of the
  likelihood -- and of the centred gradient *exactly* -- so training would leave it only
  through float rounding, at a time that depends on the walker count. The trainer therefore
  applies the usual small random couplings (``model.weight_std``) as one more parameter update
  whose work the log-weights absorb (``Jarzynski.kick``), which keeps the equality intact.

Jarzynski's equality also needs the protocol not to depend on the walker whose work is being
counted. If the walkers that gave the gradient of an update also absorb its work, each one sees
its own push on F, of order lr / n per update; minority-mode walkers deviate most from the
population mean, so the weights under-count the minor mode, a bias that grows like
lr * updates / n (before the fix, 2,000 walkers ended 0.07-0.11 *above* 0.25). The estimator
takes the gradient from the walkers before their k sweeps and the work is counted on the moved
walkers.

``--workers 2`` trains the same ``Trainer`` on two local gloo ranks
(``raybm.distributed.spawn``), each holding half the walkers, with the global softmax and
resampling of the distributed path -- the code a Ray Train worker runs, without Ray's start-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from raybm.algorithms.base import Batch, Estimate, data_term
from raybm.config import load_config
from raybm.data.dataset import Dataset
from raybm.data.synthetic import bimodal_prototypes, prototype_mixture
from raybm.metrics.exact import all_binary_states, as_float64
from raybm.models.rbm import RBM
from raybm.train import make_trainer, run_updates

N_VISIBLE, FLIP, WEIGHTS = 20, 0.03, (0.75, 0.25)
N_SAMPLES = 6000


@torch.no_grad()
def minor_mode_weight(model: RBM, prototypes: torch.Tensor) -> float:
    """Exact probability mass of the states nearer the second prototype."""
    m = as_float64(model)
    states = all_binary_states(N_VISIBLE)
    logp = -m.free_energy(states)
    p = torch.softmax(logp, 0)
    d0 = (states != prototypes[0]).sum(1)
    d1 = (states != prototypes[1]).sum(1)
    share = (d1 < d0).double() + 0.5 * (d1 == d0).double()
    return float((p * share).sum())


class ExactGradient:
    """The exact log-likelihood gradient, as a drop-in estimator (the ground truth).

    The model term ``<dF/dtheta>_p`` is computed by enumerating the ``2^M`` hidden states
    (cheap for M <= ~14; the visible side has 2^20): with ``G(h) = b.h + sum_i softplus(a_i +
    W_i.h)`` we have ``p(h) = softmax(G)``, ``<v> = sum_h p(h) sigmoid(a + W h)`` and so on, in
    float64. A float32 autograd sum over the 2^20 visible states is *not* accurate enough: its
    sequential accumulation is off by ~3e-3 in ``<v>``.
    """

    name = "exact"
    phases = ("joint",)

    def __init__(self, n_hidden: int) -> None:
        self.hidden_states = all_binary_states(n_hidden).double()

    def estimate(self, gen: torch.Generator, model: RBM, batch: Batch, walkers, phase: str
                 ) -> Estimate:
        with torch.no_grad():
            h = self.hidden_states
            field = h @ model.weight.double().T + model.vbias.double()
            p_h = torch.softmax(h @ model.hbias.double() + F.softplus(field).sum(1), 0)
            v_given_h = torch.sigmoid(field)
            ev, eh = p_h @ v_given_h, p_h @ h
            evh = v_given_h.T @ (p_h[:, None] * h)
        # F(v) = -a.v - sum softplus(b + v W): minus the model average of dF/dtheta is
        # (<v>, <h>, <v h^T>), so this surrogate has the exact gradient, as the walker term would.
        model_term = ((model.vbias * ev.float()).sum() + (model.hbias * eh.float()).sum()
                      + (model.weight * evh.float()).sum())
        return Estimate(data_term(model, batch) + model_term, walkers, {})


def bimodal_data(seed: int) -> tuple[Dataset, torch.Tensor]:
    """The training set (no labels) and the prototypes."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = bimodal_prototypes(N_VISIBLE)
    data = prototype_mixture(gen, N_SAMPLES, prototypes, torch.tensor(WEIGHTS), FLIP)
    data.labels, data.label_names = None, None
    return data, prototypes


def train(algorithm: str, seed: int, n_updates: int, n_walkers: int, k: int = 5,
          lr: float = 0.05, n_hidden: int = 10, batch_size: int = 1000,
          optimizer: str = "sgd", workers: int = 0) -> float:
    """Train one RBM and return its exact minor-mode weight.

    ``algorithm`` is ``jarzynski``, ``pcd`` or ``exact`` (the exact gradient; the trainer is
    built as PCD so that it starts from the same small random couplings). With ``workers`` > 0
    the walkers are split over that many gloo ranks.
    """
    args = (algorithm, seed, n_updates, n_walkers, k, lr, n_hidden, batch_size, optimizer)
    if workers == 0:
        return _train_shard(0, 1, *args)
    from raybm.distributed.spawn import run_ranks

    return run_ranks(workers, _train_shard, *args)[0]


def _train_shard(rank: int, world: int, algorithm: str, seed: int, n_updates: int,
                 n_walkers: int, k: int, lr: float, n_hidden: int, batch_size: int,
                 optimizer: str) -> float:
    from raybm.algorithms.population import LOCAL

    data, prototypes = bimodal_data(seed)
    config = load_config(None, [
        f"algorithm.name={'pcd' if algorithm == 'exact' else algorithm}", f"algorithm.k={k}",
        f"algorithm.n_walkers={n_walkers}", f"model.n_hidden={n_hidden}", "model.labels=false",
        f"optimizer.name={optimizer}", f"optimizer.lr={lr}", f"train.batch_size={batch_size}",
        f"train.seed={seed}", "train.progress=false", "train.log_every=100", "train.threads=1",
    ])
    if world > 1:
        from raybm.distributed.comm import TorchComm

        population = TorchComm()
    else:
        population = LOCAL
    trainer = make_trainer(config, data, population=population)
    if algorithm == "exact":
        trainer.estimator = ExactGradient(n_hidden)
    run_updates(trainer, n_updates)
    return minor_mode_weight(trainer.model, prototypes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--walkers", type=int, nargs="+", default=[2000],
                        help="population sizes (e.g. 2000 8000 32000); PCD gets the same")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="sgd")
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="0: in-process; N: the walkers split over N gloo ranks")
    parser.add_argument("--exact-baseline", action="store_true",
                        help="also train with the exact gradient (what the RBM can learn)")
    args = parser.parse_args()
    opts = dict(k=args.k, lr=args.lr, n_hidden=args.hidden, batch_size=args.batch_size,
                optimizer=args.optimizer)
    print(f"minor-mode weight (target {WEIGHTS[1]}), {args.updates} updates, k = {args.k}, "
          f"{args.hidden} hidden, {args.optimizer} lr {args.lr}, batch {args.batch_size}")
    if args.exact_baseline:
        print("| seed | exact gradient | error |")
        print("|---|---|---|")
        for seed in args.seeds:
            ex = train("exact", seed, args.updates, 1, **opts)
            print(f"| {seed} | {ex:.3f} | {ex - WEIGHTS[1]:+.3f} |", flush=True)
    print("| workers | seed | walkers | Jarzynski | error | PCD-%d | error | seconds |" % args.k)
    print("|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        for seed in args.seeds:
            for n_walkers in args.walkers:
                t0 = time.perf_counter()
                jz = train("jarzynski", seed, args.updates, n_walkers, workers=workers, **opts)
                pcd = train("pcd", seed, args.updates, n_walkers, workers=workers, **opts)
                print(f"| {workers} | {seed} | {n_walkers} | {jz:.3f} | {jz - WEIGHTS[1]:+.3f} | "
                      f"{pcd:.3f} | {pcd - WEIGHTS[1]:+.3f} | {time.perf_counter() - t0:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
