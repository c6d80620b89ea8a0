"""Job processes: whatever an entry does ends there (an exception, ``sys.exit``, a
``KeyboardInterrupt`` raised by the code, a crash, ``os._exit``, a hang past the timeout).

A :class:`Session` is one child process the harness talks to. The harness sends it requests
(pickled: the harness is trusted, the child is not); the child answers only in the wire format of
``benchmark.wire`` (JSON + ``.npy``), so nothing from the child is unpickled and no object the
entry made reaches the harness. A child that dies, hangs past its deadline or sends anything
malformed ends its session with :class:`JobEnded` and the reason.

Children come from a *forkserver* that imported torch but never ran it: forking a process that
has used torch's OpenMP thread pool hangs the child's first parallel op (GNU libgomp is not
fork-safe; measured here: a 2-thread matmul in a plain ``fork`` child never returns), while
``spawn`` pays the torch import (~2 s) per job. The server starts once per harness process; a run
of 12 mock smoke jobs took 6.70 s with job processes against 4.18 s in one process (farm-bench
medians, 2-core CPU), so ~2.5 s per run, mostly the server's start.

The child takes the harness's current environment variables and working directory (the server's
are those of the moment it started), ignores SIGINT and runs in its own process group: Ctrl-C
reaches the harness only, which kills the child (and its data-loader workers) and stops. With
:func:`reap_orphans_of_jobs` (the CLI turns it on) the harness also becomes the "subreaper" of its
jobs' descendants, so a grandchild that escaped the process group (``setsid``) is killed when its
job ends instead of running on (and holding the harness's output open).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .wire import WireError, pack, unpack

# imported once by the server, shared by every child: torch, and what the protocols import lazily
# on first use (the FLOP counter pulls in torch._dynamo: ~2 s per child otherwise, measured)
PRELOAD = ["torch", "torch._dynamo", "torch.utils.flop_counter", "numpy", "pandas", "tqdm.auto",
           "benchmark.execution", "benchmark.protocols.segmentation", "benchmark.protocols.reconstruction"]
_context: Any = None
_START = threading.Lock()  # executors start children from several threads; __main__ is hidden per start
_REAP = False


@dataclass
class Outcome:
    """How a job ended: ``value`` when ``ok``, else the reason."""

    ok: bool
    value: Any = None
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    timed_out: bool = False


class JobEnded(Exception):
    """The job process ended (failed, died, timed out, or broke the protocol) before finishing."""

    def __init__(self, error: str, tb: str = "", timed_out: bool = False):
        super().__init__(error)
        self.error, self.traceback, self.timed_out = error, tb, timed_out


def _ctx() -> Any:
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def describe(exc: BaseException) -> str:
    """One line for an exception; ``sys.exit`` and interrupts from a job say what they were."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the entry called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt raised inside the job (not by the user)"
    try:
        text = str(exc).strip()
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets a name
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Channel:
    """The child's end: requests in (from the trusted harness), wire messages out."""

    def __init__(self, conn: Any):
        self._conn = conn

    def send(self, kind: str, meta: dict[str, Any] | None = None, array: np.ndarray | None = None) -> None:
        self._conn.send_bytes(pack(kind, meta, array))

    def recv(self) -> Any:
        return self._conn.recv()


def _close_inherited(keep: int) -> None:
    """Close every descriptor but stdio and ``keep``: a job must not be able to write into the
    forkserver's or the resource tracker's pipes (garbage there kills them; measured)."""
    try:
        top = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        top = 4096
    os.closerange(3, keep)
    os.closerange(keep + 1, min(top, 65536))
    with contextlib.suppress(Exception):  # multiprocessing must not reuse the tracker's closed fd
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._fd = None  # type: ignore[attr-defined]
        resource_tracker._resource_tracker._pid = None  # type: ignore[attr-defined]


