// The client-server conversation VS Code has with the real `dglsp serve` (real tiny model), spoken
// with the protocol libraries vscode-languageclient uses: VS Code's capability set, inline
// completion, cancellation through a CancellationToken (-> `$/cancelRequest`), and the way VS Code
// re-asks while you type (cancel the running request, wait 50 ms, ask again), "dglsp: Draft here"
// (`dglsp.draft`: progress on a server-created token, one versioned workspace/applyEdit; cancel -> nothing),
// and the `dglsp/preview` channel the extension opts in to (each request's end: what was shown, or why not),
// next edits (`textDocument/copilotInlineEdit` with the deterministic substitution predictor: the answer's shape,
// the text once it is applied, `didShowInlineEdit`, the accept command, a gone version answered with no edit).
//
// Model: $DGLSP_TEST_MODEL, or a tiny random-weight DiffusionGemma built here with dglsp.tools.modelzoo.
// Python: $DGLSP_TEST_PYTHON, or the repo's .venv, or python3.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type ApplyWorkspaceEditParams,
  ApplyWorkspaceEditRequest,
  CancellationTokenSource,
  type ClientCapabilities,
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  InitializedNotification,
  InitializeRequest,
  type InitializeResult,
  type InlineCompletionList,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LSPErrorCodes,
  type Message,
  type Position,
  type ProtocolConnection,
  ResponseError,
  ShowMessageNotification,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  type TextDocumentEdit,
  WorkDoneProgress,
  type WorkDoneProgressBegin,
  WorkDoneProgressCreateRequest,
  type WorkDoneProgressEnd,
  type WorkDoneProgressReport,
  createProtocolConnection,
} from "vscode-languageserver-protocol/node";

import { DEFAULTS, initializationOptions } from "../src/config";
import { DRAFT_COMMAND, type DraftResult, draftArgument, isDraftToken } from "../src/draft";
import { FOCUS_METHOD } from "../src/focus";
import { DID_SHOW_METHOD, NEXT_EDIT_METHOD, applyEdit, firstEdit, nextEditParams } from "../src/nextEdit";
import { PREVIEW_METHOD, type Preview, STATUS_METHOD, type ServerStatus, describeOutcome, withPreviewCapability } from "../src/status";
import vscodeClient from "./vscode-capabilities.json";

const REPO = join(__dirname, "..", "..", "..", "..");
const URI = "file:///tmp/dglsp-vscode/sample.py";
const TEXT = "def add(a, b):\n    total = a + b\n    return \n";

const python =
  process.env.DGLSP_TEST_PYTHON ?? (existsSync(join(REPO, ".venv/bin/python")) ? join(REPO, ".venv/bin/python") : "python3");

const MAKE_TINY_MODEL = `
import sys, sysconfig
from pathlib import Path
from dglsp.tools import modelzoo
stdlib = Path(sysconfig.get_paths()["stdlib"])
texts = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(stdlib.glob("*.py"))[:40]]
tokenizer = modelzoo.train_tokenizer(texts, vocab_size=512)
model = modelzoo.build_model(modelzoo.PRESETS["tiny"], len(tokenizer), seed=0)
modelzoo.save_model_dir(model, tokenizer, Path(sys.argv[1]))
`;

