"""The seed's import paths for the triggers. Each module re-exports its source's package
(`portico.sources.<source>`), where the code lives."""
