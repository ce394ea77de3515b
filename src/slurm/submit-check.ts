// `vtorque-prologue submit-check`: Slurm's job_submit.lua hands it the job
// script on stdin and refuses the job when it exits non-zero, with our lines
// (stdout) as the message. It is the submit filter's cheap check: the #VM
// lines resolved against the site's policy, the image allowed, a safe disk
// image by its header, and a verdict a node already holds; nothing is hashed
// or inspected, so slurmctld never waits on an image. It runs inside
// slurmctld, as SlurmUser (the ini must be readable there), so the submitting
// user's uid comes as --uid for the images a user may name by path.
import { readFileSync } from 'node:fs';
import { EXIT_NODE_FAULT, EXIT_RUN, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import { HEADER_CAP, scanDirectives } from '../request/directives.js';
import { line } from '../report/user.js';

/**
 * With --vm-status: the exit code of a VM job that passed, so that
 * job_submit.lua wraps its script (slurm/wrap.ts) and no other; 0 stays a job
 * that is not a VM job.
 */
export const EXIT_VM_JOB = 10;

function usage(io: HookIO, why: string): ExitCode {
  io.out(line(`submit-check: ${why}. Fix: (admin) check job_submit.lua`) + '\n');
  return EXIT_NODE_FAULT;
}

export async function runSubmitCheck(argv: readonly string[], configFile: string, configExplicit: boolean, io: HookIO, input: () => Buffer = () => readFileSync(0)): Promise<ExitCode | typeof EXIT_VM_JOB> {
  let uid: number | undefined;
  let partition: string | undefined;
  let vmStatus = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--vm-status') vmStatus = true;
    else if (a === '--uid' && /^[0-9]{1,10}$/.test(argv[i + 1] ?? '')) uid = Number(argv[++i]);
    else if (a === '--partition' && argv[i + 1] !== undefined) partition = argv[++i];
    else return usage(io, `unknown option ${JSON.stringify(a.slice(0, 40))}`);
  }
  const raw = input();
  const scan = scanDirectives(raw.subarray(0, HEADER_CAP).toString('utf8'), raw.length > HEADER_CAP);
  const notes: string[] = [];
  try {
    const { filterConfig, checkImage } = await import('../submit/vm.js');
    const { config, site } = filterConfig(configFile, configExplicit, notes);
    // Slurm may name several partitions (-p a,b): any VM partition among them makes it a VM job, as it may run there.
    const forced = partition !== undefined && partition.split(',').some((p) => config.policy.vm_queues.includes(p));
    if (scan.vmLines === 0 && !forced) return EXIT_RUN;
    notes.push(...scan.notes);
    const { resolveScanned } = await import('../request/resolve.js');
    const request = resolveScanned(scan, config, forced);
    if (site) await checkImage(request, config, notes, uid);
    for (const n of notes) io.out(line(n) + '\n');
    return vmStatus ? EXIT_VM_JOB : EXIT_RUN;
  } catch (e) {
    const { filterFailureReport, filterExitCode } = await import('../submit/vm.js');
    for (const n of notes) io.out(line(n) + '\n');
    io.out(filterFailureReport(e).join('\n') + '\n');
    return filterExitCode(e);
  }
}
