"""Work done ahead, at background priority: the next suggestion after an accept, and a document's prompt.

* `accepted`: the user took a suggestion; the one after it is computed now and waits in the
  typing-through cache, so the next keystroke's request is answered without the model.
* `focus`: the editor says where its cursor is (a document entered, the cursor jumped). The prompt at
  that cursor is encoded into the document's prefix KV cache, so the first keystroke there re-encodes
  only what it typed (the prompt puts the prefix last: typing at the cursor only appends to it).

Both run as background jobs: any request the user waits for stops them, and they never make a
request wait (they run at the lowest priority on the device worker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dglsp.completion.completer import Completer
from dglsp.completion.metrics import LatencyMetrics
from dglsp.completion.prompt import CursorContext, PromptBuilder
from dglsp.completion.scheduler import Cancelled, JobKey, JobKind, Scheduler
from dglsp.completion.snapshot import Snapshot
from dglsp.completion.typing_through import TypingThroughCache, after_acceptance, context_key
from dglsp.config import Settings
from dglsp.errors import DglspError

log = logging.getLogger(__name__)
# (completer, document, its text (perhaps with an accepted suggestion), cursor offset, settings) -> the context
ContextFn = Callable[[Completer, Snapshot, str, int, Settings], CursorContext]


class Prefetcher:
    def __init__(self, scheduler: Scheduler, ready: Callable[[], Awaitable[Completer]],
                 settings: Callable[[], Settings], context: ContextFn, typing_through: TypingThroughCache,
                 metrics: LatencyMetrics):
        self.scheduler, self._ready, self._settings, self._context = scheduler, ready, settings, context
        self.typing_through, self.metrics = typing_through, metrics
        self._tasks: set[asyncio.Task] = set()  # strong references until they finish
        self._pending: dict[str, tuple[tuple, asyncio.Task]] = {}  # uri -> (context key, task) of a prefetch

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- after an accept --------------------------------------------------------------------------
    def accepted(self, document: Snapshot, offset: int, text: str) -> None:
        """The user accepted `text` at `offset`: compute the suggestion after it, in the background."""
        if self._settings().latency.prefetch:
            self._spawn(self._prefetch(document, offset, text))

    async def wait_for(self, document: Snapshot, offset: int) -> None:
        """If a prefetch is computing exactly this request, wait for it instead of redoing it."""
        pending = self._pending.get(document.uri)
        if pending is not None and pending[0] == context_key(document.uri, document.text, offset):
            await asyncio.shield(pending[1])

    async def _prefetch(self, document: Snapshot, offset: int, accepted: str) -> None:
        uri = document.uri
        try:
            text, offset = after_acceptance(document.text, offset, accepted)
            if self.typing_through.peek(uri, text, offset) is not None:
                return  # a real request already answered there (the editor asked before running the command)
            task = asyncio.current_task()
            if task is not None:
                self._pending[uri] = (context_key(uri, text, offset), task)
            completer = await self._ready()
            settings = self._settings()
            context = self._context(completer, document, text, offset, settings)

            def work(job):
                suggestion = completer.complete(context, settings, job.should_stop, cache_key=uri)
                self.metrics.count_run(suggestion.stats.forward_passes, "prefetch")
                return suggestion

            self.metrics.prefetch_runs += 1
            suggestion = await self.scheduler.submit(JobKey(uri, JobKind.PREFETCH), document.version, work)
        except (Cancelled, DglspError) as exc:
            log.debug("prefetch dropped: %s", exc)
            return
        except Exception:
            log.exception("prefetch failed")
            return
        finally:
            if self._pending.get(uri, (None, None))[1] is asyncio.current_task():
                del self._pending[uri]
        if suggestion.text is not None:
            self.typing_through.remember(uri, text, offset, suggestion.text)
        log.info("prefetched the next suggestion for %s: %s", uri.rsplit("/", 1)[-1], suggestion.timings())

    # -- where the cursor is ----------------------------------------------------------------------
    def focus(self, document: Snapshot, offset: int) -> None:
        """The editor's cursor is at `offset` of `document`: encode the prompt there ahead of the first keystroke."""
        if self._settings().latency.prefill_on_focus:
            self._spawn(self._prefill(document, offset))

    async def _prefill(self, document: Snapshot, offset: int) -> None:
        try:
            completer = await self._ready()
            settings = self._settings()
            context = self._context(completer, document, document.text, offset, settings)
            ids = PromptBuilder(completer.tokenizer, completer.format, settings.context).build(context).ids

            def work(job) -> int:
                return completer.backend.prefill(ids, document.uri, job.should_stop)

            encoded = await self.scheduler.submit(JobKey(document.uri, JobKind.PREFILL), document.version, work)
            self.metrics.prefill_tokens += encoded
        except (Cancelled, DglspError) as exc:
            log.debug("prefill dropped: %s", exc)
        except Exception:
            log.exception("prefill failed")

    def forget(self, uri: str) -> None:
        self._pending.pop(uri, None)
