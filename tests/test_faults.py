"""Faults: broken model directories, out-of-memory, a dying worker thread, the client vanishing, SIGTERM.

Each fault is injected for real: files are truncated or rewritten on disk, `torch.OutOfMemoryError`
is raised from a forward pre-hook on the real tiny model (torch's own extension point), the worker
thread is killed by a job that raises `SystemExit`, and the server process gets its stdin closed
or a SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from lsp_raw import QUICK_SAMPLER, RawServer
from safetensors.torch import load_file, save_file

from dglsp.completion.completer import Completer
from dglsp.completion.scheduler import Cancelled, JobKey, Scheduler, WorkerCrashed
from dglsp.config import EngineSettings, SamplerSettings, ServeSettings, Settings
from dglsp.errors import DeviceOutOfMemoryError, ModelLoadError
from dglsp.lsp.server import _client_options
from dglsp.model.loading import load_engine

SOURCE = "def add(a, b):\n    return \n"
URI = "file:///faults/add.py"
# A schedule that cannot converge on random weights: the generation runs until it is stopped.
SLOW = {"sampler": {"canvas_length": 64, "max_steps": 512, "max_canvases": 8, "confidence_threshold": 1e-9}}


# -- broken model directories ---------------------------------------------------------------------
def _truncate(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _wrong_architecture(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (model / "config.json").write_text(json.dumps(config))


def _integer_weights(model: Path) -> None:
    tensors = {name: (t * 100).to(torch.int8) for name, t in load_file(model / "model.safetensors").items()}
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})


def _corrupt_header(model: Path) -> None:
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"#" * 32
    weights.write_bytes(bytes(data))


def _pickle_only(model: Path) -> None:
    (model / "model.safetensors").rename(model / "pytorch_model.bin")


FAULTS = {
    # fault: (how to break the directory, words the message must contain)
    "missing tokenizer": (lambda m: (m / "tokenizer.json").unlink(), ["tokenizer.json", "missing"]),
    "missing config": (lambda m: (m / "config.json").unlink(), ["config.json", "missing"]),
    "truncated weights": (_truncate, ["model.safetensors", "truncated", "fetch the file again"]),
    "corrupt header": (_corrupt_header, ["model.safetensors", "corrupt header"]),
    "wrong architecture": (_wrong_architecture, ["llama", "diffusion_gemma", "--model"]),
    "integer weights": (_integer_weights, ["I8", "float32", "unquantized"]),
    "pickle weights only": (_pickle_only, ["safetensors", ".bin", "refused"]),
    "bad config json": (lambda m: (m / "config.json").write_text('{"model_type": '), ["config.json", "not valid JSON"]),
}


def broken_copy(model_dir: Path, tmp_path: Path, fault: str) -> Path:
    broken = tmp_path / f"broken-{fault.replace(' ', '-')}"
    shutil.copytree(model_dir, broken)
    FAULTS[fault][0](broken)
    return broken


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_model_directory_is_named_with_its_fix(tiny_model_dir, tmp_path, fault):
    broken = broken_copy(tiny_model_dir, tmp_path, fault)
    with pytest.raises(ModelLoadError) as caught:
        load_engine(EngineSettings(model=str(broken), warmup=False))
    for word in FAULTS[fault][1]:
        assert word in str(caught.value), f"{fault}: {word!r} not in {caught.value}"


def test_trust_remote_code_is_off_by_default():
    assert EngineSettings().trust_remote_code is False


def test_client_settings_name_only_allowed_remote_hosts():
    serve = ServeSettings(remote_hosts=frozenset({"gpu-box"}))
    for url, allowed in (("http://127.0.0.1:8000", True), ("http://localhost/v1", True), ("http://[::1]:8000", True),
                         ("http://GPU-box:8000/openai/v1", True), ("https://collector.example/v1", False),
                         ("http://gpu-box.collector.example:8000", False), ("http://[bad", False)):
        options, refused = _client_options({"remote": {"url": url, "model": "m"}, "token": "t"}, serve)
        assert "token" not in options and options["remote"]["model"] == "m"
        assert ("url" in options["remote"]) is allowed and bool(refused) is not allowed, url


# -- out of memory during a generation -------------------------------------------------------------
@pytest.fixture(scope="module")
def completer(tiny_model_dir) -> Completer:
    return Completer(*load_engine(EngineSettings(model=str(tiny_model_dir), warmup=False)))


@contextlib.contextmanager
def out_of_memory_in_the_decoder(engine, canvases: list[int], fail_at_or_above: int):
    """Raise CUDA's out-of-memory error from every decoder step (transformers' or the lean one) over a canvas this
    long or longer; record each step's canvas length."""
    step = engine.decoder_logits

    def failing(cache, canvas, *args, **kwargs):
        canvases.append(canvas.shape[1])
        if canvas.shape[1] >= fail_at_or_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return step(cache, canvas, *args, **kwargs)

    engine.decoder_logits = failing
    try:
        yield
    finally:
        del engine.decoder_logits  # the class's method again


