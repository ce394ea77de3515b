// Finds #VM directives in a job script header with the rule qsub applies to
// #PBS lines: directives are read until the first line that is neither blank
// nor a comment. Pure: bytes in, lines out; key meaning lives in request/.
// vTorque's `#PBS -vm key=value,...` (its vsub read it from scripts) is read
// as a #VM line, so a site moving from vTorque keeps its scripts; #VM is the
// native form, and the submit filter rewrites the one into the other.
import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs';
import { JobFault, NodeFault, type Problem } from '../core/errors.js';

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
  /** Number of #VM lines in the header, valid or not, vTorque's #PBS -vm lines included. */
  vmLines: number;
  /** 1-based numbers of the header lines written as vTorque's '#PBS -vm'. */
  pbsVmLines: number[];
}

const VM = /^#VM(?:[ \t]+([\s\S]*))?$/;
// vTorque's vsub matched '^#PBS +-vm +' (src/vsub, _parseInlineResRequests); tabs are blanks to qsub too.
export const PBS_VM = /^#PBS[ \t]+-vm(?:[ \t]+([\s\S]*))?$/;
// "#vm img=x", "# VM img=x", "  #VM img=x": meant as directives, ignored by the rule.
const LOOKALIKE = /^\s*#\s*vm\b\s*:?\s*[A-Za-z_]+\s*=/i;
// "  #PBS -vm x", "#pbs -vm x", "#PBS -vmimg=x": meant as vTorque's form, and qsub would take them as -v m...
export const PBS_VM_LOOKALIKE = /^\s*#\s*pbs\s+-vm/i;

function isHeaderLine(line: string): boolean {
  const t = line.trimStart();
  return t === '' || t.startsWith('#');
}

export function scanDirectives(text: string, truncated = false): ScanResult {
  const out: ScanResult = { directives: [], problems: [], notes: [], vmLines: 0, pbsVmLines: [] };
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
    // The common line is neither form: one character test keeps the scan of a non-VM header cheap.
    const vm = line.startsWith('#VM') ? VM.exec(line) : null;
    const pbs = vm === null && line.startsWith('#PBS') ? PBS_VM.exec(line) : null;
    const m = vm ?? pbs;
    const form = pbs ? '#PBS -vm' : '#VM';
    if (!inHeader) {
      if (m) out.notes.push(`line ${n}: ${form} after the first command (line ${headerEnd}) is ignored, as #PBS lines are; move it above line ${headerEnd}`);
      continue;
    }
    if (!m) {
      if (LOOKALIKE.test(line)) out.notes.push(`line ${n}: looks like a #VM directive but is not one; write it as '#VM key=value' at the start of the line`);
      else if (PBS_VM_LOOKALIKE.test(line)) out.notes.push(`line ${n}: looks like vTorque's '#PBS -vm' but is not one; write it as '#PBS -vm key=value,...' at the start of the line, or as '#VM key=value,...'`);
      continue;
    }
    out.vmLines++;
    if (pbs) out.pbsVmLines.push(n);
    parseBody(m[1] ?? '', n, form, out);
  }
  if (out.pbsVmLines.length > 0) {
    const ls = out.pbsVmLines;
    out.notes.push(`line${ls.length > 1 ? 's' : ''} ${ls.join(', ')}: '#PBS -vm' is vTorque's form of '#VM' and is read as '#VM' lines; '#VM key=value,...' is the native form`);
  }
  if (crlf) out.notes.push('the job script has Windows (CRLF) line endings; #VM lines were read anyway, but bash may fail on them: run dos2unix on it');
  if (truncated && inHeader) out.notes.push(`only the first ${HEADER_CAP / 1024} KiB of the job script are read for #VM lines`);
  return out;
}

function parseBody(body: string, line: number, form: '#VM' | '#PBS -vm', out: ScanResult): void {
  if (body.trim() === '') {
    out.problems.push({ id: 'syntax', where: `line ${line}`, message: `${form} has nothing after it`, fix: `write ${form} key=value[,key=value...], e.g. ${form} img=debian12.qcow2,vcpus=4` });
    return;
  }
  // qsub joins a directive ending in '\' with the next line; read alone, the
  // two would disagree about what the request is.
  if (form === '#PBS -vm' && body.trimEnd().endsWith('\\')) {
    out.problems.push({ id: 'syntax', where: `line ${line}`, message: "#PBS -vm is continued with '\\' on the next line, which is not read as part of it", fix: 'put the items on one line, or give them on several #PBS -vm lines' });
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
