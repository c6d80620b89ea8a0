"""Helpers shared by the built-in tasks (dataset download, checksum verification, safe extraction;
embedded-data verification against MANIFEST.json and the first-use generation lock in ``integrity``)."""
