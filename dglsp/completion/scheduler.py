"""Scheduling: debounce, latest-wins per document, cancellation, and one device worker.

* One worker thread owns the device; jobs run on it one at a time, in order.
* A new request for a document supersedes the older one, whether it is still waiting
  or already running (Neovim 0.12 never sends `$/cancelRequest`, so we cannot rely on it).
* A job's stop flag is set, with its `Reason`, by supersession, by `$/cancelRequest` (the
  awaiting task is cancelled) and by a `didChange` that moves the document past the job's
  version; the sampler checks the flag after every denoising step.
* A job whose flag is set before it starts never touches the device.
* Each job has a `JobKind`, and the kind its priority: waiting jobs run most urgent first
  (completion, draft, edit, then the background kinds prefetch and prefill).
* A worker thread that dies (a job raising SystemExit, an asynchronous exception) fails
  only its own job with `WorkerCrashed`; the next job gets a fresh thread.
* Background jobs (the next suggestion after an accept, a document's prompt prefilled ahead)
  are stopped by any request the user waits for, and a `didChange` never makes them stale:
  what they compute is keyed by its context, not a version.

The LSP event loop only awaits futures here; it never blocks on the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dglsp.completion.outcome import Reason
from dglsp.errors import DglspError

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was stopped before it produced a result; `reason` says why (superseded, cancelled, stale...)."""

    def __init__(self, reason: Reason, detail: str = ""):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason, self.detail = reason, detail


class JobKind(Enum):
    """What a job computes; the value is its priority (lower runs first among waiting jobs)."""

    COMPLETION = 0  # ghost text the user is waiting for
    DRAFT = 1  # an explicit long completion
    EDIT = 2  # a next-edit suggestion
    PREFETCH = 3  # the suggestion after an accepted one, computed ahead
    PREFILL = 4  # a document's prompt encoded ahead (opened, or the cursor jumped)

    @property
    def background(self) -> bool:
        """Nobody waits for it: any other request stops it, and edits never make it stale."""
        return self in (JobKind.PREFETCH, JobKind.PREFILL)


@dataclass(frozen=True)
class JobKey:
    """Latest-wins runs per key: a document's automatic completion, its explicit draft, its next edit and its
    background work never supersede one another."""

    uri: str
    kind: JobKind = JobKind.COMPLETION


@dataclass
class Job:
    key: JobKey
    version: int  # document version the job was built for (sys.maxsize for background jobs: never stale)
    stop: threading.Event = field(default_factory=threading.Event)
    reason: Reason | None = None
    detail: str = ""
    stop_requested_at: float | None = None

    def cancel(self, reason: Reason, detail: str = "") -> None:
        if not self.stop.is_set():
            self.reason, self.detail = reason, detail
            self.stop_requested_at = time.perf_counter()
            self.stop.set()

    def cancelled(self) -> Cancelled:
        return Cancelled(self.reason or Reason.CANCELLED, self.detail)

    @property
    def should_stop(self) -> Callable[[], bool]:
        return self.stop.is_set


class WorkerCrashed(DglspError):
    """The device worker thread died while running a job; the scheduler starts a new one."""


class DeviceWorker:
    """One thread that owns the device, with `ThreadPoolExecutor`'s `submit`/`shutdown` surface.

    Why not `ThreadPoolExecutor(max_workers=1)`: a `BaseException` from a job (SystemExit,
    KeyboardInterrupt, an asynchronous exception) is handed to the awaiting asyncio task and
    takes the event loop down with it, and a worker thread killed between jobs leaves the
    jobs queued behind it unanswered forever. Here a job's BaseException becomes `WorkerCrashed`,
    the thread that raised it ends, and the next `submit` starts a fresh thread. The thread is
    a daemon so a model load in progress never keeps an exiting server alive.
    """

    def __init__(self, name: str = "dglsp-device"):
        self.name = name
        self.restarts = 0
        # (priority, arrival, item): the most urgent waiting job first, in arrival order within a priority
        self._queue: queue.PriorityQueue[tuple[int, int, tuple[Future, Callable[..., Any], tuple] | None]] = \
            queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 0) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the device worker is shut down")
            self._queue.put((priority, next(self._arrivals), (future, fn, args)))
            self._ensure_thread()
        return future

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if self._thread is not None:  # died outside a job (e.g. an asynchronous exception)
            self.restarts += 1
            log.warning("device worker thread died; starting a new one (restart %d)", self.restarts)
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-{self.restarts}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except Exception as exc:
                future.set_exception(exc)
            except BaseException as exc:  # the thread is unusable: fail this job and hand over to a new thread
                log.error("device worker crashed: %r", exc)
                future.set_exception(WorkerCrashed(f"the device worker crashed ({exc!r}); it has been restarted"))
                with self._lock:
                    self._thread = None
                    self.restarts += 1
                    if not self._closed and not self._queue.empty():
                        self._ensure_thread()  # jobs queued behind the crashed one must not wait for a submit
                return

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item[2] is not None:
                        item[2][0].cancel()
            self._queue.put((sys.maxsize, next(self._arrivals), None))
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()


