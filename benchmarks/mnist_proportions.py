"""Class proportions on MNIST 2 / 3 / 6 at 4:2:1: Jarzynski-weighted walkers against PCD-k.

The mode-weight experiment of Carbone, Hua, Coste, Vanden-Eijnden 2023 (arXiv 2305.19414)
on real digits (issue 3, acceptance 2). An RBM without a label unit is trained on binarised
MNIST digits 2, 3 and 6 subsampled to the proportions 4 : 2 : 1. Persistent chains (PCD) do
not hop between digit classes once the classes have formed, so the fraction of PCD walkers in
each class is fixed early and need not follow the model's class weights; Jarzynski's
log-weights absorb the work of every update and so keep the weighted walkers unbiased for the
model. The class of a walker is read by an *independent* classifier (logistic regression on
real binarised digits that the RBM never sees), and the proportions are compared with
(4/7, 2/7, 1/7) by total-variation distance.

    python benchmarks/mnist_proportions.py --data-root ../shared/data \\
        [--seeds 0 1 2] [--updates 1000] [--walkers 2000] [--threads 1]

Data: ``../shared/data`` holds only the MNIST *test* split (10,000 images; 1,032 twos, 1,010
threes, 958 sixes), so it is split per digit, seeded: ``4u / 2u / u`` images (default
``u = 200``: 800 / 400 / 200) train the RBM, the rest (232 / 610 / 758) train and test the
classifier. The RBM's training images are never seen by the classifier, so classifying them
gives the proportions the classifier reads on real data at exactly 4 : 2 : 1 (the ``data``
row): the floor of what any model can be measured at.

Rows of the output (say which number is which):

* ``data``: the classifier on the RBM's own training images (real digits, 4 : 2 : 1).
* ``Jarzynski`` / ``PCD``: the walkers at the end of training -- Jarzynski's weighted by
  ``softmax(log_weight)``, PCD's uniformly. These are each method's own estimate of the model
  it trains with.
* ``... + S sweeps``: the same walkers after ``S`` more Gibbs sweeps of the trained model
  (Jarzynski's keep their weights: Gibbs sweeps leave the model invariant and do no work).
  ``Jarzynski unweighted + S sweeps`` drops the weights: what the chains alone show.

Columns ``ESS`` (effective sample size fraction of the weights, 1 for uniform) and ``conf``
(weighted mean of the classifier's top probability: low values flag walkers that do not look
like any of the three digits, so that their class is a guess).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raybm.config import load_config
from raybm.data.dataset import Dataset
from raybm.data.idx import load_idx
from raybm.samplers import gibbs
from raybm.train import Trainer, make_trainer, run_updates
from raybm.walkers import WalkerState

DIGITS = (2, 3, 6)
RATIO = (4, 2, 1)
TARGET = np.array(RATIO, dtype=np.float64) / sum(RATIO)
IMAGES = "mnist/t10k-images-idx3-ubyte.gz"
LABELS = "mnist/t10k-labels-idx1-ubyte.gz"
THRESHOLD = 0.5  # the package's MNIST binarisation (configs/ff10_mnist.yaml, the F&F paper)


# ----------------------------------------------------------------------------- data
def fail(message: str) -> None:
    """One line on stderr and exit code 2, as the raybm CLI does for bad input."""
    print(f"mnist_proportions: {message}", file=sys.stderr)
    sys.exit(2)


def load_mnist(data_root: Path) -> Dataset:
    """Binarised MNIST images with labels, or exit with a message naming the missing files."""
    paths = [data_root / IMAGES, data_root / LABELS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"missing {', '.join(missing)} (pass --data-root, the folder that holds mnist/, "
             "e.g. ../shared/data)")
    return load_idx(paths[0], paths[1], threshold=THRESHOLD)


def split_by_digit(data: Dataset, unit: int, seed: int) -> tuple[Dataset, Dataset]:
    """``(rbm_set, classifier_set)``: per digit, a seeded shuffle gives ``RATIO[i] * unit``
    images to the RBM and the rest to the classifier. Labels become 0, 1, 2 (digit order)."""
    gen = torch.Generator().manual_seed(seed)
    rbm_rows, clf_rows = [], []
    for digit, ratio in zip(DIGITS, RATIO):
        rows = torch.nonzero(data.labels == digit).flatten()
        rows = rows[torch.randperm(len(rows), generator=gen)]
        n = ratio * unit
        if n >= len(rows):
            fail(f"--unit {unit} asks for {n} images of digit {digit}, only {len(rows)} exist "
                 "(and some must be left for the classifier)")
        rbm_rows.append(rows[:n])
        clf_rows.append(rows[n:])
    relabel = torch.full((10,), -1, dtype=torch.long)
    relabel[list(DIGITS)] = torch.arange(len(DIGITS))

    def part(rows: list[torch.Tensor]) -> Dataset:
        ds = data.subset(torch.cat(rows))
        ds.labels = relabel[ds.labels]
        ds.label_names = [str(d) for d in DIGITS]
        return ds

    return part(rbm_rows), part(clf_rows)


def unlabelled(data: Dataset) -> Dataset:
    """The RBM's training set: the images alone (the model has no label unit)."""
    ds = data.subset(torch.arange(data.n_samples))
    ds.labels, ds.label_names = None, None
    return ds


