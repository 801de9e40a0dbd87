"""Metrics: exact log Z for small models, AIS, classification, generation scores."""
