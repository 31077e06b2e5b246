"""The model's lifecycle as the service sees it: load on the device worker, reload, and the state to report.

The model loads on the scheduler's worker thread (so it lives on that thread), without blocking the
event loop; requests that arrive meanwhile wait for it. A load that failed is reported once (by the
server) and retried when the model directory changes on disk or the engine settings change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from dglsp.completion.completer import Completer
from dglsp.completion.scheduler import Scheduler
from dglsp.config import Settings
from dglsp.errors import ModelNotReadyError
from dglsp.model.loading import load_backend, warm_up
from dglsp.model.modelcheck import fingerprint

log = logging.getLogger(__name__)


@dataclass
class LoadState:
    message: str = "starting"
    percent: int = 0


class ModelLifecycle:
    def __init__(self, scheduler: Scheduler, settings: Callable[[], Settings],
                 on_reload: Callable[[Future], None] = lambda future: None):
        self.scheduler = scheduler
        self._settings = settings  # the service's current settings (they change while the model loads)
        self._on_reload = on_reload
        self.completer: Completer | None = None
        self.state = LoadState()
        self.future: Future | None = None
        self._fingerprint: tuple | None = None  # the model directory as the last load saw it

    def start(self) -> Future:
        """Load the model on the device worker, without blocking the loop."""
        self._fingerprint = fingerprint(self._settings().engine.model)
        self.future = self.scheduler.run_on_worker(self._load)
        return self.future

    def reload(self, reason: str) -> Future:
        """Load the model again (settings changed, or a broken directory was fixed); `on_reload` reports it."""
        log.info("reloading the model: %s", reason)
        if self.completer is not None:
            self.completer.backend.close()  # a remote backend ends its HTTP connections and loop thread
        self.completer = None  # let the old model go before the new one loads
        future = self.start()
        self._on_reload(future)
        return future

    @property
    def failed(self) -> bool:
        return self.future is not None and self.future.done() and self.future.exception() is not None

    def _failed_model_changed(self) -> bool:
        """The last load failed and the model directory has changed on disk since: worth another try."""
        return self.failed and fingerprint(self._settings().engine.model) != self._fingerprint

    def _load(self) -> Completer:
        def progress(message: str, percent: int) -> None:
            self.state = LoadState(message, percent)
            log.info("model: %s (%d%%)", message, percent)

        begin = time.perf_counter()
        settings = self._settings()
        bundle, backend = load_backend(settings, progress)  # a remote backend's server check is its warm-up
        completer = Completer(bundle, backend)
        if settings.engine.warmup:
            progress("warming up", 90)
            warm_up(backend, bundle, settings)
        self.completer = completer
        # Settings the editor sent while the model loaded (the server starts loading before `initialize`).
        now = self._settings()
        backend.apply_latency(now.latency, now.context.prompt_tokens)
        progress(f"ready: {bundle.path.name} on {bundle.device} in {time.perf_counter() - begin:.1f} s", 100)
        return completer

    async def ready(self) -> Completer:
        """The completer, once loaded (waiting for a load in progress); `ModelNotReadyError` if it failed."""
        if self.future is None:
            raise ModelNotReadyError("the model is not loaded")
        if self._failed_model_changed():
            self.reload("the model directory changed since the failed load")
        try:
            return await asyncio.wrap_future(self.future)
        except ModelNotReadyError:
            raise
        except Exception as exc:  # ModelLoadError included: it was shown once; requests answer empty meanwhile
            raise ModelNotReadyError(f"the model failed to load: {exc}") from exc
