"""`dglsp bench`: replay a realistic typing session against the real server over LSP and print latencies.

What it does, in one run:

1. Picks functions from real source files (the standard library by default) whose code before
   them is about `--context-tokens` tokens, removes each function from its file, opens the file
   in `dglsp serve` (a subprocess, stdio), says where the cursor is (`dglsp/focus`, as the editor
   plugins do), asks once a second later (the first request after opening), and types the function
   back character by character at human intervals (80-150 ms, longer pauses at some line ends and
   mid-line).
2. Asks for inline completions the way editors do: `--client vscode` asks 50 ms after a
   keystroke and cancels the request in flight with `$/cancelRequest` when the next key comes;
   `--client neovim` asks 200 ms after the last keystroke and never cancels (Neovim 0.12's
   built-in behaviour). When the suggestion on screen is exactly what comes next, the simulated
   user accepts it (and the editor runs the item's `dglsp.accepted` command).
3. Reads the server's counters (`dglsp.stats`) and measures, in this process with the same
   weights, block-diffusion decoding against token-by-token decoding on the contexts where the
   user paused, plus a keystroke's warm re-encode against a cold prefill of the same context.

`--baseline` turns the latency features off (prefix KV cache, typing-through, speculation) so
the same command measures before and after. It prints numbers; it asserts nothing.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

VSCODE_DELAY_S = 0.05  # VS Code waits ~50 ms after a keystroke before asking for inline completions
NEOVIM_DELAY_S = 0.2  # Neovim 0.12's built-in inline completion waits 200 ms and never cancels
OPEN_TO_TYPING_S = 1.0  # a user looks at a file they opened before the first keystroke


@dataclass
class TypingPlan:
    path: Path
    document: str  # the file with the function removed
    offset: int  # where the function goes (characters)
    target: str  # the function's text, typed back
    prefix_tokens: int


@dataclass
class RequestRecord:
    sent: float
    keystroke: float
    at_pause: bool
    answered: float | None = None
    text: str | None = None
    cancelled: bool = False
    first: bool = False  # asked right after its document was opened, before any keystroke


@dataclass
class SessionLog:
    requests: list[RequestRecord] = field(default_factory=list)
    keystrokes: int = 0
    accepted: int = 0
    pause_contexts: list[tuple[str, int, str]] = field(default_factory=list)  # (text, offset, path)


# -- choosing what to type --------------------------------------------------------------------------
def pick_functions(files: list[Path], tokenizer, count: int, prefix_budget: int, max_chars: int,
                   rng: random.Random, long_files: bool = False) -> list[TypingPlan]:
    """Functions of 120..max_chars characters after which the prefix still fits, filling 60..100 % of it;
    with `long_files`, functions after at least twice the budget (the prompt window is cut from the file)."""
    candidates: list[TypingPlan] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = text.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.end_lineno is None:
                continue
            start = sum(len(line) for line in lines[: node.lineno - 1 - len(node.decorator_list)])
            target = "".join(lines[node.lineno - 1 - len(node.decorator_list): node.end_lineno])
            if not 120 <= len(target) <= max_chars:
                continue
            candidates.append(TypingPlan(path, text[:start] + text[start + len(target):], start, target, -1))
    rng.shuffle(candidates)
    chosen: list[TypingPlan] = []
    for plan in candidates:
        plan.prefix_tokens = len(tokenizer.encode(plan.document[: plan.offset], add_special_tokens=False))
        target_tokens = len(tokenizer.encode(plan.target, add_special_tokens=False))
        fits = 0.6 * prefix_budget <= plan.prefix_tokens <= prefix_budget - target_tokens - 16
        if (plan.prefix_tokens >= 2 * prefix_budget) if long_files else fits:
            chosen.append(plan)
        if len(chosen) == count:
            break
    if not chosen:
        raise SystemExit("dglsp bench: no function of the wanted size sits after ~--context-tokens of code in "
                         f"{[str(f) for f in files]}; pass other --files or a different --context-tokens")
    return chosen


# -- the simulated editor -------------------------------------------------------------------------
class SimulatedEditor:
    """One document, typed into; requests inline completions like VS Code or Neovim."""

    def __init__(self, client, kind: str, log: SessionLog):
        self.client = client
        self.kind = kind
        self.log = log
        self.delay = VSCODE_DELAY_S if kind == "vscode" else NEOVIM_DELAY_S
        self.uri = ""
        self.text = ""
        self.offset = 0
        self.version = 0
        self.shown: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight: tuple[str, RequestRecord, asyncio.Future] | None = None
        self.last_request: RequestRecord | None = None
        self.last_keystroke = 0.0
        self.accept_command = None  # the shown item's command, run on accept (VS Code does)
        self.ids = 0

    def open(self, plan: TypingPlan) -> None:
        from lsprotocol import types

        self.uri = plan.path.resolve().as_uri() + f"#bench{id(plan)}"
        self.text, self.offset, self.version, self.shown = plan.document, plan.offset, 1, None
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=self.uri, language_id="python", version=1, text=self.text)))
        # Both editor plugins say where the cursor is when a buffer is entered.
        cursor = self.position()
        self.client.protocol.notify("dglsp/focus", {"textDocument": {"uri": self.uri},
                                                    "position": {"line": cursor.line, "character": cursor.character}})

    def close(self) -> None:
        from lsprotocol import types

        self._cancel_timer()
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(self.uri)))

    def position(self):
        from lsprotocol import types

        line = self.text.count("\n", 0, self.offset)
        return types.Position(line, len(self.text[self.text.rfind("\n", 0, self.offset) + 1: self.offset]
                                        .encode("utf-16-le")) // 2)

    def insert(self, chars: str, at_pause: bool) -> None:
        """A keystroke (or an accepted suggestion): didChange, cancel what is in flight, re-arm the request."""
        from lsprotocol import types

        start = self.position()
        self.text = self.text[: self.offset] + chars + self.text[self.offset:]
        self.offset += len(chars)
        self.version += 1
        self.shown = self.shown[len(chars):] if self.shown and self.shown.startswith(chars) else None
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start, start), text=chars)]))
        self.log.keystrokes += 1
        if self.kind == "vscode" and self.in_flight is not None:
            msg_id, record, future = self.in_flight
            if not future.done():
                record.cancelled = True
                self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        self._cancel_timer()
        keystroke = self.last_keystroke = time.perf_counter()
        self.timer = asyncio.get_running_loop().call_later(self.delay, self._request, keystroke, at_pause)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def ask_at_open(self, timeout: float) -> None:
        """The first request in a document, before any keystroke (a user who stopped to look), waited for."""
        self.last_keystroke = time.perf_counter()
        self._request(self.last_keystroke, False, first=True)
        await self.wait_for_answer(timeout)

    def _request(self, keystroke: float, at_pause: bool, first: bool = False) -> None:
        from lsprotocol import types

        self.ids += 1
        msg_id = f"bench-{self.ids}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(self.uri), position=self.position(),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        record = RequestRecord(time.perf_counter(), keystroke, at_pause, first=first)
        future = asyncio.wrap_future(self.client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id))
        version = self.version
        self.log.requests.append(record)
        self.in_flight = (msg_id, record, future)
        self.last_request = record
        future.add_done_callback(lambda done: self._answered(done, record, version))

    def _answered(self, future: asyncio.Future, record: RequestRecord, version: int) -> None:
        record.answered = time.perf_counter()
        if future.cancelled() or future.exception() is not None:
            record.cancelled = True
            return
        items = future.result().items if future.result() is not None else []
        record.text = items[0].insert_text if items else None
        if version == self.version and record.text:  # editors drop answers for an older buffer
            self.shown = record.text
            self.accept_command = items[0].command

    async def wait_for_answer(self, timeout: float) -> None:
        """At a pause: wait until the request for this buffer is sent and answered."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            record = self.last_request
            if record is not None and record.keystroke == self.last_keystroke and record.answered is not None:
                return
            await asyncio.sleep(0.005)


