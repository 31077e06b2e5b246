"""The language server: LSP handlers as thin adapters over `service.CompletionService`.

Handlers read the document, turn the client's position into an offset, call the service,
and build the LSP type (ranges, progress, messages, the draft's edit). Errors cross one
boundary (`_to_lsp_error`): a `DglspError` becomes a JSON-RPC error for a request or a
`window/showMessage` for background work; anything else is logged with its traceback and
answered with an empty result, so the server never dies on a request.

Beyond the standard, for our editor plugins (a client opts in with the capability
`experimental.dglsp.preview`):

* `dglsp/preview` (server -> client, notification): partial text on one channel, `{uri, version, kind
  ("completion" | "draft" | "edit"), range, text, done, reason?, detail?, latency_ms?, passes?}`. The live canvas
  (when `latency.live_canvas` is on) and each committed canvas of a draft arrive with done false; every
  request ends with one done true, carrying the shown text, or "" and why nothing was shown.
* `dglsp/focus` (client -> server, notification): `{textDocument: {uri}, position}` where the cursor went
  (a document entered, a jump): the server prepares the prompt there.
* `dglsp/status` (request): the model's state, the last request's outcome and latency, and how often each
  reason hid a suggestion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast
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
from dglsp.completion.edits import Edit, SuggestionState
from dglsp.completion.outcome import NoSuggestion, Reason
from dglsp.completion.scheduler import Job, Scheduler
from dglsp.completion.service import CompletionService
from dglsp.completion.snapshot import Snapshot
from dglsp.config import ServeSettings, Settings
from dglsp.errors import BackendError, DglspError, InvalidRequestError, ModelNotReadyError
from dglsp.lsp.documents import WorkspaceDocuments, offset_at, position_at, snapshot
from dglsp.lsp.textsync import adopt as adopt_workspace
from dglsp.lsp.textsync import take_changes

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
                # An unreadable id is answered with null, as JSON-RPC says; pygls' annotation leaves out None.
                self._send_response(cast(int | str, msg_id), error=JsonRpcInvalidParams(message).to_response_error())
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
        before = set(self._request_futures)
        super()._run_generator(future, gen=gen, result_future=result_future)
        # The step the generator handed to (a command's coroutine: `dglsp.draft`) runs as a task of its own, which
        # `$/cancelRequest` of the request never reached: a cancelled request now cancels it too.
        for step in [self._request_futures[key] for key in set(self._request_futures) - before]:
            result_future.add_done_callback(lambda done, step=step: step.cancel() if done.cancelled() else None)

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


class DglspServer(LanguageServer):
    """LSP around a `CompletionService`: positions and ranges, progress, messages and edits."""

    def __init__(self, settings: Settings | None = None, serve: ServeSettings | None = None):
        super().__init__("dglsp", __version__, protocol_cls=DglspProtocol)
        settings = settings or Settings()
        self.serve = serve or ServeSettings(allow_remote_code=settings.engine.trust_remote_code)
        self.service = CompletionService(settings, WorkspaceDocuments(lambda: self.workspace), self._log_to_client,
                                         self._on_reload)
        self._load_reported = False  # the first load's outcome has been shown; later loads report themselves
        self.client_has_inline_completion = False
        self.client_takes_previews = False  # the client declared `experimental.dglsp.preview`

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def scheduler(self) -> Scheduler:
        return self.service.scheduler

    def start_loading(self) -> Future:
        return self.service.start_loading()

    # -- model lifecycle, as the client sees it --------------------------------------------------
    def _on_reload(self, future: Future) -> None:
        if self._load_reported:  # otherwise the first load's report (report_load_progress) follows this one
            asyncio.ensure_future(self._report_reload(future))

    async def _report_reload(self, future: Future) -> None:
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error,
                                                             f"dglsp: model failed to load: {exc}"))
            return
        message = self.service.load_state.message
        self.window_show_message(types.ShowMessageParams(types.MessageType.Info, f"dglsp: {message}"))

    async def report_load_progress(self) -> None:
        """Mirror model loading to the client as work-done progress (if it supports it)."""
        future = self.service.load_future
        if future is None:
            return
        token = "dglsp/load-model"
        use_progress = await self._begin_progress(token, "dglsp: loading model", percentage=0)
        last = None
        while not future.done():
            state = self.service.load_state
            if use_progress and state != last:
                last = state
                self.work_done_progress.report(
                    token, types.WorkDoneProgressReport(message=state.message, percentage=state.percent))
            await asyncio.sleep(0.1)
        error = future.exception()
        message = self.service.load_state.message if error is None else f"model failed to load: {error}"
        if use_progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        if error is not None:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"dglsp: {message}"))
        self.window_log_message(types.LogMessageParams(types.MessageType.Info, f"dglsp: {message}"))
        self._load_reported = True
        self.show_backend_notices()

    def show_backend_notices(self) -> None:
        """A remote backend's changes of state (server down, key refused, back again), shown once each."""
        for level, message in self.service.take_notices():
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
        settings, warnings = self.settings.updated(options)
        self.service.update_settings(settings)
        for warning in refused + warnings:
            log.warning("settings: %s", warning)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"dglsp settings: {warning}"))

    # -- completion ---------------------------------------------------------------------------
    async def suggest(
        self,
        uri: str,
        position: types.Position,
        draft: bool = False,
        on_commit: Callable[[str], None] | None = None,
        job: Job | None = None,
    ) -> tuple[str, types.Range] | None:
        """The suggestion at `position` and the range it replaces (empty, or auto-closed brackets it types over);
        None when nothing is shown, the reason having gone to the client as the preview's end."""
        document = snapshot(self.workspace, uri)
        offset = offset_at(document.text, position, self.workspace.position_encoding)
        kind = "draft" if draft else "completion"
        preview = self._preview(document, kind)
        live = self.settings.latency.live_canvas and not draft

        def committed(text: str) -> None:  # the draft so far
            preview(Edit(offset, offset, text), False)
            if on_commit is not None:
                on_commit(text)

        def step(passes: int, text: str) -> None:  # the live canvas
            preview(Edit(offset, offset, text), False, passes=passes)

        try:
            found = await self.service.suggest(document, offset, draft=draft, on_commit=committed if draft else None,
                                               job=job, on_step=step if live else None)
        except asyncio.CancelledError:  # `$/cancelRequest`: the preview still ends, saying so
            preview(Edit(offset, offset, ""), True, NoSuggestion(Reason.CANCELLED, "by the client"))
            raise
        latency = self.service.last_outcome["latency_ms"] if self.service.last_outcome else None
        if isinstance(found, NoSuggestion):
            preview(Edit(offset, offset, ""), True, found, latency)
            return None
        preview(found, True, None, latency)
        return found.text, self.range_of(document.text, found)

    def range_of(self, text: str, edit: Edit) -> types.Range:
        encoding = self.workspace.position_encoding
        return types.Range(position_at(text, edit.start, encoding), position_at(text, edit.end, encoding))

    def _preview(self, document: Snapshot, kind: str) -> Callable[..., None]:
        """`dglsp/preview` notifications for one request, sendable from the worker thread; a no-op for clients
        that did not ask for them."""
        if not self.client_takes_previews:
            return lambda *args: None
        loop = asyncio.get_running_loop()

        def send(edit: Edit, done: bool, hidden: NoSuggestion | None = None, latency_ms: float | None = None,
                 passes: int | None = None) -> None:
            params: dict[str, Any] = {"uri": document.uri, "version": document.version, "kind": kind,
                                      "range": self.protocol._converter.unstructure(self.range_of(document.text, edit)),
                                      "text": edit.text, "done": done}
            if hidden is not None:
                params.update(reason=hidden.reason.value, detail=hidden.detail)
            if latency_ms is not None:
                params["latency_ms"] = latency_ms
            if passes is not None:  # the live canvas: forward passes spent so far
                params["passes"] = passes
            loop.call_soon_threadsafe(self.protocol.notify, "dglsp/preview", params)

        return send

    async def next_edit(self, params: Any) -> dict:
        """`textDocument/copilotInlineEdit`: the next edit in the shape Copilot's language server answers it, so
        clients written for it (copilot-lsp, sidekick.nvim) work unchanged: `{edits: [{range, text, textDocument:
        {uri, version}, command}]}`, empty when there is none (and the preview's end says why)."""
        plain = _plain(params)
        try:
            uri, position = _draft_target((plain,))
            version = plain["textDocument"].get("version")
        except (InvalidRequestError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError("textDocument/copilotInlineEdit takes {textDocument: {uri, version}, "
                                      "position}") from exc
        document = snapshot(self.workspace, uri)
        if isinstance(version, int) and version != document.version:
            return {"edits": []}  # the client asked about a version that is gone: typing moved on
        offset = offset_at(document.text, position, self.workspace.position_encoding)
        started = time.perf_counter()
        found = await self.service.next_edit(document, offset)
        preview = self._preview(document, "edit")
        latency = round((time.perf_counter() - started) * 1000, 1)  # this edit's own time, not the last completion's
        if isinstance(found, NoSuggestion):
            preview(Edit(offset, offset, ""), True, found, latency)
            return {"edits": []}
        preview(found, True, None, latency)
        where = self.protocol._converter.unstructure(self.range_of(document.text, found))
        noted = {"uri": uri, "version": document.version, "range": where, "text": found.text,
                 "start": found.start, "end": found.end}
        accepted = {"title": "dglsp: edit accepted", "command": "dglsp.editAccepted", "arguments": [noted]}
        return {"edits": [{"range": where, "text": found.text,
                           "textDocument": {"uri": uri, "version": document.version}, "command": accepted}]}

    def edit_noted(self, params: Any, state: SuggestionState) -> None:
        """`textDocument/didShowInlineEdit` ({item: {command}}) and `dglsp.editAccepted`: the history notes it."""
        plain = _plain(params)
        item = plain.get("item", plain) if isinstance(plain, dict) else {}
        command = item.get("command") if isinstance(item, dict) else None
        arguments = command.get("arguments") if isinstance(command, dict) else None
        noted = arguments[0] if isinstance(arguments, list) and arguments else item
        try:
            edit = Edit(int(noted["start"]), int(noted["end"]), str(noted["text"]))
            self.service.edit_noted(str(noted["uri"]), edit, state)
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            log.debug("a next edit's %s note without its edit: %s", state, exc)

    def accepted(self, args: tuple) -> None:
        """`dglsp.accepted` (the item's command, run by the editor on accept): noted, and the next suggestion
        computed ahead."""
        uri, position = _draft_target(args[:1] if len(args) == 1 else args[:2])
        spec = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        text = spec.get("text") if isinstance(spec.get("text"), str) else (args[2] if len(args) > 2 else "")
        if not isinstance(text, str) or not text:
            raise InvalidRequestError("dglsp.accepted takes {uri, position, text}")
        try:
            document = snapshot(self.workspace, uri)
            offset = offset_at(document.text, position, self.workspace.position_encoding)
        except DglspError as exc:  # closed or edited away since: nothing to compute ahead
            log.debug("prefetch dropped: %s", exc)
            return
        self.service.accepted(document, offset, text)

    async def draft(self, args: tuple) -> dict:
        """`dglsp.draft`: draft at a position, stream committed canvases as `dglsp/preview` (a summary of each
        as `$/progress`, with a cancel button), then apply the whole draft as one `workspace/applyEdit` (one undo
        step) on the document version it was drafted for. Cancelled (by `$/cancelRequest`, the progress cancel
        button, or an edit) -> nothing applied.
        With `"apply": false` in the argument the draft is only returned (with its range): clients that
        show it as ghost text for the user to accept (the Neovim plugin) apply it themselves."""
        uri, position = _draft_target(args)
        apply = not (len(args) == 1 and isinstance(args[0], dict) and args[0].get("apply") is False)
        version = snapshot(self.workspace, uri).version
        token = f"dglsp/draft/{self.service.new_request_id()}"
        loop = asyncio.get_running_loop()
        reporting = await self._begin_progress(token, "dglsp: drafting", cancellable=True)
        cancel_button = self.work_done_progress.tokens.get(token) if reporting else None
        job = self.service.new_draft_job(uri, version)

        def on_cancel_button(_: object) -> None:
            job.cancel(Reason.CANCELLED, "by the user")

        if cancel_button is not None:
            cancel_button.add_done_callback(on_cancel_button)

        def on_commit(text: str) -> None:
            if reporting:
                report = types.WorkDoneProgressReport(message=progress_summary(text))
                loop.call_soon_threadsafe(self.work_done_progress.report, token, report)

        try:
            found = await self.suggest(uri, position, draft=True, on_commit=on_commit, job=job)
        finally:
            if reporting:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
        if found is None or job.stop.is_set():
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

    async def _begin_progress(self, token: str, title: str, cancellable: bool = False,
                              percentage: int | None = None) -> bool:
        """Start server-initiated work-done progress if the client supports it."""
        capabilities = self.protocol.client_capabilities
        window = capabilities.window if capabilities else None
        if not (window and window.work_done_progress):
            return False
        await self.work_done_progress.create_async(token)
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable,
                                                                         percentage=percentage))
        return True

    def _log_to_client(self, line: str) -> None:
        self.window_log_message(types.LogMessageParams(types.MessageType.Log, line))


