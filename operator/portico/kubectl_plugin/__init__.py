"""`kubectl portico`: day-2 operations on JobTriggers (get, next, run-now, suspend, history, describe,
doctor), reusing the operator's own models and schedule parser so the plugin and the operator agree."""
