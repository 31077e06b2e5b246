/**
 * Settings -> server command and `initializationOptions`.
 *
 * Pure functions with no `vscode` import, so Node's test runner tests them directly. The
 * extension reads VS Code's configuration into a `DglspConfig` and calls these; the server
 * validates every value again (a bad one is reported there and its default kept).
 *
 * Server settings go to the server only when the user set them: the server's defaults live in the
 * server alone (dglsp/config.py), so a changed default reaches VS Code users with the server.
 */

export interface DglspConfig {
  enable: boolean;
  languages: string[];
  serverCommand: string[];
  pythonPath: string;
  model: string;
  device: string;
  /** sampler.canvas_length; undefined: not set by the user (the server's default). */
  canvasLength: number | undefined;
  /** scheduler.debounce_ms; undefined: not set by the user (the server's default). */
  debounceMs: number | undefined;
  settings: Record<string, unknown>;
  /** Ask for the next edit a pause after each edit (client side; "dglsp: Next Edit" always asks). */
  nextEdit: boolean;
  /** The pause, in ms. */
  nextEditDebounceMs: number;
}

/** The fields of VS Code's `WorkspaceConfiguration.inspect(key)` read here: the values the user set. */
export interface InspectedSetting<T> {
  globalValue?: T;
  workspaceValue?: T;
  workspaceFolderValue?: T;
}

/** The part of VS Code's `WorkspaceConfiguration` read here (tests pass a plain object). */
export interface Configuration {
  /** The value in effect; package.json's default when the user set none. */
  get<T>(key: string): T | undefined;
  inspect<T>(key: string): InspectedSetting<T> | undefined;
}

/**
 * Mirrors package.json's `contributes.configuration` defaults (a test keeps the two in step). Server
 * settings have none here or there (null in package.json): unset, the server's own default applies.
 */
export const DEFAULTS: DglspConfig = {
  enable: true,
  languages: ["python", "javascript", "typescript", "go", "rust", "c", "cpp", "java", "lua", "shellscript"],
  serverCommand: [],
  pythonPath: "python3",
  model: "",
  device: "auto",
  canvasLength: undefined,
  debounceMs: undefined,
  settings: {},
  nextEdit: true,
  nextEditDebounceMs: 300,
};

/** The value of `key` if the user set one (user, workspace or folder settings), else undefined. */
function userValue<T>(configuration: Configuration, key: string): T | undefined {
  const inspected = configuration.inspect<T>(key);
  const levels = [inspected?.globalValue, inspected?.workspaceValue, inspected?.workspaceFolderValue];
  if (levels.every((value) => value === undefined || value === null)) {
    return undefined;
  }
  return configuration.get<T>(key) ?? undefined;
}

/** Build a config from VS Code's `WorkspaceConfiguration` for the `dglsp` section. */
export function readConfig(configuration: Configuration): DglspConfig {
  const get = <T>(key: string, fallback: T): T => configuration.get<T>(key) ?? fallback;
  return {
    enable: get("enable", DEFAULTS.enable),
    languages: get("languages", DEFAULTS.languages),
    serverCommand: get("server.command", DEFAULTS.serverCommand),
    pythonPath: get("server.pythonPath", DEFAULTS.pythonPath),
    model: get("model", DEFAULTS.model),
    device: get("device", DEFAULTS.device),
    canvasLength: userValue<number>(configuration, "canvasLength"),
    debounceMs: userValue<number>(configuration, "debounceMs"),
    settings: get("settings", DEFAULTS.settings),
    nextEdit: get("nextEdit.enable", DEFAULTS.nextEdit),
    nextEditDebounceMs: get("nextEdit.debounceMs", DEFAULTS.nextEditDebounceMs),
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

/**
 * Settings in the server's shape (sections of dglsp/config.py), only those the user set;
 * `dglsp.settings` wins over the named ones.
 */
export function initializationOptions(config: DglspConfig): Record<string, unknown> {
  const named: Record<string, Record<string, unknown>> = {};
  if (config.canvasLength !== undefined) {
    named.sampler = { canvas_length: config.canvasLength };
  }
  if (config.debounceMs !== undefined) {
    named.scheduler = { debounce_ms: config.debounceMs };
  }
  return merge(named, isObject(config.settings) ? config.settings : {});
}

/** "section.key" of every value in `options`. */
function settingPaths(options: Record<string, unknown>, prefix = ""): string[] {
  return Object.entries(options).flatMap(([key, value]) =>
    isObject(value) ? settingPaths(value, `${prefix}${key}.`) : [`${prefix}${key}`],
  );
}

/**
 * A change that needs a new server process: the command or the languages, or a setting the server was
 * sent and is sent no more (the server keeps the last value it got; a new one starts from its defaults).
 * Anything else goes as didChangeConfiguration.
 */
export function needsRestart(before: DglspConfig, after: DglspConfig): boolean {
  const key = (c: DglspConfig) => JSON.stringify([serverCommand(c), c.languages]);
  if (key(before) !== key(after)) {
    return true;
  }
  const sent = new Set(settingPaths(initializationOptions(after)));
  return settingPaths(initializationOptions(before)).some((path) => !sent.has(path));
}
