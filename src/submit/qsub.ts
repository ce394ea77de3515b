// What qsub does with its arguments and with the #PBS lines of a script, as far
// as the submit filter needs it. Read from Torque 6's qsub (qsub_functions.c):
// - options are getopt's "a:A:b:c:C:d:D:e:EfF:hi:Ij:J:k:K:l:L:m:M:nN:o:p:P:q:r:S:t:T:u:v:Vw:W:Xxz-:" (GETOPT_ARGS);
// - directives are lines whose first non-blank text is the prefix ("#PBS", or
//   -C / PBS_DPREFIX), read until the first line that is a command; a line is
//   not a command when it is blank, starts with '#' after blanks, or starts
//   with ':' or '#!'; a directive ending in '\' continues on the next line;
// - a directive's words are split on blanks, quotes kept, '\' escaping;
// - every -v REPLACES the job's variable list: script lines first, the command
//   line last, so the last -v wins and a command-line -v drops the script's.
// Pure and small: this module is on the submit filter's fast path.

export const WITH_ARG = new Set('aAbcCdDeFijJkKlLmMNopPqrStTuvwW'.split(''));

export interface VarItem {
  name: string;
  /** undefined: "-v NAME", the value is taken from qsub's environment. */
  value?: string;
}

export interface QsubArgs {
  queue?: string;
  /** Each -v list as given, in order. */
  vLists: string[];
  /** -V: qsub's whole environment becomes job variables. */
  exportEnv: boolean;
  /** -C: the directive prefix. */
  prefix?: string;
  /** Each -l list, in order. */
  resources: string[];
  /** The script file named on the command line, if any (the filter gets the script on stdin either way). */
  script?: string;
  /** -N: the job name. */
  name?: string;
}

/** getopt over qsub's options; stops at the first non-option (the script) or "--". */
export function parseQsubArgs(argv: readonly string[]): QsubArgs {
  const out: QsubArgs = { vLists: [], exportEnv: false, resources: [] };
  const take = (c: string, v: string) => {
    if (c === 'q') out.queue = v;
    else if (c === 'v') out.vLists.push(v);
    else if (c === 'C') out.prefix = v;
    else if (c === 'l') out.resources.push(v);
    else if (c === 'N') out.name = v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') {
      out.script = a;
      break;
    }
    if (a.startsWith('--')) continue; // --about, --version: qsub exits before filtering
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (c === 'V') out.exportEnv = true;
      if (!WITH_ARG.has(c)) continue;
      const rest = a.slice(j + 1);
      if (rest !== '') take(c, rest);
      else if (argv[i + 1] !== undefined) take(c, argv[++i]!);
      break;
    }
  }
  return out;
}

/** The words of a directive line as qsub's make_argv splits them: blanks separate, quotes stay in the word, '\' escapes. */
export function splitDirective(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      const stop = end < 0 ? text.length : end + 1;
      cur += text.slice(i, stop);
      inWord = true;
      i = stop - 1;
    } else if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
      inWord = true;
    } else if (c === ' ' || c === '\t' || c === '\r' || c === '\n' || c === '\v' || c === '\f') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

/** A -v list: "A=1,B,C=x=y" (no escapes: qsub splits at every comma, and at the first '='). */
export function parseVariableList(list: string): VarItem[] {
  const out: VarItem[] = [];
  for (const part of list.split(',')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) out.push({ name: part.trim() });
    else out.push({ name: part.slice(0, eq).trim(), value: part.slice(eq + 1) });
  }
  return out;
}

export interface ScriptLine {
  /** 0-based. */
  index: number;
  /** Offsets into the script bytes: the line starts at `start`, its text ends at `textEnd`, the next line starts at `end`. */
  start: number;
  textEnd: number;
  end: number;
  /** The line without its end-of-line, as latin1 (one char per byte, so offsets match). */
  text: string;
  eol: '' | '\n' | '\r\n';
}

export interface PbsDirective {
  /** First and last physical line ('\' continuations join lines). */
  first: ScriptLine;
  last: ScriptLine;
  /** The words after the prefix, as qsub would pass them to getopt. */
  words: string[];
}

export interface QsubHeader {
  /** The lines qsub reads directives from: everything before its first command. */
  lines: ScriptLine[];
  directives: PbsDirective[];
}

/** qsub's isexecutable(): is this line the first command, ending the directives? */
function isCommand(text: string): boolean {
  if (text.startsWith(':') || text.startsWith('#!')) return false;
  const t = text.replace(/^\s+/, '');
  return t !== '' && !t.startsWith('#');
}

/**
 * The directive header of a script, as qsub reads it. Works on latin1 text of
 * the raw bytes, so every offset is a byte offset and the rewrite can splice
 * the original bytes without re-encoding anything.
 */
export function qsubHeader(latin1: string, prefix: string): QsubHeader {
  const lines: ScriptLine[] = [];
  const directives: PbsDirective[] = [];
  let pos = 0;
  let index = 0;
  const next = (): ScriptLine | undefined => {
    if (pos >= latin1.length) return undefined;
    const nl = latin1.indexOf('\n', pos);
    const end = nl < 0 ? latin1.length : nl + 1;
    const crlf = nl > pos && latin1[nl - 1] === '\r';
    const textEnd = nl < 0 ? end : crlf ? nl - 1 : nl;
    const l: ScriptLine = { index: index++, start: pos, textEnd, end, text: latin1.slice(pos, textEnd), eol: nl < 0 ? '' : crlf ? '\r\n' : '\n' };
    pos = end;
    return l;
  };
  for (let l = next(); l; l = next()) {
    if (isCommand(l.text)) break;
    lines.push(l);
    const body = prefix === '' ? undefined : l.text.replace(/^\s+/, '');
    if (body === undefined || !body.startsWith(prefix)) continue;
    const first = l;
    let text = body.slice(prefix.length);
    while (text.endsWith('\\')) {
      const more = next();
      if (!more) break;
      lines.push(more);
      l = more;
      text = text.slice(0, -1) + more.text;
    }
    directives.push({ first, last: l, words: splitDirective(text) });
  }
  return { lines, directives };
}

/** The options of one directive, as getopt would see them after the prefix. */
export function directiveOptions(d: PbsDirective): QsubArgs {
  return parseQsubArgs(d.words);
}
