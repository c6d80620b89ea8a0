"""Dataset downloads through pooch, and archive extraction that never escapes its folder.

* :func:`download_file` fetches a URL with :func:`pooch.retrieve` and pooch's ``HTTPDownloader``
  (a tqdm progress bar when asked). The published checksum is pooch's ``known_hash``; a second
  checksum and the expected size, when given, are checked on the same temporary file. Pooch
  writes the transfer to a temporary file beside ``dest`` and moves it into place only once it is
  verified; on any failure the temporary file is deleted, so ``dest`` is either absent or complete
  and verified. Connection failures, timeouts and 408/429/5xx answers are retried (each try
  starts from zero: pooch does not resume a transfer).
* :func:`safe_extract` validates *every* member of a ``.zip`` / ``.tar[.gz|.bz2|.xz]`` archive before
  writing anything (no absolute paths, no ``..``, no links leading outside, no device files), then
  extracts into a hidden temporary folder inside the destination and moves the top-level entries
  into place, so an interrupted extraction never leaves a half-written tree behind.
* :func:`install_archive` = verify the checksum of an archive the user already has, then extract it
  (this is what ``--from-archive FILE`` uses).

Errors are one line naming the file or URL and the problem.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pooch
import requests

__all__ = [
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download_file",
    "file_digest",
    "install_archive",
    "safe_extract",
    "verify_checksum",
]

#: Seconds to wait before the first retry; doubled for each further consecutive failure.
RETRY_BACKOFF = 1.0
_MAX_BACKOFF = 30.0
#: HTTP statuses worth retrying (the server or a proxy is temporarily unable to answer).
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_HEX_LENGTH = {"md5": 32, "sha256": 64}
_READ_BLOCK = 1 << 20
_MAX_LINK_HOPS = 40
_USER_AGENT = f"satbench-download/2 (pooch {pooch.__version__})"


class ChecksumError(ValueError):
    """A file does not have the expected checksum (or size)."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        algo: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.algo = algo
        self.expected = expected
        self.actual = actual


class DownloadError(OSError):
    """A download failed (HTTP error status, or network errors that persisted through all retries)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class ArchiveError(ValueError):
    """An archive cannot be read (unknown format, corrupt or truncated)."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written (or would point) outside the extraction folder."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        super().__init__(
            f"refusing to extract {archive}: member {member!r} {reason}; nothing was extracted"
        )
        self.archive = archive
        self.member = member
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# checksums (pooch.file_hash)
# --------------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike[str], algo: str) -> str:
    """Hex digest of the file at ``path`` (``algo`` is any :func:`hashlib.new` name, e.g. ``"md5"``)."""
    return pooch.file_hash(str(path), alg=algo.lower())


def _expected_digests(*, sha256: str | None, md5: str | None) -> dict[str, str]:
    expected: dict[str, str] = {}
    for algo, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTH[algo]}}}", value):
            raise ValueError(
                f"{algo} checksum must be {_HEX_LENGTH[algo]} hex digits, got {value!r}"
            )
        expected[algo] = value
    return expected


def _check(path: Path, expected: dict[str, str], *, name: Path, context: str = "") -> None:
    """Raise :class:`ChecksumError` (about ``name``) if ``path`` does not match ``expected``."""
    for algo, want in expected.items():
        got = file_digest(path, algo)
        if got != want:
            raise ChecksumError(
                f"{algo} checksum mismatch for {name}: expected {want}, got {got}{context}",
                path=name,
                algo=algo,
                expected=want,
                actual=got,
            )