def test_out_of_memory_retries_with_a_smaller_canvas(completer):
    settings = Settings(sampler=SamplerSettings(canvas_length=16, max_steps=2, seed=0))
    context = completer.context_at(SOURCE, SOURCE.index("return ") + 7, settings)
    canvases: list[int] = []
    with out_of_memory_in_the_decoder(completer.backend, canvases, 16):
        suggestion = completer.complete(context, settings)
    assert canvases[0] == 16 and set(canvases[1:]) == {8}, canvases
    assert suggestion.stats.steps >= 1 and not suggestion.stats.stopped


def test_out_of_memory_at_every_size_is_reported_and_the_worker_lives_on(completer):
    settings = Settings(sampler=SamplerSettings(canvas_length=16, max_steps=2, seed=0))
    context = completer.context_at(SOURCE, SOURCE.index("return ") + 7, settings)
    scheduler = Scheduler()
    canvases: list[int] = []

    async def run() -> None:
        with out_of_memory_in_the_decoder(completer.backend, canvases, 1), \
                pytest.raises(DeviceOutOfMemoryError, match="out of memory.*canvas_length"):
            await scheduler.submit(JobKey("doc"), 1, lambda job: completer.complete(context, settings, job.should_stop))
        worker = scheduler._executor.thread
        suggestion = await scheduler.submit(JobKey("doc"), 2, lambda job: completer.complete(context, settings))
        assert suggestion.stats.steps >= 1
        assert scheduler._executor.thread is worker and scheduler._executor.restarts == 0

    try:
        asyncio.run(run())
    finally:
        scheduler.shutdown()
    assert canvases == [16, 8, 4], canvases


# -- the worker thread ---------------------------------------------------------------------------
async def test_a_crashed_worker_thread_is_restarted_and_queued_jobs_still_run():
    scheduler = Scheduler()
    release = threading.Event()

    def crash(job):
        release.wait(5)
        raise SystemExit("injected: the worker thread dies")

    crashed = asyncio.ensure_future(scheduler.submit(JobKey("a"), 1, crash))
    queued = asyncio.ensure_future(scheduler.submit(JobKey("b"), 1, lambda job: threading.current_thread().name))
    await asyncio.sleep(0.1)
    first_thread = scheduler._executor.thread
    release.set()
    with pytest.raises(WorkerCrashed):
        await crashed
    assert await asyncio.wait_for(queued, 10) != first_thread.name  # ran on the replacement thread
    first_thread.join(5)
    assert scheduler._executor.restarts == 1 and not first_thread.is_alive()
    assert await scheduler.submit(JobKey("c"), 1, lambda job: 42) == 42
    scheduler.shutdown()


# -- the server with a broken model ----------------------------------------------------------------
def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def shown(server: RawServer, kind: int | None = None) -> list[str]:
    return [m["params"]["message"] for m in server.messages("window/showMessage")
            if kind is None or m["params"]["type"] == kind]


