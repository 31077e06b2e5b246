/**
 * The VS Code side of dglsp: start `dglsp serve` with a LanguageClient and keep it in step with
 * the user's settings. Ghost text is VS Code's own: vscode-languageclient 11 registers the
 * server's inline-completion provider by default (VS Code waits ~50 ms after a keystroke, then
 * asks; it cancels the request through its token, which the client sends as `$/cancelRequest`).
 *
 * "dglsp: Draft here" (`dglsp.draftHere`) runs the server's `dglsp.draft` at the cursor (or after
 * the selection) in a cancellable notification that shows the draft growing (the server's
 * `$/progress` summaries, taken from the client's own progress handling by middleware); cancelling
 * sends `$/cancelRequest`, and the server's `workspace/applyEdit` inserts the draft (one undo step).
 *
 * The client declares `experimental.dglsp.preview`: every request then ends with a `dglsp/preview`
 * notification saying what was shown or why nothing was, which the status bar shows (with the model's
 * loading progress from `dglsp/status`). Where the cursor goes (another editor, a jump) is sent as
 * `dglsp/focus`, so that the server prepares the prompt there.
 *
 * Next edits (`textDocument/copilotInlineEdit`: the edit that follows the user's, anywhere in the file) are
 * asked for a pause after each edit and by "dglsp: Next Edit", drawn with decorations (the replaced text struck
 * through, the new text after it, both in a hover; a status bar hint when it is away from the cursor), and
 * applied by "dglsp: Apply Next Edit" (Tab while `dglsp.nextEditVisible`: a far edit is jumped to first) as a
 * `WorkspaceEdit` on the version it was computed for, then the item's command; Escape dismisses it.
 *
 * This file is glue only; what settings mean (command line, initializationOptions) lives in `config.ts`,
 * the draft's argument and messages in `draft.ts`, the status bar's words in `status.ts`, when to send
 * `dglsp/focus` in `focus.ts`, which next edit is shown and what Tab does in `nextEdit.ts`, all tested
 * without VS Code.
 */
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  LSPErrorCodes,
  ResponseError,
  type StaticFeature,
} from "vscode-languageclient/node";

import { type DglspConfig, initializationOptions, needsRestart, readConfig, serverCommand } from "./config";
import { DRAFT_COMMAND, type DraftResult, draftArgument, draftOutcome, isDraftToken } from "./draft";
import { type Cursor, FOCUS_DELAY_MS, FOCUS_METHOD, focusParams, isJump } from "./focus";
import {
  DID_SHOW_METHOD,
  NEXT_EDIT_METHOD,
  NextEditState,
  type Range,
  VISIBLE_CONTEXT,
  editView,
  hintText,
  isFar,
  nextEditParams,
} from "./nextEdit";
import {
  type Outcome,
  PREVIEW_METHOD,
  type Preview,
  STATUS_METHOD,
  type ServerStatus,
  nextOutcome,
  statusText,
  withPreviewCapability,
} from "./status";

const SECTION = "dglsp";

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
let config: DglspConfig;
let lastRoundTripMs: number | undefined;
let serverStatus: ServerStatus | undefined;
let lastOutcome: Outcome | undefined;
let lastCursor: Cursor | undefined;
let focusTimer: ReturnType<typeof setTimeout> | undefined;
// The running draft's notification; while it is set, draft progress goes there (not the status bar).
let showDraft: ((summary: string) => void) | undefined;
const nextEdits = new NextEditState();
let nextEditTimer: ReturnType<typeof setTimeout> | undefined;
let nextEditRequest: vscode.CancellationTokenSource | undefined;
let removedText: vscode.TextEditorDecorationType;
let addedText: vscode.TextEditorDecorationType;
let editHint: vscode.StatusBarItem;

/** vscode-languageclient fills client capabilities through features: this one declares ours. */
const previewCapability: StaticFeature = {
  fillClientCapabilities: (capabilities) => {
    capabilities.experimental = withPreviewCapability(capabilities.experimental);
  },
  initialize: () => undefined,
  getState: () => ({ kind: "static" }),
  clear: () => undefined,
};

function currentConfig(): DglspConfig {
  return readConfig(vscode.workspace.getConfiguration(SECTION));
}

