"""Resumable, checksum-verified dataset downloads and archive extraction that never escapes its folder.

* :func:`download_file` fetches a URL into ``<dest>.part`` (resuming with an HTTP ``Range`` request
  when a partial file is already there), verifies the published checksum and only then renames the
  file into place, so ``dest`` is either absent or complete and verified.
* :func:`safe_extract` validates *every* member of a ``.zip`` / ``.tar[.gz|.bz2|.xz]`` archive before
  writing anything (no absolute paths, no ``..``, no links leading outside, no device files), then
  extracts into a hidden temporary folder inside the destination and moves the top-level entries
  into place, so an interrupted extraction never leaves a half-written tree behind.
* :func:`install_archive` = verify the checksum of an archive the user already has, then extract it
  (this is what ``--from-archive FILE`` uses).

Only the standard library and tqdm are used.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

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
_USER_AGENT = "satbench-download/1 (+python-urllib)"


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
# checksums
# --------------------------------------------------------------------------------------------------


def _new_hash(algo: str) -> hashlib._Hash:
    algo = algo.lower()
    try:
        # md5 is used as a published integrity check, not for security (keeps FIPS builds happy).
        return hashlib.new(algo, usedforsecurity=False)
    except ValueError:
        raise ValueError(f"unsupported hash algorithm {algo!r}") from None


def _file_digests(path: Path, algos: list[str]) -> dict[str, str]:
    """Hex digests of ``path`` for several algorithms in a single pass over the file."""
    hashes = {algo: _new_hash(algo) for algo in algos}
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BLOCK):
            for h in hashes.values():
                h.update(block)
    return {algo: h.hexdigest() for algo, h in hashes.items()}


def file_digest(path: str | os.PathLike[str], algo: str) -> str:
    """Hex digest of the file at ``path`` (``algo`` is any :func:`hashlib.new` name, e.g. ``"md5"``)."""
    return _file_digests(Path(path), [algo.lower()])[algo.lower()]


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
    if not expected:
        return
    actual = _file_digests(path, list(expected))
    for algo, want in expected.items():
        if actual[algo] != want:
            raise ChecksumError(
                f"{algo} checksum mismatch for {name}: expected {want}, got {actual[algo]}{context}",
                path=name,
                algo=algo,
                expected=want,
                actual=actual[algo],
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
# downloads
# --------------------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (with the resume logic)."""


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` → ``(100, 1000)``; ``"bytes */1000"`` → ``(None, 1000)``; total may be None."""
    if not value:
        return None, None
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


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
    """Download ``url`` to ``dest`` (resumable, verified) and return ``dest``.

    The data goes to ``<dest>.part`` first; an existing ``.part`` is resumed with a ``Range``
    request (a server without range support makes it restart from zero). Connection resets,
    timeouts, truncated bodies and 408/429/5xx answers are retried up to ``retries`` times in a
    row (a retry that made progress resets the count), resuming each time. When the transfer is
    complete the checksum(s) and ``size`` are verified; on mismatch the ``.part`` is deleted and
    :class:`ChecksumError` is raised. Only a verified file is renamed (atomically) to ``dest``.

    If ``dest`` already exists it is verified and returned without any network access; if it
    does not match, :class:`ChecksumError` is raised and the file is left untouched.
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

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    bar = tqdm(
        total=size,
        initial=0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=dest.name,
        disable=not progress,
        leave=True,
    )
    try:
        _fetch(
            url, part, size=size, chunk_size=chunk_size, timeout=timeout, retries=retries, bar=bar
        )
    finally:
        bar.close()

    got = _size_of(part)
    cleanup = (
        f" (downloaded from {url}; the partial file {part} was deleted, run again to re-download)"
    )
    try:
        if size is not None and got != size:
            raise ChecksumError(
                f"size mismatch for {dest}: expected {size} bytes, got {got}{cleanup}",
                path=dest,
                algo="size",
                expected=str(size),
                actual=str(got),
            )
        _check(part, expected, name=dest, context=cleanup)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _fetch(
    url: str,
    part: Path,
    *,
    size: int | None,
    chunk_size: int,
    timeout: float,
    retries: int,
    bar: tqdm,
) -> None:
    """Bring ``part`` to the complete content of ``url`` (retrying transient failures)."""
    failures = 0
    best = _size_of(part)
    while True:
        have = _size_of(part)
        if size is not None and have > size:
            part.unlink()  # longer than the expected file: cannot be a prefix of it
            have = 0
        if size is not None and have == size and part.exists():
            bar.reset(total=size)
            bar.update(have)
            return  # complete from an earlier run; the caller verifies it
        try:
            _attempt(
                url, part, have=have, size=size, chunk_size=chunk_size, timeout=timeout, bar=bar
            )
            return
        except _Transient as exc:
            now = _size_of(part)
            failures = 1 if now > best else failures + 1  # progress resets the count of failures
            best = max(best, now)
            if failures > retries:
                raise DownloadError(
                    f"download of {url} failed {failures} times in a row without progress, "
                    f"last: {exc} ({now} bytes kept in {part}; run again to resume)",
                    url=url,
                ) from exc.__cause__
            time.sleep(min(RETRY_BACKOFF * 2 ** (failures - 1), _MAX_BACKOFF))


def _attempt(
    url: str, part: Path, *, have: int, size: int | None, chunk_size: int, timeout: float, bar: tqdm
) -> None:
    """One HTTP request: resume (or restart) ``part``; raise :class:`_Transient` for retryable failures."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        code, reason = exc.code, exc.reason
        content_range = exc.headers.get("Content-Range") if exc.headers else None
        exc.close()
        if code == 416 and have:
            _, total = _parse_content_range(content_range)
            if have == total or (total is None and have == size):
                return  # the partial file is already complete
            part.unlink(missing_ok=True)
            raise _Transient(
                f"server rejected resuming at byte {have} (HTTP 416, total {total}); restarting from zero"
            ) from exc
        if code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {code} {reason} from {url}") from exc
        raise DownloadError(
            f"HTTP {code} {reason} while downloading {url}", url=url, status=code
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):  # connection refused/reset, timeout, DNS failure
            raise _Transient(f"cannot reach {url}: {exc.reason}") from exc
        raise DownloadError(f"cannot download {url}: {exc.reason}", url=url) from exc
    except (OSError, http.client.HTTPException) as exc:
        # reset or timeout while connecting / reading the status line (RemoteDisconnected, ...)
        raise _Transient(f"connection to {url} failed: {exc!r}") from exc

    with response:
        status = response.status
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient(
                    f"server answered a resume at byte {have} with Content-Range "
                    f"{response.headers.get('Content-Range')!r}; restarting from zero"
                )
            mode = "ab"
        elif status == 200:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            have, mode = 0, "wb"  # no range support (or fresh start): start from zero
        else:
            raise DownloadError(
                f"unexpected HTTP {status} {response.reason} while downloading {url}",
                url=url,
                status=status,
            )
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"server reports {total} bytes for {url} but the expected size is {size} bytes "
                "(has the file changed upstream?)",
                url=url,
                status=status,
            )
        bar.reset(total=total if total is not None else size)
        bar.update(have)
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"connection lost after {have} bytes: {exc!r}") from exc
                if not chunk:
                    break
                fh.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
    if total is not None and have < total:
        raise _Transient(f"connection closed after {have} of {total} bytes")


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
