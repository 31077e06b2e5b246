"""What the prefix-cache budget costs and buys: `dglsp serve` with many open documents.

Opens --documents standard-library modules in one server, asks for an inline completion in each, round after
round, and prints one JSON line per round: the server's RSS, the prefix cache's bytes against its budget, and the
share of the round's requests that reused a cached prompt. Compare budgets with --settings, e.g.
`'{"latency": {"prefix_cache_documents": 1024}}'` (then the MB cap alone bounds the cache).

    python scripts/memory_over_documents.py --documents 60 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import sysconfig
from pathlib import Path
from typing import Any, cast

from lsprotocol import types
from pygls.lsp.client import LanguageClient


def documents(count: int) -> list[tuple[str, str, types.Position]]:
    """(uri, text, cursor) for the largest stdlib modules: the cursor at the end of the line in the middle."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in stdlib.glob("*.py") if p.stat().st_size > 20_000), key=lambda p: p.name)[:count]
    picked = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        line = len(lines) // 2
        picked.append((path.as_uri(), text, types.Position(line, len(lines[line].encode("utf-16-le")) // 2)))
    return picked


async def main(args: argparse.Namespace) -> None:
    client = LanguageClient("dglsp-memory", "1")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def server_log(params: types.LogMessageParams) -> None:  # one line per request: not what this measures
        pass

    command = [sys.executable, "-m", "dglsp", "serve"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    await client.start_io(*command)
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options=json.loads(args.settings)))
    client.initialized(types.InitializedParams())
    stats = types.ExecuteCommandParams(command="dglsp.stats")
    while not cast(dict, await client.workspace_execute_command_async(stats)).get("device"):
        await asyncio.sleep(0.2)
    docs = documents(args.documents)
    for uri, text, _ in docs:
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    before = cast(dict, await client.workspace_execute_command_async(stats))
    print(json.dumps({"round": 0, "documents": len(docs), "rss_mb": round(before["memory"]["rss_mb"], 1)}))
    for round_ in range(1, args.rounds + 1):
        hits_before = (before.get("prefix_cache") or {}).get("hits", 0)
        for uri, _, position in docs:
            await client.text_document_inline_completion_async(types.InlineCompletionParams(
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier(uri), position=position))
        now: dict[str, Any] = cast(dict, await client.workspace_execute_command_async(stats))
        cache = now["prefix_cache"]
        print(json.dumps({
            "round": round_, "requests": len(docs), "rss_mb": round(now["memory"]["rss_mb"], 1),
            "peak_rss_mb": round(now["memory"]["peak_rss_mb"], 1), "cache_mb": round(cache["bytes"] / 2**20, 1),
            "budget_mb": round(cache["budget_bytes"] / 2**20, 1),
            "reused_share": round((cache["hits"] - hits_before) / len(docs), 3), "evictions": cache["evictions"],
        }), flush=True)
        before = now
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default="{}", help="server settings as JSON, in the editor's shape")
    asyncio.run(main(parser.parse_args()))
