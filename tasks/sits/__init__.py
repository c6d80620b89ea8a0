"""Shared layer of the satellite-image-time-series (SITS) segmentation tasks.

``subsample`` (fixed-length temporal subsampling), ``splits`` (frozen split files, nested label
fractions), ``synthetic`` (the learnable scene generator both embedded datasets are written from),
``checks`` (integer labels, the non-finite pixel policy) and ``task`` (the segmentation task base
class: cells, views, collate, embedded-data verification). Nearest-date alignment
lives in ``benchmark.sits`` because entries use it too.
"""
