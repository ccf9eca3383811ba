"""Kits: ready-made services built from the ports (the seed's `portico.kits`), usable as a library."""
