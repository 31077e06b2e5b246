"""The language server: LSP handlers as thin adapters over the pipeline.

Handlers fetch the document, call the completer through the scheduler, and build the
LSP type. Errors cross one boundary (`_to_lsp_error`): a `DglspError` becomes a
JSON-RPC error for a request or a `window/showMessage` for background work;
anything else is logged with its traceback and answered with an empty result, so the
server never dies on a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from dglsp import __version__
from dglsp.completer import Completer
from dglsp.config import SamplerSettings, Settings
from dglsp.documents import offset_at, snapshot
from dglsp.engine import Engine, load_bundle
from dglsp.errors import DglspError, InvalidRequestError, ModelNotReadyError
from dglsp.scheduler import Cancelled, Scheduler

log = logging.getLogger(__name__)

_UNANSWERABLE = object()  # a message that failed to deserialize and has already been answered


class DglspProtocol(LanguageServerProtocol):
    """pygls answers nothing when a request's params fail to deserialize; clients would wait forever."""

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and "id" in data:
                msg_id = data["id"] if isinstance(data["id"], (int, str)) else None
                message = f"invalid params for {data.get('method')!r}: {exc.message or 'cannot deserialize'}"
                self._send_response(msg_id, error=JsonRpcInvalidParams(message).to_response_error())
            return _UNANSWERABLE

    def handle_message(self, message):
        if message is _UNANSWERABLE:
            return
        if not hasattr(message, "jsonrpc"):
            log.warning("ignoring a message that is not a JSON-RPC object: %.200r", message)
            return
        super().handle_message(message)


@dataclass
class LoadState:
    message: str = "starting"
    percent: int = 0


class DglspServer(LanguageServer):
    def __init__(self, settings: Settings | None = None):
        super().__init__("dglsp", __version__, protocol_cls=DglspProtocol)
        self.settings = settings or Settings()
        self.scheduler = Scheduler(self.settings.scheduler.debounce_ms)
        self.completer: Completer | None = None
        self.load_state = LoadState()
        self.load_future: Future | None = None
        self.client_has_inline_completion = False
        self.last_latency_ms: float | None = None
        self._request_ids = itertools.count(1)

    # -- model lifecycle -------------------------------------------------------------------
    def start_loading(self) -> Future:
        """Load the model on the device worker (so it lives on that thread), without blocking the loop."""
        self.load_future = self.scheduler._executor.submit(self._load)
        return self.load_future

    def _load(self) -> Completer:
        def progress(message: str, percent: int) -> None:
            self.load_state = LoadState(message, percent)
            log.info("model: %s (%d%%)", message, percent)

        begin = time.perf_counter()
        bundle = load_bundle(self.settings.engine, progress)
        engine = Engine(bundle)
        completer = Completer(bundle, engine)
        if self.settings.engine.warmup:
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
        try:
            return await asyncio.wrap_future(self.load_future)
        except DglspError:
            raise
        except Exception as exc:
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

    # -- settings -----------------------------------------------------------------------------
    def apply_settings(self, options: Any) -> None:
        self.settings, warnings = self.settings.updated(options)
        self.scheduler.debounce_ms = self.settings.scheduler.debounce_ms
        for warning in warnings:
            log.warning("settings: %s", warning)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"dglsp settings: {warning}"))

    # -- completion ---------------------------------------------------------------------------
    async def suggest(
        self, uri: str, position: types.Position, draft: bool = False, on_commit: Callable[[str], None] | None = None
    ) -> tuple[str, types.Range] | None:
        """The suggestion at `position`, or None when there is nothing to show.

        `draft=True` is an explicit long draft (canvas after canvas, see `Completer.complete`); it
        runs under its own scheduler key so that automatic requests do not supersede it.
        """
        request_id = next(self._request_ids)
        document = snapshot(self.workspace, uri)
        offset = offset_at(document.text, position, self.workspace.position_encoding)
        completer = await self.ready_completer()
        settings = self.settings
        context = completer.context_at(document.text, offset, settings, document.path, document.language_id)
        try:
            suggestion = await self.scheduler.submit(
                f"{uri}#draft" if draft else uri,
                document.version,
                lambda job: completer.complete(context, settings, job.should_stop, draft=draft, on_commit=on_commit),
            )
        except Cancelled as exc:
            self._log_request(request_id, uri, f"cancelled ({exc})")
            return None
        self.last_latency_ms = suggestion.total_ms
        shown = "empty" if suggestion.text is None else f"{len(suggestion.text)} chars"
        self._log_request(request_id, uri, f"{shown}; {suggestion.timings()}")
        if suggestion.text is None:
            return None
        return suggestion.text, types.Range(position, position)

    async def draft(self, args: tuple) -> dict:
        """`dglsp.draft`: draft at a position, stream committed canvases as `$/progress`, then apply the
        whole draft as one `workspace/applyEdit` (one undo step) on the document version it was drafted
        for. Cancelled (by `$/cancelRequest`, the progress cancel button, or an edit) -> nothing applied."""
        uri, position = _draft_target(args)
        version = snapshot(self.workspace, uri).version
        token = f"dglsp/draft/{next(self._request_ids)}"
        loop = asyncio.get_running_loop()
        reporting = await self._begin_progress(token, "dglsp: drafting", cancellable=True)
        cancel_button = self.work_done_progress.tokens.get(token) if reporting else None
        if cancel_button is not None:
            cancel_button.add_done_callback(lambda _: self.scheduler.cancel(f"{uri}#draft", "cancelled by the user"))

        def on_commit(text: str) -> None:
            if reporting:
                report = types.WorkDoneProgressReport(message=text[-2000:])
                loop.call_soon_threadsafe(self.work_done_progress.report, token, report)

        try:
            found = await self.suggest(uri, position, draft=True, on_commit=on_commit)
        finally:
            if reporting:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
        if found is None or (cancel_button is not None and cancel_button.cancelled()):
            return {"applied": False, "text": ""}
        text, where = found
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


def build_server(settings: Settings | None = None) -> DglspServer:
    server = DglspServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: DglspServer, params: types.InitializeParams) -> None:
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

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DglspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.scheduler.cancel(params.text_document.uri, "document closed")

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DglspServer, params: types.InlineCompletionParams):
        empty = types.InlineCompletionList(items=[])
        # An explicit invocation (the user asked) gets a long draft; typing gets quick ghost text.
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await _guarded(ls, ls.suggest(params.text_document.uri, params.position, draft=invoked), None)
        if found is None:
            return empty
        text, where = found
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=where)])

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

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DglspServer, params: Any) -> None:
        ls.scheduler.cancel_all("shutdown")

    return server
