// Lines the user reads in the job's output. Every line starts with
// "vtorque:", says what is wrong and where, and how to fix it.
import { quote } from '../config/values.js';
import type { Problem } from '../core/errors.js';

export const PREFIX = 'vtorque:';

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;
// Line and paragraph separators: editors, log readers and YAML 1.1 take them for line breaks.
const SEPARATORS = /[\u2028\u2029]/g;

/** Last line of defence: nothing from a job script or an image can move the cursor or forge a line. */
export function clean(s: string): string {
  return s
    .replace(UNSAFE, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(SEPARATORS, (c) => `\\u${c.charCodeAt(0).toString(16)}`)
    .replace(/\n/g, '\\n');
}

export function line(text: string): string {
  return `${PREFIX} ${clean(text)}`;
}

export function problemLine(p: Problem, indent = '  '): string {
  const where = p.where ? `${p.where}: ` : '';
  const fix = p.fix ? `. Fix: ${p.fix}` : '';
  return line(`${indent}${where}${p.message}${fix}`);
}

/** A hostile script can produce thousands of problems; the job output gets the first ones. */
export const MAX_PROBLEM_LINES = 20;

function capped(problems: readonly Problem[], map: (p: Problem) => string): string[] {
  const shown = problems.slice(0, MAX_PROBLEM_LINES).map(map);
  if (problems.length > MAX_PROBLEM_LINES) shown.push(line(`  ... and ${problems.length - MAX_PROBLEM_LINES} more`));
  return shown;
}

/** The closing hint for a request the job script got wrong: check --job finds every such problem before qsub. */
export const CHECK_HINT = 'try a job script before submitting it: vtorque-prologue check --job SCRIPT';

/** A fix is marked with who acts when a report holds the admin's fixes and the user's side by side. */
export const ADMIN = '(admin) ';
export const YOU = '(you) ';
export const forAdmin = (p: Problem): Problem => ({ ...p, fix: p.fix && !p.fix.startsWith(ADMIN) ? `${ADMIN}${p.fix}` : p.fix });

export interface JobNames {
  /** Torque's Job_Name (qsub -N, else the script's file name), as the user knows the job. */
  name?: string;
  /** PBS_O_WORKDIR: where the user submitted from. */
  workdir?: string;
}

/** "job 9.srv (name "run", submitted from "/home/u/x")": what the user knows, never Torque's spool copy. */
function jobTitle(jobId: string, names: JobNames): string {
  const parts = [
    ...(names.name !== undefined ? [`name ${quote(names.name, 80)}`] : []),
    ...(names.workdir !== undefined ? [`submitted from ${quote(names.workdir, 200)}`] : []),
  ];
  return `job ${jobId}${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`;
}

/** `hints`: the closing lines that help with this kind of rejection (CHECK_HINT unless the caller knows better). */
export function jobFaultReport(jobId: string, summary: string, problems: readonly Problem[], names: JobNames = {}, hints: readonly string[] = [CHECK_HINT]): string[] {
  return [
    line(`${jobTitle(jobId, names)} was not started: ${summary}`),
    ...capped(problems, (p) => problemLine(p)),
    ...hints.map((h) => line(h)),
  ];
}

/** The job fits this node, but other jobs hold the room now (core/errors.ts NodeBusy): nothing to fix, nothing offlined. */
export function nodeBusyReport(jobId: string, node: string, summary: string, problems: readonly Problem[]): string[] {
  return [
    line(`node ${node} cannot take VM job ${jobId} now: ${summary}. The job goes back to the queue and starts when a node has room for it; this is not your fault.`),
    ...capped(problems, (p) => problemLine(p)),
  ];
}

export function nodeFaultReport(jobId: string, node: string, summary: string, problems: readonly Problem[]): string[] {
  return [
    line(`node ${node} cannot prepare VM job ${jobId} now: ${summary}. The job goes back to the queue; this is not your fault.`),
    ...capped(problems, (p) => problemLine(forAdmin(p))),
  ];
}
