"""raybm: energy-based models trained at scale on Ray, tracked in MLflow."""

__version__ = "0.1.0"
