"""Ports: the small abstract interfaces the core depends on, implemented by adapters."""
