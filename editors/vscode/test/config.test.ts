// Unit tests of the extension's settings logic (no VS Code): settings -> command, initializationOptions.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  type Configuration,
  DEFAULTS,
  type DglspConfig,
  type InspectedSetting,
  initializationOptions,
  needsRestart,
  readConfig,
  serverCommand,
} from "../src/config";

type Property = { default?: unknown; type?: string | string[]; description?: string };
const manifest = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as {
  activationEvents: string[];
  contributes: { configuration: { properties: Record<string, Property> } };
};
const properties = manifest.contributes.configuration.properties;

function config(overrides: Partial<DglspConfig> = {}): DglspConfig {
  return { ...DEFAULTS, ...overrides };
}

type Level = "globalValue" | "workspaceValue" | "workspaceFolderValue";

/**
 * VS Code's `WorkspaceConfiguration` for the `dglsp` section over package.json: `set` holds what the
 * user set, per key and level. `get` answers as VS Code does: the most specific level the user set,
 * else package.json's default.
 */
function vscodeConfiguration(set: Record<string, Partial<Record<Level, unknown>>> = {}): Configuration {
  const inspect = <T>(key: string): InspectedSetting<T> | undefined => {
    const entry = properties[`dglsp.${key}`];
    assert.ok(entry, `package.json lacks dglsp.${key}`);
    return { ...(set[key] ?? {}) } as InspectedSetting<T>;
  };
  return {
    inspect,
    get<T>(key: string): T | undefined {
      const levels = inspect<T>(key) ?? {};
      const user = levels.workspaceFolderValue ?? levels.workspaceValue ?? levels.globalValue;
      return user !== undefined ? user : (properties[`dglsp.${key}`].default as T);
    },
  };
}

test("DEFAULTS are package.json's defaults, read back through readConfig", () => {
  assert.deepEqual(readConfig(vscodeConfiguration()), DEFAULTS);
});

test("package.json declares no default for the server's settings: null, described as the server's default", () => {
  for (const key of ["dglsp.canvasLength", "dglsp.debounceMs"]) {
    // VS Code makes an integer setting without a default 0, so the default is an explicit null.
    assert.equal(properties[key].default, null, key);
    assert.deepEqual(properties[key].type, ["integer", "null"], key);
    assert.match(properties[key].description ?? "", /the server's default/, key);
  }
});

test("readConfig: a server setting is read only where the user set it", () => {
  assert.equal(readConfig(vscodeConfiguration()).canvasLength, undefined);
  assert.equal(readConfig(vscodeConfiguration({ canvasLength: { globalValue: 16 } })).canvasLength, 16);
  assert.equal(readConfig(vscodeConfiguration({ debounceMs: { workspaceValue: 0 } })).debounceMs, 0);
  const both = vscodeConfiguration({ canvasLength: { globalValue: 16, workspaceFolderValue: 8 } });
  assert.equal(readConfig(both).canvasLength, 8);
  // An explicit null in settings.json is "unset" too.
  assert.equal(readConfig(vscodeConfiguration({ canvasLength: { globalValue: null } })).canvasLength, undefined);
  // Even if `get` answered a value (a default VS Code made up), only what inspect says the user set counts.
  const madeUp: Configuration = { get: <T>() => 0 as T, inspect: () => ({}) };
  assert.equal(readConfig(madeUp).debounceMs, undefined);
});

test("initializationOptions: a server setting the user did not set is not sent", () => {
  const options = initializationOptions(readConfig(vscodeConfiguration()));
  assert.deepEqual(options, {});
  assert.ok(!("sampler" in options) && !("scheduler" in options));
  const onlyDebounce = initializationOptions(readConfig(vscodeConfiguration({ debounceMs: { globalValue: 40 } })));
  assert.deepEqual(onlyDebounce, { scheduler: { debounce_ms: 40 } });
});

test("initializationOptions: a server setting the user set is sent, dglsp.settings wins over it", () => {
  const configuration = vscodeConfiguration({
    canvasLength: { globalValue: 16 },
    debounceMs: { workspaceValue: 0 },
    settings: { globalValue: { sampler: { canvas_length: 64, max_steps: 8 } } },
  });
  assert.deepEqual(initializationOptions(readConfig(configuration)), {
    sampler: { canvas_length: 64, max_steps: 8 },
    scheduler: { debounce_ms: 0 },
  });
});

test("the extension activates on every default language", () => {
  assert.deepEqual(manifest.activationEvents, DEFAULTS.languages.map((language) => `onLanguage:${language}`));
});

test("server command: python -m dglsp serve by default, model and device as flags", () => {
  assert.deepEqual(serverCommand(config()), { command: "python3", args: ["-m", "dglsp", "serve"] });
  assert.deepEqual(serverCommand(config({ pythonPath: "/venv/bin/python", model: "/m", device: "cuda" })), {
    command: "/venv/bin/python",
    args: ["-m", "dglsp", "serve", "--model", "/m", "--device", "cuda"],
  });
  assert.deepEqual(serverCommand(config({ serverCommand: ["/bin/dglsp", "serve"], device: "auto" })), {
    command: "/bin/dglsp",
    args: ["serve"],
  });
});

test("initializationOptions: named settings in the server's sections, dglsp.settings merged over them", () => {
  assert.deepEqual(initializationOptions(config({ canvasLength: 16, debounceMs: 0 })), {
    sampler: { canvas_length: 16 },
    scheduler: { debounce_ms: 0 },
  });
  const merged = initializationOptions(
    config({ canvasLength: 16, settings: { sampler: { max_steps: 8, canvas_length: 64 }, postprocess: { max_lines: 4 } } }),
  );
  assert.deepEqual(merged, {
    sampler: { canvas_length: 64, max_steps: 8 },
    postprocess: { max_lines: 4 },
  });
  const ignored = initializationOptions(config({ canvasLength: 16, settings: ["not", "an", "object"] as unknown as Record<string, unknown> }));
  assert.deepEqual(ignored, { sampler: { canvas_length: 16 } });
});

test("a new model, device or command restarts the server; sampler settings do not", () => {
  assert.equal(needsRestart(config(), config({ model: "/other" })), true);
  assert.equal(needsRestart(config(), config({ device: "cpu" })), true);
  assert.equal(needsRestart(config(), config({ pythonPath: "/venv/bin/python" })), true);
  assert.equal(needsRestart(config(), config({ canvasLength: 8, debounceMs: 100, settings: { sampler: {} } })), false);
  assert.equal(needsRestart(config({ canvasLength: 8 }), config({ canvasLength: 16 })), false);
});

test("unsetting a setting the server was sent restarts it (the server keeps the last value it got)", () => {
  assert.equal(needsRestart(config({ canvasLength: 8 }), config()), true);
  assert.equal(needsRestart(config({ settings: { sampler: { max_steps: 8 } } }), config()), true);
  // Still sent through dglsp.settings: no restart.
  assert.equal(needsRestart(config({ canvasLength: 8 }), config({ settings: { sampler: { canvas_length: 8 } } })), false);
});

test("next edits: asked a 300 ms pause after an edit by default; client-side settings, never sent to the server", () => {
  assert.equal(DEFAULTS.nextEdit, true);
  assert.equal(DEFAULTS.nextEditDebounceMs, 300);
  const changed = readConfig(
    vscodeConfiguration({ "nextEdit.enable": { globalValue: false }, "nextEdit.debounceMs": { globalValue: 50 } }),
  );
  assert.equal(changed.nextEdit, false);
  assert.equal(changed.nextEditDebounceMs, 50);
  assert.deepEqual(initializationOptions(changed), {});
  assert.equal(needsRestart(config(), changed), false);
});