@pytest.mark.e2e
def test_server_with_a_broken_model_reports_it_serves_empty_and_recovers(tiny_model_dir, tmp_path):
    broken = broken_copy(tiny_model_dir, tmp_path, "truncated weights")
    server = RawServer(broken, stderr_path=tmp_path / "stderr.log")
    try:
        server.initialize({"sampler": QUICK_SAMPLER, "engine": {"trust_remote_code": True},
                           "remote": {"url": "http://collector.example:8000/v1"}})
        errors = wait_for(lambda: shown(server, 1))
        assert "truncated" in errors[0] and "fetch the file again" in errors[0]
        assert any("trust_remote_code refused" in m for m in shown(server, 2))
        assert any("collector.example" in m and "refused" in m for m in shown(server, 2))
        server.open(URI, SOURCE)
        assert server.inline(URI, 1, 11)["result"] == {"items": []}
        assert server.request("dglsp/status")["result"]["ready"] is False

        # Fixed on disk: the next request notices and loads it.
        shutil.copy(tiny_model_dir / "model.safetensors", broken / "model.safetensors")
        wait_for(lambda: server.inline(URI, 1, 11) and server.request("dglsp/status")["result"]["ready"])

        # Pointed at another broken directory by a settings change: reported, then pointed back: recovered.
        wrong = broken_copy(tiny_model_dir, tmp_path, "wrong architecture")
        server.notify("workspace/didChangeConfiguration", {"settings": {"dglsp": {"engine": {"model": str(wrong)}}}})
        assert "llama" in wait_for(lambda: [m for m in shown(server, 1) if "llama" in m])[0]
        assert "result" in server.inline(URI, 1, 11)  # answered (from a cache, or empty), never an error
        assert server.request("dglsp/status")["result"]["ready"] is False
        readies = len([m for m in shown(server, 3) if "ready" in m])
        server.notify("workspace/didChangeConfiguration", {"settings": {"engine": {"model": str(tiny_model_dir)}}})
        wait_for(lambda: len([m for m in shown(server, 3) if "ready" in m]) > readies)
        assert server.request("dglsp/status")["result"]["ready"] is True
        assert server.process.poll() is None
    finally:
        assert server.shutdown() == 0


# -- the client going away -----------------------------------------------------------------------
def children_of(pid: int) -> list[str]:
    found: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += (task / "children").read_text().split()
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("ending", ["stdin closed", "SIGTERM"])
def test_client_disappearing_or_sigterm_exits_cleanly_mid_generation(tiny_model_dir, tmp_path, ending):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    server.initialize(SLOW)
    server.open(URI, SOURCE)
    server.send_request("textDocument/inlineCompletion", {"textDocument": {"uri": URI},
                                                          "position": {"line": 1, "character": 11},
                                                          "context": {"triggerKind": 2}})
    wait_for(lambda: "prefill" in server.stderr_text() or server.threads() > 3, timeout=30)
    time.sleep(1.0)  # the generation is running on the device worker now
    assert children_of(server.process.pid) == []
    begin = time.monotonic()
    if ending == "SIGTERM":
        server.process.send_signal(signal.SIGTERM)
    else:
        server.process.stdin.close()
    code = server.process.wait(20)
    assert code == 0, server.stderr_text()[-2000:]
    assert time.monotonic() - begin < 20


async def test_a_request_built_before_an_edit_is_stale_when_submitted():
    """The user typed while the request waited (e.g. for the model to load): it must not run."""
    scheduler = Scheduler()
    try:
        scheduler.document_changed("doc", 2)
        with pytest.raises(Cancelled, match="version 2"):
            await scheduler.submit(JobKey("doc"), 1, lambda job: "stale")
        assert await scheduler.submit(JobKey("doc"), 2, lambda job: "fresh") == "fresh"
        scheduler.forget("doc")  # closed and reopened: versions start over
        assert await scheduler.submit(JobKey("doc"), 1, lambda job: "reopened") == "reopened"
    finally:
        scheduler.shutdown()
