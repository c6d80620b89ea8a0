"""Data checks shared by the SITS readers (PASTIS-R, South Sudan); policies in docs/data_checks.md.

* Labels must be integers: integer (or bool) arrays are taken as they are; float arrays only when
  every value is a finite integer (nothing is lost by the cast); anything else is a one-line
  :class:`~benchmark.errors.DataError` naming the file and dtype.
* Non-finite pixels (NaN, inf) in imagery: masked, counted and reported instead of failing the job.
  A value that is not finite becomes 0 *after* normalisation (the training mean of its channel,
  the value time padding uses too); a date with no finite value at all is dropped from the series
  (the same as masking it out in ``<modality>_mask``: the SITS format has a per-date mask, not a
  per-pixel one); a file with no finite value is a DataError. The reader warns once per file and
  keeps a count per file in ``nonfinite_counts``. Valid files are read exactly as before.
"""

from __future__ import annotations

import numpy as np

from benchmark.errors import DataError


def integer_labels(raw: np.ndarray, where: str) -> np.ndarray:
    """An int64 copy of label array ``raw``; ``where`` ("<file>: 'truth'") starts every error."""
    if np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool:
        return np.array(raw, dtype=np.int64)
    if np.issubdtype(raw.dtype, np.floating):
        finite = np.isfinite(raw)
        if not finite.all():
            raise DataError(f"{where} has dtype {raw.dtype} and contains NaN or inf ({int((~finite).sum())} value(s)); labels must be integers")
        fractional = raw != np.round(raw)
        if fractional.any():
            raise DataError(f"{where} has dtype {raw.dtype} with non-integer values (e.g. {float(raw[fractional][0]):g}, "
                            f"{int(fractional.sum())} in all); labels must be integers, a cast would truncate them")
        return raw.astype(np.int64)
    raise DataError(f"{where} has dtype {raw.dtype}, expected an integer label array")


def nonfinite_message(where: str, bad: int, total: int, dropped: int, normalized: bool) -> str:
    """The once-per-file warning of the non-finite policy."""
    fill = "0 after normalisation (the channel's training mean)" if normalized else "0"
    tail = f"; {dropped} date(s) with no finite value dropped from the series" if dropped else ""
    return f"{where}: {bad} of {total} value(s) are NaN or inf: set to {fill}{tail} (reported once per file)"
