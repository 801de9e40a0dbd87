"""Sampling kernels: ``init(...) -> state``, ``step(gen, state, model, ...) -> (state, info)``."""
