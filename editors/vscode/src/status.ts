/**
 * What the status bar says the server is doing: the last suggestion's latency, why it was hidden, or the
 * model loading, in the same words as the Neovim plugin's statusline.
 *
 * A client that declares `PREVIEW_CAPABILITY` gets `dglsp/preview` notifications: partial text while a
 * request runs, and one with `done: true` at its end, carrying the text shown, or "" and a `reason`
 * (dglsp/completion/outcome.py) with a `detail` for the user. `dglsp/status` says whether the model is
 * loading. Pure functions (no `vscode` import), tested with Node's test runner; extension.ts is the glue.
 */

export const PREVIEW_METHOD = "dglsp/preview";
export const STATUS_METHOD = "dglsp/status";

/** `experimental` client capability: the server sends `dglsp/preview` to clients that declare it. */
export const PREVIEW_CAPABILITY = { dglsp: { preview: true } };

/** A client's `experimental` capabilities with ours added. */
export function withPreviewCapability(experimental: unknown): Record<string, unknown> {
  const others = typeof experimental === "object" && experimental !== null ? experimental : {};
  return { ...others, ...PREVIEW_CAPABILITY };
}

interface Position {
  line: number;
  character: number;
}

/** The params of `dglsp/preview`. */
export interface Preview {
  uri: string;
  version: number;
  kind: "completion" | "draft" | "edit";
  range: { start: Position; end: Position };
  text: string;
  done: boolean;
  reason?: string;
  detail?: string;
  latency_ms?: number;
  passes?: number;
}

/** How a request ended: a done preview, or `dglsp/status`'s `last`. No reason: something was shown. */
export interface Outcome {
  kind?: string;
  reason?: string;
  detail?: string;
  latency_ms?: number;
  range?: { start: Position; end: Position };
}

/** The answer to `dglsp/status`. */
export interface ServerStatus {
  model: string | null;
  device: string;
  ready: boolean;
  state: "loading" | "ready" | "failed";
  load_message: string;
  load_percent: number | null;
  last_latency_ms: number | null;
  last: (Outcome & { uri: string; shown: boolean }) | null;
  outcomes: Record<string, number>;
}

// The user moved on (a newer request, a cancel, an edit): nothing to report about the model.
const STOPPED = new Set(["superseded", "cancelled", "document_changed", "document_closed", "preempted", "shutdown"]);
// Something is wrong, not merely unsure.
const PROBLEMS = new Set(["load_failed", "backend_error", "error"]);

const SAYS: Record<string, string> = {
  low_confidence: "low confidence",
  unparsable: "did not parse",
  repeat: "repeated the code below",
  brackets: "only unmatched brackets",
  empty: "nothing to suggest",
  load_failed: "model failed to load",
  backend_error: "server error",
};

export function isStopped(outcome: Outcome): boolean {
  return outcome.reason !== undefined && STOPPED.has(outcome.reason);
}

/** The outcome to show once `done` arrived: a stopped request does not replace one that ran to its end. */
export function nextOutcome(current: Outcome | undefined, done: Outcome): Outcome {
  return current === undefined || !isStopped(done) || isStopped(current) ? done : current;
}

function short(text: string, limit = 60): string {
  const chars = [...text];
  return chars.length > limit ? `${chars.slice(0, limit - 1).join("")}…` : text;
}

/** A next edit's outcome: where it is (`dglsp: edit at line 12`), or why there is none. */
function describeEdit(outcome: Outcome): string {
  if (!outcome.reason) {
    return outcome.range ? `dglsp: edit at line ${outcome.range.start.line + 1}` : "dglsp: edit shown";
  }
  if (outcome.reason === "no_edit") {
    return "dglsp: no edit";
  }
  return `dglsp: no edit: ${describeOutcome({ reason: outcome.reason, detail: outcome.detail }).replace(/^dglsp: /, "")}`;
}

/**
 * `dglsp 84 ms`, or why nothing was shown: `dglsp: low confidence 0.41 < 0.73`, `dglsp: server error: ...`; a next
 * edit's: `dglsp: edit at line 12`, `dglsp: no edit`.
 */
export function describeOutcome(outcome: Outcome): string {
  const { reason } = outcome;
  if (outcome.kind === "edit") {
    return describeEdit(outcome);
  }
  if (!reason) {
    return `dglsp ${Math.round(outcome.latency_ms ?? 0)} ms`;
  }
  const detail = outcome.detail ?? "";
  const says = SAYS[reason] ?? reason.replaceAll("_", " ");
  if (reason === "low_confidence") {
    // The server's detail is "confidence 0.41 < 0.73".
    return `dglsp: ${`${says} ${detail.replace(/^confidence\s*/, "")}`.trim()}`;
  }
  return PROBLEMS.has(reason) && detail ? `dglsp: ${says}: ${short(detail)}` : `dglsp: ${says}`;
}

function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter((part) => part.length > 0);
  return parts.length > 0 ? parts[parts.length - 1] : path;
}

/**
 * Status-bar text and tooltip: the model loading, else the last outcome (`$(sparkle) dglsp 84 ms`,
 * `$(eye-closed) dglsp: did not parse`, `$(warning) dglsp: server error: ...`); model and device in the tooltip.
 */
export function statusText(
  status: ServerStatus | undefined,
  enabled: boolean,
  outcome?: Outcome,
  roundTripMs?: number,
): { text: string; tooltip: string } {
  if (!status) {
    return { text: "$(circle-slash) dglsp: not running", tooltip: "dglsp: the server is not running" };
  }
  let text: string;
  if (status.state === "loading") {
    const percent = status.load_percent !== null ? ` ${Math.floor(status.load_percent)}%` : "";
    text = `$(loading~spin) dglsp: loading${percent}`;
  } else if (status.state === "failed") {
    text = `$(error) ${describeOutcome({ reason: "load_failed", detail: status.load_message })}`;
  } else if (!enabled) {
    text = "$(circle-slash) dglsp: off";
  } else if (outcome === undefined) {
    text = "$(sparkle) dglsp";
  } else {
    const icon = !outcome.reason ? "$(sparkle)" : PROBLEMS.has(outcome.reason) ? "$(warning)" : "$(eye-closed)";
    text = `${icon} ${describeOutcome(outcome)}`;
  }
  const tooltip = [
    `model: ${status.model ? baseName(status.model) : "embedded"}`,
    `device: ${status.device}`,
    `state: ${status.state === "ready" ? "ready" : `${status.state}: ${status.load_message}`}`,
    `suggestions: ${enabled ? "on" : "off"}`,
    outcome?.reason && outcome.detail ? `last hidden: ${outcome.reason} (${outcome.detail})` : "",
    outcome?.latency_ms !== undefined ? `last request: ${Math.round(outcome.latency_ms)} ms (server)` : "",
    roundTripMs !== undefined ? `round trip: ${Math.round(roundTripMs)} ms` : "",
  ].filter((line) => line.length > 0);
  return { text, tooltip: tooltip.join("\n") };
}
