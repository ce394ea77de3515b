// vTorque's `#PBS -vm key=value,...` lines, turned into the #VM lines they
// mean before qsub parses the script: qsub would take `-vm` as `-v m` plus a
// stray word. Shared by the submit filter and vsub, so both rewrite exactly the
// lines the prologue's scanner reads as #PBS -vm, and nothing else.
import { JobFault, type Problem } from '../core/errors.js';
import type { PbsDirective } from './qsub.js';

const HEAD = /^#PBS[ \t]+-vm/;

/**
 * The script's bytes with each listed line's `#PBS<blanks>-vm` replaced by
 * `#VM`; what follows on the line (blanks, items, line end) and every other
 * byte stay as they were. Lines are 1-based, as ScanResult.pbsVmLines gives them.
 */
export function rewritePbsVm(head: Buffer, lines: readonly number[]): Buffer {
  if (lines.length === 0) return head;
  const want = new Set(lines);
  // latin1: one char per byte, so string offsets are byte offsets.
  const text = head.toString('latin1');
  const parts: Buffer[] = [];
  let from = 0;
  let pos = 0;
  for (let n = 1; pos < text.length && want.size > 0; n++) {
    const nl = text.indexOf('\n', pos);
    const end = nl < 0 ? text.length : nl + 1;
    if (want.delete(n)) {
      const m = HEAD.exec(text.slice(pos, end));
      if (!m) throw new Error(`line ${n} is not a #PBS -vm line`);
      parts.push(head.subarray(from, pos), Buffer.from('#VM', 'latin1'));
      from = pos + m[0].length;
    }
    pos = end;
  }
  parts.push(head.subarray(from));
  return Buffer.concat(parts);
}

/**
 * Directives qsub would read with a first word starting "-vm" that the scanner
 * did not take as #PBS -vm ("  #PBS -vm ...", "#PBS -vmimg=x"): qsub would set
 * a variable "m..." and the VM request would be lost, so they are refused.
 * Give it the header of the already rewritten script.
 */
export function refuseMisreadVm(directives: readonly PbsDirective[]): void {
  const problems: Problem[] = directives
    .filter((d) => d.words[0]?.startsWith('-vm'))
    .map((d) => ({
      id: 'syntax', where: `line ${d.first.index + 1}`,
      message: `looks like vTorque's '#PBS -vm' but is not read as one, and qsub would take it as '-v ${d.words[0]!.slice(2, 40)}'`,
      fix: "write it as '#PBS -vm key=value,...' at the start of the line, or as '#VM key=value,...'",
    }));
  if (problems.length > 0) throw new JobFault(`the job script has ${problems.length} unreadable #PBS -vm line${problems.length > 1 ? 's' : ''}`, problems);
}
