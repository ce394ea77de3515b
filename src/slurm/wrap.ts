// How a Slurm VM job runs inside its VM. Slurm has no $job_starter: slurmd
// execs the batch script itself. So job_submit.lua (conf/slurm/job_submit.lua)
// replaces the script of every VM job it accepts with the same script behind
// three lines of ours:
//
//   #!/bin/sh
//   # vtorque: job_submit.lua wrapped this VM job: ...
//   exec '<prefix>/bin/vtorque-slurm-run' "$0" "$@"
//   <the script as submitted, byte for byte>
//
// vtorque-slurm-run (bin/, then launch/starter.ts slurmRunMain) runs as the
// job owner, reads the script as submitted back from its own file ($0) and
// sends it to VM 0's agent, as Torque's job starter does; without a VM it runs
// it on the host. The Prolog reads the #VM lines behind the three lines.
//
// The lua and this file strip the same lines: the lua strips every layer a
// user put there themselves before it checks and wraps, so what slurmctld
// stores holds our three lines at most once, and the Prolog strips one. No
// SPANK plugin, nothing compiled against Slurm: one file the site can read.
// Light: the Prolog's non-VM path imports it.

export const WRAP_SHEBANG = '#!/bin/sh\n';
export const WRAP_NOTE = '# vtorque: job_submit.lua wrapped this VM job: the script as submitted follows the exec line, and runs in VM 0 (vtorque-prologue help slurm-prolog)\n';
const HEAD = WRAP_SHEBANG + WRAP_NOTE;
// The runner's path as job_submit.lua's RUNNER names it: an absolute path with no quote or newline.
const EXEC_LINE = /^exec '(\/[^'\n]*)' "\$0" "\$@"\n/;

/** The three lines job_submit.lua puts before a VM job's script (the lua builds the same text). */
export function wrapHead(runner: string): string {
  if (!runner.startsWith('/') || /['\n]/.test(runner)) throw new Error(`the job runner path ${JSON.stringify(runner)} must be absolute, without quotes or newlines`);
  return `${HEAD}exec '${runner}' "$0" "$@"\n`;
}

/** The script behind one layer of our lines, and the runner they named; `wrapped` false when the text does not start with them. */
export function unwrapScript(text: string): { script: string; wrapped: boolean; runner?: string } {
  if (!text.startsWith(HEAD)) return { script: text, wrapped: false };
  const m = EXEC_LINE.exec(text.slice(HEAD.length));
  if (!m) return { script: text, wrapped: false };
  return { script: text.slice(HEAD.length + m[0].length), wrapped: true, runner: m[1] };
}

/** The same on bytes, for the runner, which hands the script to the VM byte for byte. */
export function unwrapBytes(body: Buffer): { script: Buffer; wrapped: boolean } {
  // The three lines are ASCII: their length in the string is their length in bytes.
  const head = body.subarray(0, HEAD.length + 4096).toString('latin1');
  const u = unwrapScript(head);
  if (!u.wrapped) return { script: body, wrapped: false };
  return { script: body.subarray(head.length - u.script.length), wrapped: true };
}