function modelDir(): string {
  if (process.env.DGLSP_TEST_MODEL) {
    return process.env.DGLSP_TEST_MODEL;
  }
  const dir = mkdtempSync(join(tmpdir(), "dglsp-tiny-"));
  const made = spawnSync(python, ["-c", MAKE_TINY_MODEL, dir], { encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  return dir;
}

/** Every message the client writes, as it goes on the wire. */
class RecordingWriter extends StreamMessageWriter {
  readonly sent: Message[] = [];
  override write(message: Message): Promise<void> {
    this.sent.push(message);
    return super.write(message);
  }
}

let server: ChildProcess;
let connection: ProtocolConnection;
let writer: RecordingWriter;
let initializeResult: InitializeResult;
const shownMessages: string[] = [];
let version = 1;
let text = TEXT;
type ProgressValue = WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;
const progress = new Map<string | number, ProgressValue[]>();
const appliedEdits: ApplyWorkspaceEditParams[] = [];
const previews: Preview[] = [];

// What VS Code sends (see config.ts), plus a seed, a server-side wait and a schedule that never
// stops early, so that a request is still running when the test types over it on any machine.
// Typing-through/speculation would answer without the model: off.
const options = {
  ...initializationOptions({ ...DEFAULTS, canvasLength: 16, debounceMs: 150 }),
  sampler: { canvas_length: 16, seed: 1, max_steps: 12, confidence_threshold: 1e-9 },
  draft: { max_tokens: 64 }, // up to 4 canvases of 16
  latency: { typing_through: false, prefetch: false },
  postprocess: { hide_unparsable: false }, // random weights write token soup: show it anyway
  next_edit: { predictor: "substitution" }, // the last edit's substitution at its next occurrence: deterministic
};

function sentIds(method: string): (number | string)[] {
  return writer.sent
    .filter((m) => "method" in m && m.method === method)
    .map((m) => ("id" in m ? (m.id as number) : (m as unknown as { params: { id: number } }).params.id));
}

function endOf(source: string): Position {
  const lines = source.split("\n");
  return { line: lines.length - 1, character: lines[lines.length - 1].length };
}

/** Type `chars` at `at` as VS Code reports it: an incremental didChange with a new version. */
function type(chars: string, at: Position): Position {
  version += 1;
  const lines = text.split("\n");
  lines[at.line] = lines[at.line].slice(0, at.character) + chars + lines[at.line].slice(at.character);
  text = lines.join("\n");
  void connection.sendNotification(DidChangeTextDocumentNotification.type, {
    textDocument: { uri: URI, version },
    contentChanges: [{ range: { start: at, end: at }, text: chars }],
  });
  return { line: at.line, character: at.character + chars.length };
}

function askInline(position: Position, token = new CancellationTokenSource().token) {
  return connection.sendRequest(
    InlineCompletionRequest.type,
    {
      textDocument: { uri: URI },
      position,
      context: { triggerKind: InlineCompletionTriggerKind.Automatic },
    },
    token,
  ) as Promise<InlineCompletionList | null>;
}

/** The first `done` preview of `kind` since `previews[since]` (it comes before the answer, or just after). */
async function doneSince(since: number, kind = "completion"): Promise<Preview> {
  for (let waited = 0; waited < 5_000; waited += 10) {
    const done = previews.slice(since).find((preview) => preview.done && preview.kind === kind);
    if (done) {
      return done;
    }
    await sleep(10);
  }
  assert.fail(`no done dglsp/preview of kind ${kind}`);
}

before(async () => {
  const model = modelDir();
  server = spawn(python, ["-m", "dglsp", "serve", "--model", model], { stdio: ["pipe", "pipe", "pipe"] });
  server.stderr?.resume(); // the server's log; unread it would fill the pipe
  writer = new RecordingWriter(server.stdin!);
  connection = createProtocolConnection(new StreamMessageReader(server.stdout!), writer);
  // As VS Code does: accept the server's progress token (model loading is reported as $/progress), and record it.
  connection.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
    progress.set(token, []);
    connection.onProgress(WorkDoneProgress.type, token, (value) => {
      progress.get(token)?.push(value);
    });
  });
  // As VS Code does: apply the server's edit to the document and report the change (a new version).
  connection.onRequest(ApplyWorkspaceEditRequest.type, (params) => {
    appliedEdits.push(params);
    for (const change of (params.edit.documentChanges ?? []) as TextDocumentEdit[]) {
      for (const edit of change.edits) {
        if (change.textDocument.version === version && "newText" in edit) {
          type(edit.newText, edit.range.start);
        }
      }
    }
    return { applied: true };
  });
  connection.onNotification(ShowMessageNotification.type, (params) => {
    shownMessages.push(params.message);
  });
  connection.onNotification(PREVIEW_METHOD, (params: Preview) => {
    previews.push(params);
  });
  connection.listen();
  initializeResult = await connection.sendRequest(InitializeRequest.type, {
    processId: process.pid,
    rootUri: null,
    clientInfo: vscodeClient.clientInfo,
    // What the extension's feature adds to VS Code's set: experimental.dglsp.preview.
    capabilities: {
      ...(vscodeClient.capabilities as ClientCapabilities),
      experimental: withPreviewCapability((vscodeClient.capabilities as ClientCapabilities).experimental),
    },
    initializationOptions: options,
  });
  await connection.sendNotification(InitializedNotification.type, {});
  await connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri: URI, languageId: "python", version, text },
  });
  for (let waited = 0; waited < 120_000; waited += 200) {
    const status = await connection.sendRequest<ServerStatus>(STATUS_METHOD, {});
    if (status.state === "ready") {
      return;
    }
    await sleep(200);
  }
  assert.fail("the model never became ready");
});