async def type_plan(editor: SimulatedEditor, plan: TypingPlan, rng: random.Random, log: SessionLog,
                    time_scale: float = 1.0) -> None:
    from lsprotocol import types

    editor.open(plan)
    await asyncio.sleep(time_scale * OPEN_TO_TYPING_S)
    await editor.ask_at_open(timeout=30)
    remaining = plan.target
    while remaining:
        shown = editor.shown
        if shown and shown.strip() and remaining.startswith(shown):
            chars = shown  # the ghost text is exactly what comes next: Tab
            command = editor.accept_command
            log.accepted += 1
        else:
            chars, command = remaining[0], None
        remaining = remaining[len(chars):]
        pause = remaining and ((chars.endswith("\n") and rng.random() < 0.35) or rng.random() < 0.03)
        editor.insert(chars, bool(pause))
        if command is not None:
            editor.client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
                command=command.command, arguments=command.arguments))
        if pause:
            began = time.perf_counter()
            log.pause_contexts.append((editor.text, editor.offset, str(plan.path)))
            await editor.wait_for_answer(timeout=30)
            await asyncio.sleep(max(0.0, time_scale * rng.uniform(0.6, 1.5) - (time.perf_counter() - began)))
        else:
            await asyncio.sleep(time_scale * rng.uniform(0.08, 0.15))
    await asyncio.sleep(0.5)
    editor.close()


