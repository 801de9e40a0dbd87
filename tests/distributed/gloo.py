"""The collectives are tested on local gloo ranks (``raybm.distributed.spawn``): the process
group Ray Train sets up on its workers, without the 15-20 s of starting Ray."""

from raybm.distributed.spawn import run_ranks

__all__ = ["run_ranks"]
