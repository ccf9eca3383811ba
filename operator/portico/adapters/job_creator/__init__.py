"""Job creators: where triggers send the jobs they create."""
