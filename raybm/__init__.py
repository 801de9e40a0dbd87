"""raybm: energy-based models trained at scale on Ray, tracked in MLflow."""

__version__ = "0.1.0"


def load(path):
    """The model of a run directory or checkpoint: ``raybm.load("runs/my-run")``."""
    from raybm.checkpoint import load as load_checkpoint_model

    return load_checkpoint_model(path)


def sample(model, n, k, label=None, seed=0):
    """``n`` samples after ``k`` Gibbs sweeps from uniform noise (the F&F generation protocol),
    the label clamped when given: ``raybm.sample(model, 16, k=10, label=3)``. Sampling lives in
    ``raybm.samplers``, not in the model (DESIGN.md, "Energy model")."""
    from raybm.samplers.gibbs import generate
    from raybm.streams import generator

    return generate(generator(seed, "sample"), model, n, k, label=label)