function createClient(cfg: DglspConfig): LanguageClient {
  const { command, args } = serverCommand(cfg);
  const clientOptions: LanguageClientOptions = {
    documentSelector: cfg.languages.map((language) => ({ language })),
    initializationOptions: initializationOptions(cfg),
    outputChannel: output,
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!config.enable) {
          return null;
        }
        const begin = Date.now();
        const result = await next(document, position, context, token);
        if (!token.isCancellationRequested) {
          lastRoundTripMs = Date.now() - begin;
          showStatus();
        }
        return result;
      },
      // The client shows server-created progress in the status bar; a draft's goes to our notification.
      handleWorkDoneProgress: (token, params, next) => {
        if (showDraft === undefined || !isDraftToken(token)) {
          next(token, params);
        } else if (params.kind === "report" && params.message !== undefined) {
          showDraft(params.message);
        } else if (params.kind === "end") {
          next(token, params); // lets the client drop its record of the token
        }
      },
    },
  };
  const created = new LanguageClient("dglsp", "dglsp", { command, args }, clientOptions);
  created.registerFeature(previewCapability);
  created.onNotification(PREVIEW_METHOD, (preview: Preview) => {
    if (!preview.done) {
      return; // partial text: VS Code draws ghost text itself, and drafts show the progress summaries
    }
    lastOutcome = nextOutcome(lastOutcome, preview);
    if (preview.reason === "loading" || preview.reason === "load_failed") {
      void refreshStatus(); // the model is (re)loading: show its progress
    } else {
      showStatus();
    }
  });
  return created;
}

function showStatus(): void {
  const { text, tooltip } = statusText(serverStatus, config.enable, lastOutcome, lastRoundTripMs);
  statusItem.text = text;
  statusItem.tooltip = tooltip;
}

async function refreshStatus(): Promise<void> {
  let status: ServerStatus | undefined;
  if (client?.isRunning()) {
    try {
      status = await client.sendRequest<ServerStatus>(STATUS_METHOD, {});
    } catch (error) {
      output.warn(`dglsp/status failed: ${String(error)}`);
    }
  }
  serverStatus = status;
  showStatus();
  // Poll while the model loads, so the bar shows its progress and says when it is ready.
  if (status?.state === "loading") {
    setTimeout(() => void refreshStatus(), 500);
  }
}

/** Send `dglsp/focus` (debounced) when the cursor moved to another document or jumped. */
function noteCursor(editor: vscode.TextEditor | undefined): void {
  if (!editor || !config.languages.includes(editor.document.languageId)) {
    return;
  }
  const { line, character } = editor.selection.active;
  const cursor = { uri: editor.document.uri.toString(), version: editor.document.version, line, character };
  const jump = isJump(lastCursor, cursor);
  lastCursor = cursor;
  if (jump) {
    clearTimeout(focusTimer);
    focusTimer = setTimeout(() => {
      if (client?.isRunning()) {
        void client.sendNotification(FOCUS_METHOD, focusParams(cursor));
      }
    }, FOCUS_DELAY_MS);
  }
}

function toRange(range: Range): vscode.Range {
  return new vscode.Range(range.start.line, range.start.character, range.end.line, range.end.character);
}

function visibleLines(editor: vscode.TextEditor): { start: number; end: number }[] {
  return editor.visibleRanges.map((range) => ({ start: range.start.line, end: range.end.line }));
}

/** The status bar hint while the shown edit is away from the cursor (Tab jumps there). */
function showEditHint(): void {
  const edit = nextEdits.shown;
  const editor = vscode.window.activeTextEditor;
  if (edit && editor && isFar(edit, editor.selection.active.line, visibleLines(editor))) {
    editHint.text = `$(arrow-right) dglsp ${hintText(edit)} (Tab)`;
    editHint.show();
  } else {
    editHint.hide();
  }
}

