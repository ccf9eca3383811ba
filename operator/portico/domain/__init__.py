"""Domain models shared by every layer: what a job template and a trigger's identity are."""
