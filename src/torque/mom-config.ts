// What pbs_mom reads from mom_priv/config that bounds the prologue: its
// $prologalarm. Read as Torque 6.1 reads it (src/resmom/parse_config.c,
// read_config): a line whose first character is '#' is a comment, and so is
// the rest of a line after a '#'; leading blanks are skipped; "$name" is
// matched case-insensitively (strcasecmp) against pbs_mom's table, the name
// being letters, digits, '_' and ':' (tokcpy); prologalarm() takes strtol of
// the value and ignores a value <= 0 (the setting keeps what it had). Each
// re-read starts from PBS_PROLOG_TIME, 300 (src/include/mom_config.h), so the
// last good line wins and without one it is 300.
import type { Config } from '../config/schema.js';

export const PROLOG_ALARM_DEFAULT = 300;

export interface PrologAlarm {
  seconds: number;
  /** The line that set it (1-based) and its text; absent: the default. */
  line?: number;
  text?: string;
}

export function readPrologAlarm(configText: string): PrologAlarm {
  let found: PrologAlarm = { seconds: PROLOG_ALARM_DEFAULT };
  configText.split('\n').forEach((raw, i) => {
    if (raw.startsWith('#')) return;
    const line = raw.split('#')[0]!.replace(/^\s+/, '');
    const m = /^\$([A-Za-z0-9_:]*)(.*)$/.exec(line);
    if (!m || m[1]!.toLowerCase() !== 'prologalarm') return;
    const n = /^[+-]?[0-9]+/.exec(m[2]!.replace(/^\s+/, ''));
    const v = n ? Number(n[0]) : 0;
    if (v > 0) found = { seconds: v, line: i + 1, text: raw.trim() };
  });
  return found;
}

/**
 * pbs_mom kills a prologue 10 s before $prologalarm (get_child_exit_status,
 * src/resmom/prolog.c); ours stops at [timeouts] total and exits at most 5 s
 * later (the hard stop, src/pipeline/context.ts), so it reports and requeues
 * the job itself. 5 s more for node's start-up and the exit.
 */
export const PROLOG_ALARM_MARGIN = 20;

/** The least $prologalarm that lets the prologue reach its own deadline and report. */
export const neededPrologAlarm = (config: Config): number => config.timeouts.total + PROLOG_ALARM_MARGIN;