/** Draw the shown next edit (or none) in every visible editor, and set the context key Tab/Escape wait for. */
function drawNextEdit(): void {
  const edit = nextEdits.shown;
  for (const editor of vscode.window.visibleTextEditors) {
    if (!edit || editor.document.uri.toString() !== edit.textDocument.uri) {
      editor.setDecorations(removedText, []);
      editor.setDecorations(addedText, []);
      continue;
    }
    const view = editView(edit, editor.document.languageId);
    const hoverMessage = new vscode.MarkdownString(view.hover);
    const end = toRange(edit.range).end;
    editor.setDecorations(removedText, view.removed ? [{ range: toRange(view.removed), hoverMessage }] : []);
    const after = { range: new vscode.Range(end, end), hoverMessage, renderOptions: { after: { contentText: view.after } } };
    editor.setDecorations(addedText, view.after ? [after] : []);
  }
  void vscode.commands.executeCommand("setContext", VISIBLE_CONTEXT, edit !== undefined);
  showEditHint();
}

/** Ask for the next edit at the cursor now (replacing a shown one and cancelling one in flight). */
async function requestNextEdit(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const running = client;
  if (!editor || !running?.isRunning() || !config.languages.includes(editor.document.languageId)) {
    return;
  }
  nextEditRequest?.cancel();
  const source = new vscode.CancellationTokenSource();
  nextEditRequest = source;
  const request = nextEdits.begin();
  drawNextEdit();
  const { document } = editor;
  const [uri, version] = [document.uri.toString(), document.version];
  try {
    const result: unknown = await running.sendRequest(NEXT_EDIT_METHOD, nextEditParams(uri, version, editor.selection.active), source.token);
    const edit = nextEdits.answer(request, result, uri, version, document.version);
    if (edit) {
      drawNextEdit();
      await running.sendNotification(DID_SHOW_METHOD, { item: { command: edit.command } });
    }
  } catch (error) {
    const cancelled = source.token.isCancellationRequested || (error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled);
    if (!cancelled) {
      output.warn(`${NEXT_EDIT_METHOD} failed: ${String(error)}`);
    }
  }
}

/** Tab on a shown next edit: jump to it when it is far, else apply it and run its command. */
async function applyNextEdit(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    return;
  }
  const { document } = editor;
  const action = nextEdits.next(document.uri.toString(), document.version, editor.selection.active.line, visibleLines(editor));
  if (action.kind === "jump") {
    const to = new vscode.Position(action.to.line, action.to.character);
    editor.selection = new vscode.Selection(to, to);
    editor.revealRange(new vscode.Range(to, to), vscode.TextEditorRevealType.InCenterIfOutsideViewport);
    showEditHint();
    return;
  }
  drawNextEdit(); // applied or gone stale: the decorations and the context key go
  if (action.kind === "none") {
    return;
  }
  const { edit } = action;
  const change = new vscode.WorkspaceEdit();
  change.replace(document.uri, toRange(edit.range), edit.text);
  if (!(await vscode.workspace.applyEdit(change))) {
    return;
  }
  const lines = edit.text.split("\n");
  const endLine = edit.range.start.line + lines.length - 1;
  const endCharacter = (lines.length === 1 ? edit.range.start.character : 0) + lines[lines.length - 1].length;
  editor.selection = new vscode.Selection(endLine, endCharacter, endLine, endCharacter);
  if (edit.command && client?.isRunning()) {
    // dglsp.editAccepted: the server's edit history notes the accept.
    await client.sendRequest(ExecuteCommandRequest.type, { command: edit.command.command, arguments: edit.command.arguments });
  }
}

function dismissNextEdit(): void {
  nextEditRequest?.cancel();
  if (nextEdits.dismiss()) {
    drawNextEdit();
  }
}

/** An edit to a served document: its shown edit goes; the active one asks again after a pause. */
function onDocumentChanged(event: vscode.TextDocumentChangeEvent): void {
  if (event.contentChanges.length === 0 || !config.languages.includes(event.document.languageId)) {
    return;
  }
  if (nextEdits.changed(event.document.uri.toString())) {
    drawNextEdit();
  }
  clearTimeout(nextEditTimer);
  if (config.enable && config.nextEdit && event.document === vscode.window.activeTextEditor?.document) {
    nextEditRequest?.cancel();
    nextEditTimer = setTimeout(() => void requestNextEdit(), config.nextEditDebounceMs);
  }
}

