"""Restricted Boltzmann Machines with an optional label unit (binary and Potts visibles).

Energy (Carbone, Decelle, Rosset, Seoane 2023, arXiv 2307.06797, "F&F"), with a single
categorical label unit ``l`` of ``n_labels`` states coupled to the hidden layer only::

    E(v, h, l) = -a.v - b.h - c_l - v^T W h - D_l.h

For Bernoulli visibles ``v in {0,1}^N`` and ``a.v``, ``v^T W h`` are ordinary dot products; for
Potts visibles ``v_i in {0..q-1}`` they read ``sum_i a_{i,v_i}`` and ``sum_{i,j} W_{i,v_i,j} h_j``.
Hidden units are binary. Summing the hiddens out gives the free energy

    F(v, l) = -a.v - c_l - sum_j softplus(b_j + (v W)_j + D_{l,j}),

and, summing the label too, ``F(v) = -log sum_l exp(-F(v, l))``.

Gauge: shifting ``D_l -> D_l - m`` for every ``l`` and ``b -> b + m`` leaves every
probability unchanged (exactly one label is on), as does ``W_{i,s,:} -> W_{i,s,:} - m_i`` for
every state ``s`` with ``b -> b + sum_i m_i`` for Potts visibles. :meth:`RBM.apply_gauge`
fixes the zero-sum gauge, which removes the flat directions the optimiser would otherwise drift
along.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from raybm.models.base import EnergyModel
from raybm.models.products import digit_product
from raybm.samplers import digits
from raybm.samplers.fused import stats_fields
from raybm.samplers.scratch import Scratch


# energy_change's closed form where every hidden field moved by at most this much: there
# 1 + sigmoid(z') expm1(-d) >= 1 - (1 - e^-0.5) = 0.61, no cancellation.
LARGE_FIELD_CHANGE = 0.5

# Each RBM's buffers for energy_change, beside it (RBM._change_scratch).
_CHANGE_SCRATCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ChangeStart:
    """What :meth:`RBM.energy_change` keeps from before a parameter change: copies of the
    parameters, and the sampler's matmul precision."""

    params: dict[str, torch.Tensor]
    precision: str