# ----------------------------------------------------------------------------- classifier
@dataclass
class Classifier:
    model: object  # a fitted sklearn LogisticRegression
    accuracy: float  # on its own held-out part
    n_train: int
    n_test: int


def fit_classifier(data: Dataset, seed: int) -> Classifier:
    """Logistic regression on real binarised digits, 70 / 30 stratified split.

    ``class_weight="balanced"``: the classifier's pool is skewed the other way (more sixes
    than twos, since the twos went to the RBM), and a class prior in the classifier would
    shift every measured proportion.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = data.x.numpy().astype(np.float32), data.labels.numpy()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed,
                                              stratify=y)
    clf = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
    clf.fit(x_tr, y_tr)
    return Classifier(clf, float((clf.predict(x_te) == y_te).mean()), len(y_tr), len(y_te))


@dataclass
class Proportions:
    p: np.ndarray  # (3,) class proportions
    ess: float  # effective sample size / n of the weights used
    confidence: float  # weighted mean of the classifier's top probability

    @property
    def tv(self) -> float:
        return 0.5 * float(np.abs(self.p - TARGET).sum())


def proportions(clf: Classifier, x: torch.Tensor, log_weight: torch.Tensor | None
                ) -> Proportions:
    """Class proportions of samples ``x``: the normalised weights summed per predicted class
    (uniform weights when ``log_weight`` is None)."""
    n = x.shape[0]
    w = (torch.full((n,), 1.0 / n, dtype=torch.float64) if log_weight is None
         else torch.softmax(log_weight.double(), 0)).numpy()
    prob = clf.model.predict_proba(x.numpy().astype(np.float32))
    pred = prob.argmax(1)
    p = np.bincount(pred, weights=w, minlength=len(DIGITS))
    ess = 1.0 / float((w ** 2).sum()) / n
    return Proportions(p, ess, float((w * prob.max(1)).sum()))


# ----------------------------------------------------------------------------- training
@dataclass
class Settings:
    updates: int
    walkers: int
    k: int
    hidden: int
    lr: float
    optimizer: str
    batch_size: int
    threads: int
    sweeps: int  # extra Gibbs sweeps after training


def train(algorithm: str, data: Dataset, seed: int, s: Settings) -> tuple[Trainer, float]:
    """Train one RBM with ``algorithm`` (``jarzynski`` or ``pcd``); the trainer and seconds."""
    config = load_config(None, [
        f"algorithm.name={algorithm}", f"algorithm.k={s.k}", f"algorithm.n_walkers={s.walkers}",
        "sampler.precision=fp32",  # the exact kernel: Jarzynski's weights assume invariance
        f"model.n_hidden={s.hidden}", "model.labels=false",
        f"optimizer.name={s.optimizer}", f"optimizer.lr={s.lr}",
        f"train.batch_size={s.batch_size}", f"train.seed={seed}", "train.progress=false",
        f"train.log_every={max(s.updates // 10, 1)}", f"train.threads={s.threads}",
        "tracking.enabled=false",
    ])
    t0 = time.perf_counter()
    # Both start from couplings N(0, model.weight_std^2): PCD draws them, Jarzynski draws its
    # walkers exactly at zero couplings and the trainer then kicks the couplings to that scale
    # with the work charged to the log-weights (Jarzynski.kick).
    trainer = make_trainer(config, data)
    run_updates(trainer, s.updates)
    return trainer, time.perf_counter() - t0


@torch.no_grad()
def extra_sweeps(trainer: Trainer, sweeps: int, seed: int) -> WalkerState:
    """The walkers after ``sweeps`` more Gibbs sweeps of the trained model (weights kept)."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    walkers, _ = gibbs.step(gen, trainer.walkers, trainer.model, sweeps, precision="fp32")
    return walkers