async def run_session(args: argparse.Namespace, plans: list[TypingPlan], settings: dict) -> tuple[SessionLog, dict]:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("dglsp-bench", "1")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def server_log(params: types.LogMessageParams) -> None:  # the server logs each request; the file has it
        pass

    log_file = Path(tempfile.mkdtemp(prefix="dglsp-bench-")) / "server.log"
    command = [sys.executable, "-m", "dglsp", "serve", "--log-file", str(log_file), "--log-level", "INFO"]
    if args.model:
        command += ["--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    await client.start_io(*command)
    capabilities = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            synchronization=types.TextDocumentSyncClientCapabilities()),
        workspace=types.WorkspaceClientCapabilities(execute_command=types.ExecuteCommandClientCapabilities()))
    await client.initialize_async(types.InitializeParams(capabilities=capabilities, initialization_options=settings))
    client.initialized(types.InitializedParams())
    stats_params = types.ExecuteCommandParams(command="dglsp.stats")
    for _ in range(600):  # wait for the model (the stats report a device once it is loaded)
        if cast(dict, await client.workspace_execute_command_async(stats_params)).get("device"):
            break
        await asyncio.sleep(0.2)
    log = SessionLog()
    rng = random.Random(args.seed)
    editor = SimulatedEditor(client, args.client, log)
    for plan in plans:
        await type_plan(editor, plan, rng, log, args.time_scale)
    stats = cast(dict, await client.workspace_execute_command_async(stats_params))  # dglsp.stats answers an object
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return log, stats


