// The admin log: pino JSON lines with job id, node and stage on every line.
// Loaded only on the VM path and on failures; never on the non-VM fast path.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';

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
      mkdirSync(dirname(opts.file), { recursive: true, mode: 0o755 });
      const dest = pino.destination({ dest: opts.file, sync: true, append: true });
      return { log: pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime }, dest) };
    } catch (e) {
      const problem = `log file ${opts.file} cannot be opened (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
      const log = pino({ level: 'error', base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
      return { log, problem };
    }
  }
  return { log: pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true })) };
}

/** A logger for code paths that run before the config is known. */
export function silentLog(): Logger {
  return pino({ level: 'silent' });
}
