// Unit tests of the extension's logic (no VS Code): settings -> command, initializationOptions, status.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { DEFAULTS, type DglspConfig, initializationOptions, needsRestart, readConfig, serverCommand, statusText } from "../src/config";

const manifest = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as {
  activationEvents: string[];
  contributes: { configuration: { properties: Record<string, { default: unknown }> } };
};

function config(overrides: Partial<DglspConfig> = {}): DglspConfig {
  return { ...DEFAULTS, ...overrides };
}

test("DEFAULTS are package.json's defaults, read back through readConfig", () => {
  const properties = manifest.contributes.configuration.properties;
  const fromManifest = readConfig(<T>(key: string, fallback: T) => {
    const entry = properties[`dglsp.${key}`];
    assert.ok(entry, `package.json lacks dglsp.${key}`);
    return (entry.default as T) ?? fallback;
  });
  assert.deepEqual(fromManifest, DEFAULTS);
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
    scheduler: { debounce_ms: 15 },
    postprocess: { max_lines: 4 },
  });
  const ignored = initializationOptions(config({ settings: ["not", "an", "object"] as unknown as Record<string, unknown> }));
  assert.deepEqual(ignored, { sampler: { canvas_length: 32 }, scheduler: { debounce_ms: 15 } });
});

test("a new model, device or command restarts the server; sampler settings do not", () => {
  assert.equal(needsRestart(config(), config({ model: "/other" })), true);
  assert.equal(needsRestart(config(), config({ device: "cpu" })), true);
  assert.equal(needsRestart(config(), config({ pythonPath: "/venv/bin/python" })), true);
  assert.equal(needsRestart(config(), config({ canvasLength: 8, debounceMs: 100, settings: { sampler: {} } })), false);
});

test("status text: not running, loading, ready with latency, turned off", () => {
  assert.match(statusText(undefined, true).text, /not running/);
  const loading = { model: null, device: "cpu", ready: false, last_latency_ms: null, load_message: "warming up" };
  assert.equal(statusText(loading, true).text, "$(loading~spin) dglsp: embedded · cpu · warming up");
  const ready = { model: "/models/dg-small", device: "cuda:0", ready: true, last_latency_ms: 41.6, load_message: "ready" };
  const shown = statusText(ready, true, 97);
  assert.equal(shown.text, "$(sparkle) dglsp: dg-small · cuda:0 · 42 ms");
  assert.match(shown.tooltip, /round trip: 97 ms/);
  assert.match(statusText(ready, false).text, /^\$\(circle-slash\)/);
});
