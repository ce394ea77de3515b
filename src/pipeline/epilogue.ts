// The epilogue stops the job's VMs on this node, then removes what the
// prologue made for it (its directories and its lease on the cached image),
// and nothing else. First it leaves the marker that tells a prologue still at
// work (qdel during the prologue) to remove what it makes from then on
// (src/pipeline/ended.ts).
import { removeJobDirs, stopJobRun } from '../cache/jobdir.js';
import { removeTaps, resolveLaunchAccount } from '../launch/qemu.js';
import { existsSync } from 'node:fs';
import { layoutOf } from '../cache/layout.js';
import { removeLease } from '../cache/leases.js';
import type { Config } from '../config/schema.js';
import type { BatchSystem, JobArgs, JobEnv } from '../core/engine.js';
import { EXIT_RUN, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import { jobLogger } from './context.js';
import { handleFailure } from './failure.js';
import { markEnded } from './ended.js';
import { lockJobFiles } from './job-lock.js';

export interface EpilogueInput {
  args: JobArgs;
  env: JobEnv;
  engine: BatchSystem;
  config: Config;
  io: HookIO;
  /** The hook's front (ended.ts epilogueFront) already wrote the job-ended marker. */
  marked?: boolean;
}

export async function cleanUpJob(input: EpilogueInput): Promise<ExitCode> {
  const { args, config, io } = input;
  const log = jobLogger(config, args.kind, args.jobId, io);
  const clog = log.child({ stage: 'cleanup' });
  // Written before anything is removed, or a prologue could publish after our removal and never learn of it.
  try {
    if (!input.marked) markEnded(config, args.jobId);
  } catch (e) {
    clog.error({ err: String((e as Error).message) }, 'could not leave the job-ended marker: a prologue of this job still at work would not stop (run vtorque-prologue doctor)');
  }
  // Not taken within the holder's longest hold: remove anyway; the prologue removes again what it makes after the marker.
  const release = await lockJobFiles(config, args.jobId);
  try {
    // jobId passed parseJobArgs' pattern, so these stay inside job_dir, ramdisk_dir and leases/.
    // qemu first (power-off, [launch] shutdown, then SIGKILL): its disks are about to go.
    // Most jobs are not VM jobs: no run/, no account lookup.
    const stopped = existsSync(`${config.paths.job_dir}/${args.jobId}/run`)
      ? await stopJobRun(config, args.jobId, await resolveLaunchAccount(config), config.launch.shutdown)
      : { cleared: true, powered: 0, killed: 0 };
    if (stopped.powered + stopped.killed > 0) clog.info({ powered: stopped.powered, killed: stopped.killed }, 'VMs stopped');
    // After qemu: a tap still held open would only go down. Looked for whatever [launch] network says now.
    const taps = await removeTaps(config, args.jobId);
    if (taps > 0) clog.info({ taps }, 'tap devices removed');
    if (!stopped.cleared) clog.error({ dir: `${config.paths.job_dir}/${args.jobId}/run` }, 'the launch account\'s run/ could not be emptied: the job directory is left in place');
    const { removed, refused } = removeJobDirs(config, args.jobId, !stopped.cleared);
    const lease = removeLease(layoutOf(config), args.jobId);
    if (refused.length > 0) clog.error({ refused }, 'job files left in place: a directory above them is not root\'s alone (run vtorque-prologue doctor)');
    clog.info({ removed, lease, jobExitCode: args.jobExitCode }, removed.length > 0 || lease ? 'job files removed' : 'nothing to remove');
    return EXIT_RUN;
  } catch (e) {
    return await handleFailure(e, { kind: args.kind, engine: input.engine, args, env: input.env, config, io, log });
  } finally {
    await release?.().catch(() => undefined);
  }
}
