"""User-facing errors: the CLI prints them as one readable line instead of a traceback."""


class BenchmarkError(Exception):
    """A mistake the user can fix (unknown name, bad path, invalid option)."""


class EntryOutputError(BenchmarkError):
    """An entry returned something that violates its family's contract."""


class DataError(BenchmarkError):
    """Input data is missing or broken; the message names the file and the problem."""
