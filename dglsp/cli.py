"""Command line: `dglsp serve`, `dglsp complete FILE:LINE:COL`, `dglsp train`, `dglsp eval`.

Settings given here use the same validation as the editor's settings (`config.py`).
In `serve` over stdio, stdout belongs to the protocol: logs go to stderr or a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from dglsp import __version__
from dglsp.config import DECODINGS, Settings


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="Hugging Face id or local model directory (default: the embedded model "
                       "shipped in the package); weights load from safetensors only")
    group.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    group.add_argument("--dtype", default="auto", help="auto (bfloat16 on cuda and on CPUs with bf16 matmuls, "
                       "else float32), float32, bfloat16 or float16")
    group.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow a model directory to run its own Python code (off unless you pass this)")
    group.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation at start-up")
    remote = parser.add_argument_group("remote backend (a vLLM / OpenAI-compatible server runs the model)")
    remote.add_argument("--backend", choices=("local", "remote"), default="local",
                        help="local: load the model here; remote: send prompts to --url (--model then only names "
                        "the tokenizer the prompts are built with)")
    remote.add_argument("--url", help="server base URL, e.g. http://gpu-box:8000 or http://host/openai/v1 (KServe)")
    remote.add_argument("--allow-remote-host", action="append", default=[], metavar="HOST",
                        help="serve: a host the editor's remote.url may name (repeatable; loopback and --url's "
                        "host are always allowed)")
    remote.add_argument("--api-key", help="bearer key for the server (default: $DGLSP_API_KEY)")
    remote.add_argument("--remote-model", help="model name the server serves (default: its only model)")
    remote.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra request header, repeatable (e.g. a sticky-routing key; {document} becomes "
                        "a hash of the document URI)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--canvas-length", type=int, help="tokens per canvas (default: 32 for ghost text, the "
                          "model's own for drafts)")
    sampling.add_argument("--steps", type=int,
                          help="maximum denoising steps per canvas (default: the model's, 8 for the embedded one)")
    sampling.add_argument("--decoding", choices=DECODINGS,
                          help="diffusion: the canvas as denoised; verified: each canvas checked by the causal "
                          "encoder (exactly greedy token-by-token text); speculative: verified, each check seeding "
                          "the next draft; autoregressive: token by token; lookup: verified, drafting from the "
                          "text already there (default: the model's)")
    sampling.add_argument("--min-confidence", type=float,
                          help="hide suggestions whose tokens the model finds less probable than this (0..1)")
    sampling.add_argument("--max-canvases", type=int, help="canvases chained per completion (default 1)")
    sampling.add_argument("--seed", type=int, help="fixed sampling seed (reproducible suggestions)")
    sampling.add_argument("--settings", help="JSON object of settings, in the editor's shape, e.g. "
                          "'{\"context\": {\"max_prefix_tokens\": 1024}}'")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-file", help="write the log here instead of stderr")


def settings_from_args(args: argparse.Namespace) -> Settings:
    options: dict = json.loads(args.settings) if args.settings else {}
    engine = options.setdefault("engine", {})
    engine.update(model=args.model, device=args.device, dtype=args.dtype, threads=args.threads,
                  trust_remote_code=args.trust_remote_code, warmup=not args.no_warmup, backend=args.backend)
    remote = options.setdefault("remote", {})
    for key, value in (("url", args.url), ("api_key", args.api_key), ("model", args.remote_model),
                       ("headers", "\n".join(args.header) or None)):
        if value is not None:
            remote[key] = value
    sampler = options.setdefault("sampler", {})
    for key, value in (("canvas_length", args.canvas_length), ("max_steps", args.steps),
                       ("max_canvases", args.max_canvases), ("seed", args.seed)):
        if value is not None:
            sampler[key] = value
    if args.decoding is not None:
        sampler["decoding"] = args.decoding
    if args.min_confidence is not None:
        options.setdefault("postprocess", {})["min_confidence"] = args.min_confidence
    draft = options.setdefault("draft", {})
    if getattr(args, "max_tokens", None) is not None:
        draft["max_tokens"] = args.max_tokens
    if getattr(args, "command", None) == "draft":  # a draft's canvas and steps are its own settings
        draft.update({key: sampler[key] for key in ("canvas_length", "max_steps") if key in sampler})
    settings, warnings = Settings().updated(options)
    if warnings:
        raise SystemExit("dglsp: " + "; ".join(warnings))
    return settings


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.FileHandler(args.log_file) if getattr(args, "log_file", None) else logging.StreamHandler()
    logging.basicConfig(level=getattr(args, "log_level", "WARNING").upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Document text stays out of the log unless the user asks for DEBUG (see redact.py).
    from dglsp.lsp.redact import install

    install(handler, logging.getLogger().level)
    # transformers' progress bars and advice go to stderr; keep them quiet unless debugging.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def cmd_serve(args: argparse.Namespace) -> int:
    from dglsp.config import ServeSettings

    hosts = {*args.allow_remote_host, *([urlsplit(args.url).hostname or ""] if args.url else [])}
    serve = ServeSettings(token=args.token or os.environ.get("DGLSP_TOKEN") or None,
                          debug_requests=args.debug_requests, allow_remote_code=args.trust_remote_code,
                          remote_hosts=frozenset(host.lower() for host in hosts if host))
    if args.tcp is not None and not serve.token:  # before the heavy imports: fail fast
        raise SystemExit("dglsp serve --tcp needs a token: pass --token or set DGLSP_TOKEN")
    from dglsp.lsp.server import build_server
    from dglsp.lsp.transport import serve_stdio, serve_tcp

    server = build_server(settings_from_args(args), serve)
    server.start_loading()
    if args.tcp is not None:
        serve_tcp(server, args.tcp)  # loopback only, token checked on the first message
    else:
        serve_stdio(server)
    server.scheduler.shutdown()
    return 0


def stderr_progress():
    """A progress callback for the command line: downloads and loading stages on stderr, one line each
    (a download rewrites its line in a terminal)."""
    last = [""]

    def report(message: str, percent: int) -> None:
        downloading = message.startswith("downloading")
        if message == last[0] or (not downloading and percent < 100 and not message.startswith("load")):
            return
        last[0] = message
        end = "\r" if downloading and sys.stderr.isatty() else "\n"
        print(f"dglsp: {message} ({percent}%)", end=end, file=sys.stderr, flush=True)

    return report


def parse_location(location: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL with 1-based line and column (in characters), as compilers print them."""
    try:
        file, line, column = location.rsplit(":", 2)
        return Path(file), int(line), int(column)
    except ValueError:
        raise SystemExit(f"dglsp complete: expected FILE:LINE:COL (1-based), got {location!r}") from None


