"""The language server: LSP handlers as thin adapters over the pipeline.

Handlers fetch the document, call the completer through the scheduler, and build the
LSP type. Errors cross one boundary (`_to_lsp_error`): a `DglspError` becomes a
JSON-RPC error for a request or a `window/showMessage` for background work;
anything else is logged with its traceback and answered with an empty result, so the
server never dies on a request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from dglsp import __version__
from dglsp.completer import Completer
from dglsp.config import SamplerSettings, ServeSettings, Settings
from dglsp.documents import offset_at, position_after, snapshot
from dglsp.engine import Engine, load_bundle
from dglsp.errors import DglspError, InvalidRequestError, ModelNotReadyError
from dglsp.metrics import LatencyMetrics, memory_mb
from dglsp.modelcheck import fingerprint
from dglsp.neighbors import OpenDocument, RecentEdits, pick_snippets
from dglsp.prompt import CursorContext, snippets_enabled
from dglsp.scheduler import Cancelled, Scheduler
from dglsp.textsync import adopt as adopt_workspace
from dglsp.typing_through import TypingThroughCache, after_acceptance, context_key

log = logging.getLogger(__name__)

_UNANSWERABLE = object()  # a message that failed to deserialize and has already been answered


class DglspProtocol(LanguageServerProtocol):
    """Every request gets an answer. Stock pygls answers nothing when a request's params fail to
    deserialize, when it arrives after `shutdown`, or when the body is not JSON; clients would wait forever.
    Requests before `initialize` get ServerNotInitialized, as the LSP spec says. The other way round, a
    malformed client response to one of our requests fails that request instead of leaving it pending."""

    _initialize_seen = False

    def structure_message(self, data: dict[str, Any]):
        if "jsonrpc" in data and "method" in data and "params" not in data:
            data = {**data, "params": None}  # JSON-RPC lets a request omit params; pygls' generic types require it
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and "id" in data:
                msg_id = data["id"] if isinstance(data["id"], (int, str)) else None
                message = f"invalid params for {data.get('method')!r}: {exc.message or 'cannot deserialize'}"
                self._send_response(msg_id, error=JsonRpcInvalidParams(message).to_response_error())
            elif isinstance(data, dict) and "id" in data and isinstance(data["id"], (int, str)):
                pending = self._request_futures.pop(data["id"], None)
                if pending is not None and not pending.done():
                    pending.set_exception(JsonRpcInvalidParams(f"the client's response is malformed: {exc.message}"))
            return _UNANSWERABLE

    def _run_generator(self, future, *, gen, result_future):
        # pygls 2.1.1 raises the CancelledError of a cancelled step inside its callback (e.g. `shutdown`
        # cancels a running command) and never answers the request: answer it as cancelled instead.
        if future is not None and future.cancelled():
            gen.close()
            if not result_future.done():
                result_future.cancel()
            return
        super()._run_generator(future, gen=gen, result_future=result_future)

    def handle_message(self, message):
        if message is _UNANSWERABLE:
            return
        if not hasattr(message, "jsonrpc"):
            # Its type only: the message may hold document text, which never goes to the log.
            log.warning("ignoring a message that is not a JSON-RPC object (a JSON %s)", type(message).__name__)
            return
        method = getattr(message, "method", None)
        if method is not None and hasattr(message, "id"):  # a request (notifications have no id)
            if method == types.INITIALIZE:
                self._initialize_seen = True
            elif not self._initialize_seen:
                self._send_response(message.id, error=JsonRpcServerNotInitialized(
                    f"{method}: send initialize first").to_response_error())
                return
            elif self._shutdown and method != types.EXIT:
                self._send_response(message.id, error=JsonRpcInvalidRequest(
                    f"{method}: the server is shutting down (only exit is accepted)").to_response_error())
                return
        super().handle_message(message)


@dataclass
class LoadState:
    message: str = "starting"
    percent: int = 0


class DglspServer(LanguageServer):
    def __init__(self, settings: Settings | None = None, serve: ServeSettings | None = None):
        super().__init__("dglsp", __version__, protocol_cls=DglspProtocol)
        self.settings = settings or Settings()
        self.serve = serve or ServeSettings(allow_remote_code=self.settings.engine.trust_remote_code)
        self._load_fingerprint: tuple | None = None  # the model directory as the last load saw it
        self._load_reported = False  # the first load's outcome has been shown; later loads report themselves
        self.scheduler = Scheduler(self.settings.scheduler.debounce_ms)
        self.completer: Completer | None = None
        self.load_state = LoadState()
        self.load_future: Future | None = None
        self.client_has_inline_completion = False
        self.last_latency_ms: float | None = None
        self._request_ids = itertools.count(1)
        self.typing_through = TypingThroughCache(self.settings.latency.typing_through_lookback)
        self.recent_edits = RecentEdits(chunk_lines=self.settings.context.snippet_lines)
        self.metrics = LatencyMetrics()
        self._speculations: set[asyncio.Task] = set()  # strong references until they finish
        self._speculating: dict[str, tuple[tuple, asyncio.Task]] = {}  # uri -> (context key, task)

    # -- model lifecycle -------------------------------------------------------------------
    def start_loading(self) -> Future:
        """Load the model on the device worker (so it lives on that thread), without blocking the loop."""
        self._load_fingerprint = fingerprint(self.settings.engine.model)
        self.load_future = self.scheduler._executor.submit(self._load)
        return self.load_future

    def reload_model(self, reason: str) -> None:
        """Load the model again (settings changed, or a broken directory was fixed) and tell the user how it went."""
        log.info("reloading the model: %s", reason)
        if self.completer is not None and hasattr(self.completer.engine, "take_notices"):
            self.completer.engine.close()  # a remote backend: end its HTTP connections and loop thread
        self.completer = None  # let the old model go before the new one loads
        future = self.start_loading()
        if self._load_reported:  # otherwise the first load's report (report_load_progress) follows this one
            asyncio.ensure_future(self._report_reload(future))

    async def _report_reload(self, future: Future) -> None:
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error,
                                                             f"dglsp: model failed to load: {exc}"))
            return
        self.window_show_message(types.ShowMessageParams(types.MessageType.Info, f"dglsp: {self.load_state.message}"))

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
        if self.settings.engine.backend == "remote":
            from dglsp.remote import load_remote

            bundle, engine = load_remote(self.settings, progress)  # the server check is its warm-up
        else:
            bundle = load_bundle(self.settings.engine, progress)
            engine = Engine(bundle, self.settings.latency)
        completer = Completer(bundle, engine)
        if self.settings.engine.warmup and self.settings.engine.backend == "local":
            progress("warming up", 90)
            # A short fixed schedule: it only has to touch every kernel once.
            warmup = SamplerSettings(canvas_length=engine.default_canvas_length, max_steps=2, seed=0)
            engine.generate(bundle.tokenizer.encode("def", add_special_tokens=False) or [0], warmup)
        self.completer = completer
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

    async def report_load_progress(self) -> None:
        """Mirror model loading to the client as work-done progress (if it supports it)."""
        if self.load_future is None:
            return
        capabilities = self.protocol.client_capabilities
        window = capabilities.window if capabilities else None
        token = "dglsp/load-model"
        use_progress = bool(window and window.work_done_progress)
        if use_progress:
            await self.work_done_progress.create_async(token)
            begin = types.WorkDoneProgressBegin(title="dglsp: loading model", percentage=0)
            self.work_done_progress.begin(token, begin)
        last = None
        while not self.load_future.done():
            if use_progress and self.load_state != last:
                last = self.load_state
                self.work_done_progress.report(
                    token, types.WorkDoneProgressReport(message=last.message, percentage=last.percent))
            await asyncio.sleep(0.1)
        error = self.load_future.exception()
        message = self.load_state.message if error is None else f"model failed to load: {error}"
        if use_progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        if error is not None:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"dglsp: {message}"))
        self.window_log_message(types.LogMessageParams(types.MessageType.Info, f"dglsp: {message}"))
        self._load_reported = True
        self.show_backend_notices()

    def show_backend_notices(self) -> None:
        """A remote backend's changes of state (server down, key refused, back again), shown once each."""
        take_notices = getattr(self.completer.engine, "take_notices", None) if self.completer else None
        for level, message in take_notices() if take_notices else []:
            kind = types.MessageType.Error if level == "error" else types.MessageType.Info
            self.window_show_message(types.ShowMessageParams(kind, message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        """A body that is not JSON gets a ParseError response (id null, as JSON-RPC says) instead of silence."""
        if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
            log.warning("a message body is not JSON: %s", type(error).__name__)
            # Sent as a plain dict: pygls drops a None id, and JSON-RPC wants `"id": null` here.
            error = JsonRpcParseError("the message body is not valid JSON")
            self.protocol._send_data({"jsonrpc": "2.0", "id": None, "error": {"code": error.code,
                                                                               "message": error.message}})
            return
        super().report_server_error(error, source)

    # -- settings -----------------------------------------------------------------------------
    def apply_settings(self, options: Any) -> None:
        options, refused = _client_options(options, self.serve)
        engine_before, remote_before = self.settings.engine, self.settings.remote
        self.settings, warnings = self.settings.updated(options)
        warnings = refused + warnings
        backend_changed = self.settings.engine != engine_before or self.settings.remote != remote_before
        if backend_changed and self.load_future is not None:
            self.reload_model("the engine settings changed")
        self.scheduler.debounce_ms = self.settings.scheduler.debounce_ms
        self.typing_through.lookback = self.settings.latency.typing_through_lookback
        for warning in warnings:
            log.warning("settings: %s", warning)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"dglsp settings: {warning}"))

    # -- completion ---------------------------------------------------------------------------
    async def suggest(
        self,
        uri: str,
        position: types.Position,
        draft: bool = False,
        on_commit: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[str, types.Range] | None:
        """The suggestion at `position`, or None when there is nothing to show.

        `draft=True` is an explicit long draft (canvas after canvas, see `Completer.complete`); it
        runs under its own scheduler key so that automatic requests do not supersede it. `stop` is
        an extra stop flag (the draft's progress cancel button), honoured even before the job starts.
        """
        request_id = next(self._request_ids)
        settings = self.settings
        latency = settings.latency
        deadline = time.monotonic() + latency.deadline_ms / 1000 if latency.deadline_ms and not draft else None
        document = snapshot(self.workspace, uri)
        offset = offset_at(document.text, position, self.workspace.position_encoding)
        if not draft:
            self.metrics.requests += 1
            # Typing what the ghost text says needs no model; a real request also ends speculation.
            rest = self.typing_through.lookup(uri, document.text, offset) if latency.typing_through else None
            pending = self._speculating.get(uri)
            if rest is None and pending is not None and pending[0] == context_key(uri, document.text, offset):
                # The speculation after an accept is computing exactly this: wait for it, don't redo it.
                await asyncio.shield(pending[1])
                rest = self.typing_through.lookup(uri, document.text, offset)
            if rest is not None:
                self.scheduler.cancel(uri, "answered by typing-through")
                self.metrics.shown += 1
                self.metrics.typing_through_served += 1
                self._log_request(request_id, uri, f"{len(rest)} chars; served from typing-through, no model run")
                return rest, types.Range(position, position)
        completer = await self.ready_completer()
        current = snapshot(self.workspace, uri).version
        if current != document.version:  # edited while the model was loading: no job existed to be stopped
            self._log_request(request_id, uri, f"cancelled (document changed to version {current})")
            return None
        context = completer.context_at(document.text, offset, settings, document.path, document.language_id, key=uri)
        context = self._with_snippets(uri, context, completer, settings)
        on_step = self._live_canvas(uri, document.version, position) if latency.live_canvas and not draft else None
        try:
            suggestion = await self.scheduler.submit(
                f"{uri}#draft" if draft else uri,
                document.version,
                lambda job: self._counted(completer.complete(
                    context, settings, _either(job.should_stop, stop), deadline=deadline, draft=draft,
                    on_commit=on_commit, cache_key=uri, on_step=on_step), job),
            )
        except Cancelled as exc:
            self._log_request(request_id, uri, f"cancelled ({exc})")
            if on_step is not None:
                on_step(-1, "")
            return None
        self.last_latency_ms = suggestion.total_ms
        shown = "empty" if suggestion.text is None else f"{len(suggestion.text)} chars"
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
        # The suggestion may type over auto-closed brackets after the cursor: the range covers them.
        replaced = document.text[offset: offset + suggestion.replace_chars]
        end = position_after(position, replaced, self.workspace.position_encoding)
        return suggestion.text, types.Range(position, end)

    def _with_snippets(self, uri: str, context: CursorContext, completer: Completer,
                       settings: Settings) -> CursorContext:
        """Add snippets of the other open documents and recent edits, when the prompt format takes them."""
        if not snippets_enabled(completer.format, settings.context):
            return context
        documents = [OpenDocument(doc.uri, snapshot(self.workspace, doc.uri).path, doc.language_id or "", doc.source)
                     for doc in list(self.workspace.text_documents.values())]
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

    def _live_canvas(self, uri: str, version: int, position: types.Position) -> Callable[[int, str], None]:
        """`dglsp/canvas` notifications from the worker thread: throttled steps, then one with done=true.

        The callback gets step -1 for the end (the final text, empty if nothing is shown)."""
        loop = asyncio.get_running_loop()
        interval = self.settings.latency.live_canvas_interval_ms / 1000
        last_sent = [0.0]

        def send(step: int, text: str) -> None:
            now = time.monotonic()
            done = step < 0
            if not done and now - last_sent[0] < interval:
                return
            last_sent[0] = now
            params = {"uri": uri, "version": version, "position": {"line": position.line,
                      "character": position.character}, "text": text, "step": max(step, 0), "done": done}
            loop.call_soon_threadsafe(self.protocol.notify, "dglsp/canvas", params)

        return send

    def accepted(self, args: tuple) -> None:
        """`dglsp.accepted` (the item's command, run by the editor on accept): speculate the next suggestion."""
        if not self.settings.latency.speculative:
            return
        uri, position = _draft_target(args[:1] if len(args) == 1 else args[:2])
        spec = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        text = spec.get("text") if isinstance(spec.get("text"), str) else (args[2] if len(args) > 2 else "")
        if not isinstance(text, str) or not text:
            raise InvalidRequestError("dglsp.accepted takes {uri, position, text}")
        task = asyncio.ensure_future(self._speculate(uri, position, text))
        self._speculations.add(task)
        task.add_done_callback(self._speculations.discard)

    async def _speculate(self, uri: str, position: types.Position, accepted: str) -> None:
        """Precompute the suggestion after `accepted` at low priority; it waits in the typing-through cache."""
        try:
            document = snapshot(self.workspace, uri)
            offset = offset_at(document.text, position, self.workspace.position_encoding)
            text, offset = after_acceptance(document.text, offset, accepted)
            if self.typing_through.peek(uri, text, offset) is not None:
                return  # a real request already answered there (the editor asked before running the command)
            task = asyncio.current_task()
            if task is not None:
                self._speculating[uri] = (context_key(uri, text, offset), task)
            completer = await self.ready_completer()
            settings = self.settings
            context = completer.context_at(text, offset, settings, document.path, document.language_id, key=uri)
            context = self._with_snippets(uri, context, completer, settings)

            def work(job):
                suggestion = completer.complete(context, settings, job.should_stop, cache_key=uri)
                self.metrics.count_run(suggestion.stats.forward_passes, "speculative")
                return suggestion

            self.metrics.speculative_runs += 1
            suggestion = await self.scheduler.submit(f"{uri}#speculative", document.version, work, background=True)
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

    def stats(self) -> dict:
        """`dglsp.stats`: what `dglsp bench` reads back from the server."""
        engine = self.completer.engine if self.completer is not None else None
        prefix = engine.prefix_cache.stats if engine is not None else None
        return {
            **self.metrics.as_dict(),
            "prefix_cache": {"lookups": prefix.lookups, "hits": prefix.hits, "hit_rate": prefix.hit_rate,
                             "reused_tokens": prefix.reused_tokens, "encoded_tokens": prefix.encoded_tokens,
                             "evictions": prefix.evictions, "bytes": engine.prefix_cache.nbytes} if prefix else None,
            "typing_through": {"lookups": self.typing_through.stats.lookups, "hits": self.typing_through.stats.hits,
                               "hit_rate": self.typing_through.stats.hit_rate},
            "cancel_to_idle_ms": list(self.scheduler.cancel_to_idle_ms),
            "memory": memory_mb(),
            "device": str(engine.device) if engine is not None else None,
        }

    async def draft(self, args: tuple) -> dict:
        """`dglsp.draft`: draft at a position, stream committed canvases as `$/progress`, then apply the
        whole draft as one `workspace/applyEdit` (one undo step) on the document version it was drafted
        for. Cancelled (by `$/cancelRequest`, the progress cancel button, or an edit) -> nothing applied.
        With `"apply": false` in the argument the draft is only returned (with its range): clients that
        show it as ghost text for the user to accept (the Neovim plugin) apply it themselves."""
        uri, position = _draft_target(args)
        apply = not (len(args) == 1 and isinstance(args[0], dict) and args[0].get("apply") is False)
        version = snapshot(self.workspace, uri).version
        token = f"dglsp/draft/{next(self._request_ids)}"
        loop = asyncio.get_running_loop()
        reporting = await self._begin_progress(token, "dglsp: drafting", cancellable=True)
        cancel_button = self.work_done_progress.tokens.get(token) if reporting else None
        cancelled = threading.Event()

        def on_cancel_button(_: object) -> None:
            cancelled.set()
            self.scheduler.cancel(f"{uri}#draft", "cancelled by the user")

        if cancel_button is not None:
            cancel_button.add_done_callback(on_cancel_button)

        def on_commit(text: str) -> None:
            if reporting:
                report = types.WorkDoneProgressReport(message=text[-2000:])
                loop.call_soon_threadsafe(self.work_done_progress.report, token, report)

        try:
            found = await self.suggest(uri, position, draft=True, on_commit=on_commit, stop=cancelled)
        finally:
            if reporting:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
        if found is None or cancelled.is_set():
            return {"applied": False, "text": ""}
        text, where = found
        if not apply:
            return {"applied": False, "text": text, "range": self.protocol._converter.unstructure(where)}
        edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=[types.TextEdit(range=where, new_text=text)],
        )])
        result = await self.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="dglsp draft"))
        return {"applied": bool(result.applied), "text": text}

    async def _begin_progress(self, token: str, title: str, cancellable: bool = False) -> bool:
        """Start server-initiated work-done progress if the client supports it."""
        capabilities = self.protocol.client_capabilities
        window = capabilities.window if capabilities else None
        if not (window and window.work_done_progress):
            return False
        await self.work_done_progress.create_async(token)
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable))
        return True

    def _log_request(self, request_id: int, uri: str, outcome: str) -> None:
        message = f"[{request_id}] {uri.rsplit('/', 1)[-1]}: {outcome}"
        log.info(message)
        self.window_log_message(types.LogMessageParams(types.MessageType.Log, message))


