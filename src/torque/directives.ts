// Finds #VM directives in a job script header with the rule qsub applies to
// #PBS lines: directives are read until the first line that is neither blank
// nor a comment. Pure: bytes in, lines out; key meaning lives in request/.
import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs';
import { JobFault, NodeFault, type Problem } from './exit.js';

/** Only the header matters, and a hostile 1 GiB script must cost no more than this. */
export const HEADER_CAP = 64 * 1024;

export interface Directive {
  key: string;
  value: string;
  line: number;
}

export interface ScanResult {
  directives: Directive[];
  /** Syntax problems in #VM lines (no '=', empty item, empty key). */
  problems: Problem[];
  /** Things the user should know that do not stop the job. */
  notes: string[];
  /** Number of #VM lines in the header, valid or not. */
  vmLines: number;
}

const VM = /^#VM(?:[ \t]+([\s\S]*))?$/;
// "#vm img=x", "# VM img=x", "  #VM img=x": meant as directives, ignored by the rule.
const LOOKALIKE = /^\s*#\s*vm\b\s*:?\s*[A-Za-z_]+\s*=/i;

function isHeaderLine(line: string): boolean {
  const t = line.trimStart();
  return t === '' || t.startsWith('#');
}

export function scanDirectives(text: string, truncated = false): ScanResult {
  const out: ScanResult = { directives: [], problems: [], notes: [], vmLines: 0 };
  const lines = text.split('\n');
  if (truncated) lines.pop(); // the last line may be cut mid-way
  let crlf = false;
  let inHeader = true;
  let headerEnd = 0;
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.endsWith('\r')) {
      line = line.slice(0, -1);
      crlf = true;
    }
    const n = i + 1;
    if (inHeader && !isHeaderLine(line)) {
      inHeader = false;
      headerEnd = n;
    }
    const m = VM.exec(line);
    if (!inHeader) {
      if (m) out.notes.push(`line ${n}: #VM after the first command (line ${headerEnd}) is ignored, as #PBS lines are; move it above line ${headerEnd}`);
      continue;
    }
    if (!m) {
      if (LOOKALIKE.test(line)) out.notes.push(`line ${n}: looks like a #VM directive but is not one; write it as '#VM key=value' at the start of the line`);
      continue;
    }
    out.vmLines++;
    parseBody(m[1] ?? '', n, out);
  }
  if (crlf) out.notes.push('the job script has Windows (CRLF) line endings; #VM lines were read anyway, but bash may fail on them: run dos2unix on it');
  if (truncated && inHeader) out.notes.push(`only the first ${HEADER_CAP / 1024} KiB of the job script are read for #VM lines`);
  return out;
}

function parseBody(body: string, line: number, out: ScanResult): void {
  if (body.trim() === '') {
    out.problems.push({ id: 'syntax', where: `line ${line}`, message: '#VM has nothing after it', fix: 'write #VM key=value[,key=value...], e.g. #VM img=debian12.qcow2,vcpus=4' });
    return;
  }
  for (const item of body.split(',')) {
    const t = item.trim();
    if (t === '') {
      out.problems.push({ id: 'syntax', where: `line ${line}`, message: 'empty item between commas', fix: 'remove the extra comma' });
      continue;
    }
    const eq = t.indexOf('=');
    if (eq <= 0) {
      out.problems.push({
        id: 'syntax', where: `line ${line}`,
        message: eq === 0 ? `${JSON.stringify(t.slice(0, 60))} has no key before '='` : `${JSON.stringify(t.slice(0, 60))} has no '='`,
        fix: 'write key=value, e.g. vcpus=4',
      });
      continue;
    }
    out.directives.push({ key: t.slice(0, eq).trim(), value: t.slice(eq + 1), line });
  }
}

export interface HeaderRead {
  text: string;
  truncated: boolean;
}

/**
 * Reads at most HEADER_CAP bytes of the job script. Opens without following a
 * symlink and without blocking on a FIFO, because the path is in the user's reach.
 * Returns undefined when there is no script (interactive jobs have none).
 */
export function readScriptHeader(path: string): HeaderRead | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw notRegular(path, 'a symbolic link');
    throw new NodeFault(`job script ${path} cannot be opened (${code})`, [
      { id: 'script', where: path, message: `cannot be opened: ${code}`, fix: 'check the mom_priv/jobs directory and its filesystem' },
    ]);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw notRegular(path, 'not a regular file');
    const buf = Buffer.alloc(Math.min(HEADER_CAP, Math.max(st.size, 0)) || 1);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return { text: buf.subarray(0, got).toString('utf8'), truncated: st.size > HEADER_CAP };
  } finally {
    closeSync(fd);
  }
}

function notRegular(path: string, what: string): JobFault {
  return new JobFault(`job script ${path} is ${what}`, [
    { id: 'script', where: path, message: `is ${what}`, fix: 'submit a plain job script file' },
  ]);
}
