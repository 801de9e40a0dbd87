"""Walker shards on Ray Train workers (DESIGN.md "Distributed").

- :mod:`~raybm.distributed.exchange`: the plan of which walker rows move where after a global
  resampling (a pure function), and the uneven all-to-all that moves them;
- :mod:`~raybm.distributed.comm`: :class:`~raybm.distributed.comm.TorchComm`, the
  ``torch.distributed`` implementation of the estimators' global-population contract
  (gather, redistribute, all-reduce), counting bytes and seconds per collective;
- :mod:`~raybm.distributed.worker`: the per-worker training loop (the same ``Trainer`` as
  in-process), checkpoint shards, rank-0 tracking;
- :mod:`~raybm.distributed.launch`: starting Ray and the ``TorchTrainer`` with failure recovery.
"""