class RBM(EnergyModel):
    """Shared label-unit and hidden-layer logic; subclasses define the visible layer.

    As an :class:`~raybm.models.base.EnergyModel` its ``energy(x, cond)`` is the free energy
    ``F(v, l)`` (the label is the condition), and ``post_update`` fixes the zero-sum gauge.

    Walkers' visible states are compact integers (uint8); every method takes them as such and
    converts internally. Fields are computed in ``self.dtype`` precision unless told otherwise.
    """

    n_visible: int
    n_hidden: int
    n_labels: int
    n_states: int
    offers_centering: ClassVar[bool] = True
    closed_form_gradient: ClassVar[bool] = True

    def __init__(self, n_visible: int, n_hidden: int, n_labels: int = 0) -> None:
        super().__init__()
        if n_visible <= 0 or n_hidden <= 0 or n_labels < 0 or n_labels == 1:
            raise ValueError(
                f"need n_visible > 0, n_hidden > 0 and n_labels = 0 or >= 2, got "
                f"{n_visible}, {n_hidden}, {n_labels}"
            )
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.n_labels = n_labels
        self.hbias = nn.Parameter(torch.zeros(n_hidden))
        if n_labels:
            self.lbias = nn.Parameter(torch.zeros(n_labels))
            self.label_weight = nn.Parameter(torch.zeros(n_labels, n_hidden))

    # ----------------------------------------------------------------- visible layer (abstract)
    def visible_term(self, v: torch.Tensor) -> torch.Tensor:
        """``a.v`` per walker, shape ``(n,)``."""
        raise NotImplementedError

    def visible_to_hidden(self, v: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(v W)_j`` per walker, shape ``(n, n_hidden)``, computed in ``dtype``."""
        raise NotImplementedError

    def visible_field(self, h: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Logits of ``p(v | h)``: ``(n, N)`` for Bernoulli, ``(n, N, q)`` for Potts; the
        matmul runs in ``dtype`` (e.g. bf16 for the fast path), the result is float32."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- hidden layer
    def hidden_field(
        self, v: torch.Tensor, label: torch.Tensor | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``b + v W (+ D_l)``: the logits of ``p(h_j = 1 | v, l)``, shape ``(n, n_hidden)``."""
        field = self.visible_to_hidden(v, dtype).to(self.hbias.dtype) + self.hbias
        if label is not None:
            self._need_labels()
            field = field + self.label_weight[label]
        return field

    def hidden_prob(self, v: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``p(h_j = 1 | v, l)``; with labels, ``label`` is required (use :meth:`label_prob_v`)."""
        if self.n_labels and label is None:
            raise ValueError("this RBM has a label unit: pass label= (p(h|v) mixes over labels)")
        return torch.sigmoid(self.hidden_field(v, label))

    def label_field(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(l | h)``: ``c_l + D_l.h``, shape ``(n, n_labels)``."""
        self._need_labels()
        return self.lbias + h.to(self.label_weight.dtype) @ self.label_weight.T

    def label_prob(self, h: torch.Tensor) -> torch.Tensor:
        """``p(l | h)``, shape ``(n, n_labels)``."""
        return torch.softmax(self.label_field(h), dim=-1)

    def label_prob_v(self, v: torch.Tensor) -> torch.Tensor:
        """Exact ``p(l | v) = softmax_l(-F(v, l))``: the hiddens summed out, no sampling."""
        return torch.softmax(-self.free_energy_per_label(v), dim=-1)

    # ----------------------------------------------------------------------- energies
    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.n_visible,)

    def spec(self) -> dict[str, int | str]:
        return {"kind": type(self).__name__, "n_visible": self.n_visible,
                "n_hidden": self.n_hidden, "n_states": self.n_states, "n_labels": self.n_labels}

    @classmethod
    def from_spec(cls, spec: dict) -> "RBM":
        return build_rbm(spec["n_visible"], spec["n_hidden"], spec["n_states"], spec["n_labels"])

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The energy-model contract: the free energy ``F(x, cond)`` (cond: the label)."""
        return self.free_energy(x, cond)

    def post_update(self) -> None:
        """After an optimizer step: the zero-sum gauge (:meth:`apply_gauge`)."""
        self.apply_gauge()

    @torch.no_grad()
    def kick_(self, gen: torch.Generator, std: float) -> None:
        """Add ``N(0, std^2)`` to the couplings (W, and D with a label unit).

        Zero couplings with data-fitted visible biases are a stationary point of the
        likelihood (exactly so for the centred gradient): without a kick, training leaves it
        only through rounding noise, thousands of updates late."""
        for p in [self.weight] + ([self.label_weight] if self.n_labels else []):
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))

    # ------------------------------------------------------- work across a parameter change
    @property
    def _change_scratch(self) -> Scratch:
        # Kept beside the model, not in it: no state dict, copy or pickle carries ~36 MB of
        # buffers, and they go with the model.
        scratch = _CHANGE_SCRATCH.get(self)
        if scratch is None:
            scratch = _CHANGE_SCRATCH[self] = Scratch()
        return scratch

    @torch.no_grad()
    def before_change(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                      precision: str = "fp32") -> ChangeStart | torch.Tensor:
        """Copies of the parameters about to change (:meth:`energy_change` needs nothing of
        the walkers yet). With a label unit and no label (``F(v)``, labels summed out) there
        is no closed form: the energies."""
        if self.n_labels and cond is None:
            return super().before_change(x, cond, precision)
        return ChangeStart({name: p.detach().clone() for name, p in self.named_parameters()},
                           precision)

    @torch.no_grad()
    def energy_change(self, before: ChangeStart | torch.Tensor, x: torch.Tensor,
                      cond: torch.Tensor | None = None) -> torch.Tensor:
        """``F_theta'(x, l) - F_theta(x, l)`` from the parameters' change, float64 ``(n,)``.

        With ``z' = b' + x W' + D'_l``, ``d = z' - z = db + x dW + dD_l`` and
        ``softplus(z') - softplus(z' - d) = -log1p(sigmoid(z') expm1(-d))``::

            F' - F = -da.x - dc_l + sum_j log1p(sigmoid(z'_j) expm1(-d_j))

        Every term is of the size of the change, so float32 keeps float32's precision *of the
        change*, where the difference of the two free energies (each ~100 nats, rounded to
        float32) lost about 3 of its 7 digits. ``x [W' | dW | da]`` is one product: in the
        parameters' dtype, or in a bf16 run on the CPU from int8 digits of each column
        (``models.products.digit_product``: ~15 bits of its largest entry, at int8 speed),
        as bf16 would round the change itself, and ``z'``, to 8 bits; in a digits run from
        three int8 digits of each column (:mod:`raybm.samplers.digits`: ~2^-22 of the
        column's largest entry per one, float32's class, for ``W'`` and for the change
        alike). Summed over 400 updates
        of a 784 x 512 RBM on 2,000 MNIST walkers, the log-weights' error against float64
        spread over the walkers by 6.5e-8 nats in fp32 and 1.3e-5 in bf16, against 6.2e-4
        and 6.1e-4 for the difference of free energies (``benchmarks/jarzynski_work.py``,
        2026-12-07); ``tests/models/test_rbm.py`` bounds one step of both. Jarzynski walkers
        carry this as their work (Carbone, Hua, Coste & Vanden-Eijnden 2023, arXiv
        2305.19414)."""
        if not isinstance(before, ChangeStart):
            return super().energy_change(before, x, cond)
        old = before.params
        delta = {name: p.detach() - old[name] for name, p in self.named_parameters()}
        m = self.n_hidden
        columns = torch.cat([self.weight.detach().reshape(-1, m),
                             delta["weight"].reshape(-1, m), delta["vbias"].reshape(-1, 1)], 1)
        ws = self._change_scratch
        # digits: three int8 digits of each column (the sweeps' digits, samplers.digits),
        # float32's class for z' and for the change (each column has its own scale), where
        # the rows are integer 0/1 states of a float32 model and int8 sums are exact here.
        split = (digits.split(columns) if before.precision == "digits"
                 and columns.dtype == torch.float32 and not x.dtype.is_floating_point
                 else None)
        if split is not None:
            sums = digits.sums(self.flat_visible(x, torch.int8), split,
                               out=ws.get("sums", (x.shape[0], 3 * split.width), torch.int32))
            product = digits.combine(sums, split)
        elif before.precision == "bf16" and x.device.type == "cpu":
            # Kept buffers: fresh, the (n, 2 M) products page-fault in at every update.
            product = digit_product(self.flat_visible(x, torch.int8), columns,
                                    ws.get("product", (x.shape[0], 2 * m + 1), torch.float32),
                                    ws).to(columns.dtype)
        else:
            product = self.flat_visible(x, columns.dtype) @ columns
        # z' and -d, each into a contiguous buffer (in place on the strided column blocks,
        # each unary op wrote a copy back).
        shape, dtype = (x.shape[0], m), columns.dtype
        z = torch.add(product[:, :m], self.hbias, out=ws.get("z", shape, dtype, x.device))
        minus_d = torch.sub(-delta["hbias"], product[:, m : 2 * m],
                            out=ws.get("minus_d", shape, dtype, x.device))
        if self.n_labels:
            z.add_(self.label_weight[cond])
            minus_d.sub_(delta["label_weight"][cond])
        if float(minus_d.abs().max()) > LARGE_FIELD_CHANGE:
            # A field moved this far (a kick with a large weight_std): 1 + sigmoid(z')
            # expm1(-d) cancels (to 0 where both saturate: log1p(-1) = -inf); the softplus
            # difference in float64 loses nothing at this size.
            z64, minus_d64 = z.double(), minus_d.double()
            hidden = (F.softplus(z64 + minus_d64) - F.softplus(z64)).sum(-1)
        else:
            # Summed in float32 (a float64 sum cast the whole (n, M) first: 1.3 ms): M terms
            # of the change's size, each rounded relative to itself.
            hidden = minus_d.expm1_().mul_(z.sigmoid_()).log1p_().sum(-1).double()
        change = hidden - product[:, 2 * m].double()
        if self.n_labels:
            change = change - delta["lbias"][cond].double()
        return change

    def joint_energy(
        self, v: torch.Tensor, h: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``E(v, h, l)`` per walker, shape ``(n,)``."""
        h = h.to(self.hbias.dtype)
        e = -self.visible_term(v) - (self.visible_to_hidden(v) + self.hbias).mul(h).sum(-1)
        if self.n_labels:
            if label is None:
                raise ValueError("this RBM has a label unit: joint_energy(v, h, label) needs "
                                 "label")
            e = e - self.lbias[label] - (self.label_weight[label] * h).sum(-1)
        return e

    def free_energy(self, v: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``F(v, l)`` when ``label`` is given, else ``F(v)`` (labels summed out), shape ``(n,)``."""
        base = self.visible_to_hidden(v) + self.hbias
        if not self.n_labels:
            return -self.visible_term(v) - F.softplus(base).sum(-1)
        if label is not None:
            return (
                -self.visible_term(v)
                - self.lbias[label]
                - F.softplus(base + self.label_weight[label]).sum(-1)
            )
        return -torch.logsumexp(-self._free_energy_labels(v, base), dim=-1)

    def free_energy_per_label(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v, l)`` for every label, shape ``(n, n_labels)``."""
        self._need_labels()
        base = self.visible_to_hidden(v) + self.hbias
        return self._free_energy_labels(v, base)

    def _free_energy_labels(self, v: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        sp = F.softplus(base.unsqueeze(1) + self.label_weight.unsqueeze(0)).sum(-1)
        return -self.visible_term(v).unsqueeze(1) - self.lbias - sp

    # ------------------------------------------------------------------ closed-form gradient
    def flat_visible(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Visible states as the rows ``x`` with ``a.v = x.a`` and ``v W = x W``: ``(n, N)``
        0/1 for Bernoulli, ``(n, N q)`` one-hot for Potts."""
        raise NotImplementedError

    @torch.no_grad()
    def weighted_energy_gradient(self, x: torch.Tensor, cond: torch.Tensor | None,
                                 coef: torch.Tensor, precision: str = "fp32",
                                 visible_field: torch.Tensor | None = None,
                                 compiled: bool = False, value: bool = True
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """``S = sum_b c_b F(v_b, l_b)`` and ``dS/dtheta`` from sufficient statistics.

        With ``z_b = b + x_b W + D_{l_b}`` and ``p_b = sigmoid(z_b)`` (the hidden
        probabilities ``p(h = 1 | v_b, l_b)``), ``F(v, l) = -a.x - c_l - sum_j softplus(z_j)``
        gives (Hinton 2002; Fischer & Igel 2014, "Training restricted Boltzmann machines: an
        introduction", eqs. 28-30)::

            dS/dW = -X^T (c * P)        dS/da = -X^T c        dS/db = -sum_b c_b p_b
            dS/dD_l = -sum_{b: l_b = l} c_b p_b                dS/dc_l = -sum_{b: l_b = l} c_b

        and ``S = a.(dS/da) - sum_b c_b (c_{l_b} + sum_j softplus(z_bj))`` needs no visible
        term per row. One matmul for the fields and one for
        ``[dS/dW | dS/da]`` (data and walkers stacked, with ``c`` positive on one and
        negative on the other, make the whole contrastive gradient two matmuls), where
        autograd through :meth:`free_energy` takes the same two plus its graph, casts and a
        softplus backward.

        ``cond`` may be ``(n, r)`` with ``coef`` ``(n, r)``: row ``b`` counted with each of
        its ``r`` labels (F&F's classification contrast, the batch against itself with
        other labels: ``x W`` and ``X^T (...)`` once for both sides).

        ``precision="bf16"``: both matmuls in bf16 (``X`` is 0/1, exact; ``W`` and
        ``[c * P | c]`` rounded to 8 bits, the rounding the bf16 Gibbs sweeps already make),
        the rest in float32. ``precision="digits"``, for a float32 model with integer
        states where int8 sums are exact (:mod:`raybm.samplers.digits`), both products
        float32-class at int8 speed: ``x W`` from the Gibbs sweeps' digits of ``W``
        (``samplers.prepared.visible_digit_field``; Bernoulli: a Potts field is a gather,
        float32) and ``X^T [c P | c]`` from three int8 digits of each column of
        ``[c P | c]``, made here (``X`` is 0/1: exact int32 sums; within
        ``n1 max_b |[c P | c]_bj| / (2 127^3)`` plus float32's roundings for a column of
        ``X`` with ``n1`` ones); otherwise float32. With a label unit and no label (``F(v)``
        with the labels summed out) there is no such form: None.

        ``visible_field``: ``x W`` (``(n, M)``, no bias) from the label chain of a Gibbs
        kernel in the same precision on these parameters (``gibbs.label_chain``), which
        saves the first matmul; or of the first rows only (the data's ``x W`` from the
        centring's offset update, ``Centering.update_hidden_offset``), which saves its part. ``compiled``: the elementwise part (fields, softplus,
        sigmoid) as ``torch.compile`` loops (``samplers.fused.stats_fields``), as the
        sampler's draws run. ``value=False``: ``S`` is not computed (a zero is returned in its
        place) and neither are the softplus terms it alone needs; the gradient is the same.
        """
        if self.n_labels and cond is None:
            return None
        pdtype = self.weight.dtype
        dtype = torch.bfloat16 if precision == "bf16" else pdtype
        m = self.n_hidden
        # digits: both products from int8 digits (the fields from the sweeps' digits of W,
        # X^T [c P | c] from digits of its right operand made here) where the rows are
        # integer 0/1 states of a float32 model; the float rows only where a product falls
        # back to float32 (not exact here, or a Potts field).
        digit_rows = (precision == "digits" and pdtype == torch.float32
                      and not x.dtype.is_floating_point)
        float_rows: list[torch.Tensor] = []

        def xs() -> torch.Tensor:
            if not float_rows:
                float_rows.append(self.flat_visible(x, dtype))
            return float_rows[0]

        def fields(first: int, out: torch.Tensor | None = None) -> torch.Tensor:
            # x W of the rows from `first` on.
            if digit_rows:
                # Imported here: samplers.prepared imports this module.
                from raybm.samplers.prepared import visible_digit_field

                y = visible_digit_field(self, x[first:])
                if y is not None:
                    return y if out is None else out.copy_(y)
            return torch.mm(xs()[first:], self.weight.reshape(-1, m).to(dtype), out=out)

        if visible_field is None:
            y = fields(0)
        elif len(visible_field) == len(x):
            y = visible_field
        else:  # the first rows' (the data's, from the centring), the others' here
            # Both parts in the product's dtype, the walkers' written in place: the fields
            # take it to float32 themselves (exactly), where two casts and a float32
            # concatenation cost ~1 ms of a bf16 update (4,000 x 512).
            done = len(visible_field)
            y = torch.empty(len(x), m, dtype=dtype, device=x.device)
            y[:done].copy_(visible_field)
            fields(done, out=y[done:])
        c = coef.to(pdtype)
        # Compiled loop nests (samplers.fused.stats_fields); not for 0 or 1 rows, which
        # torch specialises even in a dynamic-shape graph (a recompile mid-run).
        if compiled and len(y) > 1:
            # and [sum_r c p | sum_r c] written in the matmul dtype by the same loop
            sp, cp, operand = stats_fields(
                y, self.hbias, self.label_weight if self.n_labels else None, cond, c, dtype,
                compiled=True, value=value)
            hidden = cp.sum((0, 1) if cp.dim() == 3 else 0)
        else:
            z = y.to(pdtype) + self.hbias
            if cond is not None and cond.dim() == 2:  # several labels per row
                z = z.unsqueeze(1) + self.label_weight[cond]  # (n, r, M)
            elif self.n_labels:
                z = z + self.label_weight[cond]
            sp = F.softplus(z).sum(-1) if value else None
            cp = z.sigmoid_().mul_(c.unsqueeze(-1))  # c p, (n, M) or (n, r, M)
            row_p, row_c = (cp.sum(1), c.sum(1)) if cp.dim() == 3 else (cp, c)
            operand = torch.cat([row_p, row_c.unsqueeze(1)], 1).to(dtype)
            hidden = row_p.sum(0)  # summed as before the fused operand: the same bits
        # -X^T [cP | c]
        split = digits.split(operand) if digit_rows else None
        if split is not None:  # within n1 max_b |operand_bj| / (2 127^3) (+ float32's)
            rows = self.flat_visible(x, torch.int8)
            stats = digits.combine(digits.sums(rows.T, split), split).neg_()
        else:
            stats = -(xs().T @ operand).to(pdtype)
        grads = {"weight": stats[:, :m].reshape(self.weight.shape),
                 "vbias": stats[:, m].reshape(self.vbias.shape),
                 "hbias": -hidden}
        if self.n_labels:
            flat_cond, flat_c = cond.reshape(-1), c.reshape(-1)
            grads["label_weight"] = -torch.zeros_like(self.label_weight).index_add_(
                0, flat_cond, cp.reshape(-1, m))
            grads["lbias"] = -torch.zeros_like(self.lbias).index_add_(0, flat_cond, flat_c)
        if not value:
            return torch.zeros((), dtype=torch.float64, device=stats.device), grads
        total = (self.vbias.reshape(-1).double() @ stats[:, m].double()  # -a.(X^T c)
                 - (coef.double() * sp.double()).sum())
        if self.n_labels:
            total = total - (coef.double().reshape(-1) * self.lbias[flat_cond].double()).sum()
        return total, grads

    # ----------------------------------------------------------------------- utilities
    def _need_labels(self) -> None:
        if not self.n_labels:
            raise ValueError("this RBM has no label unit (n_labels=0)")

    @torch.no_grad()
    def apply_gauge(self) -> None:
        """Zero-sum gauge on the label couplings (and, in Potts, on the weights over states).

        The shifts are compensated in the hidden bias, so every probability is unchanged.
        """
        if self.n_labels:
            m = self.label_weight.mean(0)
            self.label_weight.sub_(m)
            self.hbias.add_(m)
            self.lbias.sub_(self.lbias.mean())

    @torch.no_grad()
    def init_parameters(
        self, generator: torch.Generator | None = None, weight_std: float = 1e-2
    ) -> None:
        """Small random couplings (``N(0, weight_std^2)``), zero biases."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * weight_std)
            else:
                p.zero_()
        self.apply_gauge()

    def extra_repr(self) -> str:
        return (
            f"n_visible={self.n_visible}, n_states={self.n_states}, "
            f"n_hidden={self.n_hidden}, n_labels={self.n_labels}"
        )


class BernoulliRBM(RBM):
    """RBM with binary visibles ``v in {0,1}^N``, parameters ``vbias (N,)``, ``weight (N, M)``."""

    n_states = 2

    def __init__(self, n_visible: int, n_hidden: int, n_labels: int = 0) -> None:
        super().__init__(n_visible, n_hidden, n_labels)
        self.vbias = nn.Parameter(torch.zeros(n_visible))
        self.weight = nn.Parameter(torch.zeros(n_visible, n_hidden))

    def visible_term(self, v: torch.Tensor) -> torch.Tensor:
        return v.to(self.vbias.dtype) @ self.vbias

    def flat_visible(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return v.to(dtype)

    def visible_to_hidden(self, v: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.weight.dtype
        return v.to(dtype) @ self.weight.to(dtype)

    def visible_field(self, h: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.weight.dtype
        return self.vbias + (h.to(dtype) @ self.weight.to(dtype).T).to(self.vbias.dtype)

    def visible_prob(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v_i = 1 | h)``, shape ``(n, N)``."""
        return torch.sigmoid(self.visible_field(h))

    @torch.no_grad()
    def init_visible_bias(self, x: torch.Tensor, weights: torch.Tensor | None = None,
                          eps: float = 1e-3) -> None:
        """``a_i = logit(<v_i>_data)``: the independent-site model of the data (clipped)."""
        p = _weighted_mean(x.float(), weights).clamp(eps, 1 - eps)
        self.vbias.copy_(torch.log(p) - torch.log1p(-p))


class PottsRBM(RBM):
    """RBM with categorical visibles ``v_i in {0..q-1}``: ``vbias (N, q)``, ``weight (N, q, M)``."""

    def __init__(self, n_visible: int, n_states: int, n_hidden: int, n_labels: int = 0) -> None:
        if n_states < 2:
            raise ValueError(f"n_states must be >= 2, got {n_states}")
        super().__init__(n_visible, n_hidden, n_labels)
        self.n_states = n_states
        self.vbias = nn.Parameter(torch.zeros(n_visible, n_states))
        self.weight = nn.Parameter(torch.zeros(n_visible, n_states, n_hidden))

    def one_hot(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(n, N)`` states -> ``(n, N*q)`` one-hot rows."""
        return F.one_hot(v.long(), self.n_states).reshape(v.shape[0], v.shape[1] * self.n_states
                                                          ).to(dtype)

    def visible_term(self, v: torch.Tensor) -> torch.Tensor:
        return self.one_hot(v, self.vbias.dtype) @ self.vbias.reshape(-1)

    def flat_visible(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.one_hot(v, dtype)

    def visible_to_hidden(self, v: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.weight.dtype
        return self.one_hot(v, dtype) @ self.weight.reshape(-1, self.n_hidden).to(dtype)

    def visible_field(self, h: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.weight.dtype
        flat = (h.to(dtype) @ self.weight.reshape(-1, self.n_hidden).to(dtype).T).to(self.vbias.dtype)
        return self.vbias + flat.reshape(h.shape[0], self.n_visible, self.n_states)

    def visible_prob(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v_i = s | h)``, shape ``(n, N, q)``."""
        return torch.softmax(self.visible_field(h), dim=-1)

    @torch.no_grad()
    def apply_gauge(self) -> None:
        super().apply_gauge()
        m = self.weight.mean(1)  # (N, M): the part of W_{i,s,:} common to every state s
        self.weight.sub_(m.unsqueeze(1))
        self.hbias.add_(m.sum(0))
        self.vbias.sub_(self.vbias.mean(1, keepdim=True))

    @torch.no_grad()
    def init_visible_bias(self, x: torch.Tensor, weights: torch.Tensor | None = None,
                          eps: float = 1e-3) -> None:
        """``a_{i,s} = log f_i(s)``: the independent-site model of the data (pseudocounted)."""
        freq = _weighted_mean(F.one_hot(x.long(), self.n_states).float(), weights)
        freq = (freq + eps) / (1 + eps * self.n_states)
        logf = torch.log(freq)
        self.vbias.copy_(logf - logf.mean(1, keepdim=True))


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return x.mean(0)
    w = weights.to(x.dtype) / weights.sum()
    return torch.tensordot(w, x, dims=1)


def build_rbm(n_visible: int, n_hidden: int, n_states: int = 2, n_labels: int = 0) -> RBM:
    """A Bernoulli RBM for binary data (``n_states == 2``), else a Potts RBM."""
    if n_states == 2:
        return BernoulliRBM(n_visible, n_hidden, n_labels)
    return PottsRBM(n_visible, n_states, n_hidden, n_labels)

