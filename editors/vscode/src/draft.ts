/**
 * "dglsp: Draft here" without VS Code: the `dglsp.draft` argument and how its progress is shown.
 *
 * The server drafts canvas after canvas, reports each committed canvas as `$/progress` on a token it
 * creates (`dglsp/draft/N`, its `message` a summary of the draft so far: shown as it is) and as a
 * `dglsp/preview` of kind "draft" (the whole draft so far), and then applies the whole draft with one
 * `workspace/applyEdit` (one undo step). Pure functions (no `vscode` import), so Node's test runner
 * tests them directly; extension.ts is the glue.
 */

/** An LSP position (UTF-16 code units, which VS Code's positions already are). */
export interface DraftPosition {
  line: number;
  character: number;
}

/** The one argument of `workspace/executeCommand` `dglsp.draft`. */
export type DraftArgument =
  | { uri: string; position: DraftPosition }
  | { uri: string; range: { start: DraftPosition; end: DraftPosition } };

export const DRAFT_COMMAND = "dglsp.draft";
const DRAFT_TOKEN_PREFIX = "dglsp/draft/";

/**
 * Draft at the cursor, or after a non-empty selection (an instruction comment: the server drafts
 * after its end). `anchor`/`active` are the selection's ends as VS Code gives them (either order).
 */
export function draftArgument(uri: string, anchor: DraftPosition, active: DraftPosition): DraftArgument {
  const same = anchor.line === active.line && anchor.character === active.character;
  if (same) {
    return { uri, position: { line: active.line, character: active.character } };
  }
  const anchorFirst = anchor.line < active.line || (anchor.line === active.line && anchor.character < active.character);
  const [start, end] = anchorFirst ? [anchor, active] : [active, anchor];
  return {
    uri,
    range: { start: { line: start.line, character: start.character }, end: { line: end.line, character: end.character } },
  };
}

/** Is this server-created work-done token a draft's (as opposed to, say, model loading)? */
export function isDraftToken(token: string | number): boolean {
  return typeof token === "string" && token.startsWith(DRAFT_TOKEN_PREFIX);
}

/** The command's answer: `applied` false with empty text when cancelled or nothing was drafted. */
export interface DraftResult {
  applied: boolean;
  text: string;
}

/** What to tell the user once the command answered. Undefined: nothing to say. */
export function draftOutcome(result: DraftResult | null | undefined): string | undefined {
  if (!result || result.text === "") {
    return "dglsp: nothing drafted here";
  }
  return result.applied ? undefined : "dglsp: the document changed while drafting; the draft was not applied";
}
