// The job's environment for login shells in the VM (the batch system's job
// variables, core/engine.ts GuestVars, and ours), as a sh file for
// /etc/profile.d/. Every value is single-quoted (names.ts shQuote), so paths
// and job names with quotes, $, spaces or non-ASCII arrive exactly.
import { shQuote } from './names.js';

export const PROFILE_PATH = '/etc/profile.d/vtorque-job.sh';

/**
 * The guest's own node file: every VM of the job, one per line, in job order.
 * The host's node file names hosts and a path that exists only on the host;
 * as in vTorque (vmPrologue createVNodeFile: the VM node file is what the VMs
 * see as the job's node file), the variables that name it in the guest
 * (GuestVars.nodefile) name this file, which lists VMs.
 */
export const GUEST_NODEFILE = '/etc/vtorque/nodefile';

/** The batch system's job variables (`job`: GuestVars.vars), then ours, which are the same under every batch system. */
export function profileVars(o: {
  job: readonly [string, string][]; distro: string; index: number; count: number; jobIndex: number; hostname: string;
}): [string, string][] {
  const vars: [string, string][] = [...o.job];
  vars.push(['DISTRO', o.distro], ['VTORQUE_VM_INDEX', String(o.jobIndex)], ['VTORQUE_VM_NODE_INDEX', String(o.index)], ['VTORQUE_VMS_ON_NODE', String(o.count)], ['VTORQUE_HOSTNAME', o.hostname]);
  return vars;
}

/** The variables that name the guest's node file (GuestVars.nodefile), for shells in the VM: each names GUEST_NODEFILE. */
export function nodefileVars(names: readonly string[]): [string, string][] {
  return names.map((n) => [n, GUEST_NODEFILE]);
}

export function profileText(vars: readonly [string, string][]): string {
  return ['# Written by vtorque-prologue: the job this VM belongs to.', ...vars.map(([k, v]) => `export ${k}=${shQuote(v)}`), ''].join('\n');
}

/**
 * The same, as one line, for OSv, whose cloud-init takes a file's content only
 * as a YAML string and no base64; every string we write into YAML is one line.
 */
export function profileLine(vars: readonly [string, string][]): string {
  return vars.map(([k, v]) => `export ${k}=${shQuote(v)}`).join('; ');
}