class Scheduler:
    def __init__(self, debounce_ms: int = 0):
        self.debounce_ms = debounce_ms
        self._executor = DeviceWorker("dglsp-device")  # restarts itself if its thread dies
        self._latest: dict[JobKey, Job] = {}
        self._lock = threading.Lock()
        self._background: list[Job] = []
        # Latest version each document has been changed to: a job built from an older snapshot (e.g. it
        # waited for the model to load while the user typed) is stale the moment it is submitted.
        self._versions: dict[str, int] = {}
        #: milliseconds from a stop request to the worker giving the device back, last few jobs
        self.cancel_to_idle_ms: list[float] = []

    def run_on_worker(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the device thread (model loading uses this so the model lives there); callable
        before the event loop runs, so it returns a `concurrent.futures.Future`."""
        return self._executor.submit(fn)

    @property
    def worker_thread(self) -> threading.Thread | None:
        """The device worker's thread (None before its first job)."""
        return getattr(self._executor, "thread", None)

    def new_job(self, key: JobKey, version: int) -> Job:
        """A job to `submit`; whoever holds it can stop it (a draft's cancel button), even before it is queued."""
        return Job(key, sys.maxsize if key.kind.background else version)

    async def submit(self, key: JobKey, version: int, work: Callable[[Job], Any], job: Job | None = None) -> Any:
        """Run `work(job)` on the device worker after the debounce, latest-wins per `key`.

        Raises `Cancelled` if the job is superseded or stopped; cancelling the awaiting task
        (what pygls does on `$/cancelRequest`) stops the job too. A request of a kind the user waits
        for first stops every background job, so work done ahead never delays the user. `job` (from
        `new_job`) is the one to run, for callers that stop it themselves.
        """
        job = job or self.new_job(key, version)
        background = key.kind.background
        with self._lock:
            newest = self._versions.get(key.uri, job.version)
            if newest > job.version:
                job.cancel(Reason.DOCUMENT_CHANGED, f"document changed to version {newest}")
            previous = self._latest.get(key)
            self._latest[key] = job
            preempted = [] if background else [j for j in self._background if j is not previous]
            if background:
                self._background.append(job)
        if previous is not None:
            previous.cancel(Reason.SUPERSEDED)
        for other in preempted:
            other.cancel(Reason.PREEMPTED, "by a request")
        try:
            if self.debounce_ms:
                await asyncio.sleep(self.debounce_ms / 1000)
            if job.stop.is_set():
                raise job.cancelled()
            return await asyncio.wrap_future(self._executor.submit(self._run, job, work, priority=key.kind.value))
        except asyncio.CancelledError:
            job.cancel(Reason.CANCELLED, "by the client")
            raise
        finally:
            with self._lock:
                self._background = [j for j in self._background if j is not job]
                if self._latest.get(key) is job:
                    del self._latest[key]

    def _run(self, job: Job, work: Callable[[Job], Any]) -> Any:
        if job.stop.is_set():
            raise job.cancelled()
        try:
            result = work(job)
        finally:
            if job.stop_requested_at is not None:
                self._record_cancel_to_idle((time.perf_counter() - job.stop_requested_at) * 1000)
        if job.stop.is_set():
            raise job.cancelled()
        return result

    def _record_cancel_to_idle(self, ms: float) -> None:
        self.cancel_to_idle_ms = (self.cancel_to_idle_ms + [ms])[-100:]

    def document_changed(self, uri: str, version: int) -> None:
        """A `didChange` moved the document on: a job built for an older version is stale."""
        with self._lock:
            self._versions[uri] = max(version, self._versions.get(uri, version))
            jobs = [job for key, job in self._latest.items() if key.uri == uri]
        for job in jobs:
            if version > job.version:
                job.cancel(Reason.DOCUMENT_CHANGED, f"document changed to version {version}")

    def forget(self, uri: str) -> None:
        """The document was opened or closed: its version numbering starts over."""
        with self._lock:
            self._versions.pop(uri, None)

    def cancel(self, key: JobKey, reason: Reason, detail: str = "") -> None:
        with self._lock:
            job = self._latest.get(key)
        if job is not None:
            job.cancel(reason, detail)

    def cancel_document(self, uri: str, reason: Reason, detail: str = "") -> None:
        """Stop every job of the document, whatever its kind."""
        with self._lock:
            jobs = [job for key, job in self._latest.items() if key.uri == uri]
        for job in jobs:
            job.cancel(reason, detail)

    def cancel_all(self, reason: Reason, detail: str = "") -> None:
        with self._lock:
            jobs = list(self._latest.values())
        for job in jobs:
            job.cancel(reason, detail)

    def shutdown(self) -> None:
        self.cancel_all(Reason.SHUTDOWN)
        self._executor.shutdown(wait=False, cancel_futures=True)
