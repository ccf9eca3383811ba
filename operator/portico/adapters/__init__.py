"""Adapters: implementations of the ports (event sources, job creators)."""
