"""Centred gradient for RBMs (Melchior, Fischer, Wiskott 2016, JMLR 17(99)).

Re-parameterising the energy around offsets ``lambda`` (visible), ``lambda_l`` (label) and
``mu`` (hidden), ``E = -(v-lambda)^T W (h-mu) - (l-lambda_l)^T D (h-mu) - ...``, and mapping
the centred update back to the original parameters is a *linear* map of the ordinary gradient
(``g_W = <v h^T>_d - <v h^T>_m``, ``g_a``, ``g_b``, and likewise ``g_D``, ``g_c``):

    g_W' = g_W - lambda g_b^T - g_a mu^T          g_D' = g_D - lambda_l g_b^T - g_c mu^T
    g_a' = g_a - g_W' mu                         g_c' = g_c - g_D' mu
    g_b' = g_b - g_W'^T lambda - g_D'^T lambda_l

Because it is linear it applies equally to ``.grad`` of the surrogate loss (minus the
log-likelihood gradient) and commutes with averaging gradients across workers. ``lambda`` is
the data mean (one-hot frequencies for Potts visibles and for the label), ``mu`` an
exponential moving average of ``p(h | v_data, l_data)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raybm.algorithms.base import Batch
from raybm.models.rbm import RBM
from raybm.samplers.prepared import visible_digit_field


class Centering:
    """Holds the offsets and transforms an RBM's ``.grad`` in place."""

    def __init__(self, model: RBM, x: torch.Tensor, label: torch.Tensor | None = None,
                 weight: torch.Tensor | None = None, momentum: float = 0.01) -> None:
        w = None if weight is None else weight.double() / weight.sum()
        self.visible_offset = _mean(_flat_one_hot(x, model.n_states), w).float()
        self.label_offset = (
            _mean(F.one_hot(label.long(), model.n_labels).double(), w).float()
            if model.n_labels and label is not None else None
        )
        self.hidden_offset = torch.full((model.n_hidden,), 0.5)
        self.momentum = momentum

    @torch.no_grad()
    def update_hidden_offset(self, model: RBM, batch: Batch,
                             precision: str = "fp32") -> torch.Tensor:
        """One step of the moving average of ``p(h | v_data, l_data)``; its fields' matmul
        in the sampler's ``precision`` (bf16: the fields rounded to 8 bits, nothing next to
        the noise of a minibatch mean averaged over ~1/momentum updates; digits: float32
        from the sweeps' int8 digits of ``W``). Returns the batch's ``x W`` it computed (in
        the product's dtype), which the update's first contrast, on the same parameters,
        reuses (``Batch.visible_field``)."""
        # digits: x W from the sweeps' int8 digits of W, where they exist here
        xw = visible_digit_field(model, batch.x) if precision == "digits" else None
        if xw is None:
            dtype = torch.bfloat16 if precision == "bf16" else None
            xw = model.visible_to_hidden(batch.x, dtype)
        field = xw + model.hbias  # float32: bf16 x W promoted exactly, as a cast would
        if model.n_labels and batch.label is not None:
            field = field + model.label_weight.index_select(0, batch.label)
        p = torch.sigmoid_(field)
        self.hidden_offset.mul_(1 - self.momentum).add_(self.momentum * p.mean(0))
        return xw

    @torch.no_grad()
    def transform_(self, model: RBM) -> None:
        mu, lam = self.hidden_offset, self.visible_offset
        gw = model.weight.grad.reshape(-1, model.n_hidden)
        ga = model.vbias.grad.reshape(-1)
        gb = model.hbias.grad
        gw_c = gw - torch.outer(lam, gb) - torch.outer(ga, mu)
        ga.sub_(gw_c @ mu)
        new_gb = gb - gw_c.T @ lam
        if model.n_labels and self.label_offset is not None:
            gd, gc = model.label_weight.grad, model.lbias.grad
            gd_c = gd - torch.outer(self.label_offset, gb) - torch.outer(gc, mu)
            gc.sub_(gd_c @ mu)
            new_gb = new_gb - gd_c.T @ self.label_offset
            gd.copy_(gd_c)
        gw.copy_(gw_c)
        gb.copy_(new_gb)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"visible_offset": self.visible_offset, "hidden_offset": self.hidden_offset}
        if self.label_offset is not None:
            out["label_offset"] = self.label_offset
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.visible_offset = state["visible_offset"].clone()
        self.hidden_offset = state["hidden_offset"].clone()
        if "label_offset" in state:
            self.label_offset = state["label_offset"].clone()


def _flat_one_hot(x: torch.Tensor, n_states: int) -> torch.Tensor:
    if n_states == 2:
        return x.double()
    return F.one_hot(x.long(), n_states).reshape(x.shape[0], -1).double()


def _mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return x.mean(0) if w is None else w @ x