def _child(fn: Callable[[Any, Channel], None], arg: Any, conn: Any, env: dict[str, str], cwd: str) -> None:
    _close_inherited(conn.fileno())
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    channel = Channel(conn)
    try:
        fn(arg, channel)
    except BaseException as exc:  # noqa: BLE001 - SystemExit / KeyboardInterrupt from the job end the job only
        with contextlib.suppress(Exception):
            channel.send("error", {"error": describe(exc), "traceback": traceback.format_exc()})
    finally:
        conn.close()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep the child from re-running the caller's ``__main__`` (what a forkserver child does to
    unpickle functions defined there): a script calling ``runner.run`` at top level, without an
    ``if __name__ == "__main__"`` guard, would otherwise start itself again in every job. The
    functions a child runs live in importable modules, so it never needs ``__main__``."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                main.__dict__.pop("__spec__", None)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Session:
    """One job process: ``fn(arg, channel)`` runs in it; :meth:`send` / :meth:`recv` talk to it."""

    def __init__(self, fn: Callable[[Any, Channel], None], arg: Any, timeout: float | None = None, env: dict[str, str] | None = None):
        ctx = _ctx()
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_child, args=(fn, arg, child_conn, {**os.environ, **(env or {})}, os.getcwd()), daemon=False)
        self.start = time.perf_counter()
        self.timeout = timeout
        self.deadline = None if not timeout else self.start + timeout
        with _START, _main_module_hidden():
            self.proc.start()
        child_conn.close()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def _ended(self) -> JobEnded:
        self.proc.join(5)
        code = self.proc.exitcode
        how = f"was killed by {_signal_name(code)}" if code is not None and code < 0 else f"exited with status {code}"
        return JobEnded(f"the job's process {how} before reporting a result (a crash, os._exit or the OOM killer)")

    def _timed_out(self) -> JobEnded:
        return JobEnded(f"timed out after {self.timeout:g} s (per-job timeout; --job-timeout to change it)", timed_out=True)

    def send(self, obj: Any) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise self._timed_out()
        try:
            self._conn.send(obj)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            raise self._ended() from None

    def recv(self) -> tuple[str, dict[str, Any], np.ndarray | None]:
        """The next message; raises :class:`JobEnded` when the job failed, died or timed out."""
        while True:
            left = None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())
            ready = mp.connection.wait([self._conn, self.proc.sentinel], left)
            if not ready:
                raise self._timed_out()
            if self._conn in ready:
                try:
                    data = self._conn.recv_bytes()
                except (EOFError, OSError):
                    raise self._ended() from None
                try:
                    kind, meta, array = unpack(data)
                except WireError as exc:
                    raise JobEnded(f"the job's process broke the protocol: {exc}") from None
                if kind == "error":
                    raise JobEnded(str(meta.get("error", "?")), str(meta.get("traceback", "")))
                return kind, meta, array
            if not self._conn.poll():
                raise self._ended()

    def expect(self, kind: str) -> tuple[dict[str, Any], np.ndarray | None]:
        got, meta, array = self.recv()
        if got != kind:
            raise JobEnded(f"the job's process broke the protocol: sent {got!r} where {kind!r} was due")
        return meta, array

    def close(self) -> None:
        """End the process (and its process group) if it still runs; kill its escaped descendants."""
        with contextlib.suppress(OSError):
            self._conn.close()
        self.proc.join(2 if self.proc.exitcode is None else 0.1)
        if self.proc.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.join(5)
        else:  # its group may outlive it (data-loader workers, grandchildren)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if _REAP:
            _kill_orphans()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_call(arg: tuple[Callable[[Any], dict[str, Any]], Any], channel: Channel) -> None:
    fn, value = arg
    channel.send("result", fn(value))


def run_isolated(fn: Callable[[Any], dict[str, Any]], arg: Any, timeout: float | None = None, env: dict[str, str] | None = None) -> Outcome:
    """``fn(arg)`` in a job process; ``fn`` (importable, module level) returns a JSON-able dict,
    which is all that comes back."""
    try:
        with Session(_serve_call, (fn, arg), timeout, env) as session:
            meta, _ = session.expect("result")
            return Outcome(True, value=meta, seconds=session.seconds)
    except JobEnded as exc:
        return Outcome(False, error=exc.error, traceback=exc.traceback, timed_out=exc.timed_out)


# --------------------------------------------------------------------------- escaped descendants
def reap_orphans_of_jobs() -> bool:
    """Make this process the subreaper of its descendants (Linux), so that processes a job leaves
    behind are reparented here and killed when the job ends. For a process that runs nothing but
    the harness (the CLI): it would also adopt other libraries' orphans."""
    global _REAP
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            return False
    except (OSError, AttributeError):
        return False
    _REAP = True
    return True


def _helpers() -> set[int]:
    """multiprocessing's own long-lived children (the forkserver, the resource tracker)."""
    pids = set()
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver, resource_tracker

        pids.add(forkserver._forkserver._forkserver_pid)  # type: ignore[attr-defined]
        pids.add(resource_tracker._resource_tracker._pid)  # type: ignore[attr-defined]
    return {p for p in pids if p}


def _kill_orphans() -> None:
    me, keep = os.getpid(), _helpers()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) != me or pid in keep:  # fields[1] = ppid
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
