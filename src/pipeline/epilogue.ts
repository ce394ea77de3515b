// The epilogue removes what the prologue made for this job on this node, and
// nothing else.
import { rmSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import type { JobArgs, JobEnv } from '../torque/contract.js';
import { EXIT_RUN, type ExitCode } from '../torque/exit.js';
import type { HookIO } from '../torque/hook.js';
import { jobLogger } from './context.js';
import { handleFailure } from './failure.js';

export interface EpilogueInput {
  args: JobArgs;
  env: JobEnv;
  config: Config;
  io: HookIO;
}

export async function cleanUpJob(input: EpilogueInput): Promise<ExitCode> {
  const { args, config, io } = input;
  const log = jobLogger(config, args.kind, args.jobId, io);
  const clog = log.child({ stage: 'cleanup' });
  try {
    // jobId passed parseJobArgs' pattern, so this stays inside job_dir.
    const dir = `${config.paths.job_dir}/${args.jobId}`;
    rmSync(dir, { recursive: true, force: true });
    clog.info({ dir, jobExitCode: args.jobExitCode }, 'job files removed');
    return EXIT_RUN;
  } catch (e) {
    return await handleFailure(e, { kind: args.kind, args, env: input.env, config, io, log });
  }
}