def evaluate(algorithm: str, trainer: Trainer, clf: Classifier, seed: int, sweeps: int
             ) -> dict[str, Proportions]:
    """Each row of the table for one trained model (see the module docstring)."""
    w = trainer.walkers
    name = "Jarzynski" if algorithm == "jarzynski" else "PCD"
    weighted = algorithm == "jarzynski"
    rows = {name: proportions(clf, w.x, w.log_weight if weighted else None)}
    if sweeps > 0:
        moved = extra_sweeps(trainer, sweeps, seed)
        rows[f"{name} + {sweeps} sweeps"] = proportions(
            clf, moved.x, moved.log_weight if weighted else None)
        if weighted:
            rows[f"{name} unweighted + {sweeps} sweeps"] = proportions(clf, moved.x, None)
    return rows


# ----------------------------------------------------------------------------- output
def table_row(seed: int, method: str, p: Proportions, seconds: float | None) -> str:
    secs = "" if seconds is None else f"{seconds:.0f}"
    return (f"| {seed} | {method} | {p.p[0]:.3f} | {p.p[1]:.3f} | {p.p[2]:.3f} | {p.tv:.3f} | "
            f"{p.ess:.2f} | {p.confidence:.2f} | {secs} |")


def summary(results: dict[str, list[Proportions]]) -> list[str]:
    """Mean (and spread) over seeds of each row."""
    lines = ["| method | mean p(2) | mean p(3) | mean p(6) | TV mean | TV min-max |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, ps in results.items():
        p = np.mean([x.p for x in ps], 0)
        tvs = [x.tv for x in ps]
        lines.append(f"| {method} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {np.mean(tvs):.3f} "
                     f"| {min(tvs):.3f}-{max(tvs):.3f} |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--walkers", type=int, default=2000, help="same for both methods")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--unit", type=int, default=200,
                        help="RBM training images per ratio unit: 4u twos, 2u threes, u sixes")
    parser.add_argument("--sweeps", type=int, default=1000,
                        help="extra Gibbs sweeps of each trained model (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", choices=["jarzynski", "pcd"],
                        default=["jarzynski", "pcd"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Settings(args.updates, args.walkers, args.k, args.hidden, args.lr, args.optimizer,
                 args.batch_size, args.threads, args.sweeps)
    mnist = load_mnist(args.data_root)
    print(f"settings: {s}; unit {args.unit}; torch {torch.__version__}, "
          f"{platform.machine()}", flush=True)
    print(f"target p = {TARGET.round(3).tolist()} for digits {list(DIGITS)}\n", flush=True)
    header = ["| seed | method | p(2) | p(3) | p(6) | TV to (4,2,1)/7 | ESS | conf | seconds |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    results: dict[str, list[Proportions]] = {}
    for seed in args.seeds:
        rbm_set, clf_set = split_by_digit(mnist, args.unit, seed)
        clf = fit_classifier(clf_set, seed)
        print(f"seed {seed}: RBM trains on {rbm_set.n_samples} images "
              f"({np.bincount(rbm_set.labels.numpy()).tolist()}); classifier held-out accuracy "
              f"{clf.accuracy:.4f} ({clf.n_train} train / {clf.n_test} test)", flush=True)
        rows = {"data": proportions(clf, rbm_set.x, None)}
        seconds: dict[str, float] = {}
        for algorithm in args.methods:
            trainer, secs = train(algorithm, unlabelled(rbm_set), seed, s)
            last = trainer.history[-1] if trainer.history else {}
            extra = (f", resamplings {last.get('n_resamplings', 0):.0f}, final ESS "
                     f"{last.get('ess', float('nan')):.3f}" if algorithm == "jarzynski" else "")
            print(f"  {algorithm}: {secs:.0f} s{extra}", flush=True)
            new = evaluate(algorithm, trainer, clf, seed, args.sweeps)
            seconds[next(iter(new))] = secs
            rows.update(new)
        print("\n".join(header))
        for method, p in rows.items():
            print(table_row(seed, method, p, seconds.get(method)))
            results.setdefault(method, []).append(p)
        print(flush=True)
    if len(args.seeds) > 1:
        print("\n".join(summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
