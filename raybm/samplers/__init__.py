"""Sampling kernels: ``init(...) -> state``, ``step(gen, state, model, ...) -> (state, info)``.

``gibbs`` (block Gibbs for RBMs: exact ``"fp32"``, fast ``"bf16"`` and int8-digit
``"digits"`` paths) is built from
``random_bits`` (uniforms cut from the generator's int64 stream, Bernoulli and categorical
draws), ``prepared`` (parameters laid out and cast once per change), ``fused`` (the fast
path's elementwise kernels, optionally ``torch.compile``d) and ``scratch`` (buffers reused
across sweeps).
"""
