// Unit tests of "dglsp: Draft here"'s logic (no VS Code): the command argument, the progress routing,
// what the user is told, and the manifest entries that make the command reachable.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { draftArgument, draftOutcome, isDraftToken } from "../src/draft";

const ROOT = join(__dirname, "..", "..");
const URI = "file:///w/a.py";

test("a cursor drafts at its position", () => {
  const at = { line: 3, character: 4 };
  assert.deepEqual(draftArgument(URI, at, at), { uri: URI, position: { line: 3, character: 4 } });
});

test("a selection (an instruction comment) is sent as a range in document order, whichever way it was made", () => {
  const top = { line: 1, character: 0 };
  const bottom = { line: 2, character: 9 };
  const expected = { uri: URI, range: { start: top, end: bottom } };
  assert.deepEqual(draftArgument(URI, top, bottom), expected);
  assert.deepEqual(draftArgument(URI, bottom, top), expected);
  const sameLine = draftArgument(URI, { line: 1, character: 7 }, { line: 1, character: 2 });
  assert.deepEqual(sameLine, { uri: URI, range: { start: { line: 1, character: 2 }, end: { line: 1, character: 7 } } });
});

test("only the server's draft tokens are routed to the draft notification", () => {
  assert.equal(isDraftToken("dglsp/draft/12"), true);
  assert.equal(isDraftToken("dglsp/load"), false);
  assert.equal(isDraftToken(7), false);
});

test("what the user is told after the command answered", () => {
  assert.equal(draftOutcome({ applied: true, text: "x" }), undefined);
  assert.match(draftOutcome({ applied: false, text: "" }) ?? "", /nothing drafted/);
  assert.match(draftOutcome(null) ?? "", /nothing drafted/);
  assert.match(draftOutcome({ applied: false, text: "x" }) ?? "", /not applied/);
});

test("package.json contributes dglsp.draftHere with a keybinding, and the extension registers it", () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    contributes: { commands: { command: string; title: string }[]; keybindings: { command: string; key: string }[] };
  };
  const command = manifest.contributes.commands.find((entry) => entry.command === "dglsp.draftHere");
  assert.equal(command?.title, "dglsp: Draft here");
  assert.ok(manifest.contributes.keybindings.some((binding) => binding.command === "dglsp.draftHere" && binding.key));
  const source = readFileSync(join(ROOT, "src", "extension.ts"), "utf8");
  for (const { command: id } of manifest.contributes.commands) {
    assert.ok(source.includes(`registerCommand("${id}"`), `${id} is contributed but never registered`);
  }
});