def progress_summary(draft_so_far: str, max_lines: int = 2) -> str:
    """A draft's progress in a line or two: the count of lines so far and its last non-empty lines."""
    lines = draft_so_far.split("\n")
    shown = [line.strip() for line in lines if line.strip()][-max_lines:]
    return f"{len(lines)} line{'s' * (len(lines) != 1)}: {' ⏎ '.join(shown)}"


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


def _plain(params: Any) -> Any:
    """pygls hands a custom method's params as named tuples (`Object`): back to plain JSON."""
    if hasattr(params, "_asdict"):
        return {key: _plain(value) for key, value in params._asdict().items()}
    if isinstance(params, dict):
        return {key: _plain(value) for key, value in params.items()}
    if isinstance(params, list):
        return [_plain(value) for value in params]
    return params


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
    """Answer a request: DglspError -> JSON-RPC error; anything else -> logged, empty result. A model that is not
    ready and a backend that is down answer empty: the user hears of them once (`window/showMessage`), and the
    editor's status line says why nothing shows."""
    try:
        return await coro
    except (ModelNotReadyError, BackendError) as exc:
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
        experimental = params.capabilities.experimental
        ours = experimental.get("dglsp") if isinstance(experimental, dict) else None
        ls.client_takes_previews = isinstance(ours, dict) and ours.get("preview") is True
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
        uri, version = params.text_document.uri, params.text_document.version
        ls.service.document_changed(uri, version, take_changes(ls.workspace, uri, version))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DglspServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.service.document_opened(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DglspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.service.document_closed(params.text_document.uri)

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
        return ls.service.status()

    @server.feature("textDocument/copilotInlineEdit")
    async def copilot_inline_edit(ls: DglspServer, params: Any):
        return await _guarded(ls, ls.next_edit(params), {"edits": []})

    @server.feature("textDocument/didShowInlineEdit")
    def did_show_inline_edit(ls: DglspServer, params: Any) -> None:
        ls.edit_noted(params, "shown")

    @server.command("dglsp.editAccepted")
    async def edit_accepted(ls: DglspServer, *args: Any):
        return await _guarded(ls, _as_coroutine(ls.edit_noted, args[0] if args else {}, "accepted"), None)

    @server.feature("dglsp/focus")
    def focus(ls: DglspServer, params: Any) -> None:
        """Where the editor's cursor went; malformed or stale notifications are dropped (nothing to answer)."""
        try:
            uri, position = _draft_target((_plain(params),))
            document = snapshot(ls.workspace, uri)
            offset = offset_at(document.text, position, ls.workspace.position_encoding)
        except DglspError as exc:
            log.debug("dglsp/focus dropped: %s", exc)
            return
        ls.service.focus(document, offset)

    @server.feature("textDocument/didFocus")
    def did_focus(ls: DglspServer, params: Any) -> None:
        """Copilot's notification (sidekick.nvim sends it): a document took focus. It names no cursor."""
        plain = _plain(params)
        try:
            document = snapshot(ls.workspace, str(plain["textDocument"]["uri"]))
        except (DglspError, KeyError, TypeError) as exc:
            log.debug("textDocument/didFocus dropped: %s", exc)
            return
        ls.service.focus_document(document)

    @server.command("dglsp.accepted")
    async def accepted(ls: DglspServer, *args: Any):
        return await _guarded(ls, _as_coroutine(ls.accepted, args), None)

    @server.command("dglsp.stats")
    async def stats(ls: DglspServer, *args: Any):
        return ls.service.stats()

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
        ls.service.scheduler.cancel_all(Reason.SHUTDOWN)

    return server
