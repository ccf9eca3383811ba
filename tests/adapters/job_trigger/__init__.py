"""Tests of the event sources."""
