/**
 * The VS Code side of dglsp: start `dglsp serve` with a LanguageClient and keep it in step with
 * the user's settings. Ghost text is VS Code's own: vscode-languageclient 11 registers the
 * server's inline-completion provider by default (VS Code waits ~50 ms after a keystroke, then
 * asks; it cancels the request through its token, which the client sends as `$/cancelRequest`).
 *
 * "dglsp: Draft here" (`dglsp.draftHere`) runs the server's `dglsp.draft` at the cursor (or after
 * the selection) in a cancellable notification that shows the draft growing (the server's
 * `$/progress` reports, taken from the client's own progress handling by middleware); cancelling
 * sends `$/cancelRequest`, and the server's `workspace/applyEdit` inserts the draft (one undo step).
 *
 * This file is glue only; what settings mean (command line, initializationOptions, status text)
 * lives in `config.ts`, the draft's argument and messages in `draft.ts`, both tested without VS Code.
 */
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  LSPErrorCodes,
  ResponseError,
} from "vscode-languageclient/node";

import { DRAFT_COMMAND, type DraftResult, draftArgument, draftOutcome, isDraftToken, progressMessage } from "./draft";
import { type DglspConfig, type ServerStatus, initializationOptions, needsRestart, readConfig, serverCommand, statusText } from "./config";

const SECTION = "dglsp";
const STATUS_REQUEST = "dglsp/status";

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
let config: DglspConfig;
let lastRoundTripMs: number | undefined;
// The running draft's notification; while it is set, draft progress goes there (not the status bar).
let showDraft: ((draftSoFar: string) => void) | undefined;

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
          void refreshStatus();
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
  return new LanguageClient("dglsp", "dglsp", { command, args }, clientOptions);
}

async function refreshStatus(): Promise<void> {
  let status: ServerStatus | undefined;
  if (client?.isRunning()) {
    try {
      status = await client.sendRequest<ServerStatus>(STATUS_REQUEST, {});
    } catch (error) {
      output.warn(`dglsp/status failed: ${String(error)}`);
    }
  }
  const { text, tooltip } = statusText(status, config.enable, lastRoundTripMs);
  statusItem.text = text;
  statusItem.tooltip = tooltip;
  // Poll while the model loads, so the bar says when it is ready.
  if (status && !status.ready) {
    setTimeout(() => void refreshStatus(), 1000);
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
}

async function restartClient(): Promise<void> {
  const old = client;
  client = undefined;
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
    showDraft = (draftSoFar) => progress.report({ message: progressMessage(draftSoFar) });
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
    vscode.workspace.onDidChangeConfiguration((event) => onConfigurationChanged(event)),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
