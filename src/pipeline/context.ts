// What every stage of a job run may use: the job, the batch system it came
// from, the config, the logger, the deadline, and the two output streams that
// land in the job's spool files.
import { hostname } from 'node:os';
import type { Config } from '../config/schema.js';
import type { BatchSystem, HookKind, JobArgs, JobEnv } from '../core/engine.js';
import type { HookIO } from '../core/io.js';
import { openLog, type Logger } from '../report/log.js';
import { HARD_STOP_SECONDS } from '../cache/lock.js';

export interface JobContext {
  args: JobArgs;
  env: JobEnv;
  /** Everything the run asks of the batch system (core/engine.ts). */
  engine: BatchSystem;
  config: Config;
  node: string;
  log: Logger;
  io: HookIO;
  /** Aborted at [timeouts] total; every child process and lock wait listens to it. */
  signal: AbortSignal;
}

export function shortHostname(): string {
  return hostname().split('.')[0] ?? 'localhost';
}

export function jobLogger(config: Config, kind: HookKind, jobId: string, io: HookIO): Logger {
  const { log, problem } = openLog({ file: config.paths.log_file, level: config.logging.level, job: jobId, node: shortHostname() });
  if (problem) io.err(`vtorque: (admin) ${problem}; logging errors to stderr instead\n`);
  return log.child({ hook: kind });
}

/**
 * Starts the whole-run deadline. When it passes, the signal aborts every child;
 * if the run still has not ended 5 s later, onHardStop ends the process.
 */
export function startDeadline(seconds: number, onHardStop: () => void): { signal: AbortSignal; stop: () => void } {
  const ac = new AbortController();
  const soft = setTimeout(() => ac.abort(new Error(`the prologue's deadline of ${seconds} s ([timeouts] total) passed`)), seconds * 1000);
  const hard = setTimeout(onHardStop, (seconds + HARD_STOP_SECONDS) * 1000);
  soft.unref();
  hard.unref();
  return { signal: ac.signal, stop: () => { clearTimeout(soft); clearTimeout(hard); } };
}
