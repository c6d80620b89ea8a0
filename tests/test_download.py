"""Verified downloads through pooch from a local 127.0.0.1 HTTP server, and safe archive extraction."""

from __future__ import annotations

import hashlib
import io
import logging
import random
import socket
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.common import download
from tasks.common.download import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    file_digest,
    install_archive,
    safe_extract,
    verify_checksum,
)

# --------------------------------------------------------------------------------------------------
# fixtures: an in-memory zip served over HTTP with switchable failures
# --------------------------------------------------------------------------------------------------

FILES = {
    "PASTIS-R/metadata.geojson": b'{"type": "FeatureCollection", "features": []}\n',
    # incompressible and stored, so the archive is large enough to be cut mid-transfer
    "PASTIS-R/DATA_S2/S2_10000.npy": random.Random(0).randbytes(200_000),
}


def _make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("PASTIS-R/", b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


PAYLOAD = _make_zip(FILES)
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 8192
STALL = 0.5


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    drop_after: int | None = None  # cut the connection after this many body bytes ...
    drops: int = 0  # ... for this many responses
    errors: list[int] = field(default_factory=list)  # statuses to answer first, one per request
    stalls: int = 0  # this many first requests get no answer for STALL seconds (client times out)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        st = self.server.state
        with st.lock:
            st.requests.append({"path": self.path, "range": self.headers.get("Range")})
            error = st.errors.pop(0) if st.errors else None
            stall = st.stalls > 0
            st.stalls -= stall
            drop = st.drop_after if st.drops > 0 else None
            if drop is not None:
                st.drops -= 1
        if stall:
            time.sleep(STALL)
            self.close_connection = True
            return
        if error is not None:
            self.send_error(error)
            return
        if self.path != "/data.zip":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(st.payload)))
        self.end_headers()
        if drop is not None:
            self.wfile.write(st.payload[:drop])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # abrupt end mid-body
            self.close_connection = True
            return
        self.wfile.write(st.payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState

    def handle_error(self, request, client_address) -> None:  # clients that gave up: expected here
        pass


@pytest.fixture(scope="module")
def _http_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ServerState()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def server(_http_server: _Server) -> _Server:
    _http_server.state = ServerState()  # fresh behaviour and request log for every test
    return _http_server


@pytest.fixture
def url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/data.zip"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)


def _get(url: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("chunk_size", CHUNK)
    kwargs.setdefault("timeout", 5)
    return download_file(url, dest, **kwargs)


def _listing(folder: Path) -> list[str]:
    """Everything under ``folder`` (pooch's temporary files included)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------------------


def test_fresh_download_verifies_md5_and_sha256(
    server: _Server, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "sub" / "PASTIS-R.zip"
    out = _get(url, dest, md5=MD5, sha256=SHA256.upper(), size=len(PAYLOAD), progress=True)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert _listing(tmp_path) == ["sub", "sub/PASTIS-R.zip"]  # no temporary file left
    assert len(server.state.requests) == 1
    assert "B/s" in capsys.readouterr().err  # the tqdm bar of pooch's HTTPDownloader
    assert file_digest(dest, "md5") == MD5 and file_digest(dest, "sha256") == SHA256
    verify_checksum(dest, md5=MD5, sha256=SHA256)
    with pytest.raises(ChecksumError, match="md5 checksum mismatch"):
        verify_checksum(dest, md5="0" * 32)


def test_pooch_logs_nothing_even_at_info(
    server: _Server, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # what `python -m benchmark -v` does
    _get(url, tmp_path / "PASTIS-R.zip", md5=MD5)
    assert [r for r in caplog.records if r.name == "pooch"] == []  # callers print their own line


def test_interrupted_download_leaves_no_half_file(
    server: _Server, url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    server.state.drop_after, server.state.drops = 50_000, 1
    with pytest.raises(DownloadError, match="run again") as info:
        _get(url, dest, md5=MD5, retries=0)
    msg = str(info.value)
    assert url in msg and "\n" not in msg and info.value.url == url
    assert _listing(tmp_path) == []  # neither dest nor pooch's temporary file
    # the next run downloads it whole
    _get(url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD and _listing(tmp_path) == ["PASTIS-R.zip"]


def test_dropped_connection_is_retried_within_one_call(
    server: _Server, url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    server.state.drop_after, server.state.drops = 30_000, 2
    _get(url, dest, md5=MD5, retries=2)
    assert [r["range"] for r in server.state.requests] == [None, None, None]  # pooch restarts
    assert dest.read_bytes() == PAYLOAD


def test_persistent_drops_give_up(server: _Server, url: str, tmp_path: Path) -> None:
    server.state.drop_after, server.state.drops = 50_000, 100
    with pytest.raises(DownloadError, match=r"failed 3 times in a row") as info:
        _get(url, tmp_path / "PASTIS-R.zip", md5=MD5, retries=2)
    assert info.value.url == url
    assert len(server.state.requests) == 3
    assert _listing(tmp_path) == []


def test_transient_http_status_is_retried(server: _Server, url: str, tmp_path: Path) -> None:
    server.state.errors = [503, 502]
    _get(url, tmp_path / "PASTIS-R.zip", md5=MD5)
    assert len(server.state.requests) == 3


def test_timeout_is_retried(server: _Server, url: str, tmp_path: Path) -> None:
    server.state.stalls = 1
    _get(url, tmp_path / "PASTIS-R.zip", md5=MD5, timeout=0.1, retries=1)
    assert len(server.state.requests) == 2
    assert (tmp_path / "PASTIS-R.zip").read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("kwargs", "algo", "wrong"),
    [
        pytest.param({"md5": "0123456789abcdef" * 2}, "md5", "0123456789abcdef" * 2, id="md5-pooch"),
        pytest.param({"sha256": "ab" * 32, "md5": MD5}, "sha256", "ab" * 32, id="sha256-pooch"),
        # sha256 right (pooch's known_hash), md5 wrong: caught on pooch's temporary file
        pytest.param({"sha256": SHA256, "md5": "cd" * 16}, "md5", "cd" * 16, id="md5-second"),
    ],
)
def test_checksum_mismatch_raises_and_leaves_nothing(
    server: _Server, url: str, tmp_path: Path, kwargs: dict, algo: str, wrong: str
) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    with pytest.raises(ChecksumError) as info:
        _get(url, dest, **kwargs)
    msg = str(info.value)
    actual = MD5 if algo == "md5" else SHA256
    assert str(dest) in msg and url in msg and wrong in msg and actual in msg and "\n" not in msg
    assert isinstance(info.value, ValueError)
    assert (info.value.algo, info.value.expected, info.value.actual) == (algo, wrong, actual)
    assert _listing(tmp_path) == []
    assert len(server.state.requests) == 1  # a checksum mismatch is not retried


def test_size_mismatch_raises_and_leaves_nothing(
    server: _Server, url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    with pytest.raises(ChecksumError, match=f"expected {len(PAYLOAD) + 1} bytes, got {len(PAYLOAD)}"):
        _get(url, dest, size=len(PAYLOAD) + 1)
    assert _listing(tmp_path) == []


def test_existing_good_file_makes_no_request(server: _Server, url: str, tmp_path: Path) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    dest.write_bytes(PAYLOAD)
    assert _get(url, dest, md5=MD5, sha256=SHA256) == dest
    assert server.state.requests == []


def test_existing_bad_file_is_never_overwritten(server: _Server, url: str, tmp_path: Path) -> None:
    dest = tmp_path / "PASTIS-R.zip"
    dest.write_bytes(b"my own file")
    with pytest.raises(ChecksumError, match="refusing to overwrite") as info:
        _get(url, dest, md5=MD5)
    assert str(dest) in str(info.value)
    assert dest.read_bytes() == b"my own file" and server.state.requests == []


def test_http_404_names_the_url_and_is_not_retried(
    server: _Server, url: str, tmp_path: Path
) -> None:
    missing = url.replace("data.zip", "missing.zip")
    with pytest.raises(DownloadError, match=r"HTTP 404") as info:
        _get(missing, tmp_path / "missing.zip", md5=MD5)
    assert missing in str(info.value) and info.value.status == 404
    assert len(server.state.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.zip"
    with pytest.raises(DownloadError) as info:
        _get(url, tmp_path / "data.zip", retries=1)
    msg = str(info.value)
    assert url in msg and "failed 2 times" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        download_file("ftp://127.0.0.1/x.zip", tmp_path / "x.zip")
    with pytest.raises(ValueError, match="32 hex digits"):
        download_file("http://127.0.0.1/x.zip", tmp_path / "x.zip", md5=SHA256)
    with pytest.raises(ValueError, match="sha256= and/or md5="):
        verify_checksum(tmp_path / "x.zip")


# --------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name verbatim
    return path


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """members: (name, kind, data-or-linkname) with kind in file/dir/symlink/hardlink/chr."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            tf.addfile(info)
    return path


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_safe_extract_zip(tmp_path: Path) -> None:
    archive = tmp_path / "PASTIS-R.zip"
    archive.write_bytes(PAYLOAD)
    dest = tmp_path / "data"
    assert safe_extract(archive, dest) == [dest / "PASTIS-R"]
    assert _tree(dest) == {
        "PASTIS-R": None,
        "PASTIS-R/DATA_S2": None,
        "PASTIS-R/DATA_S2/S2_10000.npy": FILES["PASTIS-R/DATA_S2/S2_10000.npy"],
        "PASTIS-R/metadata.geojson": FILES["PASTIS-R/metadata.geojson"],
    }
    # a second extraction would overwrite: refused, and the temporary folder is gone either way
    with pytest.raises(FileExistsError, match="PASTIS-R"):
        safe_extract(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["PASTIS-R"]


def test_safe_extract_tar_gz_with_internal_links(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "south_sudan.tar.gz",
        [
            ("./", "dir", b""),
            ("./ss/", "dir", b""),
            ("./ss/a.txt", "file", b"alpha"),
            ("./ss/sub/b.txt", "file", b"beta"),
            ("./ss/sub/link_to_a", "symlink", "../a.txt"),
            ("./ss/hard_b", "hardlink", "ss/sub/b.txt"),
            ("./README", "file", b"readme"),
        ],
    )
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == [dest / "ss", dest / "README"]
    assert (dest / "ss/sub/link_to_a").is_symlink()
    assert (dest / "ss/sub/link_to_a").read_bytes() == b"alpha"
    assert (dest / "ss/hard_b").read_bytes() == b"beta"
    assert (dest / "README").read_bytes() == b"readme"
    assert sorted(p.name for p in dest.iterdir()) == ["README", "ss"]  # no temporary folder left


def test_install_archive_verifies_first(tmp_path: Path) -> None:
    archive = tmp_path / "PASTIS-R.zip"
    archive.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError):
        install_archive(archive, tmp_path / "bad", md5="f" * 32)
    assert not (tmp_path / "bad").exists()
    assert install_archive(archive, tmp_path / "good", md5=MD5) == [tmp_path / "good" / "PASTIS-R"]


def _assert_refused(archive: Path, dest: Path, member: str, outside: list[Path]) -> None:
    before = _tree(archive.parent)
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert isinstance(info.value, ValueError)
    assert str(archive) in str(info.value) and repr(member) in str(info.value)
    assert not dest.exists()  # nothing written in dest
    assert _tree(archive.parent) == before  # nor anywhere else under the archive's folder
    for path in outside:
        assert not path.exists() and not path.is_symlink()


def test_refuses_zip_with_parent_dir_member(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(work / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"pwned"})
    _assert_refused(
        archive, work / "dest", "../evil.txt", [tmp_path / "evil.txt", work / "evil.txt"]
    )


def test_refuses_zip_with_backslash_parent_dir_member(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "sub\\..\\..\\evil.txt": b"pwned"})
    _assert_refused(archive, tmp_path / "dest", "sub\\..\\..\\evil.txt", [tmp_path / "evil.txt"])


def test_refuses_zip_with_absolute_member(tmp_path: Path) -> None:
    target = tmp_path / "abs.txt"
    archive = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", str(target): b"pwned"})
    _assert_refused(archive, tmp_path / "dest", str(target), [target])


@pytest.mark.parametrize(
    ("members", "bad"),
    [
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("pkg/passwd", "symlink", "/etc/passwd")],
            "pkg/passwd",
            id="symlink-absolute",
        ),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("pkg/up", "symlink", "../..")],
            "pkg/up",
            id="symlink-dotdot",
        ),
        pytest.param([("up", "symlink", "../evil")], "up", id="symlink-top-dotdot"),
        # each link looks harmless on its own text; through the first one the second escapes
        pytest.param(
            [("dot", "symlink", "."), ("x", "symlink", "dot/dot/../evil")], "x", id="symlink-chain"
        ),
        pytest.param([("loop", "symlink", "loop/x")], "loop", id="symlink-loop"),
        pytest.param(
            [("lnk", "symlink", "sub"), ("sub/", "dir", b""), ("lnk/f.txt", "file", b"x")],
            "lnk/f.txt",
            id="member-below-symlink",
        ),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("../evil.txt", "file", b"pwned")],
            "../evil.txt",
            id="dotdot-member",
        ),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("/tmp/evil.txt", "file", b"pwned")],
            "/tmp/evil.txt",
            id="absolute-member",
        ),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("pkg/h", "hardlink", "/etc/passwd")],
            "pkg/h",
            id="hardlink-absolute",
        ),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("pkg/h", "hardlink", "../outside")],
            "pkg/h",
            id="hardlink-dotdot",
        ),
        pytest.param([("pkg/h", "hardlink", "pkg/not_in_archive")], "pkg/h", id="hardlink-unknown"),
        pytest.param(
            [("pkg/ok.txt", "file", b"x"), ("pkg/tty", "chr", b"")], "pkg/tty", id="device"
        ),
    ],
)
def test_refuses_unsafe_tar(tmp_path: Path, members: list, bad: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = _tar(work / "evil.tar.gz", members)
    _assert_refused(
        archive,
        work / "dest",
        bad,
        [tmp_path / "a" / "evil", tmp_path / "a" / "evil.txt", work / "evil", work / "evil.txt"],
    )


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    with pytest.raises(ArchiveError, match="broken.zip"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
