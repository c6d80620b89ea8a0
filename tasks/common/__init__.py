"""Helpers shared by the built-in tasks: dataset downloads through pooch with checksum verification
and safe archive extraction (``download``); embedded-data verification against MANIFEST.json and
the first-use generation lock (``integrity``)."""
