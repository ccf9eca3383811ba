"""Tests of the adapters, mirroring operator/portico/adapters."""
