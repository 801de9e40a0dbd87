"""The distributed population over real gloo ranks: the summed shard gradients equal the
single-process gradient of the same walkers; a resampling exchange leaves every rank holding
exactly its planned ancestors; a 2-rank Jarzynski run keeps identical parameters on both
ranks and its running log Z on the exact one."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from raybm.algorithms.base import Batch, data_term, walker_term
from raybm.config import load_config
from raybm.distributed.comm import TorchComm
from raybm.distributed.exchange import plan_exchange
from raybm.metrics.exact import as_float64, log_partition
from raybm.models.gaussian import GaussianMixtureEnergy
from raybm.models.neural import ConvEnergy
from raybm.gradients import sum_gradients
from raybm.train import make_trainer, run_updates
from raybm.walkers import WalkerState, shard_slice, shard_sizes
from tests.algorithms.test_jarzynski import teacher_problem
from raybm.distributed.spawn import run_ranks
from tests.enumeration import random_model

FAMILIES = [("bernoulli", 0), ("bernoulli", 3), ("potts", 2), ("mixture", 0), ("conv", 0)]
N_WALKERS, N_BATCH = 11, 9  # odd: the shards have different sizes


def population(kind: str, n_labels: int):
    """A model, a weighted walker population and a weighted batch, all from seed 0."""
    g = torch.Generator().manual_seed(0)
    if kind == "mixture":  # float walkers: a continuous energy
        model = GaussianMixtureEnergy(torch.randn(3, 4, generator=g),
                                      torch.randn(3, generator=g)).double()

        def states(n):
            return 2 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    elif kind == "conv":  # image walkers: a neural energy
        model = ConvEnergy(1, 8, base_scale=0.5, gen=g).double()

        def states(n):
            return torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    else:
        model = as_float64(random_model(kind, g, n_labels))
        high = model.n_states if kind == "potts" else 2

        def states(n):
            return torch.randint(0, high, (n, model.n_visible), generator=g, dtype=torch.uint8)

    label = (lambda n: torch.randint(0, n_labels, (n,), generator=g)) if n_labels else (
        lambda n: None)
    walkers = WalkerState(states(N_WALKERS), 3 * torch.randn(N_WALKERS, generator=g,
                                                             dtype=torch.float64),
                          label(N_WALKERS))
    batch = Batch(states(N_BATCH), label(N_BATCH), torch.rand(N_BATCH, generator=g) + 0.5)
    return model, walkers, batch


def loss_of(model, walkers, batch, pop=None):
    kwargs = {} if pop is None else {"population": pop}
    return data_term(model, batch) - walker_term(model, walkers, **kwargs)


def shard_gradient(rank: int, world: int, kind: str, n_labels: int):
    model, walkers, batch = population(kind, n_labels)
    comm = TorchComm()
    mine = shard_slice(N_WALKERS, world, rank)
    rows = shard_slice(N_BATCH, world, rank)
    shard_batch = Batch(batch.x[rows], None if batch.label is None else batch.label[rows],
                        batch.weight[rows], total_weight=float(batch.weight.double().sum()))
    shard_walkers = walkers.take(torch.arange(N_WALKERS)[mine])
    loss = loss_of(model, shard_walkers, shard_batch, comm)
    loss.backward()
    total = float(sum_gradients(comm, model, loss.detach()))
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind, n_labels", FAMILIES)
def test_two_worker_gradient_equals_the_single_process_gradient(kind, n_labels):
    model, walkers, batch = population(kind, n_labels)
    loss = loss_of(model, walkers, batch)
    loss.backward()
    for total, grads in run_ranks(2, shard_gradient, kind, n_labels):
        assert total == pytest.approx(float(loss.detach()), rel=1e-12, abs=1e-12)
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12)


def exchange_rank(rank: int, world: int, n: int, seed: int):
    """Walkers whose rows encode their global id; resample to skewed ancestors; exchange."""
    sizes = shard_sizes(n, world)
    start = sum(sizes[:rank])
    ids = torch.arange(start, start + sizes[rank])
    walkers = WalkerState(
        x=torch.stack([ids % 256, ids // 256], 1).to(torch.uint8),
        log_weight=ids.double() * 0.5, label=ids.clone())
    g = torch.Generator().manual_seed(seed)  # the shared per-step seed: same draw everywhere
    log_weight = 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    ancestors = torch.multinomial(torch.softmax(log_weight, 0), n, True, generator=g)
    comm = TorchComm()
    out = comm.redistribute(walkers, ancestors)
    held = (out.x[:, 0].long() + 256 * out.x[:, 1].long())
    assert torch.equal(held, out.label) and torch.equal(out.log_weight, held.double() * 0.5)
    return ancestors, held.tolist(), comm.bytes_sent["exchange"]


@pytest.mark.parametrize("world, n", [(2, 600), (3, 1000)])
def test_exchange_leaves_every_rank_exactly_its_planned_ancestors(world, n):
    results = run_ranks(world, exchange_rank, n, 7)
    ancestors = results[0][0]
    sizes = shard_sizes(n, world)
    offsets = [sum(sizes[:r]) for r in range(world)]
    plans = [plan_exchange(ancestors, sizes, r) for r in range(world)]
    held_all = []
    for rank, (_, held, nbytes) in enumerate(results):
        plan = plans[rank]
        expected = [offsets[rank] + int(i) for i in plan.keep]
        for src in range(world):
            other = plans[src]
            start = sum(other.send_counts[:rank])
            expected += [offsets[src] + int(i)
                         for i in other.send[start : start + other.send_counts[rank]]]
        assert held == expected  # kept rows in place, then received rows in rank order
        assert nbytes == plan.rows_moved * (2 + 8 + 8)
        held_all += held
    assert Counter(held_all) == Counter(ancestors.tolist())  # none lost, none extra
    assert sum(p.rows_moved for p in plans) > 0, "nothing moved: the exchange is untested"


def jarzynski_rank(rank: int, world: int):
    config, train = teacher_problem(n_walkers=4001, batch_size=301)  # odd: uneven shards
    comm = TorchComm()
    trainer = make_trainer(config, train, population=comm)
    start = log_partition(trainer.model)
    run_updates(trainer, 400)
    return {
        "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        "n_walkers": trainer.walkers.n_walkers,
        "log_z": trainer.estimator.log_z(trainer.walkers),
        "exact": log_partition(trainer.model), "start": start,
        "resamplings": trainer.estimator.n_resamplings,
        "moved": comm.bytes_sent["exchange"],
    }


def test_two_rank_jarzynski_keeps_ranks_identical_and_log_z_exact():
    """Same tolerance argument as the single-process log Z test (tests/algorithms)."""
    a, b = run_ranks(2, jarzynski_rank)
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    assert a["n_walkers"] + b["n_walkers"] == 4001
    assert a["resamplings"] == b["resamplings"] >= 2
    assert a["log_z"] == b["log_z"]
    assert abs(a["exact"] - a["start"]) > 0.3
    assert abs(a["log_z"] - a["exact"]) <= 0.05


def mixture_config():
    from raybm.config import parse_config

    return parse_config({
        "data": {"format": "gaussian_mixture",
                 "mixture": {"dim": 5, "centers": [[-3.0], [2.0]], "n_samples": 2000}},
        "model": {"kind": "gaussian_mixture", "n_components": 2},
        "sampler": {"name": "ula", "step_size": 0.1},
        "algorithm": {"name": "jarzynski", "k": 1, "n_walkers": 3001, "ess_threshold": 0.9},
        "optimizer": {"lr": 0.01, "param_lr": {"log_weights": 0.05}},
        "train": {"batch_size": 201, "progress": False}})


def mixture_jarzynski_rank(rank: int, world: int):
    from raybm.data.load import load_data

    config = mixture_config()
    train, _ = load_data(config)
    comm = TorchComm()
    trainer = make_trainer(config, train, population=comm)
    start = trainer.model.log_partition()
    run_updates(trainer, 150)
    return {
        "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        "n_walkers": trainer.walkers.n_walkers, "dtype": trainer.walkers.x.dtype,
        "log_z": trainer.estimator.log_z(trainer.walkers),
        "exact": trainer.model.log_partition(), "start": start,
        "resamplings": trainer.estimator.n_resamplings,
        "moved": comm.bytes_sent["exchange"],
    }


def test_two_rank_jarzynski_on_float_walkers():
    """A Gaussian mixture trained by Jarzynski with ULA on 2 ranks: the ranks hold the same
    parameters after every update, float walker rows cross between shards at resampling, and
    the running log Z (the same on both) follows the closed form. (Its Monte-Carlo accuracy
    is checked single-process in tests/algorithms/test_jarzynski_continuous.py.)"""
    a, b = run_ranks(2, mixture_jarzynski_rank)
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    assert a["n_walkers"] + b["n_walkers"] == 3001 and a["dtype"] == torch.float32
    assert a["resamplings"] == b["resamplings"] >= 2
    assert a["moved"] + b["moved"] > 0
    assert a["log_z"] == b["log_z"]
    assert abs(a["exact"] - a["start"]) > 0.05  # the weights' total moved log Z
    assert abs(a["log_z"] - a["exact"]) <= 0.05


def resume_rank(rank: int, world: int, directory: str, phase: str):
    """``phase`` "first": 12 updates, checkpoint, 8 more; "second": restore, 8 updates."""
    from raybm.checkpoint import write_common, write_shard
    from raybm.data.digits import load_digits

    config = load_config(None, [
        "algorithm.name=jarzynski", "algorithm.k=3", "algorithm.n_walkers=301",
        "algorithm.ess_threshold=0.9", "model.n_hidden=16", "model.labels=false",
        "optimizer.name=adam", "optimizer.lr=0.02", "train.batch_size=64",
        "train.progress=false"])
    train = load_digits()
    comm = TorchComm()
    if phase == "first":
        trainer = make_trainer(config, train, population=comm)
        run_updates(trainer, 12)
        write_shard(directory, rank, world, trainer.walkers, trainer.gen.get_state())
        if rank == 0:
            write_common(directory, step=trainer.step, model=trainer.model,
                         state=trainer.state(), meta={}, world_size=world)
        torch.distributed.barrier()
    else:
        from pathlib import Path

        trainer = make_trainer(config, train, Path(directory), population=comm)
    run_updates(trainer, 20)
    return ({n: p.detach().clone() for n, p in trainer.model.named_parameters()},
            trainer.walkers, trainer.estimator.state_dict())


def test_two_rank_resume_continues_exactly(tmp_path):
    """Each rank gets its own walkers, log-weights and generator back from its shard file."""
    first = run_ranks(2, resume_rank, str(tmp_path), "first")
    second = run_ranks(2, resume_rank, str(tmp_path), "second")
    for (p1, w1, s1), (p2, w2, s2) in zip(first, second):
        assert s1 == s2 and s1["n_resamplings"] >= 1
        for name in p1:
            assert torch.equal(p1[name], p2[name]), name
        assert torch.equal(w1.x, w2.x) and torch.equal(w1.log_weight, w2.log_weight)


def kstep_rank(rank: int, world: int):
    """The default job's algorithm (F&F with labels: two phases, centred) on digits."""
    from raybm.data.digits import load_digits

    config = load_config(None, ["model.n_hidden=32", "train.batch_size=101",
                                "train.progress=false", "algorithm.k=3"], use_default=True)
    trainer = make_trainer(config, load_digits(), population=TorchComm())
    run_updates(trainer, 6)
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_two_rank_ff_with_labels_keeps_ranks_identical():
    a, b = run_ranks(2, kstep_rank)
    assert set(a) >= {"weight", "label_weight"}
    for name in a:
        assert torch.equal(a[name], b[name]), name


