"""Shared layer of the satellite-image-time-series (SITS) segmentation tasks.

``subsample`` (fixed-length temporal subsampling), ``splits`` (frozen split files, nested label
fractions), ``synthetic`` (the learnable scene generator both embedded datasets are written from)
and ``task`` (the segmentation task base class: cells, views, collate). Nearest-date alignment
lives in ``benchmark.sits`` because entries use it too.
"""
