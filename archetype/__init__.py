"""Archetype: latency-constrained neural architecture search and model compression."""

__version__ = "0.1.0"
