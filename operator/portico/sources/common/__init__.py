"""Plumbing every source shares."""
