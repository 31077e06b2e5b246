/**
 * Settings -> server command, `initializationOptions` and status-bar text.
 *
 * Pure functions with no `vscode` import, so Node's test runner tests them directly. The
 * extension reads VS Code's configuration into a `DglspConfig` and calls these; the server
 * validates every value again (a bad one is reported there and its default kept).
 */

export interface DglspConfig {
  enable: boolean;
  languages: string[];
  serverCommand: string[];
  pythonPath: string;
  model: string;
  device: string;
  canvasLength: number;
  debounceMs: number;
  settings: Record<string, unknown>;
}

/** The answer to the server's `dglsp/status` request. */
export interface ServerStatus {
  model: string | null;
  device: string;
  ready: boolean;
  last_latency_ms: number | null;
  load_message: string;
}

/** Mirrors package.json's `contributes.configuration` defaults (a test keeps the two in step). */
export const DEFAULTS: DglspConfig = {
  enable: true,
  languages: ["python", "javascript", "typescript", "go", "rust", "c", "cpp", "java", "lua", "shellscript"],
  serverCommand: [],
  pythonPath: "python3",
  model: "",
  device: "auto",
  canvasLength: 32,
  debounceMs: 15,
  settings: {},
};

/** Build a config from a `get(key, default)` lookup (VS Code's `WorkspaceConfiguration.get`). */
export function readConfig(get: <T>(key: string, fallback: T) => T): DglspConfig {
  return {
    enable: get("enable", DEFAULTS.enable),
    languages: get("languages", DEFAULTS.languages),
    serverCommand: get("server.command", DEFAULTS.serverCommand),
    pythonPath: get("server.pythonPath", DEFAULTS.pythonPath),
    model: get("model", DEFAULTS.model),
    device: get("device", DEFAULTS.device),
    canvasLength: get("canvasLength", DEFAULTS.canvasLength),
    debounceMs: get("debounceMs", DEFAULTS.debounceMs),
    settings: get("settings", DEFAULTS.settings),
  };
}

/** The process to start: model and device are start-up options of `dglsp serve`, not settings. */
export function serverCommand(config: DglspConfig): { command: string; args: string[] } {
  const base = config.serverCommand.length > 0 ? config.serverCommand : [config.pythonPath, "-m", "dglsp", "serve"];
  const args = base.slice(1);
  if (config.model) {
    args.push("--model", config.model);
  }
  if (config.device && config.device !== "auto") {
    args.push("--device", config.device);
  }
  return { command: base[0], args };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isObject(current) && isObject(value) ? merge(current, value) : value;
  }
  return out;
}

/** Settings in the server's shape (sections of dglsp/config.py); `dglsp.settings` wins over the named ones. */
export function initializationOptions(config: DglspConfig): Record<string, unknown> {
  const named = {
    sampler: { canvas_length: config.canvasLength },
    scheduler: { debounce_ms: config.debounceMs },
  };
  return merge(named, isObject(config.settings) ? config.settings : {});
}

/** A change to these needs a new server process; anything else goes as didChangeConfiguration. */
export function needsRestart(before: DglspConfig, after: DglspConfig): boolean {
  const key = (c: DglspConfig) => JSON.stringify([serverCommand(c), c.languages]);
  return key(before) !== key(after);
}

function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter((part) => part.length > 0);
  return parts.length > 0 ? parts[parts.length - 1] : path;
}

/** Status-bar text and tooltip: `$(sparkle) dglsp: <model> · <device> · <latency>`. */
export function statusText(
  status: ServerStatus | undefined,
  enabled: boolean,
  roundTripMs?: number,
): { text: string; tooltip: string } {
  if (!status) {
    return { text: "$(circle-slash) dglsp: not running", tooltip: "dglsp: the server is not running" };
  }
  const model = status.model ? baseName(status.model) : "embedded";
  const icon = !enabled ? "$(circle-slash)" : status.ready ? "$(sparkle)" : "$(loading~spin)";
  const parts = [`${icon} dglsp: ${model}`, status.device];
  if (!status.ready) {
    parts.push(status.load_message);
  } else if (status.last_latency_ms !== null) {
    parts.push(`${Math.round(status.last_latency_ms)} ms`);
  }
  const tooltip = [
    `model: ${status.model ?? "embedded"}`,
    `device: ${status.device}`,
    `state: ${status.ready ? "ready" : status.load_message}`,
    `suggestions: ${enabled ? "on" : "off"}`,
    status.last_latency_ms !== null ? `last latency: ${status.last_latency_ms.toFixed(0)} ms (server)` : "",
    roundTripMs !== undefined ? `round trip: ${roundTripMs.toFixed(0)} ms` : "",
  ].filter((line) => line.length > 0);
  return { text: parts.join(" · "), tooltip: tooltip.join("\n") };
}