def auto_precision_rank(rank: int, world: int, rank_without_int8: int | None) -> str:
    """What ``sampler.precision: auto`` comes to on this rank of a wide model (N M / (N + M)
    = 74 x 2000 / 2074 = 71), bf16 withheld everywhere and exact int8 sums on every rank
    but ``rank_without_int8``."""
    import raybm.samplers.digits
    import raybm.samplers.gibbs
    from raybm.data.load import load_data

    raybm.samplers.gibbs._cpu_bf16 = lambda: False
    if rank == rank_without_int8 or not raybm.samplers.digits.available(torch.device("cpu")):
        exact = rank != rank_without_int8
        raybm.samplers.digits.available = lambda device: exact
    config = load_config(None, ["model.n_hidden=2000", "data.max_samples=200",
                                "train.batch_size=50", "train.n_updates=2",
                                "tracking.enabled=false", "train.progress=false"])
    train, _ = load_data(config)
    return make_trainer(config, train, population=TorchComm()).estimator.kernel.precision


@pytest.mark.parametrize("rank_without_int8, used", [(None, "digits"), (1, "fp32")])
def test_auto_takes_the_int8_digits_only_where_every_rank_sums_int8_exactly(
        rank_without_int8, used):
    """The ranks decide together (one all-reduce of what each can): a rank whose int8 sums
    are not exact (no VNNI, or oneDNN capped below it) keeps the whole run in fp32."""
    assert run_ranks(2, auto_precision_rank, rank_without_int8) == [used, used]
