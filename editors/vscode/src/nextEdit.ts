/**
 * Next edits without VS Code: the request, which answer to show, how it is drawn, and what the apply key does.
 *
 * The server's `textDocument/copilotInlineEdit` (Copilot's language-server shape) answers `{edits: [{range, text,
 * textDocument: {uri, version}, command}]}` or `{edits: []}`: the edit that follows the user's last one, anywhere
 * in the document. The extension asks a pause after an edit (and on "dglsp: Next Edit"), shows the first edit
 * with decorations (the replaced range struck through, the new text attached after it, all of it in a hover),
 * notifies `textDocument/didShowInlineEdit`, and binds Tab/Escape to apply/dismiss while one is shown (the API
 * for inline edits is proposed, closed to published extensions). Tab on an edit far from the cursor or off
 * screen jumps there first; the next Tab applies it on the version it was computed for (a `WorkspaceEdit`) and
 * runs the item's command (`dglsp.editAccepted`). Pure code (no `vscode` import), tested directly; extension.ts
 * is the glue.
 */

export const NEXT_EDIT_METHOD = "textDocument/copilotInlineEdit";
export const DID_SHOW_METHOD = "textDocument/didShowInlineEdit";
/** The context key the Tab/Escape bindings wait for (package.json `keybindings`). */
export const VISIBLE_CONTEXT = "dglsp.nextEditVisible";

/** An LSP position: UTF-16 code units, as VS Code's positions and JavaScript strings count. */
export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

/** One edit of the answer. */
export interface InlineEdit {
  range: Range;
  text: string;
  textDocument: { uri: string; version: number };
  command?: { title: string; command: string; arguments?: unknown[] };
}

/** The request's params: the document at the version the editor holds, and the cursor. */
export function nextEditParams(uri: string, version: number, position: Position): {
  textDocument: { uri: string; version: number };
  position: Position;
} {
  return { textDocument: { uri, version }, position: { line: position.line, character: position.character } };
}

function isPosition(value: unknown): value is Position {
  const p = value as Position;
  return typeof p === "object" && p !== null && Number.isInteger(p.line) && Number.isInteger(p.character);
}

/** The edit to show from an answer about (`uri`, `version`), if it has one and is still about that version. */
export function firstEdit(result: unknown, uri: string, version: number): InlineEdit | undefined {
  const edits = (result as { edits?: unknown } | null)?.edits;
  const edit = (Array.isArray(edits) ? edits[0] : undefined) as InlineEdit | undefined;
  if (!edit || typeof edit.text !== "string" || !isPosition(edit.range?.start) || !isPosition(edit.range?.end)) {
    return undefined;
  }
  const document = edit.textDocument ?? { uri, version };
  return document.uri === uri && document.version === version ? { ...edit, textDocument: document } : undefined;
}

/** The string offset of `position` in `text` (a character past the line's end: the line's end). */
export function offsetAt(text: string, position: Position): number {
  let offset = 0;
  for (let line = 0; line < position.line; line += 1) {
    const next = text.indexOf("\n", offset);
    if (next === -1) {
      return text.length;
    }
    offset = next + 1;
  }
  const end = text.indexOf("\n", offset);
  return Math.min(offset + position.character, end === -1 ? text.length : end);
}

/** `text` with `edit` applied: what the document reads once the user accepts it. */
export function applyEdit(text: string, edit: { range: Range; text: string }): string {
  return text.slice(0, offsetAt(text, edit.range.start)) + edit.text + text.slice(offsetAt(text, edit.range.end));
}

/** How the edit is drawn: the range to strike (none for a pure insertion), the text attached after it (one line:
 * line breaks shown as ⏎, shortened), and the hover's markdown (the whole new text, the keys). */
export function editView(edit: InlineEdit, languageId = ""): { removed: Range | undefined; after: string; hover: string } {
  const { start, end } = edit.range;
  const empty = start.line === end.line && start.character === end.character;
  const oneLine = edit.text.replaceAll("\n", " ⏎ ");
  const after = [...oneLine].length > 60 ? `${[...oneLine].slice(0, 59).join("")}…` : oneLine;
  const fence = edit.text.includes("```") ? "~~~" : "```";
  const body = edit.text === "" ? "_delete the struck text_" : `${fence}${languageId}\n${edit.text}\n${fence}`;
  return { removed: empty ? undefined : edit.range, after, hover: `**dglsp: next edit**\n\n${body}\n\nTab: apply · Escape: dismiss` };
}

/** The status bar's hint for an edit away from the cursor. */
export function hintText(edit: InlineEdit): string {
  return `→ edit at line ${edit.range.start.line + 1}`;
}

/** Lines from the cursor beyond which (or off screen) the apply key jumps to the edit first. */
export const JUMP_LINES = 6;

/** Is the edit far from the cursor's line, or outside every visible range? Then the apply key jumps first. */
export function isFar(edit: InlineEdit, cursorLine: number, visible: { start: number; end: number }[], jumpLines = JUMP_LINES): boolean {
  const { start, end } = edit.range;
  const onScreen = visible.some((lines) => start.line >= lines.start && start.line <= lines.end);
  return !onScreen || cursorLine < start.line - jumpLines || cursorLine > end.line + jumpLines;
}

/** What the apply key does now. */
export type Action = { kind: "none" } | { kind: "jump"; to: Position } | { kind: "apply"; edit: InlineEdit };

/**
 * The one edit shown at a time, and which request's answer may replace it: only the latest request's, and only
 * while its document is still at the version asked about. Any change to that document, a new request, or the
 * dismiss key removes it.
 */
export class NextEditState {
  private edit: InlineEdit | undefined;
  private latest = 0;

  get shown(): InlineEdit | undefined {
    return this.edit;
  }

  /** A new request: the answer to any earlier one is dropped, and the shown edit goes. Returns its number. */
  begin(): number {
    this.latest += 1;
    this.edit = undefined;
    return this.latest;
  }

  /** Request `request` answered `result` about (`uri`, `version`), now that the document is at `current`. */
  answer(request: number, result: unknown, uri: string, version: number, current: number): InlineEdit | undefined {
    if (request !== this.latest || current !== version) {
      return undefined;
    }
    this.edit = firstEdit(result, uri, version);
    return this.edit;
  }

  /** The document `uri` changed (typing, an applied edit, undo): its edit is no longer true. */
  changed(uri: string): boolean {
    if (this.edit?.textDocument.uri !== uri) {
      return false;
    }
    this.edit = undefined;
    return true;
  }

  /** The dismiss key. False when nothing was shown. */
  dismiss(): boolean {
    const had = this.edit !== undefined;
    this.edit = undefined;
    this.latest += 1; // an answer still on its way is not shown either
    return had;
  }

  /** The apply key in the editor of `uri` at `version`, the cursor on `cursorLine`, lines `visible` on screen. */
  next(uri: string, version: number, cursorLine: number, visible: { start: number; end: number }[], jumpLines = JUMP_LINES): Action {
    const edit = this.edit;
    if (!edit || edit.textDocument.uri !== uri || edit.textDocument.version !== version) {
      return { kind: "none" };
    }
    if (isFar(edit, cursorLine, visible, jumpLines)) {
      return { kind: "jump", to: edit.range.start };
    }
    this.edit = undefined;
    return { kind: "apply", edit };
  }
}
