"""The completion service: what the LSP handlers call, between the document store and the completer.

It speaks in document snapshots, string offsets and `Edit`s; positions, ranges, progress and messages
are LSP and stay in `server.py`. What it holds:

* the model's lifecycle (`lifecycle.ModelLifecycle`) and the scheduler;
* each document's state, in stores that all forget a closed document through one list
  (`_stores`): the scheduler's versions, typing-through, the edit history, the prefix windows, the
  backend's prefix cache, work done ahead;
* the work around each request that needs no model: typing-through, snippets of other documents and
  recent edits, and work done ahead (`prefetch.Prefetcher`).

Every request ends with an `Edit` or a `NoSuggestion` naming its `Reason`, counted for `dglsp/status`.
Two hooks come from the server: `on_log` (one line per request, mirrored to the client's log) and
`on_reload` (a reload's future, to report its outcome).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from dglsp.completion.completer import Completer, Suggestion
from dglsp.completion.edits import DocumentChange, Edit, EditHistory, SuggestionState, line_end
from dglsp.completion.lifecycle import LoadState, ModelLifecycle
from dglsp.completion.metrics import LatencyMetrics, memory_mb
from dglsp.completion.next_edit import EditProposal, NextEditor
from dglsp.completion.outcome import NoSuggestion, OutcomeCounts, Reason
from dglsp.completion.prefetch import Prefetcher
from dglsp.completion.prompt import CursorContext, snippets_enabled
from dglsp.completion.scheduler import Cancelled, Job, JobKey, JobKind, Scheduler
from dglsp.completion.snapshot import DocumentReader, Snapshot
from dglsp.completion.snippets import OpenDocument, pick_snippets
from dglsp.completion.typing_through import TypingThroughCache
from dglsp.config import Settings
from dglsp.errors import BackendError, ModelNotReadyError

log = logging.getLogger(__name__)


class PerDocument(Protocol):
    def forget(self, uri: str) -> None: ...


class CompletionService:
    def __init__(self, settings: Settings, documents: DocumentReader,
                 on_log: Callable[[str], None] = lambda line: None,
                 on_reload: Callable[[Future], None] = lambda future: None):
        self.settings = settings
        self.documents = documents
        self._on_log = on_log
        self.scheduler = Scheduler(settings.scheduler.debounce_ms)
        self.lifecycle = ModelLifecycle(self.scheduler, lambda: self.settings, on_reload)
        self.last_latency_ms: float | None = None
        self.last_outcome: dict[str, Any] | None = None  # the last request's: shown or its reason, and latency
        self._request_ids = itertools.count(1)
        self.typing_through = TypingThroughCache(settings.latency.typing_through_lookback)
        self.history = EditHistory()
        self.metrics = LatencyMetrics()
        self.outcomes = OutcomeCounts()
        self.prefetcher = Prefetcher(self.scheduler, self.ready_completer, lambda: self.settings, self._context,
                                     self.typing_through, self.metrics)

    # -- the model ------------------------------------------------------------------------------
    @property
    def completer(self) -> Completer | None:
        return self.lifecycle.completer

    @property
    def load_state(self) -> LoadState:
        return self.lifecycle.state

    @property
    def load_future(self) -> Future | None:
        return self.lifecycle.future

    def start_loading(self) -> Future:
        return self.lifecycle.start()

    def reload_model(self, reason: str) -> Future:
        return self.lifecycle.reload(reason)

    async def ready_completer(self) -> Completer:
        return await self.lifecycle.ready()

    def take_notices(self) -> list[tuple[str, str]]:
        """A remote backend's changes of state (server down, key refused, back again), each once."""
        return self.completer.backend.take_notices() if self.completer else []

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
            self.completer.backend.apply_latency(settings.latency, settings.context.prompt_tokens)

    # -- documents ------------------------------------------------------------------------------
    def _stores(self) -> list[PerDocument]:
        """Everything that keeps state per document: closing one walks this list."""
        stores: list[PerDocument] = [self.scheduler, self.typing_through, self.history, self.prefetcher]
        if self.completer is not None:
            stores += [self.completer.anchors, self.completer.backend]
        return stores

    def document_changed(self, uri: str, version: int, changes: list[DocumentChange]) -> None:
        self.scheduler.document_changed(uri, version)
        for change in changes:
            if self.history.record(change):
                self._edit_accepted(uri)

    def document_opened(self, uri: str) -> None:
        self.scheduler.forget(uri)  # a (re)opened document counts versions afresh

    def document_closed(self, uri: str) -> None:
        self.scheduler.cancel_document(uri, Reason.DOCUMENT_CLOSED)
        for store in self._stores():
            store.forget(uri)

    def focus(self, document: Snapshot, offset: int) -> None:
        """The editor's cursor went to `offset` (a document entered, a jump): prepare the prompt there."""
        self.prefetcher.focus(document, offset)

    def focus_document(self, document: Snapshot) -> None:
        """A document took focus without saying where its cursor is: prepare the prompt at the end of the line the
        user last edited there (nothing to prepare in a document not edited since it was opened)."""
        edits = self.history.edits(document.uri)
        if edits:
            last = edits[-1]
            self.focus(document, line_end(document.text, last.start_line + max(0, len(last.new_lines) - 1)))

    # -- completion ---------------------------------------------------------------------------
    async def suggest(
        self,
        document: Snapshot,
        offset: int,
        draft: bool = False,
        on_commit: Callable[[str], None] | None = None,
        job: Job | None = None,
        on_step: Callable[[int, str], None] | None = None,
    ) -> Edit | NoSuggestion:
        """The suggestion at `offset` of `document`, or why there is none.

        `draft=True` is an explicit long draft (canvas after canvas, see `Completer.complete`); it
        runs under its own scheduler key so that automatic requests do not supersede it. `job` (from
        `new_draft_job`) is the draft's job, which its holder may stop (a cancel button) at any time.
        `on_step(passes, text)` sees the canvas as it denoises.
        """
        request_id = next(self._request_ids)
        begin = time.perf_counter()
        try:
            outcome = await self._suggest(request_id, document, offset, draft, on_commit, job, on_step)
        except asyncio.CancelledError:  # the client cancelled the request: counted, then the cancel goes on
            self._record(document.uri, draft, self._empty(request_id, document.uri,
                                                          NoSuggestion(Reason.CANCELLED, "by the client")), begin)
            raise
        self._record(document.uri, draft, outcome, begin)
        return outcome

    def _record(self, uri: str, draft: bool, outcome: Edit | NoSuggestion, begin: float) -> None:
        """Count a request's outcome, and keep it as the last one (what the editor's status line shows)."""
        latency_ms = (time.perf_counter() - begin) * 1000
        if not draft:
            self.outcomes.add("shown" if isinstance(outcome, Edit) else outcome.reason)
        self.last_outcome = {"uri": uri, "latency_ms": round(latency_ms, 1), "kind": "draft" if draft
                             else "completion", **({"shown": True} if isinstance(outcome, Edit) else
                                                    {"shown": False, "reason": outcome.reason.value,
                                                     "detail": outcome.detail})}

    async def _suggest(self, request_id: int, document: Snapshot, offset: int, draft: bool,
                       on_commit: Callable[[str], None] | None, job: Job | None,
                       on_step: Callable[[int, str], None] | None) -> Edit | NoSuggestion:
        uri, settings = document.uri, self.settings
        latency = settings.latency
        deadline = time.monotonic() + latency.deadline_ms / 1000 if latency.deadline_ms and not draft else None
        if not draft:
            self.metrics.requests += 1
            rest = await self._typed_through(document, offset)
            if rest is not None:
                self.scheduler.cancel(JobKey(uri), Reason.SUPERSEDED, "answered by typing-through")
                self.metrics.shown += 1
                self.metrics.typing_through_served += 1
                self._log_request(request_id, uri, f"{len(rest)} chars; served from typing-through, no model run")
                return Edit(offset, offset, rest)
        try:
            completer = await self.ready_completer()
        except ModelNotReadyError as exc:
            if self.load_future is None:
                raise  # nothing was ever asked to load: a bug of the caller, not a state to show
            return self._empty(request_id, uri, NoSuggestion(Reason.LOAD_FAILED, str(exc)))
        current = self.documents.version(uri)
        if current != document.version:  # edited or closed while the model loaded: no job existed to be stopped
            reason = Reason.DOCUMENT_CLOSED if current is None else Reason.DOCUMENT_CHANGED
            return self._empty(request_id, uri, NoSuggestion(reason, f"document changed to version {current}"))
        context = self._context(completer, document, document.text, offset, settings)
        try:
            suggestion = await self.scheduler.submit(
                JobKey(uri, JobKind.DRAFT if draft else JobKind.COMPLETION),
                document.version,
                lambda job: self._counted(completer.complete(
                    context, settings, job.should_stop, deadline=deadline, draft=draft,
                    on_commit=on_commit, cache_key=uri, on_step=on_step), job),
                job=job,
            )
        except Cancelled as exc:
            return self._empty(request_id, uri, NoSuggestion(exc.reason, exc.detail))
        except BackendError as exc:  # shown once as a notice; each request answers empty with the message
            return self._empty(request_id, uri, NoSuggestion(Reason.BACKEND_ERROR, str(exc)))
        return self._finished(request_id, document, offset, suggestion, draft)

    def _finished(self, request_id: int, document: Snapshot, offset: int, suggestion: Suggestion,
                  draft: bool) -> Edit | NoSuggestion:
        uri = document.uri
        self.last_latency_ms = suggestion.total_ms
        if not draft and (suggestion.edit is not None or suggestion.gated):
            self.metrics.finished_with_text += 1
            self.metrics.hidden_by_gate += suggestion.gated
        if suggestion.edit is None:
            hidden = suggestion.hidden or NoSuggestion(Reason.EMPTY)
            return self._empty(request_id, uri, hidden, suggestion.timings())
        self._log_request(request_id, uri, f"{len(suggestion.edit.text)} chars; {suggestion.timings()}")
        if not draft:
            self.metrics.shown += 1
            self.metrics.deadline_hits += suggestion.stats.hit_deadline
            if suggestion.edit.start == suggestion.edit.end:  # typing-through replays insertions only
                self.typing_through.remember(uri, document.text, offset, suggestion.edit.text)
            self.history.note_suggestion(uri, "completion", suggestion.edit, "shown")
        return suggestion.edit

    def _empty(self, request_id: int, uri: str, hidden: NoSuggestion, timings: str = "") -> NoSuggestion:
        self._log_request(request_id, uri, f"nothing shown ({hidden.describe()})" + (f"; {timings}" if timings else ""))
        return hidden

    def _context(self, completer: Completer, document: Snapshot, text: str, offset: int,
                 settings: Settings) -> CursorContext:
        """The windows around the cursor, with snippets of the other open documents and recent edits when the
        prompt format takes them."""
        context = completer.context_at(text, offset, settings, document.path, document.language_id, key=document.uri)
        return self.with_snippets(document.uri, context, completer, settings)

    def with_snippets(self, uri: str, context: CursorContext, completer: Completer,
                      settings: Settings) -> CursorContext:
        """Add snippets of the other open documents and recent edits, when the prompt format takes them."""
        if not snippets_enabled(completer.format, settings.context):
            return context
        documents = [OpenDocument(doc.uri, doc.path, doc.language_id, doc.text) for doc in self.documents.all()]
        snippets = pick_snippets(uri, context, documents, settings.context, self.history.regions())
        return dataclasses.replace(context, snippets=snippets)

    async def _typed_through(self, document: Snapshot, offset: int) -> str | None:
        """The rest of a suggestion the user is typing out (no model needed); a prefetch computing exactly this
        request is waited for rather than redone."""
        if not self.settings.latency.typing_through:
            return None
        rest = self.typing_through.lookup(document.uri, document.text, offset)
        if rest is None:
            await self.prefetcher.wait_for(document, offset)
            rest = self.typing_through.lookup(document.uri, document.text, offset)
        return rest

    def _counted(self, suggestion: Suggestion, job: Job) -> Suggestion:
        """Book a finished run's forward passes (on the worker thread, so cancellation is final)."""
        if job.should_stop() or suggestion.stats.stopped:
            outcome = "wasted"
        else:
            outcome = "shown" if suggestion.edit is not None else "empty"
        self.metrics.count_run(suggestion.stats.forward_passes, outcome)
        return suggestion

    async def next_edit(self, document: Snapshot, offset: int) -> Edit | NoSuggestion:
        """The next edit of `document` with the cursor at `offset`, or why there is none; stopped by typing like
        every request (its own scheduler key: a completion does not supersede it)."""
        request_id = next(self._request_ids)
        settings = self.settings
        if not settings.next_edit.enabled:
            return NoSuggestion(Reason.NO_EDIT, "next_edit.enabled is off")
        try:
            completer = await self.ready_completer()
        except ModelNotReadyError as exc:
            return self._empty(request_id, document.uri, NoSuggestion(Reason.LOAD_FAILED, str(exc)))
        history = self.history.edits(document.uri)[-settings.next_edit.history_edits:]
        diffs = [edit.diff(document.path) for edit in history]
        editor = NextEditor(completer)

        def work(job: Job) -> EditProposal:
            return editor.propose(document.text, offset, history, diffs, settings, document.path,
                                  document.language_id, job.should_stop, cache_key=None)

        try:
            proposal = await self.scheduler.submit(JobKey(document.uri, JobKind.EDIT), document.version, work)
        except Cancelled as exc:
            return self._empty(request_id, document.uri, NoSuggestion(exc.reason, exc.detail))
        except BackendError as exc:
            return self._empty(request_id, document.uri, NoSuggestion(Reason.BACKEND_ERROR, str(exc)))
        self.outcomes.add("edit_shown" if proposal.edit is not None else f"edit_{proposal.hidden.reason}"
                          if proposal.hidden else "edit_none")
        timings = f"next edit ({proposal.region.why if proposal.region else '-'} region), " \
                  f"{proposal.stats.summary()}"
        if proposal.edit is None:
            return self._empty(request_id, document.uri, proposal.hidden or NoSuggestion(Reason.NO_EDIT), timings)
        self.history.proposed(document.uri, document.text, proposal.edit)
        self._log_request(request_id, document.uri, f"edit of {proposal.edit.end - proposal.edit.start} chars into "
                                                    f"{len(proposal.edit.text)}; {timings}")
        return proposal.edit

    def edit_noted(self, uri: str, edit: Edit, state: SuggestionState) -> None:
        """The editor showed, or the user accepted or rejected, a next edit."""
        if state != "accepted":
            self.history.note_suggestion(uri, "edit", edit, state)
        elif self.history.accepted_edit(uri, edit):
            self._edit_accepted(uri)

    def _edit_accepted(self, uri: str) -> None:
        """A proposed next edit was applied (heard once, from its didChange or the client's command)."""
        self.outcomes.add("edit_accepted")
        log.info("next edit accepted in %s", uri.rsplit("/", 1)[-1])

    def accepted(self, document: Snapshot, offset: int, text: str) -> None:
        """The user accepted `text` at `offset`: noted, and the suggestion after it computed ahead."""
        self.history.note_suggestion(document.uri, "completion", Edit(offset, offset, text), "accepted")
        self.prefetcher.accepted(document, offset, text)

    # -- reporting ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """`dglsp.stats`: what `dglsp bench` reads back from the server."""
        backend = self.completer.backend if self.completer is not None else None
        return {
            **self.metrics.as_dict(),
            "outcomes": self.outcomes.as_dict(),
            "prefix_cache": backend.cache_stats() if backend is not None else None,
            "typing_through": {"lookups": self.typing_through.stats.lookups, "hits": self.typing_through.stats.hits,
                               "hit_rate": self.typing_through.stats.hit_rate},
            "cancel_to_idle_ms": list(self.scheduler.cancel_to_idle_ms),
            "memory": memory_mb(),
            "device": str(backend.device) if backend is not None else None,
        }

    def status(self) -> dict[str, Any]:
        """What editors show in their status line / `:checkhealth`; answers while the model loads."""
        completer = self.completer
        bundle = completer.bundle if completer is not None else None
        state = "ready" if completer is not None else "failed" if self.lifecycle.failed else "loading"
        return {
            "model": str(bundle.path) if bundle else self.settings.engine.model,
            "device": str(bundle.device) if bundle else self.settings.engine.device,
            "ready": completer is not None,
            "state": state,
            "last_latency_ms": self.last_latency_ms,
            "last": self.last_outcome,
            "outcomes": self.outcomes.as_dict(),
            "load_message": self.load_state.message,
            "load_percent": self.load_state.percent,
            "schedule": completer.schedule(self.settings) if completer is not None else None,
            "gate": {"hidden": self.metrics.hidden_by_gate, "hidden_share": round(self.metrics.gate_hidden_share, 4),
                     "min_confidence": completer.min_confidence(self.settings.postprocess)
                     if completer is not None else None},
        }

    def new_draft_job(self, uri: str, version: int) -> Job:
        """The job an explicit draft will run as: stopping it (a cancel button) is the draft's one stop path."""
        return self.scheduler.new_job(JobKey(uri, JobKind.DRAFT), version)

    def new_request_id(self) -> int:
        return next(self._request_ids)

    def _log_request(self, request_id: int, uri: str, outcome: str) -> None:
        message = f"[{request_id}] {uri.rsplit('/', 1)[-1]}: {outcome}"
        log.info(message)
        self._on_log(message)