after(async () => {
  await connection.sendRequest(ShutdownRequest.type);
  await connection.sendNotification(ExitNotification.type);
  connection.dispose();
  server.kill();
});

test("initialize: VS Code's capabilities get inline completion in UTF-16, settings are accepted", () => {
  assert.ok(initializeResult.capabilities.inlineCompletionProvider);
  assert.equal(initializeResult.capabilities.positionEncoding ?? "utf-16", "utf-16");
  assert.equal(initializeResult.serverInfo?.name, "dglsp");
  assert.deepEqual(shownMessages, []); // no "bad setting" warnings for what the extension sends
});

test("an inline completion request is answered with items at the cursor", async () => {
  // Random weights can leave nothing worth showing at one spot: type on until something is offered.
  let position = endOf(text.trimEnd());
  let offered = 0;
  for (const char of "tota") {
    const since = previews.length;
    const result = await askInline(position);
    assert.ok(result && Array.isArray(result.items));
    // Its end on the preview channel: the text shown, or "" and why nothing was.
    const done = await doneSince(since);
    assert.equal(typeof done.latency_ms, "number");
    if (result.items.length > 0) {
      assert.equal(done.text, result.items[0].insertText);
      assert.equal(done.reason, undefined);
    } else {
      assert.equal(done.text, "");
      assert.ok(done.reason, "a hidden suggestion's preview carries no reason");
    }
    for (const item of result.items) {
      assert.equal(typeof item.insertText, "string");
      assert.ok((item.insertText as string).length > 0);
      assert.deepEqual(item.range, { start: position, end: position });
    }
    offered += result.items.length;
    if (offered > 0) {
      break;
    }
    position = type(char, position);
  }
  assert.ok(offered > 0, "no suggestion at any of the positions tried");
  const status = await connection.sendRequest<ServerStatus>(STATUS_METHOD, {});
  assert.equal(status.ready, true);
  assert.equal(status.state, "ready");
  assert.equal(typeof status.last_latency_ms, "number");
  assert.equal(status.device, "cpu");
  assert.equal(status.last?.shown, true);
  assert.ok((status.outcomes.shown ?? 0) >= 1);
});

test("a hidden suggestion's dglsp/preview end carries its reason, which the status bar says", async () => {
  // The tiny random model is never this sure: the gate hides everything that survives post-processing.
  const gated = { ...options, postprocess: { ...options.postprocess, min_confidence: 1.0 } };
  await connection.sendNotification(DidChangeConfigurationNotification.type, { settings: gated });
  let position = endOf(text.trimEnd());
  const reasons: string[] = [];
  for (const char of " + b * a") {
    const since = previews.length;
    const result = await askInline(position);
    assert.deepEqual(result?.items ?? [], []);
    const done = await doneSince(since);
    assert.equal(done.text, "");
    assert.ok(done.reason, "a hidden suggestion's preview carries no reason");
    assert.equal(typeof done.latency_ms, "number");
    reasons.push(done.reason);
    if (done.reason === "low_confidence") {
      assert.match(done.detail ?? "", /^confidence \d\.\d\d < 1\.00$/);
      assert.equal(describeOutcome(done), `dglsp: low ${done.detail}`);
      const status = await connection.sendRequest<ServerStatus>(STATUS_METHOD, {});
      assert.equal(status.last?.reason, "low_confidence");
      assert.equal(status.last?.shown, false);
      assert.ok((status.outcomes.low_confidence ?? 0) >= 1);
      await connection.sendNotification(DidChangeConfigurationNotification.type, { settings: options });
      return;
    }
    position = type(char, position);
  }
  assert.fail(`the gate never hid a suggestion (reasons: ${reasons.join(", ")})`);
});