# -- in-process measurements with the same weights -------------------------------------------------
def side_by_side(args: argparse.Namespace, contexts: list[tuple[str, int, str]], settings) -> dict:
    """Block diffusion vs token-by-token on the pause contexts, and warm re-encode vs cold prefill."""
    from dataclasses import replace

    from dglsp.completion.completer import Completer
    from dglsp.completion.prompt import PromptBuilder
    from dglsp.model.backend import GenerationStats
    from dglsp.model.loading import load_engine

    bundle, engine = load_engine(settings)
    completer = Completer(bundle, engine)
    builder = PromptBuilder(bundle.tokenizer, completer.format, settings.context)
    sampler = replace(settings.sampler, canvas_length=args.tokens, seed=args.seed)

    def schedule(decoding: str):
        return engine.schedule(replace(sampler, decoding=decoding))

    picked = contexts[:: max(1, len(contexts) // args.completions)][: args.completions]
    rows: dict[str, list[float]] = {k: [] for k in ("diffusion_ms", "diffusion_fp", "diffusion_tokens", "ar_ms",
                                                    "ar_fp", "ar_tokens", "verified_ms", "verified_fp",
                                                    "verified_tokens", "verified_accepted", "ms_per_step", "cold_ms",
                                                    "warm_ms", "prompt_tokens")}
    engine.generate(builder.build(completer.context_at(*picked[0][:2], settings)).ids, schedule("diffusion"))  # warm
    for text, offset, path in picked:
        context = completer.context_at(text, offset, settings, path, "python")
        ids = builder.build(context).ids
        diffusion = engine.generate(ids, schedule("diffusion"))
        autoregressive = engine.generate(ids, schedule("autoregressive"))
        verified = engine.generate(ids, schedule("verified"))
        rows["verified_accepted"].append(verified.stats.accepted_per_verification)
        for prefix, generation in (("diffusion", diffusion), ("ar", autoregressive), ("verified", verified)):
            rows[f"{prefix}_ms"].append(generation.stats.total_ms)
            rows[f"{prefix}_fp"].append(generation.stats.forward_passes)
            rows[f"{prefix}_tokens"].append(generation.stats.generated_tokens)
        rows["ms_per_step"].append(diffusion.stats.ms_per_step)
        rows["prompt_tokens"].append(len(ids))
        # A keystroke: the same context one character earlier is cached, then the character is typed.
        before = builder.build(completer.context_at(text[: offset - 1] + text[offset:], offset - 1, settings, path,
                                                    "python")).ids
        cold, warm = GenerationStats(), GenerationStats()
        engine.prefix_cache.clear()
        engine.prepare_prompt(ids, cold)
        engine.prepare_prompt(before, GenerationStats(), cache_key="bench")
        engine.prepare_prompt(ids, warm, cache_key="bench")
        rows["cold_ms"].append(cold.prefill_ms)
        rows["warm_ms"].append(warm.prefill_ms)
    return {key: statistics.fmean(values) for key, values in rows.items() if values} | {"completions": len(picked)}


# -- report ---------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(log: SessionLog, stats: dict, compare: dict | None, args: argparse.Namespace,
              plans: list[TypingPlan]) -> dict:
    answered = [r for r in log.requests if r.answered is not None and not r.cancelled]
    typed = [r for r in log.requests if not r.first]
    at_pause = [r for r in answered if r.at_pause]
    server_ms = [(r.answered - r.sent) * 1000 for r in at_pause if r.answered is not None]
    first_ms = [(r.answered - r.sent) * 1000 for r in answered if r.first and r.answered is not None]
    user_ms = [(r.answered - r.keystroke) * 1000 for r in at_pause if r.answered is not None]
    prefix = stats.get("prefix_cache") or {}
    typing = stats.get("typing_through") or {}
    cancel = stats.get("cancel_to_idle_ms") or []
    result = {
        "client": args.client, "baseline": args.baseline, "device": stats.get("device"),
        "functions": [f"{p.path.name}@{p.offset} ({len(p.target)} chars, {p.prefix_tokens} tokens before)"
                      for p in plans],
        "keystrokes": log.keystrokes, "accepted": log.accepted, "requests": len(typed),
        "cancelled_by_client": sum(r.cancelled for r in typed), "pauses": len(at_pause),
        "pause_answers_with_text": sum(bool(r.text) for r in at_pause),
        "p50_ms": percentile(server_ms, 0.5), "p95_ms": percentile(server_ms, 0.95),
        "p50_from_keystroke_ms": percentile(user_ms, 0.5), "p95_from_keystroke_ms": percentile(user_ms, 0.95),
        "first_after_open_ms": [round(ms, 1) for ms in first_ms],
        "prefill_on_focus_tokens": stats.get("prefill_tokens"),
        "forward_passes_per_shown": ((stats["forward_passes_shown"] + stats["forward_passes_empty"]
                                      + stats["forward_passes_wasted"]) / stats["shown"]) if stats["shown"] else None,
        "forward_passes_shown": stats["forward_passes_shown"], "forward_passes_empty": stats["forward_passes_empty"],
        "forward_passes_wasted": stats["forward_passes_wasted"],
        "forward_passes_prefetch": stats["forward_passes_prefetch"],
        "shown": stats["shown"], "typing_through_served": stats["typing_through_served"],
        "prefix_cache_hit_rate": prefix.get("hit_rate"),
        "prefix_tokens_reused": prefix.get("reused_tokens"), "prefix_tokens_encoded": prefix.get("encoded_tokens"),
        "typing_through_hit_rate": typing.get("hit_rate"),
        "cancel_to_idle_p50_ms": percentile(cancel, 0.5), "cancel_to_idle_max_ms": max(cancel) if cancel else None,
        "server_rss_mb": stats["memory"]["rss_mb"], "server_peak_rss_mb": stats["memory"]["peak_rss_mb"],
        "deadline_hits": stats.get("deadline_hits"),
    }
    if compare:
        result["side_by_side"] = compare
    return result


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}{unit}" if abs(value) >= 10 or unit else f"{value:.2f}"
    return f"{value}{unit}"


