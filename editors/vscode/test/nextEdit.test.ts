// Unit tests of next edits without VS Code: the request's params, which answer is shown, how it is drawn, what
// Tab does (jump to a far edit, else apply), and the text an applied edit leaves.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  type InlineEdit,
  NextEditState,
  VISIBLE_CONTEXT,
  applyEdit,
  editView,
  firstEdit,
  hintText,
  isFar,
  nextEditParams,
  offsetAt,
} from "../src/nextEdit";

const URI = "file:///w/a.py";
const at = (line: number, character: number) => ({ line, character });

function edit(line: number, start: number, end: number, text: string, version = 3): InlineEdit {
  return {
    range: { start: at(line, start), end: at(line, end) },
    text,
    textDocument: { uri: URI, version },
    command: { title: "dglsp: edit accepted", command: "dglsp.editAccepted", arguments: [{ uri: URI }] },
  };
}

test("the request carries the document's version and the cursor (Copilot's params)", () => {
  assert.deepEqual(nextEditParams(URI, 7, { line: 2, character: 5 }), {
    textDocument: { uri: URI, version: 7 },
    position: { line: 2, character: 5 },
  });
});

test("firstEdit: the first edit of an answer about this document and version; nothing otherwise", () => {
  const shown = edit(4, 8, 13, "sum_");
  assert.deepEqual(firstEdit({ edits: [shown, edit(9, 0, 1, "x")] }, URI, 3), shown);
  assert.equal(firstEdit({ edits: [] }, URI, 3), undefined);
  assert.equal(firstEdit(null, URI, 3), undefined);
  assert.equal(firstEdit({ edits: [{ text: "x" }] }, URI, 3), undefined); // no range
  assert.equal(firstEdit({ edits: [shown] }, URI, 4), undefined); // computed for an older version
  assert.equal(firstEdit({ edits: [shown] }, "file:///w/b.py", 3), undefined);
  const bare = { range: shown.range, text: "sum_" }; // a server that leaves out textDocument: the one asked about
  assert.deepEqual(firstEdit({ edits: [bare] }, URI, 3)?.textDocument, { uri: URI, version: 3 });
});

test("applyEdit: the text once the edit is accepted, in UTF-16 offsets like VS Code's positions", () => {
  const text = "def f(total):\n    s = 'é😀'; return total\n";
  assert.equal(offsetAt(text, at(1, 0)), 14);
  assert.equal(offsetAt(text, at(1, 99)), text.indexOf("\n", 14)); // past the line's end: its end
  assert.equal(offsetAt(text, at(9, 0)), text.length);
  const column = "    s = 'é😀'; return ".length; // the emoji is two UTF-16 units, as LSP counts them
  assert.equal(applyEdit(text, edit(1, column, column + 5, "sum_")), "def f(total):\n    s = 'é😀'; return sum_\n");
  const lines = { range: { start: at(0, 13), end: at(1, 4) }, text: "\n    # sum\n    " };
  assert.equal(applyEdit(text, lines), "def f(total):\n    # sum\n    s = 'é😀'; return total\n");
});

test("editView: the replaced range struck, the new text after it on one line, everything in the hover", () => {
  const rename = editView(edit(4, 8, 13, "sum_"), "python");
  assert.deepEqual(rename.removed, { start: at(4, 8), end: at(4, 13) });
  assert.equal(rename.after, "sum_");
  assert.match(rename.hover, /```python\nsum_\n```/);
  assert.match(rename.hover, /Tab: apply · Escape: dismiss/);
  const insertion = editView(edit(2, 4, 4, "x = 1\ny = 2"));
  assert.equal(insertion.removed, undefined); // nothing replaced: nothing struck
  assert.equal(insertion.after, "x = 1 ⏎ y = 2");
  assert.equal([...editView(edit(0, 0, 0, "é".repeat(100))).after].length, 60);
  assert.match(editView(edit(0, 0, 3, "")).hover, /delete the struck text/);
});

