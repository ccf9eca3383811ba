"""Portico Triggers: declare background-job triggers as Kubernetes resources."""

__version__ = "0.1.0"
