"""A run: its typed result, its directory layout, its journal and lock, its validity gates, its session."""