test("dglsp/focus is accepted (the server prepares the prompt there)", async () => {
  await connection.sendNotification(FOCUS_METHOD, { textDocument: { uri: URI }, position: { line: 0, character: 0 } });
  let prefilled = 0;
  for (let waited = 0; prefilled === 0 && waited < 5_000; waited += 50) {
    const stats = (await connection.sendRequest(ExecuteCommandRequest.type, { command: "dglsp.stats", arguments: [] })) as {
      prefill_tokens: number;
    };
    prefilled = stats.prefill_tokens;
    await sleep(50);
  }
  assert.ok(prefilled > 0, "the server encoded nothing where the cursor went");
});

test("cancelling the token sends $/cancelRequest and the request ends as cancelled", async () => {
  const source = new CancellationTokenSource();
  const pending = askInline(endOf(text.trimEnd()), source.token);
  await sleep(100); // the server is denoising now (12 steps that never stop early)
  source.cancel();
  const id = sentIds(InlineCompletionRequest.method).at(-1);
  assert.ok(sentIds("$/cancelRequest").includes(id!), "no $/cancelRequest for the cancelled request");
  await assert.rejects(pending, (error: unknown) => error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled);
  // ...and the server goes on serving.
  const status = await connection.sendRequest<{ ready: boolean }>("dglsp/status", {});
  assert.equal(status.ready, true);
});

test("a request cancelled by the client ends with a dglsp/preview saying so", async () => {
  const since = previews.length;
  const source = new CancellationTokenSource();
  const pending = askInline(endOf(text.trimEnd()), source.token);
  await sleep(100);
  source.cancel();
  await pending.catch(() => undefined);
  const done = await doneSince(since);
  assert.equal(done.reason, "cancelled");
});

test("typing: each keystroke cancels the running request, VS Code re-asks 50 ms later, the last one is answered", async () => {
  let position = endOf(text.trimEnd());
  const firstRequest = sentIds(InlineCompletionRequest.method).length;
  let token: CancellationTokenSource | undefined;
  const outcomes: Promise<string>[] = [];
  for (const char of "a + b") {
    token?.cancel(); // the edit cancels what is running...
    position = type(char, position);
    await sleep(50); // ...and VS Code waits 50 ms before asking again
    token = new CancellationTokenSource();
    outcomes.push(
      askInline(position, token.token).then(
        (list) => (list && list.items.length > 0 ? "answered" : "empty"),
        (error: unknown) => (error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled ? "cancelled" : `error ${String(error)}`),
      ),
    );
    await sleep(150); // typing speed: slower than the debounce, faster than the model
  }
  const last = await askInline(position); // what VS Code shows once the user pauses
  const settled = await Promise.all(outcomes);
  const requests = sentIds(InlineCompletionRequest.method).slice(firstRequest);
  const cancels = sentIds("$/cancelRequest");
  // Every request got an answer (none left hanging); each typed-over one was cancelled on the wire.
  assert.equal(settled.length, 5);
  assert.ok(settled.every((outcome) => ["answered", "empty", "cancelled"].includes(outcome)), settled.join(", "));
  for (const id of requests.slice(0, 4)) {
    assert.ok(cancels.includes(id), `request ${id} was typed over but never cancelled`);
  }
  assert.ok(settled.slice(0, 4).includes("cancelled"), settled.join(", "));
  assert.ok(last && Array.isArray(last.items));
  for (const item of last.items) {
    assert.deepEqual(item.range, { start: position, end: position });
  }
});

function draftTokens(): (string | number)[] {
  return [...progress.keys()].filter((token) => isDraftToken(token));
}

