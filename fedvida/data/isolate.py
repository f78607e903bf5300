"""Per-clip work in worker processes, so that a native crash in a codec costs one clip, not a run.

FFmpeg (through PyAV) and OpenCV are C code: a bad file can end the process with a segmentation
fault or an abort, which no ``try`` catches. `IsolatedPool` runs a function on each task in
``workers`` spawned processes (one task per process at a time, results sent back pickled, numpy
arrays included). A worker that dies while on a task yields `Crashed` for that task and is
replaced by a fresh one; the other tasks go on. Results come back in task order. A worker that
dies before it is ready (imports, initializer) raises `WorkerStartError` instead: that is a
broken environment, and recording every clip as crashed would poison the cache.

Workers are started on demand and kept between `IsolatedPool.imap` calls (spawning one costs about
a second of imports) until `IsolatedPool.close`; daemonic, they also end with the parent.
``workers == 0`` runs the function in the calling process (no isolation: a native crash ends the
run); use it only for debugging.

Test hook: when the environment variable ``FEDVIDA_TEST_CRASH_CLIP`` holds a file name, a worker
given a task with a path argument of that name aborts (``os.abort()``, a real SIGABRT) before
running it. It is read only inside worker processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fedvida.errors import FedvidaError

CRASH_ENV = "FEDVIDA_TEST_CRASH_CLIP"
READY = -1  # the first message of a worker that started (imports and initializer done)


class WorkerStartError(FedvidaError):
    """A worker process died before it was ready: the environment is broken, not a clip (raised
    instead of recording every clip as crashed)."""


@dataclass(frozen=True)
class Crashed:
    """A task whose worker process died (``exitcode``: negative = killed by that signal)."""

    exitcode: int | None

    def describe(self) -> str:
        """``"worker process died (SIGSEGV)"`` or ``"... (exit code 3)"``."""
        code = self.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker process died ({name})"
        return f"worker process died (exit code {code})"


def default_workers() -> int:
    """The number of CPU cores (at least 1)."""
    return max(1, os.cpu_count() or 1)


def _test_crash(args: tuple[Any, ...]) -> None:
    name = os.environ.get(CRASH_ENV)
    if not name:
        return
    for a in args:
        if isinstance(a, (str, Path)) and Path(a).name == name:
            try:
                import resource

                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
            except (ImportError, ValueError, OSError):
                pass
            os.abort()


def _worker_main(conn: Connection, fn: Callable[..., Any],
                 initializer: Callable[[], None] | None) -> None:
    """Worker loop: receive ``(index, args)``, send ``(index, result)``; None or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if initializer is not None:
        initializer()
    conn.send((READY, None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, args = task
        _test_crash(args)
        conn.send((index, fn(*args)))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[..., Any],
                 initializer: Callable[[], None] | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, initializer), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.ready = False

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(timeout=2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class IsolatedPool:
    """A few spawned worker processes running ``fn(*args)`` per task, surviving native crashes.

    Parameters
    ----------
    fn
        A module-level function (pickled by reference; the workers import its module). It should
        catch its own Python exceptions: one that escapes counts as a crash of that task.
    workers
        Worker processes (0: run in this process, without isolation).
    initializer
        A module-level function each worker process runs once at start (not with 0 workers).
    """

    def __init__(self, fn: Callable[..., Any], workers: int,
                 initializer: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.initializer = initializer
        self.workers = max(0, int(workers))
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []

    def imap(self, tasks: Iterable[tuple[Any, ...]]) -> Generator[Any, None, None]:
        """Results of ``fn(*task)`` in task order; `Crashed` for a task whose worker died.

        Workers start on demand (at most ``workers``, never more than there are tasks) and stay
        up for the next `imap` call until `close`; a call abandoned before its end (an exception,
        a consumer that stops early) closes the pool, so no stale result reaches the next call.
        """
        if self.workers == 0:
            for args in tasks:
                yield self.fn(*args)
            return
        pending = iter(enumerate(tasks))
        done: dict[int, Any] = {}
        next_out = 0
        window = 2 * self.workers  # results held ahead of the consumer, at most
        exhausted = False
        completed = False
        try:
            while True:
                # hand out tasks to idle workers
                while not exhausted:
                    idle = [w for w in self._pool if w.task is None]
                    if not idle and len(self._pool) < self.workers:
                        self._pool.append(_Worker(self._ctx, self.fn, self.initializer))
                        continue
                    if not idle or len(done) + self._busy() >= window:
                        break
                    item = next(pending, None)
                    if item is None:
                        exhausted = True
                        break
                    index, args = item
                    idle[0].task = index
                    # a worker already gone: its sentinel reports it below
                    with contextlib.suppress(OSError, ValueError):
                        idle[0].conn.send((index, tuple(args)))
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                busy = [w for w in self._pool if w.task is not None]
                if not busy:
                    if exhausted:
                        completed = True
                        return
                    continue
                waitables: list[Any] = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
                ready = set(wait(waitables))
                for w in busy:
                    if w.conn in ready:
                        try:
                            index, result = w.conn.recv()
                        except (EOFError, OSError):
                            self._replace(w, done)
                            continue
                        if index == READY:
                            w.ready = True
                            continue
                        done[index] = result
                        w.task = None
                    elif w.proc.sentinel in ready:
                        self._replace(w, done)
        finally:
            if not completed:
                self.close()

    def _busy(self) -> int:
        return sum(w.task is not None for w in self._pool)

    def _replace(self, w: _Worker, done: dict[int, Any]) -> None:
        """Record the dead worker's task as crashed; a fresh worker starts when one is needed.

        Raises
        ------
        WorkerStartError
            The worker died before it was ready (it could not import or initialise).
        """
        w.proc.join(timeout=5.0)
        if not w.ready:
            why = Crashed(w.proc.exitcode).describe().removeprefix("worker process died ")
            raise WorkerStartError(f"a worker process died while starting {why}; run with "
                                   "extract.workers=0 to see the error")
        assert w.task is not None
        done[w.task] = Crashed(w.proc.exitcode)
        w.conn.close()
        self._pool.remove(w)

    def close(self) -> None:
        """Stop every worker (idempotent; the pool can be used again, starting fresh ones)."""
        for w in self._pool:
            w.stop()
        self._pool = []