def offset_of(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise SystemExit(f"dglsp complete: line {line} is outside the file (1..{len(lines)})")
    if not 1 <= column <= len(lines[line - 1]) + 1:
        raise SystemExit(f"dglsp complete: column {column} is outside line {line} (1..{len(lines[line - 1]) + 1})")
    return sum(len(text_line) + 1 for text_line in lines[: line - 1]) + column - 1


def cmd_complete(args: argparse.Namespace) -> int:
    from dglsp.completion.completer import Completer
    from dglsp.errors import DglspError
    from dglsp.model.loading import load_backend, warm_up

    path, line, column = parse_location(args.location)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SystemExit(f"dglsp complete: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SystemExit(f"dglsp complete: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    offset = offset_of(text, line, column)
    settings = settings_from_args(args)
    begin = time.perf_counter()
    try:
        bundle, engine = load_backend(settings, progress=stderr_progress(), strict=True)
    except DglspError as exc:
        raise SystemExit(f"dglsp: {exc}") from None
    load_s = time.perf_counter() - begin
    completer = Completer(bundle, engine)
    if settings.engine.warmup:
        warm_up(engine, bundle, settings)
    context = completer.context_at(text, offset, settings, str(path), args.language or _language_of(path))
    draft = args.command == "draft"
    commits: list[float] = []

    def on_commit(text_so_far: str) -> None:
        commits.append(time.perf_counter())
        if not args.json:  # stream each committed canvas as it lands
            print(f"# canvas {len(commits)} committed at {(commits[-1] - start) * 1000:.0f} ms "
                  f"({len(text_so_far)} chars so far)", flush=True)

    start = time.perf_counter()
    try:
        suggestion = completer.complete(context, settings, draft=draft, on_commit=on_commit if draft else None)
    except DglspError as exc:  # the remote server failed mid-request
        raise SystemExit(f"dglsp: {exc}") from None
    if args.json:
        stats = suggestion.stats
        print(json.dumps({
            "text": suggestion.text, "raw": suggestion.raw, "model": str(bundle.path), "device": str(bundle.device),
            "load_s": round(load_s, 2), "prompt_ms": suggestion.prompt_ms, "prefill_tokens": stats.prefill_tokens,
            "prefill_ms": stats.prefill_ms, "steps": stats.steps, "ms_per_step": stats.ms_per_step,
            "forward_passes": stats.forward_passes, "tokens_per_forward": stats.tokens_per_forward,
            "postprocess_ms": suggestion.postprocess_ms, "total_ms": suggestion.total_ms,
            "canvases": stats.canvases, "generated_tokens": stats.generated_tokens,
            "confidence": suggestion.confidence, "hidden_by_gate": suggestion.gated,
            "reason": suggestion.hidden.reason.value if suggestion.hidden else None,
            "reason_detail": suggestion.hidden.detail if suggestion.hidden else None,
            "verifications": stats.verifications, "accepted_per_verification": stats.accepted_per_verification,
            "first_commit_ms": (commits[0] - start) * 1000 if commits else None,
        }, indent=2))
        return 0
    before = context.prefix.rsplit("\n", 1)[-1]
    print(f"# {path}:{line}:{column}  model {bundle.path.name} on {bundle.device} (loaded in {load_s:.1f} s)")
    print(f"# cursor line: {before!r} | {context.suffix.split(chr(10), 1)[0]!r}")
    if suggestion.hidden is not None:
        print(f"# no suggestion: {REASON_WORDS.get(suggestion.hidden.reason.value, suggestion.hidden.reason.value)}"
              + (f" ({suggestion.hidden.detail})" if suggestion.hidden.detail else ""))
        print(f"# raw output: {suggestion.raw!r}")
    else:
        print(suggestion.text)
    print(f"# {suggestion.timings()}")
    return 0


# How `dglsp complete` words each reason (the editors word them alike).
REASON_WORDS = {
    "low_confidence": "below the confidence gate (postprocess.min_confidence)",
    "unparsable": "it did not parse (more syntax errors than the empty gap)",
    "repeat": "it repeated the code around the cursor",
    "empty": "the model produced nothing worth showing",
    "brackets": "nothing was left once over-closing brackets were cut",
    "backend_error": "the completion server failed",
    "cancelled": "cancelled",
}

LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust", ".c": "c",
             ".h": "c", ".cpp": "cpp", ".java": "java", ".lua": "lua"}


def _language_of(path: Path) -> str:
    # Only for the command line: the server takes the language from the editor's languageId.
    return LANGUAGES.get(path.suffix, "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dglsp", description="Editor autocomplete by block diffusion "
                                     "(DiffusionGemma), served over the Language Server Protocol.")
    parser.add_argument("--version", action="version", version=f"dglsp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the language server (stdio by default)",
                                description="Run the language server. Editors start it and talk LSP over stdio.")
    serve.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio "
                       "(needs a token: the client sends it as initializationOptions.token in initialize)")
    serve.add_argument("--token", help="the TCP client's token (default: the DGLSP_TOKEN environment variable)")
    serve.add_argument("--debug-requests", action="store_true",
                       help="answer dglsp/documentText (the server's copy of a document; for sync tests)")
    _add_model_options(serve)
    serve.set_defaults(func=cmd_serve)
    complete = commands.add_parser("complete", help="print the completion the server would offer at FILE:LINE:COL",
                                   description="Print the completion at FILE:LINE:COL (1-based) with its timings.")
    complete.add_argument("location", metavar="FILE:LINE:COL")
    complete.add_argument("--language", help="language id (default: from the file extension)")
    complete.add_argument("--json", action="store_true", help="print the suggestion and timings as JSON")
    _add_model_options(complete)
    complete.set_defaults(func=cmd_complete)
    draft = commands.add_parser("draft", help="draft a long completion at FILE:LINE:COL, canvas after canvas",
                                description="Draft at FILE:LINE:COL (1-based): canvases chain until the block "
                                "ends or the draft token limit; each committed canvas is reported as it lands.")
    draft.add_argument("location", metavar="FILE:LINE:COL")
    draft.add_argument("--language", help="language id (default: from the file extension)")
    draft.add_argument("--json", action="store_true", help="print the draft and timings as JSON")
    draft.add_argument("--max-tokens", type=int, help="draft token limit (default 384)")
    _add_model_options(draft)
    draft.set_defaults(func=cmd_complete)
    download = commands.add_parser(
        "download", help="fetch a Hugging Face model ahead of time, with progress, and check its files",
        description="Download MODEL (a Hugging Face id) into the Hugging Face cache: the weights (safetensors "
        "only), the tokenizer and its chat template, with progress; then check the files as the server would "
        "before loading. With --tokenizer-only, only what the remote backend needs.")
    download.add_argument("model", metavar="MODEL", help="Hugging Face id, e.g. google/diffusiongemma-26B-A4B-it")
    download.add_argument("--tokenizer-only", action="store_true",
                          help="only the tokenizer and chat template (for --backend remote)")
    download.set_defaults(func=cmd_download)
    from dglsp.tools import options

    train = commands.add_parser("train", help="train the embedded model",
                                description="Train the embedded DiffusionGemma from the permissively licensed Python "
                                "on this machine. Re-running the same command resumes from the checkpoint in "
                                "--work-dir; with none there, from the shipped model.")
    options.add_train_arguments(train)
    train.set_defaults(func=_tool("train"))
    evaluate = commands.add_parser("eval", help="evaluate a model on HumanEval-Infilling, or on holes cut in a "
                                   "repository (--repo PATH)",
                                   description="Evaluate a model: HumanEval-Infilling by default, or holes cut in a "
                                   "repository with --repo PATH.")
    options.add_eval_arguments(evaluate)
    evaluate.set_defaults(func=_tool("eval"))
    bench = commands.add_parser("bench", help="replay a typing session over LSP and print latencies; --draft: "
                                "draft speed and quality",
                                description="Benchmarks that print numbers: a typing session replayed over LSP "
                                "(default), or drafts (--draft).")
    options.add_bench_arguments(bench)
    bench.set_defaults(func=_tool("bench"))
    return parser


