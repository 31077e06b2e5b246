// Unit tests of when `dglsp/focus` is sent (no VS Code): another document, or a jump without an edit.
import assert from "node:assert/strict";
import { test } from "node:test";

import { focusParams, isJump } from "../src/focus";

const at = (line: number, version = 1, uri = "file:///w/a.py") => ({ uri, version, line, character: 4 });

test("another document, or the first cursor seen, is a jump", () => {
  assert.equal(isJump(undefined, at(0)), true);
  assert.equal(isJump(at(3), at(3, 1, "file:///w/b.py")), true);
});

test("a move of more than one line without an edit is a jump; a line or two, or typing, is not", () => {
  assert.equal(isJump(at(3), at(40)), true);
  assert.equal(isJump(at(40), at(3)), true);
  assert.equal(isJump(at(3), at(4)), false);
  assert.equal(isJump(at(3), at(3)), false);
  assert.equal(isJump(at(3, 1), at(12, 2)), false); // an edit moved it (a paste, a new line)
});

test("the notification's params", () => {
  assert.deepEqual(focusParams(at(7)), { textDocument: { uri: "file:///w/a.py" }, position: { line: 7, character: 4 } });
});
