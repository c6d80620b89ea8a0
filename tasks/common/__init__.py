"""Helpers shared by the built-in tasks (dataset download, checksum verification, safe extraction)."""
