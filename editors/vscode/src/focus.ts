/**
 * `dglsp/focus`: where the cursor went, so that the server encodes the prompt there before the first
 * keystroke. Sent (debounced by extension.ts) when another document comes to the front, or the cursor
 * jumps: its line moves by more than one without an edit. Typing moves the cursor too, but every
 * keystroke asks for a suggestion anyway. Pure functions (no `vscode` import), tested directly.
 */

export const FOCUS_METHOD = "dglsp/focus";
export const FOCUS_DELAY_MS = 150;

/** Where the cursor is: the document (and its version, to tell an edit from a jump) and the position. */
export interface Cursor {
  uri: string;
  version: number;
  line: number;
  character: number;
}

/** Is the move from `before` to `after` worth a `dglsp/focus`? */
export function isJump(before: Cursor | undefined, after: Cursor): boolean {
  if (before === undefined || before.uri !== after.uri) {
    return true;
  }
  return before.version === after.version && Math.abs(after.line - before.line) > 1;
}

/** The notification's params. */
export function focusParams(cursor: Cursor): { textDocument: { uri: string }; position: { line: number; character: number } } {
  return { textDocument: { uri: cursor.uri }, position: { line: cursor.line, character: cursor.character } };
}