function askDraft(position: Position, token = new CancellationTokenSource().token) {
  const argument = draftArgument(URI, position, position); // what "dglsp: Draft here" sends for a cursor
  return connection.sendRequest(ExecuteCommandRequest.type, { command: DRAFT_COMMAND, arguments: [argument] }, token) as Promise<DraftResult>;
}

test("dglsp.draft: progress on a server-created token, then one edit on the drafted version with the draft", async () => {
  // Random weights may end a draft at once (an end-of-text token): try a few spots, as the user would.
  for (const char of "xyz") {
    const position = endOf(text.trimEnd());
    const draftedVersion = version;
    const edits = appliedEdits.length;
    const tokens = draftTokens().length;
    const since = previews.length;
    const result = await askDraft(position);
    const token = draftTokens().slice(tokens)[0];
    assert.ok(token !== undefined, "the draft reported no progress");
    const values = progress.get(token)!;
    const begin = values[0];
    assert.ok(begin.kind === "begin" && begin.cancellable === true, "the draft's progress is not cancellable");
    assert.equal(values.at(-1)!.kind, "end");
    if (result.text === "") {
      assert.equal(result.applied, false);
      assert.equal(appliedEdits.length, edits);
      type(char, position);
      continue;
    }
    assert.equal(result.applied, true);
    assert.equal(appliedEdits.length, edits + 1, "not exactly one workspace/applyEdit");
    const [change] = appliedEdits.at(-1)!.edit.documentChanges as TextDocumentEdit[];
    assert.deepEqual(change.textDocument, { uri: URI, version: draftedVersion });
    assert.equal(change.edits.length, 1);
    assert.equal("newText" in change.edits[0] ? change.edits[0].newText : undefined, result.text);
    assert.deepEqual(change.edits[0].range.start, position);
    const reports = values.filter((value): value is WorkDoneProgressReport => value.kind === "report");
    assert.ok(reports.length >= 1, "no committed canvas was reported");
    // The progress message is the server's summary, shown as it is; the whole draft comes as previews.
    assert.ok(reports.every((report) => /^\d+ lines?: /.test(report.message ?? "")), reports.map((r) => r.message).join(" | "));
    const done = await doneSince(since, "draft");
    const streamed = previews.slice(since).filter((preview) => preview.kind === "draft" && !preview.done);
    assert.ok(streamed.length >= 1, "no committed canvas was previewed");
    assert.equal(streamed.at(-1)!.text, result.text);
    assert.deepEqual([done.text, done.reason], [result.text, undefined]);
    return;
  }
  assert.fail("every draft came back empty");
});

test("dglsp.draft cancelled through its token: $/cancelRequest goes out, nothing is applied", async () => {
  // A schedule that takes seconds per canvas, so the cancel lands mid-draft even on a fast machine
  // (a draft that already finished and was applied cannot be taken back by a late cancel).
  const slow = { ...options, sampler: { ...options.sampler, max_steps: 512 }, draft: { max_tokens: 4096 } };
  await connection.sendNotification(DidChangeConfigurationNotification.type, { settings: slow });
  const edits = appliedEdits.length;
  const tokens = draftTokens().length;
  const source = new CancellationTokenSource();
  const pending = askDraft(endOf(text.trimEnd()), source.token);
  const id = sentIds(ExecuteCommandRequest.method).at(-1);
  // Cancel as soon as the draft began (the server waits scheduler.debounce_ms before the model runs).
  for (let waited = 0; draftTokens().length === tokens && waited < 10_000; waited += 10) {
    await sleep(10);
  }
  assert.ok(draftTokens().length > tokens, "the draft never began");
  source.cancel();
  assert.ok(sentIds("$/cancelRequest").includes(id!), "no $/cancelRequest for the draft");
  await assert.rejects(pending, (error: unknown) => error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled);
  await sleep(300);
  assert.equal(appliedEdits.length, edits, "a cancelled draft was applied");
  await connection.sendNotification(DidChangeConfigurationNotification.type, { settings: options });
});

