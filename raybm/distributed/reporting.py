"""Hand every report of a Ray Train run back to the process that started it.

Ray Train V2 runs its controller as an actor, and its own Tune bridge
(``ray.tune.integration.ray_train.TuneReportCallback``) forwards only metrics: a Tune
checkpoint never reaches Tune, so a PBT exploit would have nothing to clone. This callback
runs in the controller after each report has been registered and passes rank 0's metrics and
the merged checkpoint's path through a Ray queue to the driver thread waiting in
:func:`raybm.distributed.launch.fit`, then waits for that thread to acknowledge a checkpoint
(it copies it first), so that Ray's pruning (``keep_checkpoints``) cannot remove it mid-copy.
"""

from __future__ import annotations

from typing import Any

from ray.train.v2.api.callback import UserCallback

ACK_TIMEOUT_S = 600.0


class ReportForwarder(UserCallback):
    """Controller side: ``after_report`` puts ``(metrics, checkpoint path)``; driver side:
    :meth:`next` takes them and :meth:`ack` releases the controller."""

    def __init__(self, items: Any, acks: Any) -> None:
        self.items = items
        self.acks = acks

    @classmethod
    def create(cls) -> "ReportForwarder":
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # Zero-CPU actors: they must not take a slot from the workers they serve. Pinned to
        # the driver's node, which lives as long as the driver: on a cluster a worker node
        # may go away (and a worker group with it, which Ray restarts), but the queues must
        # outlive every group of the fit. (A soft affinity was not enough: Ray put them on a
        # worker node when the head offered no CPUs.)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        options = {"num_cpus": 0, "scheduling_strategy": here}
        return cls(Queue(actor_options=options), Queue(actor_options=options))

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        path = None if checkpoint is None else str(checkpoint.path)
        self.items.put((dict(metrics[0]), path))
        if path is not None:
            self.acks.get(timeout=ACK_TIMEOUT_S)

    def next(self, timeout: float | None) -> tuple[dict[str, Any], str | None] | None:
        """The next report, waiting up to ``timeout`` seconds (None: only what is queued)."""
        from ray.util.queue import Empty

        try:
            return self.items.get(block=timeout is not None, timeout=timeout)
        except Empty:
            return None

    def ack(self) -> None:
        self.acks.put(True)

    def shutdown(self) -> None:
        """Remove both queue actors (the fit is over)."""
        for queue in (self.items, self.acks):
            queue.shutdown(force=True)
