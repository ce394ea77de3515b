// The admin log: pino JSON lines with job id, node and stage on every line.
// Loaded only on the VM path and on failures; never on the non-VM fast path.
import { constants, openSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';
import { ensureRootDir } from '../tools/safedir.js';

export type Logger = pino.Logger;

export interface LogOptions {
  file: string;
  level: string;
  job: string;
  node: string;
}

/**
 * Opens the log synchronously, so a prologue that exits right after a line
 * still has it on disk. If the file cannot be opened, the logger writes
 * errors to stderr instead: a broken log must never hide the user's message.
 */
export function openLog(opts: LogOptions): { log: Logger; problem?: string } {
  const base = { job: opts.job, node: opts.node };
  if (opts.file !== '') {
    try {
      // Root appends here on every VM job: only in a directory root alone controls, never through a symlink.
      ensureRootDir(dirname(opts.file), 0o755, '[paths] log_file directory');
      const fd = openSync(opts.file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o640);
      const dest = pino.destination({ dest: fd, sync: true });
      return { log: pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime }, dest) };
    } catch (e) {
      const problem = `log file ${opts.file} cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
      const log = pino({ level: 'error', base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
      return { log, problem };
    }
  }
  return { log: pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true })) };
}