const EDIT_URI = "file:///tmp/dglsp-vscode/report.py";
// `total` is renamed on line 2; its next use is on line 14 (far from it), then line 18.
const EDIT_TEXT = [
  "def report(values):",
  "    total = 0",
  "    for value in values:",
  "        if value > 0:",
  '            print("+", value)',
  "        else:",
  '            print("-", value)',
  "        count = len(values)",
  '    print("count", count)',
  '    print("values", values)',
  '    print("done")',
  "    if not values:",
  "        return None",
  '    print("sum", total)',
  "    mean = 0",
  "    if count:",
  "        mean = 1 / count",
  "    return total, mean",
  "",
].join("\n");

test("next edit: after a rename, the edit at the next use in Copilot's shape; applied, it renames that use", async () => {
  let editText = EDIT_TEXT;
  let editVersion = 1;
  await connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri: EDIT_URI, languageId: "python", version: editVersion, text: editText },
  });
  const change = (range: { start: Position; end: Position }, newText: string) => {
    editVersion += 1;
    editText = applyEdit(editText, { range, text: newText });
    return connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri: EDIT_URI, version: editVersion },
      contentChanges: [{ range, text: newText }],
    });
  };
  await change({ start: { line: 1, character: 4 }, end: { line: 1, character: 9 } }, "sum_"); // the rename
  const since = previews.length;
  const result = await connection.sendRequest<{ edits: unknown[] }>(
    NEXT_EDIT_METHOD,
    nextEditParams(EDIT_URI, editVersion, { line: 1, character: 8 }),
  );
  assert.equal(result.edits.length, 1);
  const edit = firstEdit(result, EDIT_URI, editVersion);
  assert.ok(edit, `not an edit of this version: ${JSON.stringify(result)}`);
  const column = '    print("sum", '.length;
  assert.deepEqual(edit.range, { start: { line: 13, character: column }, end: { line: 13, character: column + 5 } });
  assert.equal(edit.text, "sum_");
  assert.deepEqual(edit.textDocument, { uri: EDIT_URI, version: editVersion });
  const command = edit.command;
  assert.ok(command);
  assert.equal(command.command, "dglsp.editAccepted");
  const [noted] = command.arguments as { uri: string; version: number; range: unknown; text: string; start: number; end: number }[];
  assert.deepEqual([noted.uri, noted.version, noted.range, noted.text], [EDIT_URI, editVersion, edit.range, "sum_"]);
  assert.equal(editText.slice(noted.start, noted.end), "total"); // the server's offsets, into the same text
  const expected = EDIT_TEXT.replace("    total = 0", "    sum_ = 0").replace('print("sum", total)', 'print("sum", sum_)');
  assert.equal(applyEdit(editText, edit), expected);
  // The request's end on the preview channel: the edit's range and text; the status bar says where it is.
  const done = await doneSince(since, "edit");
  assert.deepEqual([done.range, done.text, done.reason], [edit.range, "sum_", undefined]);
  assert.equal(describeOutcome(done), "dglsp: edit at line 14");

  // Shown, then accepted as the extension does: the edit applied (a new version), then the item's command.
  await connection.sendNotification(DID_SHOW_METHOD, { item: { command } });
  await change(edit.range, edit.text);
  assert.equal(editText, expected);
  const accepted: unknown = await connection.sendRequest(ExecuteCommandRequest.type, {
    command: command.command,
    arguments: command.arguments,
  });
  assert.equal(accepted, null);
  // A request about a version that is gone is answered with no edit.
  const stale = await connection.sendRequest(NEXT_EDIT_METHOD, nextEditParams(EDIT_URI, editVersion - 1, { line: 13, character: column }));
  assert.deepEqual(stale, { edits: [] });
  // At the new version: the next use, on line 18.
  const answer: unknown = await connection.sendRequest(NEXT_EDIT_METHOD, nextEditParams(EDIT_URI, editVersion, { line: 13, character: column + 3 }));
  const next = firstEdit(answer, EDIT_URI, editVersion);
  assert.ok(next);
  assert.equal(next.range.start.line, 17);
  assert.equal(applyEdit(editText, next), expected.replace("return total, mean", "return sum_, mean"));
});
