"""Event sources. Each module is one source: its config model, its validation and its trigger class."""