test("far: off screen, or more than JUMP_LINES lines from the cursor; the hint says where", () => {
  const shown = edit(20, 4, 9, "sum_");
  const screen = [{ start: 0, end: 40 }];
  assert.equal(isFar(shown, 19, screen), false);
  assert.equal(isFar(shown, 26, screen), false);
  assert.equal(isFar(shown, 27, screen), true);
  assert.equal(isFar(shown, 13, screen), true);
  assert.equal(isFar(shown, 20, [{ start: 30, end: 60 }]), true); // scrolled away from it
  assert.equal(isFar(shown, 20, [{ start: 0, end: 5 }, { start: 18, end: 25 }]), false); // folded regions
  assert.equal(hintText(shown), "→ edit at line 21");
});

test("state: only the latest request's answer is shown, while the document is at the version asked about", () => {
  const state = new NextEditState();
  const first = state.begin();
  const second = state.begin();
  assert.equal(state.answer(first, { edits: [edit(4, 8, 13, "old")] }, URI, 3, 3), undefined); // superseded
  assert.equal(state.answer(second, { edits: [edit(4, 8, 13, "sum_")] }, URI, 3, 4), undefined); // typed since
  const third = state.begin();
  assert.equal(state.answer(third, { edits: [edit(4, 8, 13, "sum_")] }, URI, 3, 3)?.text, "sum_");
  assert.equal(state.shown?.text, "sum_");
  assert.equal(state.changed("file:///w/b.py"), false); // another document
  assert.equal(state.changed(URI), true);
  assert.equal(state.shown, undefined);
});

test("Tab: a far edit is jumped to first, then applied; a stale one does nothing; Escape dismisses", () => {
  const screen = [{ start: 0, end: 40 }];
  const state = new NextEditState();
  const request = state.begin();
  state.answer(request, { edits: [edit(20, 4, 9, "sum_")] }, URI, 3, 3);
  assert.deepEqual(state.next(URI, 3, 2, screen), { kind: "jump", to: at(20, 4) });
  assert.ok(state.shown, "a jump keeps the edit shown");
  assert.deepEqual(state.next(URI, 4, 20, screen), { kind: "none" }); // the document moved on
  const applied = state.next(URI, 3, 20, screen);
  assert.equal(applied.kind, "apply");
  assert.equal(applied.kind === "apply" && applied.edit.command?.command, "dglsp.editAccepted");
  assert.equal(state.shown, undefined);
  assert.deepEqual(state.next(URI, 3, 20, screen), { kind: "none" }); // nothing shown: Tab is Tab again

  const again = state.begin();
  state.answer(again, { edits: [edit(3, 0, 1, "x")] }, URI, 3, 3);
  assert.equal(state.dismiss(), true);
  assert.equal(state.shown, undefined);
  assert.equal(state.dismiss(), false);
  // An answer that arrives after Escape is not shown either.
  const late = state.begin();
  state.dismiss();
  assert.equal(state.answer(late, { edits: [edit(3, 0, 1, "x")] }, URI, 3, 3), undefined);
});

test("package.json binds Tab and Escape to the commands while an edit is visible, and declares the commands", () => {
  const manifest = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as {
    contributes: { commands: { command: string }[]; keybindings: { command: string; key: string; when: string }[] };
  };
  const commands = manifest.contributes.commands.map((c) => c.command);
  for (const command of ["dglsp.nextEdit", "dglsp.applyNextEdit", "dglsp.dismissNextEdit"]) {
    assert.ok(commands.includes(command), command);
  }
  const binding = (command: string) => manifest.contributes.keybindings.find((b) => b.command === command);
  assert.equal(binding("dglsp.applyNextEdit")?.key, "tab");
  assert.equal(binding("dglsp.dismissNextEdit")?.key, "escape");
  for (const command of ["dglsp.applyNextEdit", "dglsp.dismissNextEdit"]) {
    assert.match(binding(command)?.when ?? "", new RegExp(`\\b${VISIBLE_CONTEXT.replace(".", "\\.")}\\b`));
    assert.match(binding(command)?.when ?? "", /!inlineSuggestionVisible/); // a ghost-text suggestion keeps Tab
  }
});