async function startClient(): Promise<void> {
  client = createClient(config);
  try {
    await client.start();
  } catch (error) {
    output.error(`could not start ${JSON.stringify(serverCommand(config))}: ${String(error)}`);
    void vscode.window.showErrorMessage(`dglsp: the server did not start (see "dglsp: Show Server Log").`);
  }
  await refreshStatus();
  lastCursor = undefined;
  noteCursor(vscode.window.activeTextEditor);
}

async function restartClient(): Promise<void> {
  const old = client;
  client = undefined;
  lastOutcome = undefined;
  await old?.stop().catch((error: unknown) => output.warn(`stopping the server: ${String(error)}`));
  await startClient();
}

async function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
  if (!event.affectsConfiguration(SECTION)) {
    return;
  }
  const before = config;
  config = currentConfig();
  if (needsRestart(before, config)) {
    await restartClient();
    return;
  }
  await client?.sendNotification(DidChangeConfigurationNotification.type, {
    settings: { dglsp: initializationOptions(config) },
  });
  await refreshStatus();
}

async function draftHere(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const running = client;
  if (!editor || !running?.isRunning()) {
    void vscode.window.showWarningMessage("dglsp: open a file served by dglsp first");
    return;
  }
  const { anchor, active } = editor.selection;
  const argument = draftArgument(editor.document.uri.toString(), anchor, active);
  const options = { location: vscode.ProgressLocation.Notification, title: "dglsp: drafting", cancellable: true };
  await vscode.window.withProgress(options, async (progress, token) => {
    showDraft = (summary) => progress.report({ message: summary });
    try {
      // The token's cancel becomes `$/cancelRequest`: the server stops within one step, applies nothing.
      const result = (await running.sendRequest(ExecuteCommandRequest.type, { command: DRAFT_COMMAND, arguments: [argument] }, token)) as DraftResult | null;
      const outcome = token.isCancellationRequested ? undefined : draftOutcome(result);
      if (outcome) {
        void vscode.window.showInformationMessage(outcome);
      }
    } catch (error) {
      const cancelled = token.isCancellationRequested || (error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled);
      if (!cancelled) {
        output.error(`dglsp.draft failed: ${String(error)}`);
        void vscode.window.showErrorMessage(`dglsp: drafting failed: ${error instanceof Error ? error.message : String(error)}`);
      }
    } finally {
      showDraft = undefined;
    }
  });
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("dglsp", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "dglsp.toggle";
  statusItem.show();
  editHint = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 99);
  editHint.command = "dglsp.applyNextEdit";
  removedText = vscode.window.createTextEditorDecorationType({
    backgroundColor: new vscode.ThemeColor("diffEditor.removedTextBackground"),
    textDecoration: "line-through",
  });
  addedText = vscode.window.createTextEditorDecorationType({
    after: { backgroundColor: new vscode.ThemeColor("diffEditor.insertedTextBackground"), margin: "0 0 0 0.25em" },
  });
  config = currentConfig();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand("dglsp.toggle", async () => {
      await vscode.workspace.getConfiguration(SECTION).update("enable", !config.enable, vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand("dglsp.showLog", () => output.show()),
    vscode.commands.registerCommand("dglsp.restart", () => restartClient()),
    vscode.commands.registerCommand("dglsp.draftHere", () => draftHere()),
    editHint,
    removedText,
    addedText,
    vscode.commands.registerCommand("dglsp.nextEdit", () => requestNextEdit()),
    vscode.commands.registerCommand("dglsp.applyNextEdit", () => applyNextEdit()),
    vscode.commands.registerCommand("dglsp.dismissNextEdit", () => dismissNextEdit()),
    vscode.workspace.onDidChangeTextDocument((event) => onDocumentChanged(event)),
    vscode.workspace.onDidChangeConfiguration((event) => onConfigurationChanged(event)),
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      dismissNextEdit(); // one edit, in the document in front of the user
      noteCursor(editor);
    }),
    vscode.window.onDidChangeTextEditorSelection((event) => {
      noteCursor(event.textEditor);
      showEditHint();
    }),
    vscode.window.onDidChangeTextEditorVisibleRanges(() => showEditHint()),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  clearTimeout(focusTimer);
  clearTimeout(nextEditTimer);
  await client?.stop();
}
