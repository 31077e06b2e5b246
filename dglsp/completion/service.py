"""The completion service: what the LSP handlers call, between the document store and the completer.

It owns the model's lifecycle (load on the device worker, reload when settings or a broken
directory change), the scheduler, and the work around each request that needs no model
(typing-through, speculation after an accept, snippets of other documents). It speaks in
document snapshots and string offsets; positions, ranges, progress and messages are LSP and
stay in `server.py`, which hands in two hooks: `on_log` (one line per request, mirrored to the
client's log) and `on_reload` (a reload's future, to report its outcome).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from dglsp.completion.completer import Completer
from dglsp.completion.metrics import LatencyMetrics, memory_mb
from dglsp.completion.prompt import CursorContext, snippets_enabled
from dglsp.completion.scheduler import Cancelled, Job, JobKey, Scheduler
from dglsp.completion.snapshot import DocumentReader, Snapshot
from dglsp.completion.snippets import OpenDocument, RecentEdits, pick_snippets
from dglsp.completion.typing_through import TypingThroughCache, after_acceptance, context_key
from dglsp.config import Settings
from dglsp.errors import DglspError, ModelNotReadyError
from dglsp.model.loading import load_backend, warm_up
from dglsp.model.modelcheck import fingerprint

log = logging.getLogger(__name__)


@dataclass
class LoadState:
    message: str = "starting"
    percent: int = 0


@dataclass(frozen=True)
class Found:
    """A suggestion to show at the cursor: `text`, typing over `replace_chars` characters after it."""

    text: str
    replace_chars: int = 0


class CompletionService:
    def __init__(self, settings: Settings, documents: DocumentReader,
                 on_log: Callable[[str], None] = lambda line: None,
                 on_reload: Callable[[Future], None] = lambda future: None):
        self.settings = settings
        self.documents = documents
        self._on_log, self._on_reload = on_log, on_reload
        self.scheduler = Scheduler(settings.scheduler.debounce_ms)
        self.completer: Completer | None = None
        self.load_state = LoadState()
        self.load_future: Future | None = None
        self._load_fingerprint: tuple | None = None  # the model directory as the last load saw it
        self.last_latency_ms: float | None = None
        self._request_ids = itertools.count(1)
        self.typing_through = TypingThroughCache(settings.latency.typing_through_lookback)
        self.recent_edits = RecentEdits(chunk_lines=settings.context.snippet_lines)
        self.metrics = LatencyMetrics()
        self._speculations: set[asyncio.Task] = set()  # strong references until they finish
        self._speculating: dict[str, tuple[tuple, asyncio.Task]] = {}  # uri -> (context key, task)

    # -- model lifecycle -------------------------------------------------------------------
    def start_loading(self) -> Future:
        """Load the model on the device worker (so it lives on that thread), without blocking the loop."""
        self._load_fingerprint = fingerprint(self.settings.engine.model)
        self.load_future = self.scheduler.run_on_worker(self._load)
        return self.load_future

    def reload_model(self, reason: str) -> Future:
        """Load the model again (settings changed, or a broken directory was fixed); `on_reload` reports it."""
        log.info("reloading the model: %s", reason)
        if self.completer is not None:
            self.completer.engine.close()  # a remote backend ends its HTTP connections and loop thread
        self.completer = None  # let the old model go before the new one loads
        future = self.start_loading()
        self._on_reload(future)
        return future

    def _failed_model_changed(self) -> bool:
        """The last load failed and the model directory has changed on disk since: worth another try."""
        future = self.load_future
        if future is None or not future.done() or future.exception() is None:
            return False
        return fingerprint(self.settings.engine.model) != self._load_fingerprint

    def _load(self) -> Completer:
        def progress(message: str, percent: int) -> None:
            self.load_state = LoadState(message, percent)
            log.info("model: %s (%d%%)", message, percent)

        begin = time.perf_counter()
        settings = self.settings
        bundle, engine = load_backend(settings, progress)  # a remote backend's server check is its warm-up
        completer = Completer(bundle, engine)
        if settings.engine.warmup:
            progress("warming up", 90)
            warm_up(engine, bundle, settings)
        self.completer = completer
        # Settings the editor sent while the model loaded (the server starts loading before `initialize`).
        engine.apply_latency(self.settings.latency, self.settings.context.prompt_tokens)
        progress(f"ready: {bundle.path.name} on {bundle.device} in {time.perf_counter() - begin:.1f} s", 100)
        return completer

    async def ready_completer(self) -> Completer:
        if self.load_future is None:
            raise ModelNotReadyError("the model is not loaded")
        if self._failed_model_changed():
            self.reload_model("the model directory changed since the failed load")
        try:
            return await asyncio.wrap_future(self.load_future)
        except ModelNotReadyError:
            raise
        except Exception as exc:  # ModelLoadError included: it was shown once; requests answer empty meanwhile
            raise ModelNotReadyError(f"the model failed to load: {exc}") from exc

    def take_notices(self) -> list[tuple[str, str]]:
        """A remote backend's changes of state (server down, key refused, back again), each once."""
        return self.completer.engine.take_notices() if self.completer else []

    def update_settings(self, settings: Settings) -> None:
        before = self.settings
        self.settings = settings
        backend_changed = settings.engine != before.engine or settings.remote != before.remote
        if backend_changed and self.load_future is not None:
            self.reload_model("the engine settings changed")
        self.scheduler.debounce_ms = settings.scheduler.debounce_ms
        self.typing_through.lookback = settings.latency.typing_through_lookback
        resized = (settings.latency, settings.context.prompt_tokens) != (before.latency, before.context.prompt_tokens)
        if self.completer is not None and resized and not backend_changed:
            self.completer.engine.apply_latency(settings.latency, settings.context.prompt_tokens)

    # -- documents ------------------------------------------------------------------------------
    def document_changed(self, uri: str, version: int, edited_lines: list[int]) -> None:
        self.scheduler.document_changed(uri, version)
        for line in edited_lines:  # remembered for snippets of recently edited code
            self.recent_edits.record(uri, line)

    def document_opened(self, uri: str) -> None:
        self.scheduler.forget(uri)  # a (re)opened document counts versions afresh

    def document_closed(self, uri: str) -> None:
        self.scheduler.cancel_document(uri, "document closed")
        self.scheduler.forget(uri)
        self.typing_through.forget(uri)
        self.recent_edits.forget(uri)
        if self.completer is not None:
            self.completer.engine.prefix_cache.drop(uri)
            self.completer.anchors.forget(uri)

    # -- completion ---------------------------------------------------------------------------
    async def suggest(
        self,
        document: Snapshot,
        offset: int,
        draft: bool = False,
        on_commit: Callable[[str], None] | None = None,
        job: Job | None = None,
        on_step: Callable[[int, str], None] | None = None,
    ) -> Found | None:
        """The suggestion at `offset` of `document`, or None when there is nothing to show.

        `draft=True` is an explicit long draft (canvas after canvas, see `Completer.complete`); it
        runs under its own scheduler key so that automatic requests do not supersede it. `job` (from
        `new_draft_job`) is the draft's job, which its holder may stop (a cancel button) at any time.
        `on_step(step, text)` sees the canvas as it denoises, and (-1, final text) at the end.
        """
        request_id = next(self._request_ids)
        uri, settings = document.uri, self.settings
        latency = settings.latency
        deadline = time.monotonic() + latency.deadline_ms / 1000 if latency.deadline_ms and not draft else None
        if not draft:
            self.metrics.requests += 1
            rest = await self._typed_through(document, offset)
            if rest is not None:
                self.scheduler.cancel(JobKey(uri), "answered by typing-through")
                self.metrics.shown += 1
                self.metrics.typing_through_served += 1
                self._log_request(request_id, uri, f"{len(rest)} chars; served from typing-through, no model run")
                return Found(rest)
        completer = await self.ready_completer()
        current = self.documents.version(uri)
        if current != document.version:  # edited or closed while the model loaded: no job existed to be stopped
            self._log_request(request_id, uri, f"cancelled (document changed to version {current})")
            return None
        context = completer.context_at(document.text, offset, settings, document.path, document.language_id, key=uri)
        context = self.with_snippets(uri, context, completer, settings)
        try:
            suggestion = await self.scheduler.submit(
                JobKey(uri, "draft" if draft else "completion"),
                document.version,
                lambda job: self._counted(completer.complete(
                    context, settings, job.should_stop, deadline=deadline, draft=draft,
                    on_commit=on_commit, cache_key=uri, on_step=on_step), job),
                job=job,
            )
        except Cancelled as exc:
            self._log_request(request_id, uri, f"cancelled ({exc})")
            if on_step is not None:
                on_step(-1, "")
            return None
        self.last_latency_ms = suggestion.total_ms
        if not draft and (suggestion.text is not None or suggestion.gated):
            self.metrics.finished_with_text += 1
            self.metrics.hidden_by_gate += suggestion.gated
        shown = "hidden by the confidence gate" if suggestion.gated else (
            "empty" if suggestion.text is None else f"{len(suggestion.text)} chars")
        self._log_request(request_id, uri, f"{shown}; {suggestion.timings()}")
        if on_step is not None:
            on_step(-1, suggestion.text or "")
        if suggestion.text is None:
            return None
        if not draft:
            self.metrics.shown += 1
            self.metrics.deadline_hits += suggestion.stats.hit_deadline
            if not suggestion.replace_chars:  # typing-through replays insertions only
                self.typing_through.remember(uri, document.text, offset, suggestion.text)
        return Found(suggestion.text, suggestion.replace_chars)

    async def _typed_through(self, document: Snapshot, offset: int) -> str | None:
        """The rest of a suggestion the user is typing out (no model needed); a real request ends speculation."""
        uri = document.uri
        rest = self.typing_through.lookup(uri, document.text, offset) if self.settings.latency.typing_through else None
        pending = self._speculating.get(uri)
        if rest is None and pending is not None and pending[0] == context_key(uri, document.text, offset):
            # The speculation after an accept is computing exactly this: wait for it, don't redo it.
            await asyncio.shield(pending[1])
            rest = self.typing_through.lookup(uri, document.text, offset)
        return rest

    def with_snippets(self, uri: str, context: CursorContext, completer: Completer,
                      settings: Settings) -> CursorContext:
        """Add snippets of the other open documents and recent edits, when the prompt format takes them."""
        if not snippets_enabled(completer.format, settings.context):
            return context
        documents = [OpenDocument(doc.uri, doc.path, doc.language_id, doc.text) for doc in self.documents.all()]
        snippets = pick_snippets(uri, context, documents, settings.context, self.recent_edits)
        return dataclasses.replace(context, snippets=snippets)

    def _counted(self, suggestion, job):
        """Book a finished run's forward passes (on the worker thread, so cancellation is final)."""
        if job.should_stop() or suggestion.stats.stopped:
            outcome = "wasted"
        else:
            outcome = "shown" if suggestion.text is not None else "empty"
        self.metrics.count_run(suggestion.stats.forward_passes, outcome)
        return suggestion

    # -- speculation --------------------------------------------------------------------------
    def accepted(self, document: Snapshot, offset: int, text: str) -> None:
        """The user accepted `text` at `offset`: precompute the suggestion after it, in the background."""
        if not self.settings.latency.speculative:
            return
        task = asyncio.ensure_future(self._speculate(document, offset, text))
        self._speculations.add(task)
        task.add_done_callback(self._speculations.discard)

    async def _speculate(self, document: Snapshot, offset: int, accepted: str) -> None:
        """Precompute the suggestion after `accepted` at low priority; it waits in the typing-through cache."""
        uri = document.uri
        try:
            text, offset = after_acceptance(document.text, offset, accepted)
            if self.typing_through.peek(uri, text, offset) is not None:
                return  # a real request already answered there (the editor asked before running the command)
            task = asyncio.current_task()
            if task is not None:
                self._speculating[uri] = (context_key(uri, text, offset), task)
            completer = await self.ready_completer()
            settings = self.settings
            context = completer.context_at(text, offset, settings, document.path, document.language_id, key=uri)
            context = self.with_snippets(uri, context, completer, settings)

            def work(job):
                suggestion = completer.complete(context, settings, job.should_stop, cache_key=uri)
                self.metrics.count_run(suggestion.stats.forward_passes, "speculative")
                return suggestion

            self.metrics.speculative_runs += 1
            suggestion = await self.scheduler.submit(JobKey(uri, "speculative"), document.version, work,
                                                     background=True)
        except (Cancelled, DglspError) as exc:
            log.debug("speculation dropped: %s", exc)
            return
        except Exception:
            log.exception("speculation failed")
            return
        finally:
            if self._speculating.get(uri, (None, None))[1] is asyncio.current_task():
                del self._speculating[uri]
        if suggestion.text is not None:
            self.typing_through.remember(uri, text, offset, suggestion.text)
        log.info("speculated the next suggestion for %s: %s", uri.rsplit("/", 1)[-1], suggestion.timings())

    # -- reporting ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """`dglsp.stats`: what `dglsp bench` reads back from the server."""
        engine = self.completer.engine if self.completer is not None else None
        prefix = engine.prefix_cache.stats if engine is not None else None
        return {
            **self.metrics.as_dict(),
            "prefix_cache": {"lookups": prefix.lookups, "hits": prefix.hits, "hit_rate": prefix.hit_rate,
                             "reused_tokens": prefix.reused_tokens, "encoded_tokens": prefix.encoded_tokens,
                             "evictions": prefix.evictions, "bytes": engine.prefix_cache.nbytes,
                             "budget_bytes": engine.prefix_cache.budget_bytes,
                             "kv_bytes_per_token": engine.prefix_cache.kv_bytes_per_token}
                            if engine is not None and prefix else None,
            "typing_through": {"lookups": self.typing_through.stats.lookups, "hits": self.typing_through.stats.hits,
                               "hit_rate": self.typing_through.stats.hit_rate},
            "cancel_to_idle_ms": list(self.scheduler.cancel_to_idle_ms),
            "memory": memory_mb(),
            "device": str(engine.device) if engine is not None else None,
        }

    def status(self) -> dict[str, Any]:
        """What editors show in their status line / `:DglspStatus`; answers while the model loads."""
        bundle = self.completer.bundle if self.completer is not None else None
        return {
            "model": str(bundle.path) if bundle else self.settings.engine.model,
            "device": str(bundle.device) if bundle else self.settings.engine.device,
            "ready": self.completer is not None,
            "last_latency_ms": self.last_latency_ms,
            "load_message": self.load_state.message,
            "schedule": self.completer.schedule(self.settings) if self.completer is not None else None,
            "gate": {"hidden": self.metrics.hidden_by_gate, "hidden_share": round(self.metrics.gate_hidden_share, 4),
                     "min_confidence": self.completer.min_confidence(self.settings.postprocess)
                     if self.completer is not None else None},
        }

    def new_draft_job(self, uri: str, version: int) -> Job:
        """The job an explicit draft will run as: stopping it (a cancel button) is the draft's one stop path."""
        return self.scheduler.new_job(JobKey(uri, "draft"), version)

    def new_request_id(self) -> int:
        return next(self._request_ids)

    def _log_request(self, request_id: int, uri: str, outcome: str) -> None:
        message = f"[{request_id}] {uri.rsplit('/', 1)[-1]}: {outcome}"
        log.info(message)
        self._on_log(message)

