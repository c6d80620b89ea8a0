"""Shared layer of the satellite-image-time-series (SITS) segmentation tasks.

``align`` (nearest-date alignment, the S4 pre-processing), ``subsample`` (fixed-length temporal
subsampling), ``splits`` (frozen split files, nested label fractions), ``synthetic`` (the
learnable synthetic scene generator both embedded datasets are written from) and ``task`` (the
segmentation task base class: cells, views, collate).
"""
