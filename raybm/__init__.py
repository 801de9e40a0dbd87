"""raybm: energy-based models trained at scale on Ray, tracked in MLflow."""

__version__ = "0.1.0"


def load(path):
    """The model of a run directory or checkpoint: ``raybm.load("runs/my-run")``."""
    from raybm.checkpoint import load as load_checkpoint_model

    return load_checkpoint_model(path)


def sample(model, n, k=None, label=None, seed=0, source="auto"):
    """``n`` samples of a trained run (a run directory or checkpoint: its own kernel, walkers
    or exact sampler, as ``raybm sample`` draws them) or of a model (``k`` steps of its kernel
    from the kernel's start, Gibbs for an RBM: the F&F generation protocol), the label clamped
    when given: ``raybm.sample("runs/pcd50", 16)``, ``raybm.sample(rbm, 16, k=10, label=3)``.
    Returns the samples' states (``raybm.sampling.draw`` also says how they were drawn).
    Sampling lives in ``raybm.samplers``, not in the model (DESIGN.md, "Energy model")."""
    import torch

    from raybm.sampling import draw, sample_run
    from raybm.streams import generator

    if not isinstance(model, torch.nn.Module):
        return sample_run(model, n, source=source, k=k, label=label, seed=seed).x
    from raybm.models.rbm import RBM
    from raybm.samplers.gibbs import GibbsKernel

    if not isinstance(model, RBM):
        raise TypeError("a continuous model's kernel is its run's: pass the run directory")
    if k is None:
        raise TypeError("sampling a model takes k (Gibbs sweeps from uniform noise)")
    return draw(generator(seed, "sample"), model, GibbsKernel(), n, source="chains", k=k,
                label=label).x