def _either(should_stop: Callable[[], bool], stop: threading.Event | None) -> Callable[[], bool]:
    return should_stop if stop is None else (lambda: should_stop() or stop.is_set())


def _draft_target(args: tuple) -> tuple[str, types.Position]:
    """Accept `{uri, position}`, `{textDocument: {uri}, position}`, `{uri, range}` (a selection holding an
    instruction comment: the draft goes after it) or `[uri, position]`."""
    try:
        if len(args) == 2:
            uri, where = args
            return str(uri), types.Position(int(where["line"]), int(where["character"]))
        spec = args[0]
        uri = spec.get("uri") or spec["textDocument"]["uri"]
        where = spec["range"]["end"] if "range" in spec else spec["position"]
        return str(uri), types.Position(int(where["line"]), int(where["character"]))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise InvalidRequestError(
            "dglsp.draft takes one argument {uri, position} or {uri, range}, or two: uri, position"
        ) from exc


async def _as_coroutine(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _client_options(options: Any, serve: ServeSettings) -> tuple[Any, list[str]]:
    """Drop what a client may not set: its TCP token, running a model's own code without `--trust-remote-code`,
    and a remote server on a host the command line did not allow (workspace settings reach us as client
    options: they must not send the code and the API key somewhere of their choosing)."""
    if not isinstance(options, dict):
        return options, []
    options = {key: value for key, value in options.items() if key != "token"}
    refused = []
    engine = options.get("engine")
    if isinstance(engine, dict) and engine.get("trust_remote_code") and not serve.allow_remote_code:
        options["engine"] = {key: value for key, value in engine.items() if key != "trust_remote_code"}
        refused.append("engine.trust_remote_code refused: only `dglsp serve --trust-remote-code` can allow a "
                       "model to run its own code")
    remote = options.get("remote")
    url = remote.get("url") if isinstance(remote, dict) else None
    if isinstance(url, str) and url and not _allowed_remote(url, serve):
        options["remote"] = {key: value for key, value in remote.items() if key != "url"}
        refused.append(f"remote.url {url!r} refused: its host is not loopback, `--url`'s or an "
                       "`--allow-remote-host` of `dglsp serve`")
    return options, refused


def _allowed_remote(url: str, serve: ServeSettings) -> bool:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS or host in serve.remote_hosts


def _to_lsp_error(exc: DglspError) -> JsonRpcException:
    return JsonRpcException(message=str(exc), code=exc.code)


async def _guarded(server: DglspServer, coro, empty):
    """Answer a request: DglspError -> JSON-RPC error; anything else -> logged, empty result."""
    try:
        return await coro
    except ModelNotReadyError as exc:
        log.warning("%s", exc)
        return empty
    except DglspError as exc:
        raise _to_lsp_error(exc) from exc
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("completion failed")
        return empty
    finally:
        server.show_backend_notices()


def build_server(settings: Settings | None = None, serve: ServeSettings | None = None) -> DglspServer:
    server = DglspServer(settings, serve)

    @server.feature(types.INITIALIZE)
    def initialize(ls: DglspServer, params: types.InitializeParams) -> None:
        adopt_workspace(ls.workspace)  # didChange applied by LSP's line rules (pygls' splitlines drifts)
        text_document = params.capabilities.text_document
        ls.client_has_inline_completion = bool(text_document and text_document.inline_completion)
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: DglspServer, params: types.InitializedParams) -> None:
        await ls.report_load_progress()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: DglspServer, params: types.DidChangeConfigurationParams) -> None:
        options = params.settings
        if isinstance(options, dict) and "dglsp" in options:
            options = options["dglsp"]
        ls.apply_settings(options)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DglspServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.scheduler.document_changed(params.text_document.uri, params.text_document.version)
        for change in params.content_changes:  # remembered for snippets of recently edited code
            if isinstance(change, types.TextDocumentContentChangePartial):
                ls.recent_edits.record(params.text_document.uri, change.range.start.line)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DglspServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.scheduler.forget(params.text_document.uri)  # a (re)opened document counts versions afresh

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DglspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.scheduler.cancel(params.text_document.uri, "document closed")
        ls.scheduler.forget(params.text_document.uri)
        ls.typing_through.forget(params.text_document.uri)
        ls.recent_edits.forget(params.text_document.uri)
        if ls.completer is not None:
            ls.completer.engine.prefix_cache.drop(params.text_document.uri)
            ls.completer.anchors.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DglspServer, params: types.InlineCompletionParams):
        empty = types.InlineCompletionList(items=[])
        # An explicit invocation (the user asked) gets a long draft; typing gets quick ghost text.
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await _guarded(ls, ls.suggest(params.text_document.uri, params.position, draft=invoked), None)
        if found is None:
            return empty
        text, where = found
        # The editor runs the item's command on accept: the server speculates the next suggestion.
        accepted = types.Command(title="dglsp: accepted", command="dglsp.accepted", arguments=[{
            "uri": params.text_document.uri, "position": {"line": where.start.line, "character": where.start.character},
            "text": text}])
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=where,
                                                                            command=accepted)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls: DglspServer, params: types.CompletionParams):
        # Only for clients without inline completion: others would run the model twice per keystroke.
        empty = types.CompletionList(is_incomplete=True, items=[])
        if ls.client_has_inline_completion:
            return empty
        found = await _guarded(ls, ls.suggest(params.text_document.uri, params.position), None)
        if found is None:
            return empty
        text, where = found
        item = types.CompletionItem(
            label=text.strip().split("\n", 1)[0][:80] or text[:80],
            kind=types.CompletionItemKind.Snippet,
            detail="dglsp (block diffusion)",
            text_edit=types.TextEdit(range=where, new_text=text),
            insert_text_format=types.InsertTextFormat.PlainText,
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.command("dglsp.draft")
    async def draft(ls: DglspServer, *args: Any):
        return await _guarded(ls, ls.draft(args), {"applied": False, "text": ""})

    @server.feature("dglsp/status")
    def status(ls: DglspServer, params: Any) -> dict:
        """What editors show in their status line / `:DglspStatus`; answers while the model loads."""
        bundle = ls.completer.bundle if ls.completer is not None else None
        return {
            "model": str(bundle.path) if bundle else ls.settings.engine.model,
            "device": str(bundle.device) if bundle else ls.settings.engine.device,
            "ready": ls.completer is not None,
            "last_latency_ms": ls.last_latency_ms,
            "load_message": ls.load_state.message,
        }

    @server.command("dglsp.accepted")
    async def accepted(ls: DglspServer, *args: Any):
        return await _guarded(ls, _as_coroutine(ls.accepted, args), None)

    @server.command("dglsp.stats")
    async def stats(ls: DglspServer, *args: Any):
        return ls.stats()

    @server.feature("dglsp/documentText")
    def document_text(ls: DglspServer, params: Any) -> dict:
        """Debug only (`dglsp serve --debug-requests`): the server's copy of a document, for sync tests."""
        if not ls.serve.debug_requests:
            raise JsonRpcInvalidRequest("dglsp/documentText needs `dglsp serve --debug-requests`")
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        document = snapshot(ls.workspace, str(uri))
        return {"uri": document.uri, "version": document.version, "text": document.text}

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DglspServer, params: Any) -> None:
        ls.scheduler.cancel_all("shutdown")

    return server
