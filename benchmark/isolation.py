"""Run a function in a child process so that whatever it does ends there: an exception,
``sys.exit``, ``KeyboardInterrupt`` raised by the code, a crash, ``os._exit`` or a hang (timeout).

Children come from a *forkserver* that imported torch but never ran it: forking a process that
has used torch's OpenMP thread pool hangs the child's first parallel op (GNU libgomp is not
fork-safe; measured here: a 2-thread matmul in a plain ``fork`` child never returns), while
``spawn`` pays the torch import (~2 s) per job. The server starts once per harness process
(~2 s); each child then costs ~50 ms.

The child takes the harness's current environment variables and working directory (the server's
are those of the moment it started), ignores SIGINT and runs in its own process group: Ctrl-C reaches the harness only, which
kills the child (and its data-loader workers) and stops. ``KeyboardInterrupt`` raised inside the
child is the job's failure, not the user's.
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

# imported once by the server, shared by every child: torch, and what the protocols import lazily
# on first use (the FLOP counter pulls in torch._dynamo: ~2 s per child otherwise, measured)
PRELOAD = ["torch", "torch._dynamo", "torch.utils.flop_counter", "numpy", "pandas", "tqdm.auto",
           "benchmark.execution", "benchmark.protocols.segmentation", "benchmark.protocols.reconstruction"]
_context: Any = None
_START = threading.Lock()  # executors start children from several threads; __main__ is hidden per start


@dataclass
class Outcome:
    """What came back from a child: ``value`` when ``ok``, else the reason it failed."""

    ok: bool
    value: Any = None
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    timed_out: bool = False


def _ctx() -> Any:
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(fn: Callable[[Any], Any], arg: Any, conn: Any, env: dict[str, str], cwd: str) -> None:
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        result: tuple = ("ok", fn(arg))
    except BaseException as exc:  # noqa: BLE001 - SystemExit / KeyboardInterrupt from the job end the job only
        result = ("error", describe(exc), traceback.format_exc())
    try:
        conn.send(result)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
        conn.send(("error", f"the job's result could not be sent back: {describe(exc)}", traceback.format_exc()))
    conn.close()


def describe(exc: BaseException) -> str:
    """One line for an exception; ``sys.exit`` and interrupts from a job say what they were."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the entry called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt raised inside the job (not by the user)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _kill(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.join(5)


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


def run_isolated(fn: Callable[[Any], Any], arg: Any, timeout: float | None = None, env: dict[str, str] | None = None) -> Outcome:
    """``fn(arg)`` in a child process; ``fn`` must be importable (module level), ``arg`` picklable.
    ``env``: variables set (over the harness's environment) for this child only."""
    ctx = _ctx()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, arg, send, {**os.environ, **(env or {})}, os.getcwd()), daemon=False)
    start = time.perf_counter()
    with _START, _main_module_hidden():
        proc.start()
    send.close()
    try:
        deadline = None if not timeout else start + timeout
        message = None
        while message is None:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready = mp.connection.wait([recv, proc.sentinel], left)
            if not ready:
                _kill(proc)
                return Outcome(False, error=f"timed out after {timeout:g} s (per-job timeout; --job-timeout to change it)",
                               seconds=time.perf_counter() - start, timed_out=True)
            if recv in ready:
                try:
                    message = recv.recv()
                except EOFError:  # the child died without sending
                    break
            elif not recv.poll():
                break
        proc.join(30)
        if proc.is_alive():
            _kill(proc)
    except BaseException:  # the user's Ctrl-C (or any harness error): the child must not outlive us
        _kill(proc)
        raise
    finally:
        recv.close()
    seconds = time.perf_counter() - start
    if message is None:
        code = proc.exitcode
        how = f"was killed by {_signal_name(code)}" if code is not None and code < 0 else f"exited with status {code}"
        return Outcome(False, error=f"the job's process {how} before reporting a result (a crash, os._exit or the OOM killer)", seconds=seconds)
    if message[0] == "ok":
        return Outcome(True, value=message[1], seconds=seconds)
    return Outcome(False, error=message[1], traceback=message[2], seconds=seconds)
