"""Scheduling: debounce, latest-wins per document, cancellation, and one device worker.

* One worker thread owns the device; jobs run on it one at a time, in order.
* A new request for a document supersedes the older one, whether it is still waiting
  or already running (Neovim 0.12 never sends `$/cancelRequest`, so we cannot rely on it).
* A job's stop flag is set by supersession, by `$/cancelRequest` (the awaiting task is
  cancelled) and by a `didChange` that moves the document past the job's version; the
  sampler checks the flag after every denoising step.
* A job whose flag is set before it starts never touches the device.

The LSP event loop only awaits futures here; it never blocks on the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was stopped before it produced a result (superseded, cancelled, or stale)."""


@dataclass
class Job:
    key: str  # usually the document URI
    version: int  # document version the job was built for
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    stop_requested_at: float | None = None

    def cancel(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop_requested_at = time.perf_counter()
            self.stop.set()

    @property
    def should_stop(self) -> Callable[[], bool]:
        return self.stop.is_set


class Scheduler:
    def __init__(self, debounce_ms: int = 0):
        self.debounce_ms = debounce_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dglsp-device")
        self._latest: dict[str, Job] = {}
        self._lock = threading.Lock()
        #: milliseconds from a stop request to the worker giving the device back, last few jobs
        self.cancel_to_idle_ms: list[float] = []

    def run_on_worker(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Run `fn` on the device thread (model loading uses this so the model lives there)."""
        return asyncio.wrap_future(self._executor.submit(fn))

    async def submit(self, key: str, version: int, work: Callable[[Job], Any]) -> Any:
        """Run `work(job)` on the device worker after the debounce, latest-wins per `key`.

        Raises `Cancelled` if the job is superseded or stopped; cancelling the awaiting task
        (what pygls does on `$/cancelRequest`) stops the job too.
        """
        job = Job(key, version)
        with self._lock:
            previous = self._latest.get(key)
            self._latest[key] = job
        if previous is not None:
            previous.cancel("superseded")
        try:
            if self.debounce_ms:
                await asyncio.sleep(self.debounce_ms / 1000)
            if job.stop.is_set():
                raise Cancelled(job.reason)
            return await asyncio.wrap_future(self._executor.submit(self._run, job, work))
        except asyncio.CancelledError:
            job.cancel("cancelled by client")
            raise
        finally:
            with self._lock:
                if self._latest.get(key) is job:
                    del self._latest[key]

    def _run(self, job: Job, work: Callable[[Job], Any]) -> Any:
        if job.stop.is_set():
            raise Cancelled(job.reason)
        try:
            result = work(job)
        finally:
            if job.stop_requested_at is not None:
                self._record_cancel_to_idle((time.perf_counter() - job.stop_requested_at) * 1000)
        if job.stop.is_set():
            raise Cancelled(job.reason)
        return result

    def _record_cancel_to_idle(self, ms: float) -> None:
        self.cancel_to_idle_ms = (self.cancel_to_idle_ms + [ms])[-100:]

    def document_changed(self, key: str, version: int) -> None:
        """A `didChange` moved the document on: a job built for an older version is stale."""
        with self._lock:
            jobs = [job for name, job in self._latest.items() if name == key or name.startswith(f"{key}#")]
        for job in jobs:
            if version > job.version:
                job.cancel(f"document changed to version {version}")

    def cancel(self, key: str, reason: str) -> None:
        with self._lock:
            job = self._latest.get(key)
        if job is not None:
            job.cancel(reason)

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            jobs = list(self._latest.values())
        for job in jobs:
            job.cancel(reason)

    def shutdown(self) -> None:
        self.cancel_all("server shutting down")
        self._executor.shutdown(wait=False, cancel_futures=True)