def _tool(command: str):
    """The runner of a tool command, imported only when it runs (serving never loads the tools)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"dglsp.tools.{_tool_module(command, args)}").run(args)

    return run


EVAL_MODULES = {"humaneval": "eval_humaneval", "agreement": "agreement", "repo": "eval_repo", "gate": "gate",
                "curve": "curve", "edits": "eval_edits"}
BENCH_MODULES = {"typing": "bench_typing", "draft": "bench_draft", "shapes": "bench_shapes", "step": "bench_step",
                 "edit": "bench_edit"}


def _tool_module(command: str, args: argparse.Namespace) -> str:
    """The module of `dglsp.tools` that runs `command` in the mode it names (or, for the flags that named modes
    before modes had names, the mode those select)."""
    if command == "eval":
        mode = args.mode or ("curve" if args.plot_training else "gate" if args.plot_gate else
                             "repo" if args.repo is not None else "humaneval")
        return EVAL_MODULES[mode]
    if command == "bench":
        mode = args.mode or ("shapes" if args.random_weights is not None else "draft" if args.draft else "typing")
        return BENCH_MODULES[mode]
    return command


def cmd_download(args: argparse.Namespace) -> int:
    from dglsp.errors import DglspError
    from dglsp.model.loading import download, hub_offline
    from dglsp.model.modelcheck import check_model_dir, weight_bytes

    if Path(args.model).expanduser().is_dir():
        raise SystemExit(f"dglsp download: {args.model} is a local directory already; pass a Hugging Face id")
    if hub_offline():
        print("dglsp: HF_HUB_OFFLINE is set: checking the local cache only", file=sys.stderr)
    try:
        path = download(args.model, weights=not args.tokenizer_only, progress=stderr_progress())
        if not args.tokenizer_only:
            check_model_dir(path)
    except DglspError as exc:
        raise SystemExit(f"dglsp: {exc}") from None
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    print(f"{args.model}: {path}")
    print(f"  files: {', '.join(files)}")
    if not args.tokenizer_only:
        parameters, stored = weight_bytes(path)
        print(f"  weights: {parameters / 1e9:.2f}B parameters, {stored / 1e9:.1f} GB on disk; files check out")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
