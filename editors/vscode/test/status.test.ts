// Unit tests of the status bar's words (no VS Code): the same words as the Neovim plugin's statusline
// (tests/test_nvim_canvas.py checks those), the outcome kept while typing, the capability we declare.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  type Outcome,
  type ServerStatus,
  describeOutcome,
  nextOutcome,
  statusText,
  withPreviewCapability,
} from "../src/status";

const READY: ServerStatus = {
  model: "/models/dg-small",
  device: "cuda:0",
  ready: true,
  state: "ready",
  load_message: "ready",
  load_percent: 100,
  last_latency_ms: 41.6,
  last: null,
  outcomes: {},
};

test("each outcome in words: the latency when shown, else why not (with the number or the message)", () => {
  assert.equal(describeOutcome({ latency_ms: 84.4 }), "dglsp 84 ms");
  assert.equal(describeOutcome({ reason: "low_confidence", detail: "confidence 0.41 < 0.73" }), "dglsp: low confidence 0.41 < 0.73");
  assert.equal(describeOutcome({ reason: "low_confidence" }), "dglsp: low confidence");
  assert.equal(describeOutcome({ reason: "unparsable", detail: "" }), "dglsp: did not parse");
  assert.equal(describeOutcome({ reason: "repeat" }), "dglsp: repeated the code below");
  assert.equal(describeOutcome({ reason: "superseded" }), "dglsp: superseded");
  assert.equal(describeOutcome({ reason: "document_changed", detail: "document changed to version 7" }), "dglsp: document changed");
  assert.equal(
    describeOutcome({ reason: "backend_error", detail: "the remote server refused the connection" }),
    "dglsp: server error: the remote server refused the connection",
  );
  const long = describeOutcome({ reason: "error", detail: "x".repeat(100) });
  assert.equal(long, `dglsp: error: ${"x".repeat(59)}…`);
});

test("a next edit's outcome: where it is, or why there is none (the Neovim statusline's words)", () => {
  const range = { start: { line: 11, character: 4 }, end: { line: 11, character: 9 } };
  assert.equal(describeOutcome({ kind: "edit", range, latency_ms: 12 }), "dglsp: edit at line 12");
  assert.equal(describeOutcome({ kind: "edit" }), "dglsp: edit shown"); // dglsp/status's `last` has no range
  assert.equal(describeOutcome({ kind: "edit", reason: "no_edit", detail: "no substitution to repeat" }), "dglsp: no edit");
  assert.equal(
    describeOutcome({ kind: "edit", reason: "low_confidence", detail: "confidence 0.41 < 0.73" }),
    "dglsp: no edit: low confidence 0.41 < 0.73",
  );
  assert.equal(nextOutcome({ kind: "edit", range }, { kind: "edit", reason: "superseded" }).range, range);
});

test("a stopped request (superseded, cancelled...) does not replace the last outcome that ran to its end", () => {
  const said: string[] = [];
  let outcome: Outcome | undefined;
  const dones: Outcome[] = [
    { reason: "superseded" },
    { latency_ms: 84.4 },
    { reason: "superseded" },
    { reason: "low_confidence", detail: "confidence 0.41 < 0.73" },
    { reason: "cancelled" },
    { reason: "unparsable" },
  ];
  for (const done of dones) {
    outcome = nextOutcome(outcome, done);
    said.push(describeOutcome(outcome));
  }
  assert.deepEqual(said, [
    "dglsp: superseded", // nothing better to say yet
    "dglsp 84 ms",
    "dglsp 84 ms",
    "dglsp: low confidence 0.41 < 0.73",
    "dglsp: low confidence 0.41 < 0.73",
    "dglsp: did not parse",
  ]);
});

test("status bar: not running, loading with progress, failed, off, nothing yet, shown, hidden, a problem", () => {
  assert.equal(statusText(undefined, true).text, "$(circle-slash) dglsp: not running");
  const loading: ServerStatus = { ...READY, ready: false, state: "loading", load_message: "reading weights", load_percent: 35.2 };
  assert.equal(statusText(loading, true).text, "$(loading~spin) dglsp: loading 35%");
  assert.equal(statusText({ ...loading, load_percent: null }, true).text, "$(loading~spin) dglsp: loading");
  const failed: ServerStatus = { ...READY, ready: false, state: "failed", load_message: "no such model: /x" };
  assert.equal(statusText(failed, true).text, "$(error) dglsp: model failed to load: no such model: /x");
  assert.equal(statusText(READY, false, { latency_ms: 5 }).text, "$(circle-slash) dglsp: off");
  assert.equal(statusText(READY, true).text, "$(sparkle) dglsp");
  const shown = statusText(READY, true, { latency_ms: 84.4 }, 97);
  assert.equal(shown.text, "$(sparkle) dglsp 84 ms");
  assert.match(shown.tooltip, /model: dg-small\ndevice: cuda:0\nstate: ready/);
  assert.match(shown.tooltip, /round trip: 97 ms/);
  const hidden = statusText(READY, true, { reason: "low_confidence", detail: "confidence 0.41 < 0.73", latency_ms: 120 });
  assert.equal(hidden.text, "$(eye-closed) dglsp: low confidence 0.41 < 0.73");
  assert.match(hidden.tooltip, /last request: 120 ms/);
  assert.equal(statusText(READY, true, { reason: "backend_error", detail: "refused" }).text, "$(warning) dglsp: server error: refused");
});

test("the client declares experimental.dglsp.preview, keeping other experimental capabilities", () => {
  assert.deepEqual(withPreviewCapability(undefined), { dglsp: { preview: true } });
  assert.deepEqual(withPreviewCapability({ other: 1 }), { other: 1, dglsp: { preview: true } });
});
