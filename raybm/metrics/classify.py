"""Classification accuracy of an RBM with a label unit.

Two readings of the classifier ``p(l | v)``:

- exact: ``argmax_l p(l | v)`` with ``p(l | v) = softmax_l(-F(v, l))``, the hiddens summed out
  analytically (:meth:`RBM.label_prob_v`);
- sampled, as in F&F (Carbone, Decelle, Rosset, Seoane 2023, arXiv 2307.06797): the visibles
  are clamped to the data, the labels start uniform, and ``k`` block-Gibbs sweeps
  ``h ~ p(h | v, l)``, ``l ~ p(l | h)`` move them; the score is the accuracy of the final sampled
  labels. A model trained out of equilibrium to classify in ``k`` steps is scored at that ``k``;
  as ``k -> infinity`` the labels follow ``p(l | v)``, so the sampled accuracy tends to the mean
  of ``p(true label | v)``, not to the exact (argmax) accuracy.
"""

from __future__ import annotations

import torch

from raybm.models.rbm import RBM
from raybm.samplers import gibbs
from raybm.walkers import WalkerState

_MAX_ROWS = 1 << 16


@torch.no_grad()
def predict_exact(model: RBM, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``argmax_l p(l | v)`` per row of ``x`` ``(n, N)`` uint8, int64 ``(n,)``.

    Chunked because :meth:`RBM.free_energy_per_label` builds an ``(n, n_labels, n_hidden)``
    tensor (200 MB for 10,000 MNIST digits with 10 labels and 500 hiddens).
    """
    _need_labels(model)
    parts = [model.label_prob_v(x[i : i + chunk]).argmax(-1) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def accuracy_exact(model: RBM, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``x`` whose most probable label under ``p(l | v)`` is ``labels``."""
    _check(x, labels)
    return float((predict_exact(model, x) == labels.long()).double().mean())


@torch.no_grad()
def sample_labels(
    gen: torch.Generator, model: RBM, x: torch.Tensor, k: int, precision: str = "fp32"
) -> torch.Tensor:
    """Labels after ``k`` label-sampling sweeps with the visibles clamped to ``x``, from
    uniform labels (F&F's classification protocol); int64 ``(n,)``. ``k = 0`` returns the
    uniform initial draw."""
    _need_labels(model)
    if k < 0:
        raise ValueError(f"need k >= 0, got {k}")
    label = torch.randint(0, model.n_labels, (x.shape[0],), generator=gen)
    state = WalkerState.unweighted(x, label)
    state, _ = gibbs.step(gen, state, model, k, clamp_visible=True, precision=precision)
    return state.label


def accuracy_sampled(
    gen: torch.Generator,
    model: RBM,
    x: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    n_repeats: int = 1,
) -> float:
    """Accuracy of the labels sampled by :func:`sample_labels`, averaged over ``n_repeats``
    independent label chains per row (more repeats shrink the Monte-Carlo error, whose
    standard error is at most ``0.5 / sqrt(n_rows * n_repeats)``)."""
    _check(x, labels)
    if n_repeats < 1:
        raise ValueError(f"need n_repeats >= 1, got {n_repeats}")
    labels = labels.long()
    # Repeats run side by side as extra rows (one Gibbs call instead of n_repeats), in batches
    # of at most _MAX_ROWS rows so the (rows, n_labels, n_hidden) temporaries stay bounded.
    per_batch = max(1, _MAX_ROWS // len(labels))
    hits, done = 0.0, 0
    while done < n_repeats:
        reps = min(per_batch, n_repeats - done)
        sampled = sample_labels(gen, model, x.repeat(reps, 1), k)
        hits += float((sampled == labels.repeat(reps)).double().sum())
        done += reps
    return hits / (len(labels) * n_repeats)


def classification_scores(
    gen: torch.Generator,
    model: RBM,
    x: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    k_large: int = 1000,
    n_repeats: int = 1,
) -> dict[str, float]:
    """The F&F classification report: exact accuracy, sampled accuracy after ``k`` sweeps (the
    training ``k``) and after ``k_large`` sweeps (near the equilibrium of the label chain)."""
    return {
        "accuracy_exact": accuracy_exact(model, x, labels),
        "accuracy_sampled_k": accuracy_sampled(gen, model, x, labels, k, n_repeats),
        "accuracy_sampled_large_k": accuracy_sampled(gen, model, x, labels, k_large, n_repeats),
    }


def _need_labels(model: RBM) -> None:
    if not model.n_labels:
        raise ValueError("classification needs an RBM with a label unit (n_labels >= 2)")


def _check(x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.dim() != 2 or labels.shape != (x.shape[0],):
        raise ValueError(
            f"need x (n, N) and labels (n,), got {tuple(x.shape)} and {tuple(labels.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("accuracy of an empty set is undefined")