def print_table(result: dict) -> None:
    rows = [
        ("client / device", f"{result['client']} / {result['device']}" + ("  [baseline: latency features off]"
                                                                           if result["baseline"] else "")),
        ("keystrokes / requests / cancelled by client", f"{result['keystrokes']} / {result['requests']} / "
                                                        f"{result['cancelled_by_client']}"),
        ("suggestions shown / accepted", f"{result['shown']} / {result['accepted']}"),
        ("time-to-suggestion after a pause p50 / p95", f"{_fmt(result['p50_ms'], ' ms')} / "
                                                       f"{_fmt(result['p95_ms'], ' ms')}  (request -> answer, "
                                                       f"{result['pauses']} pauses)"),
        ("  same, from the keystroke (client delay incl.)", f"{_fmt(result['p50_from_keystroke_ms'], ' ms')} / "
                                                            f"{_fmt(result['p95_from_keystroke_ms'], ' ms')}"),
        ("first request after opening a document", ", ".join(f"{ms:.0f} ms" for ms in result["first_after_open_ms"])
                                                   + f"  (asked on opening; the session's first is cold; "
                                                     f"{result['prefill_on_focus_tokens']} tokens encoded on focus)"),
        ("forward passes per shown suggestion", _fmt(result["forward_passes_per_shown"])),
        ("forward passes: shown / empty / wasted (cancelled)", f"{result['forward_passes_shown']} / "
                                                              f"{result['forward_passes_empty']} / "
                                                              f"{result['forward_passes_wasted']}"),
        ("forward passes: prefetch", result["forward_passes_prefetch"]),
        ("prefix-cache hit rate (tokens reused / encoded)", f"{_fmt(result['prefix_cache_hit_rate'])} "
                                                            f"({result['prefix_tokens_reused']} / "
                                                            f"{result['prefix_tokens_encoded']})"),
        ("typing-through hit rate (served)", f"{_fmt(result['typing_through_hit_rate'])} "
                                            f"({result['typing_through_served']})"),
        ("cancel-to-idle p50 / max", f"{_fmt(result['cancel_to_idle_p50_ms'], ' ms')} / "
                                     f"{_fmt(result['cancel_to_idle_max_ms'], ' ms')}"),
        ("server memory rss / peak", f"{_fmt(result['server_rss_mb'], ' MiB')} / "
                                     f"{_fmt(result['server_peak_rss_mb'], ' MiB')}"),
    ]
    compare = result.get("side_by_side")
    if compare:
        ratio = compare["ar_ms"] / compare["diffusion_ms"] if compare["diffusion_ms"] else None
        rows += [
            (f"block diffusion, {compare['completions']} completions (mean)",
             f"{compare['diffusion_ms']:.0f} ms, {compare['diffusion_fp']:.1f} forward passes, "
             f"{compare['diffusion_tokens']:.0f} tokens, {compare['ms_per_step']:.1f} ms/step"),
            ("token-by-token, same weights and prompts (mean)",
             f"{compare['ar_ms']:.0f} ms, {compare['ar_fp']:.1f} forward passes, {compare['ar_tokens']:.0f} tokens"),
            ("verified (greedy text), same prompts (mean)",
             f"{compare['verified_ms']:.0f} ms, {compare['verified_fp']:.1f} forward passes, "
             f"{compare['verified_tokens']:.0f} tokens, {compare['verified_accepted']:.2f} tokens per verification"),
            ("block diffusion speed-up (wall time)", _fmt(ratio, "x")),
            (f"prefill of {compare['prompt_tokens']:.0f} tokens: cold / keystroke warm",
             f"{compare['cold_ms']:.1f} ms / {compare['warm_ms']:.1f} ms "
             f"({100 * compare['warm_ms'] / compare['cold_ms']:.0f} %)"),
        ]
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for function in result["functions"]:
        print(f"# typed {function}")


# -- command line ---------------------------------------------------------------------------------
def server_settings(args: argparse.Namespace) -> dict:
    suffix_tokens = max(16, args.context_tokens // 8)
    options: dict = {"context": {"max_prefix_tokens": args.context_tokens - suffix_tokens,
                                 "max_suffix_tokens": suffix_tokens}}
    if args.baseline:
        options["latency"] = {"prefix_cache": False, "typing_through": False, "prefetch": False}
    for section, values in (json.loads(args.settings) if args.settings else {}).items():
        options.setdefault(section, {}).update(values)
    return options


def run(args: argparse.Namespace) -> int:
    """`dglsp bench`, a typing session (options: `dglsp.tools.options.add_bench_arguments`)."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    from dglsp.config import Settings
    from dglsp.model.loading import resolve_model_dir

    options = server_settings(args)
    settings, warnings = Settings().updated({**options, "engine": {"model": args.model, "threads": args.threads}})
    if warnings:
        raise SystemExit("dglsp bench: " + "; ".join(warnings))
    files = args.files or sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(settings.engine.model))
    plans = pick_functions(files, tokenizer, args.functions, settings.context.max_prefix_tokens, args.max_chars,
                           random.Random(args.seed), long_files=args.long_files)
    log, stats = asyncio.run(run_session(args, plans, options))
    if args.json_file:  # the session's numbers survive even if the side-by-side is interrupted
        args.json_file.write_text(json.dumps(summarize(log, stats, None, args, plans), indent=2) + "\n")
    compare = None
    if not args.no_side_by_side and log.pause_contexts:
        compare = side_by_side(args, log.pause_contexts, settings)
    result = summarize(log, stats, compare, args, plans)
    if args.json_file:
        args.json_file.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0
