"""raybm: energy-based models trained at scale on Ray, tracked in MLflow."""

__version__ = "0.1.0"


def load(path):
    """The model of a run directory or checkpoint: ``raybm.load("runs/my-run")``."""
    from raybm.checkpoint import load as load_checkpoint_model

    return load_checkpoint_model(path)