def verify_checksum(
    path: str | os.PathLike[str], *, sha256: str | None = None, md5: str | None = None
) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches every checksum given (at least one)."""
    expected = _expected_digests(sha256=sha256, md5=md5)
    if not expected:
        raise ValueError("verify_checksum needs sha256= and/or md5=")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot verify checksum: {path} does not exist or is not a file")
    _check(path, expected, name=path)


# --------------------------------------------------------------------------------------------------
# downloads (pooch.retrieve + HTTPDownloader)
# --------------------------------------------------------------------------------------------------


def _verify_existing(dest: Path, expected: dict[str, str], size: int | None) -> None:
    if not dest.is_file():
        raise FileExistsError(
            f"{dest} exists but is not a regular file; refusing to download over it"
        )
    advice = "; refusing to overwrite it (move or delete it to download again)"
    if size is not None and dest.stat().st_size != size:
        raise ChecksumError(
            f"{dest} already exists but has {dest.stat().st_size} bytes, expected {size}{advice}",
            path=dest,
            algo="size",
            expected=str(size),
            actual=str(dest.stat().st_size),
        )
    _check(dest, expected, name=dest, context=f" ({dest} already exists{advice})")


@dataclass
class _CheckedDownloader:
    """Pooch's HTTPDownloader, then the checks pooch's single ``known_hash`` does not cover.

    The expected size and a second checksum are checked on pooch's temporary file, before pooch
    verifies its own hash and moves the file into place; raising here makes pooch delete it.
    """

    inner: pooch.HTTPDownloader
    dest: Path
    url: str
    size: int | None
    extra: dict[str, str]

    def __call__(self, url: str, output_file: Any, pooch_obj: Any, check_only: bool = False) -> Any:
        done = self.inner(url, output_file, pooch_obj, check_only=check_only)
        if check_only:
            return done
        tmp, gone = Path(output_file), f" (downloaded from {self.url}; the download was deleted)"
        got = tmp.stat().st_size
        if self.size is not None and got != self.size:
            raise ChecksumError(
                f"size mismatch for {self.dest}: expected {self.size} bytes, got {got}{gone}",
                path=self.dest,
                algo="size",
                expected=str(self.size),
                actual=str(got),
            )
        _check(tmp, self.extra, name=self.dest, context=gone)
        return done


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Pooch logs each download at INFO on stderr; the callers print their own line."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` through pooch, verified, and return ``dest``.

    ``sha256`` (else ``md5``) is pooch's ``known_hash``; the other checksum and ``size`` are
    checked too. A mismatch raises :class:`ChecksumError` and leaves nothing behind. Connection
    errors, timeouts, truncated bodies and 408/429/5xx answers are retried up to ``retries``
    times (from zero each time); other HTTP errors raise :class:`DownloadError` at once.

    If ``dest`` already exists it is verified and returned without any network access; if it
    does not match, :class:`ChecksumError` is raised and the file is left untouched (pooch would
    replace it).
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"download_file only supports http(s) URLs, got {url!r}")
    expected = _expected_digests(sha256=sha256, md5=md5)
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")

    if dest.exists() or dest.is_symlink():
        _verify_existing(dest, expected, size)
        return dest

    primary = next((a for a in ("sha256", "md5") if a in expected), None)
    known_hash = f"{primary}:{expected[primary]}" if primary else None
    extra = {a: v for a, v in expected.items() if a != primary}
    inner = pooch.HTTPDownloader(
        progressbar=progress and importlib.util.find_spec("tqdm") is not None,  # pooch's bar is tqdm
        chunk_size=chunk_size,
        timeout=timeout,
        headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
    )
    downloader = _CheckedDownloader(inner, dest, url, size, extra)
    for attempt in range(1, retries + 2):
        try:
            with _quiet_pooch():
                pooch.retrieve(
                    url, known_hash, fname=dest.name, path=dest.parent, downloader=downloader
                )
            return dest
        except ChecksumError:
            raise
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            reason = exc.response.reason if exc.response is not None else ""
            if status not in _TRANSIENT_STATUS:
                raise DownloadError(
                    f"HTTP {status} {reason} while downloading {url}", url=url, status=status
                ) from None
            last: Exception = exc
            what = f"HTTP {status} {reason}"
        except requests.RequestException as exc:  # refused, reset, timed out, cut mid-body
            last, what = exc, _one_line(exc)
        except ValueError as exc:  # pooch's known_hash mismatch (the download is already deleted)
            assert primary is not None
            got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
            actual = got.group(1).lower() if got else None
            raise ChecksumError(
                f"{primary} checksum mismatch for {dest}: expected {expected[primary]}, got {actual} "
                f"(downloaded from {url}; the download was deleted)",
                path=dest,
                algo=primary,
                expected=expected[primary],
                actual=actual,
            ) from None
        if attempt > retries:
            raise DownloadError(
                f"download of {url} failed {attempt} times in a row, last: {what} "
                "(nothing was kept; run again to retry)",
                url=url,
            ) from last
        time.sleep(min(RETRY_BACKOFF * 2 ** (attempt - 1), _MAX_BACKOFF))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------------

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass
class _Member:
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    name: str  # as stored in the archive (for messages)
    parts: tuple[str, ...]  # safe relative path components
    source: object  # ZipInfo or TarInfo
    # symlink target (relative to the link's folder) or hard-link target (relative to the root)
    link: str = ""
    link_parts: tuple[str, ...] = ()  # resolved location of a hard link's target


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Relative path components of a member name, or raise :class:`UnsafeArchiveError`."""
    if "\x00" in name:
        raise UnsafeArchiveError(archive, name, "has a NUL byte in its name")
    normalized = name.replace("\\", "/")  # Windows-made zips may use backslashes
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized):
        raise UnsafeArchiveError(archive, name, "has an absolute path")
    parts = tuple(p for p in normalized.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(
            archive, name, "has a '..' component that leads outside the destination"
        )
    return parts


def _resolve(parts: list[str], links: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
    """Resolve a relative path against the archive's own symlinks; ``None`` if it leaves the root.

    The extraction folder is new and empty, so the archive's symlinks are the only links that can
    exist inside it; following them here mirrors what the filesystem will do after extraction.
    """
    pending = list(reversed(parts))
    resolved: list[str] = []
    hops = 0
    while pending:
        comp = pending.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(comp)
        target = links.get(tuple(resolved))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            resolved.pop()
            pending.extend(reversed(target.split("/")))
    return tuple(resolved)


def _archive_kind(archive: Path) -> str:
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ArchiveError(
        f"{archive}: unsupported archive format (expected .zip, .tar, .tar.gz or .tgz)"
    )


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        parts = _member_parts(archive, info.filename)
        # zip "symlinks" (unix mode bits) are written as plain files holding the target text,
        # exactly like zipfile.extract does, so they cannot point anywhere.
        kind = "dir" if info.is_dir() else "file"
        members.append(_Member(kind, info.filename, parts, info))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tf.getmembers():
        parts = _member_parts(archive, info.name)
        if info.isreg():
            members.append(_Member("file", info.name, parts, info))
        elif info.isdir():
            members.append(_Member("dir", info.name, parts, info))
        elif info.issym():
            if not info.linkname:
                raise UnsafeArchiveError(
                    archive, info.name, "is a symbolic link with an empty target"
                )
            if info.linkname.startswith("/"):
                raise UnsafeArchiveError(
                    archive,
                    info.name,
                    f"is a symbolic link to an absolute path ({info.linkname!r})",
                )
            members.append(_Member("symlink", info.name, parts, info, link=info.linkname))
        elif info.islnk():
            members.append(_Member("hardlink", info.name, parts, info, link=info.linkname))
        else:
            what = {
                tarfile.CHRTYPE: "a character device",
                tarfile.BLKTYPE: "a block device",
                tarfile.FIFOTYPE: "a FIFO",
            }.get(info.type, f"of unsupported tar type {info.type!r}")
            raise UnsafeArchiveError(archive, info.name, f"is {what}")
    return members


def _validate(archive: Path, members: list[_Member]) -> list[_Member]:
    """Check the whole member list; return the members to write (root entries like './' dropped)."""
    links: dict[tuple[str, ...], str] = {}
    kinds: dict[tuple[str, ...], str] = {}
    for m in members:
        if not m.parts:
            if m.kind == "dir":
                continue  # "./" — the destination itself
            raise UnsafeArchiveError(archive, m.name, "has an empty path")
        previous = kinds.get(m.parts)
        if previous is not None and (previous != m.kind or m.kind in ("symlink", "hardlink")):
            if not (previous == m.kind == "symlink" and links[m.parts] == m.link):
                raise UnsafeArchiveError(
                    archive, m.name, f"appears twice in the archive (as {previous} and as {m.kind})"
                )
        kinds[m.parts] = m.kind
        if m.kind == "symlink":
            links[m.parts] = m.link

    files = {p for p, k in kinds.items() if k == "file"}
    kept = []
    for m in members:
        if not m.parts:
            continue
        for i in range(1, len(m.parts)):
            parent_kind = kinds.get(m.parts[:i])
            if parent_kind not in (None, "dir"):
                raise UnsafeArchiveError(
                    archive,
                    m.name,
                    f"lies below {'/'.join(m.parts[:i])!r}, which is a {parent_kind}",
                )
        if m.kind == "symlink":
            if _resolve([*m.parts[:-1], *m.link.split("/")], links) is None:
                raise UnsafeArchiveError(
                    archive,
                    m.name,
                    f"is a symbolic link to {m.link!r}, which leads outside the destination (or loops)",
                )
        elif m.kind == "hardlink":
            try:  # the target is named relative to the archive root
                target_parts = _member_parts(archive, m.link) if m.link else None
            except UnsafeArchiveError:
                target_parts = None  # absolute or with '..': reported below, naming the link
            target = _resolve(list(target_parts), links) if target_parts else None
            if target is None or target not in files or target == m.parts:
                raise UnsafeArchiveError(
                    archive,
                    m.name,
                    f"is a hard link to {m.link!r}, which is not a regular file of the archive",
                )
            m.link_parts = target
        kept.append(m)
    return kept


def _write_members(
    kind: str, handle: zipfile.ZipFile | tarfile.TarFile, members: list[_Member], root: Path
) -> None:
    """Write validated members below ``root`` (files and folders first, then hard links, then symlinks)."""
    order = {"dir": 0, "file": 0, "hardlink": 1, "symlink": 2}
    for m in sorted(members, key=lambda m: order[m.kind]):  # stable: archive order within a group
        path = root.joinpath(*m.parts)
        if m.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if m.kind == "file":
            if kind == "zip":
                assert isinstance(handle, zipfile.ZipFile)
                src = handle.open(m.source)  # type: ignore[arg-type]
            else:
                assert isinstance(handle, tarfile.TarFile)
                src = handle.extractfile(m.source)  # type: ignore[arg-type]
                if src is None:
                    raise ArchiveError(f"{handle.name}: cannot read member {m.name!r}")
            with src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, _READ_BLOCK)
            if kind == "tar":
                info = m.source
                assert isinstance(info, tarfile.TarInfo)
                # like tarfile's "data" filter: no setuid/setgid/sticky, no group/other write
                os.chmod(path, (info.mode & 0o755) | stat.S_IRUSR | stat.S_IWUSR)
                os.utime(path, (info.mtime, info.mtime))
        elif m.kind == "hardlink":
            target = root.joinpath(*m.link_parts)
            try:
                os.link(target, path)
            except OSError:  # filesystem without hard links
                shutil.copy2(target, path)
        elif m.kind == "symlink":
            os.symlink(m.link, path)


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a .zip or .tar[.gz|.tgz|.bz2|.xz] ``archive`` into ``dest``; return the top-level paths.

    Every member is validated before anything is written: absolute paths, ``..`` components,
    members below a symlink or a file, symlinks or hard links leading outside ``dest``, device
    files and FIFOs make it raise :class:`UnsafeArchiveError` naming the archive and the member.
    The members are written into a hidden temporary folder inside ``dest`` and each top-level
    entry is then renamed into place; a top-level entry that already exists in ``dest`` raises
    :class:`FileExistsError` (nothing is overwritten). Corrupt archives raise :class:`ArchiveError`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    kind = _archive_kind(archive)
    corrupt = (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        lzma.LZMAError,
    )
    try:
        handle: zipfile.ZipFile | tarfile.TarFile
        handle = zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")
    except corrupt as exc:
        raise ArchiveError(f"{archive}: cannot open {kind} archive: {exc}") from exc
    with handle:
        try:
            raw = _zip_members(archive, handle) if kind == "zip" else _tar_members(archive, handle)  # type: ignore[arg-type]
        except corrupt as exc:
            raise ArchiveError(f"{archive}: corrupt or truncated {kind} archive: {exc}") from exc
        members = _validate(archive, raw)

        tops = list(dict.fromkeys(m.parts[0] for m in members))
        existing = [dest / t for t in tops if (dest / t).exists() or (dest / t).is_symlink()]
        if existing:
            raise FileExistsError(
                f"cannot extract {archive} into {dest}: "
                + ", ".join(str(p) for p in existing)
                + " already exist(s); move or delete to extract again"
            )
        if not tops:
            return []
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=dest))
        try:
            try:
                _write_members(kind, handle, members, tmp)
            except corrupt as exc:
                raise ArchiveError(
                    f"{archive}: corrupt or truncated {kind} archive: {exc}"
                ) from exc
            for top in tops:
                os.rename(tmp / top, dest / top)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest / t for t in tops]


def install_archive(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
) -> list[Path]:
    """Verify ``archive`` against the checksum(s) given (if any), then :func:`safe_extract` it."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    if sha256 is not None or md5 is not None:
        verify_checksum(archive, sha256=sha256, md5=md5)
    return safe_extract(archive, dest)
