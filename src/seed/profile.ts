// The job's PBS environment for login shells in the VM, as a sh file for
// /etc/profile.d/. Every value is single-quoted (names.ts shQuote), so paths
// and job names with quotes, $, spaces or non-ASCII arrive exactly.
import { shQuote } from './names.js';

export const PROFILE_PATH = '/etc/profile.d/vtorque-job.sh';

/**
 * The guest's own node file: every VM of the job, one per line, in job order.
 * The host's PBS_NODEFILE names hosts and a path that exists only on the
 * host; as in vTorque (vmPrologue createVNodeFile: the VM node file is what
 * the VMs see as the job's node file), the guest's PBS_NODEFILE lists VMs.
 */
export const GUEST_NODEFILE = '/etc/vtorque/nodefile';

export function profileVars(o: {
  jobId: string; jobName: string; workdir?: string; distro: string; index: number; count: number; jobIndex: number; hostname: string;
}): [string, string][] {
  const vars: [string, string][] = [['PBS_JOBID', o.jobId], ['PBS_JOBNAME', o.jobName]];
  if (o.workdir !== undefined) vars.push(['PBS_O_WORKDIR', o.workdir]);
  vars.push(['DISTRO', o.distro], ['VTORQUE_VM_INDEX', String(o.jobIndex)], ['VTORQUE_VM_NODE_INDEX', String(o.index)], ['VTORQUE_VMS_ON_NODE', String(o.count)], ['VTORQUE_HOSTNAME', o.hostname]);
  return vars;
}

/** PBS_NODEFILE and PBS_VM_NODEFILE for shells in the VM: both the guest's node file. */
export function nodefileVars(): [string, string][] {
  return [['PBS_NODEFILE', GUEST_NODEFILE], ['PBS_VM_NODEFILE', GUEST_NODEFILE]];
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
