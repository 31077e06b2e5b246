"""Debounce, latest-wins, cancellation and the single device worker."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dglsp.completion.outcome import Reason
from dglsp.completion.scheduler import Cancelled, Job, JobKey, JobKind, Scheduler


def blocking_work(started: threading.Event, steps: list[int]):
    """Work that runs until its stop flag is set, like the sampler polling between steps."""

    def work(job: Job) -> str:
        started.set()
        for step in range(10_000):
            if job.should_stop():
                steps.append(step)
                return "partial"
            threading.Event().wait(0.001)
        return "finished"

    return work


async def test_result_is_returned():
    scheduler = Scheduler()
    assert await scheduler.submit(JobKey("a"), 1, lambda job: 42) == 42
    scheduler.shutdown()


async def test_new_request_supersedes_the_running_one():
    scheduler = Scheduler()
    started, steps = threading.Event(), []
    first = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, blocking_work(started, steps)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    second = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, lambda job: "second"))
    with pytest.raises(Cancelled, match="superseded"):
        await first
    assert await second == "second"
    assert steps and scheduler.cancel_to_idle_ms
    scheduler.shutdown()


async def test_other_documents_are_not_superseded():
    scheduler = Scheduler()
    results = await asyncio.gather(scheduler.submit(JobKey("a"), 1, lambda job: "a"),
                                   scheduler.submit(JobKey("b"), 1, lambda job: "b"))
    assert results == ["a", "b"]
    scheduler.shutdown()


async def test_debounced_request_superseded_before_it_starts_never_runs():
    scheduler = Scheduler(debounce_ms=200)
    ran = []
    first = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, lambda job: ran.append("first")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, lambda job: ran.append("second") or "ok"))
    with pytest.raises(Cancelled):
        await first
    assert await second == "ok"
    assert ran == ["second"]
    scheduler.shutdown()


async def test_document_change_past_the_version_stops_the_job():
    scheduler = Scheduler()
    started, steps = threading.Event(), []
    job = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 3, blocking_work(started, steps)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    scheduler.document_changed("doc", 3)  # same version: keeps running
    await asyncio.sleep(0.05)
    assert not job.done()
    scheduler.document_changed("doc", 4)
    with pytest.raises(Cancelled, match="version 4"):
        await job
    scheduler.shutdown()


async def test_cancelling_the_awaiting_task_sets_the_stop_flag():
    scheduler = Scheduler()
    started, steps = threading.Event(), []
    task = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, blocking_work(started, steps)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker notices the flag and gives the device back to the next job.
    assert await scheduler.submit(JobKey("other"), 1, lambda job: "next") == "next"
    assert steps
    scheduler.shutdown()


async def test_a_real_request_preempts_background_work():
    scheduler = Scheduler(debounce_ms=0)
    started = threading.Event()

    def speculate(job):
        started.set()
        while not job.stop.is_set():
            time.sleep(0.005)
        return "speculative"

    background = asyncio.ensure_future(scheduler.submit(JobKey("a", JobKind.PREFETCH), 1, speculate))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    result = await scheduler.submit(JobKey("b"), 1, lambda job: "real")
    assert result == "real"
    with pytest.raises(Cancelled, match="preempted"):
        await background
    scheduler.shutdown()


async def test_did_change_does_not_stale_background_work():
    scheduler = Scheduler(debounce_ms=0)
    release = threading.Event()
    background = asyncio.ensure_future(
        scheduler.submit(JobKey("a", JobKind.PREFETCH), 1, lambda job: release.wait(5) and "kept"))
    await asyncio.sleep(0.05)
    scheduler.document_changed("a", 2)
    release.set()
    assert await background == "kept"
    scheduler.shutdown()


async def test_kinds_of_one_document_do_not_supersede_each_other_and_a_held_job_stops_once():
    scheduler = Scheduler(debounce_ms=0)
    release = threading.Event()
    draft_job = scheduler.new_job(JobKey("doc", JobKind.DRAFT), 1)
    draft = asyncio.ensure_future(scheduler.submit(JobKey("doc", JobKind.DRAFT), 1,
                                                   lambda job: release.wait(5) and "drafted", job=draft_job))
    await asyncio.sleep(0.05)
    completion = asyncio.ensure_future(scheduler.submit(JobKey("doc"), 1, lambda job: "completed"))
    release.set()
    assert await draft == "drafted" and await completion == "completed"
    held = scheduler.new_job(JobKey("doc", JobKind.DRAFT), 1)
    held.cancel(Reason.CANCELLED, "by the user")  # before it was ever queued: it never runs
    ran: list[str] = []
    with pytest.raises(Cancelled, match="cancelled: by the user"):
        await scheduler.submit(JobKey("doc", JobKind.DRAFT), 1, lambda job: ran.append("ran"), job=held)
    assert ran == []
    scheduler.shutdown()


async def test_closing_a_document_stops_every_kind_of_its_jobs():
    scheduler = Scheduler(debounce_ms=0)
    started = threading.Event()

    def work(job):
        started.set()
        while not job.stop.is_set():
            time.sleep(0.005)
        return "late"

    running = asyncio.ensure_future(scheduler.submit(JobKey("doc", JobKind.DRAFT), 1, work))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    scheduler.cancel_document("doc", Reason.DOCUMENT_CLOSED)
    with pytest.raises(Cancelled, match="document_closed") as stopped:
        await running
    assert stopped.value.reason is Reason.DOCUMENT_CLOSED
    scheduler.shutdown()


async def test_waiting_jobs_run_most_urgent_kind_first():
    scheduler = Scheduler(debounce_ms=0)
    release, order = threading.Event(), []
    busy = asyncio.ensure_future(scheduler.submit(JobKey("busy"), 1, lambda job: release.wait(5)))
    await asyncio.sleep(0.05)  # the worker is busy: what follows waits in the queue
    prefill = asyncio.ensure_future(scheduler.submit(JobKey("a", JobKind.PREFILL), 1,
                                                     lambda job: order.append("prefill")))
    await asyncio.sleep(0.02)
    edit = asyncio.ensure_future(scheduler.submit(JobKey("b", JobKind.EDIT), 1, lambda job: order.append("edit")))
    await asyncio.sleep(0.02)
    completion = asyncio.ensure_future(scheduler.submit(JobKey("c"), 1, lambda job: order.append("completion")))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(busy, edit, completion, return_exceptions=True)
    with pytest.raises(Cancelled, match="preempted"):  # a request the user waits for stops background work
        await prefill
    assert order == ["completion", "edit"]
    scheduler.shutdown()
