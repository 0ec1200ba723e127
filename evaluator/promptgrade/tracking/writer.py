"""One writer owns every MLflow write of a sweep, in a process of its own.

Why a process: MLflow's writes are Python (SQLAlchemy's unit of work for a sqlite store, HTTP and
JSON for a tracking server) — about 6 ms of CPU per example trace, plus tables and plots per
candidate. On the sweep's event loop that time is added to every request in flight (a candidate's
p95 latency used to include the previous candidate's logging); in a thread it would still hold the
GIL the event loop needs. In its own process it runs beside the requests on the other core, and
the event loop only hands work over: ``post`` never waits, ``call`` waits only where the sweep needs
an answer before its requests start (which runs exist, which are finished).

Why not ``multiprocessing``: its ``spawn`` start re-runs the caller's main script in the child (a
library user's script without a ``__main__`` guard would sweep twice), and ``fork`` copies a process
whose threads may hold locks. The writer is started as ``python -m promptgrade.tracking.writer`` with
two pipes, and work travels as ``(id, key, sweep, method, args)`` messages, pickled with the standard pickler
(``multiprocessing``'s own would hand a tensor over as a shared file descriptor that only its own
child processes may open) and framed by ``multiprocessing.connection``. Work runs in the order it was handed over, so a candidate's traces are
written before its run is closed. The writer ends when its pipe closes: a sweep killed with SIGKILL
leaves nothing behind.

The process is started once per sweeping process and kept (a second sweep in the same process — a
library caller, a test session — does not pay for another interpreter and another mlflow import);
``prestart`` starts it early, so MLflow's import overlaps with loading the dataset. A failed write is
retried a few times with a short backoff (MLflow's own HTTP retries are shortened in the writer, so a
lost tracking server is noticed in seconds, not minutes); after that the writer holds one
``TrackingError`` naming the store, which the sweep reports first and stops on. The writes of that
sweep still queued behind the failed one are answered with the same error, not tried: each would wait
out the same retries against the same lost store (four of them used to stand between a lost server
and the sweep's one line, ~35 s), and the sweep, stopping, would not use what they wrote.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, wait
from multiprocessing.connection import Connection
from typing import Any

from promptgrade.errors import TrackingError
from promptgrade.settings import child_environment, load_settings
from promptgrade.tracking.uri import default_trace_examples, tracking_uri

TRACE_BATCH = 64  # example traces handed over at once: one store batch per 64 answers
ATTEMPTS = 3  # a write is tried this often before the sweep stops on it
BACKOFF_S = (0.5, 2.0)
EXIT_WAIT_S = 30.0  # at interpreter exit, how long the writer may take to finish what it holds
WRITER_NICENESS = 5  # the writer yields the cores to the sweep's event loop (see serve)
# MLflow retries an HTTP call 7 times with exponential backoff (minutes in all) and waits 120 s for
# an answer: right for a notebook, wrong for a sweep that must say the store is gone. A user's own
# settings win.
MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow's usage telemetry sets and pops a variable of os.environ from its own thread while other
    # threads' HTTP requests iterate os.environ (a KeyError seen against a tracking server): off in the
    # writer unless the user set it (MLFLOW_DISABLE_TELEMETRY=false opts back in)
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

Key = tuple[str, str, bool, bool]  # (experiment name, tracking URI, trace_examples, plots): one Tracker each
_SWEEPS = itertools.count(1)  # each TrackingWriter's number in its messages (0: no sweep's, e.g. "warm")


class WriterGone(RuntimeError):
    """The writer process ended (killed, out of memory) with work in hand."""


# -- the writer's process ---------------------------------------------------------------------
def serve(inbox: Connection, outbox: Connection) -> None:
    """The writer's loop: one message at a time, in order, until the sweep's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle, not ours
    with contextlib.suppress(OSError):
        # background work: when the cores are busy, the sweep's event loop (whose delays are the
        # requests' latencies) runs first, and the writer catches up in the gaps
        os.nice(WRITER_NICENESS)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    trackers: dict[Key, Any] = {}
    stopped: dict[int, TrackingError] = {}  # sweep number -> the error its sweep stops on
    while True:
        try:
            message_id, key, sweep, method, args, kwargs = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            return
        reply: tuple[int, bool, Any]
        if sweep in stopped:  # queued before the sweep heard of the failure: not tried
            reply = (message_id, False, stopped[sweep])
        else:
            try:
                reply = (message_id, True, _dispatch(trackers, key, method, args, kwargs))
            except TrackingError as exc:
                stopped[sweep] = exc
                reply = (message_id, False, exc)
            except Exception as exc:
                reply = (message_id, False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer or error that cannot be pickled: say what it was
            error = TrackingError(f"the MLflow writer's reply to {method}: {exc!r}")
            data = pickle.dumps((message_id, False, error))
        try:
            outbox.send_bytes(data)
        except (EOFError, OSError):
            return


def _dispatch(
    trackers: dict[Key, Any], key: Key, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run one of the Tracker's methods, retried; any store failure becomes one TrackingError."""
    if method == "warm":
        import promptgrade.tracking.runs
        import promptgrade.tracking.traces  # noqa: F401

        if args and args[0] == "plots":
            import matplotlib.backends.backend_agg
            import matplotlib.figure  # noqa: F401
        _freeze()
        return None
    for attempt in range(ATTEMPTS):
        try:
            return getattr(_tracker(trackers, key), method)(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as exc:
            if not _store_failure(exc):
                raise  # a bug in promptgrade: its traceback is what a developer needs
            if attempt + 1 == ATTEMPTS:
                raise TrackingError(
                    f"the MLflow store {key[1]} failed ({_first_line(exc)}); answers already "
                    "bought are in the answer cache"
                ) from None
            time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")


def _tracker(trackers: dict[Key, Any], key: Key) -> Any:
    tracker = trackers.get(key)
    if tracker is None:
        from promptgrade.tracking.runs import Tracker, trace_workers_for

        for idle in trackers.values():
            idle.close_workers()  # a new sweep: an earlier one that stopped early never reached finish_sweep
        name, uri, trace_examples, plots = key
        tracker = trackers[key] = Tracker(
            name,
            uri,
            trace_examples=trace_examples,
            plots=plots,
            trace_workers=trace_workers_for(uri),
            trace_workers_after=load_settings().trace_workers_after,
        )
        _freeze()
    else:
        tracker.activate()  # another sweep of this process may have pointed MLflow elsewhere
    return tracker


def _freeze() -> None:
    """What the writer holds for its whole life (the modules it imported, a sweep's tracker and store)
    is moved out of the cyclic collector's reach.

    Why: each full collection walked all of it — mlflow, SQLAlchemy, pandas, matplotlib — while the
    writes that trigger collections (an ORM batch makes thousands of objects) leave little garbage. Frozen,
    a collection looks only at what came after: about a tenth less CPU per trace, measured on one trace
    writer (benchmarks/README.md §9). The writer is a process of its own, so nothing needs to be
    unfrozen (the sweep's event loop does the same in ``Sweep.run``).
    """
    import gc

    gc.freeze()


def _store_failure(exc: Exception) -> bool:
    """An error of the store (unreachable, refusing, locked), as opposed to a bug of ours."""
    from mlflow.exceptions import MlflowException

    failures: tuple[type[BaseException], ...] = (MlflowException, OSError, TimeoutError)
    with contextlib.suppress(ImportError):
        import requests
        import sqlalchemy.exc

        failures += (requests.RequestException, sqlalchemy.exc.SQLAlchemyError)
    return isinstance(exc, failures)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# -- the sweep's side ---------------------------------------------------------------------------
class _Process:
    """The writer process and its two pipes. Sending happens on a thread of its own, so neither
    pickling nor a full pipe (a writer busy with a slow store) ever holds up the caller."""

    def __init__(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        env = child_environment(MLFLOW_HTTP)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "promptgrade.tracking.writer", str(to_child), str(from_child)],
            pass_fds=(to_child, from_child),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # MLflow prints "View run … at …" for every run it ends
            env=env,
        )
        os.close(to_child)
        os.close(from_child)
        self._out = Connection(from_parent, readable=False)
        self._in = Connection(to_parent, writable=False)
        self._ids = itertools.count()
        self._futures: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[int, Key, int, str, tuple[Any, ...], dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self.gone = False
        threading.Thread(target=self._send_loop, name="promptgrade-writer-send", daemon=True).start()
        threading.Thread(target=self._receive_loop, name="promptgrade-writer-receive", daemon=True).start()

    def submit(
        self, key: Key, sweep: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self.gone:
                raise WriterGone("the MLflow writer process has ended")
            message_id = next(self._ids)
            self._futures[message_id] = future
        self._queue.put((message_id, key, sweep, method, args, kwargs))
        return future

    def _send_loop(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # a value that cannot be pickled: a bug, reported on its future
                with self._lock:
                    future = self._futures.pop(message[0], None)
                if future is not None:
                    future.set_exception(exc)
                continue
            try:
                self._out.send_bytes(data)
            except (OSError, EOFError):
                self._gone()
                return
        with contextlib.suppress(OSError):
            self._out.close()

    def _receive_loop(self) -> None:
        while True:
            try:
                message_id, ok, value = pickle.loads(self._in.recv_bytes())
            except (EOFError, OSError):
                self._gone()
                return
            with self._lock:
                future = self._futures.pop(message_id, None)
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _gone(self) -> None:
        with self._lock:
            self.gone = True
            pending, self._futures = self._futures, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WriterGone("the MLflow writer process ended with work in hand"))

    def close(self, timeout: float = EXIT_WAIT_S) -> None:
        """Let the writer finish what it holds, then end it (its pipe closes, its loop returns)."""
        self._queue.put(None)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()


_PROCESS: _Process | None = None
_PROCESS_LOCK = threading.Lock()


def _process() -> _Process:
    global _PROCESS
    with _PROCESS_LOCK:
        if _PROCESS is None or _PROCESS.gone:
            _PROCESS = _Process()
        return _PROCESS


def prestart() -> None:
    """Start the writer and its imports now, e.g. before a sweep loads its dataset."""
    _process().submit(("", "", False, False), 0, "warm", (), {})


def shutdown() -> None:
    """End the writer process (it is started again when needed): for benchmarks that time a cold start."""
    global _PROCESS
    with _PROCESS_LOCK:
        process, _PROCESS = _PROCESS, None
    if process is not None:
        process.close()


atexit.register(shutdown)


class TrackingWriter:
    """A sweep's handle on the writer: ``call`` (wait for the answer), ``post`` (do not), ``trace``."""

    def __init__(
        self, experiment_name: str, uri: str | None = None, *, trace_examples: bool | None = None
    ) -> None:
        self.uri = tracking_uri(uri)
        self.trace_examples = default_trace_examples() if trace_examples is None else trace_examples
        self.experiment_name = experiment_name
        # read here, in the sweep's process: the writer process is shared by every sweep of this one
        self.key: Key = (experiment_name, self.uri, self.trace_examples, load_settings().plots)
        self.sweep = next(_SWEEPS)
        self.error: TrackingError | None = None
        self._pending: set[Future[Any]] = set()
        self._traces: dict[str, list[Any]] = {}
        prestart()  # the process and its imports start now, overlapping with the caller's next steps

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` after everything handed over before it, and return its result."""
        self.raise_if_failed()
        try:
            return _process().submit(self.key, self.sweep, method, args, kwargs).result()
        except TrackingError as exc:
            self.error = self.error or exc
            raise
        except WriterGone:
            self.error = self.error or self._gone()
            raise self.error from None

    def post(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Hand ``method`` over and return at once; a failure is kept for ``raise_if_failed``."""
        if self.error is not None:
            return  # the store is gone: nothing more is sent, the sweep is stopping
        try:
            future = _process().submit(self.key, self.sweep, method, args, kwargs)
        except WriterGone:
            self.error = self._gone()
            return
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        self._pending.discard(future)
        exc = future.exception()
        if exc is None or self.error is not None:
            return
        if isinstance(exc, TrackingError):
            self.error = exc
        elif isinstance(exc, WriterGone):
            self.error = self._gone()
        else:  # a bug: kept whole, with its traceback, as the cause of what the sweep reports
            self.error = TrackingError(f"the MLflow writer failed: {exc!r}")
            self.error.__cause__ = exc

    def _gone(self) -> TrackingError:
        return TrackingError(
            f"the MLflow writer process for {self.uri} stopped unexpectedly; answers already bought are "
            "in the answer cache"
        )

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def warm_plots(self) -> None:
        """Import matplotlib in the writer now, once the sweep's runs are set up and its requests start.

        Imported at the first plot instead, it stood between the first candidate's last answer and
        the sweep's end (~0.4 s, benchmarks/throughput.py); at ``prestart`` it would delay the runs'
        set-up the requests wait for. During the requests the writer has little else to do.
        """
        if self.key[3]:
            self.post("warm", "plots")

    def trace(self, run_id: str, item: Any) -> None:
        """Queue one example's trace; a full batch is handed over at once."""
        if not self.trace_examples:
            return
        batch = self._traces.setdefault(run_id, [])
        batch.append(item)
        if len(batch) >= TRACE_BATCH:
            self._traces[run_id] = []
            self.post("log_traces", run_id, batch)

    def flush_traces(self, run_id: str) -> None:
        if batch := self._traces.pop(run_id, None):
            self.post("log_traces", run_id, batch)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for everything handed over; raises the writer's error, if any."""
        for run_id in list(self._traces):
            self.flush_traces(run_id)
        if self._pending:
            wait(list(self._pending), timeout=timeout)
        self.raise_if_failed()

    def close(self) -> None:
        """Wait for the writes in hand (the process stays for the next sweep, and ends with ours)."""
        with contextlib.suppress(TrackingError):
            self.drain()


def main(argv: list[str]) -> int:
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    serve(inbox, outbox)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
