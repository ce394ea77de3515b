// What a real pbs_mom passed its $job_starter, recorded on Torque 6.1
// (test/fixtures/torque-6.1/README.md says how), and its replay: the argv, the
// environment's names and the extra descriptors the harness gives the starter
// come from these files, not from what we believe pbs_mom does.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

// The source tree's fixtures (this file runs from dist/test/harness/).
export const RECORDINGS = join(resolve(new URL('../../..', import.meta.url).pathname), 'test', 'fixtures', 'torque-6.1');

/** One start of the recording starter. */
export interface Recording {
  argv: string[];
  env: Record<string, string>;
  /** Open descriptors: kind (file, fifo, chr, sock), target (readlink), flags (octal, /proc/self/fdinfo). */
  fds: Record<string, { kind?: string; target?: string; flags?: string; isatty?: boolean; error?: string }>;
  /** What pbs_mom wrote on the job shell's stdin pipe (Torque's default --enable-shell-pipe). */
  stdin_data?: string;
  sid: number;
  pid: number;
  pgid: number;
  ppid: number;
  parent_comm: string;
  cwd: string;
  umask: string;
}

/** The job's shell: a batch job (with qsub -F arguments), qsub -I, qsub -I -x. TM tasks: pbsdsh PROGRAM, with arguments, with -E. */
export type StartKind = 'batch' | 'batch-args' | 'interactive' | 'interactive-x' | 'task-pbsdsh' | 'task-pbsdsh-args' | 'task-pbsdsh-E';

export function recording(kind: StartKind): Recording {
  return JSON.parse(readFileSync(join(RECORDINGS, `${kind}.json`), 'utf8')) as Recording;
}

/** What stands for the recorded job in a replay. */
export interface ReplayJob {
  id: string;
  name: string;
  user: string;
  home: string;
  torqueHome: string;
  shell: string;
  host: string;
}

/**
 * The recorded environment for another job: every name pbs_mom set, none it
 * did not; values that named the recorded job, user, home, host or
 * TORQUE_HOME name the replayed one's; the rest as recorded.
 */
export function replayEnv(rec: Recording, job: ReplayJob): Record<string, string> {
  const was = { id: rec.env.PBS_JOBID!, user: rec.env.PBS_O_LOGNAME!, home: rec.env.PBS_O_HOME!, host: rec.env.PBS_O_HOST! };
  const exact: Record<string, string> = { [was.user]: job.user, [was.host]: job.host };
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(rec.env)) {
    if (k === 'PBS_JOBNAME') env[k] = job.name;
    else if (k === 'SHELL' || k === 'PBS_O_SHELL') env[k] = job.shell;
    else if (v in exact) env[k] = exact[v]!;
    else env[k] = v.replaceAll('/var/spool/torque', job.torqueHome).replaceAll(was.home, job.home).replaceAll(`/${was.user}`, `/${job.user}`).replaceAll(was.id, job.id);
  }
  return env;
}

/** The recorded argv with our starter as argv[0] and, for the job's shell, the replayed job's shell for the recorded one. */
export function replayArgv(rec: Recording, starter: string, shell: string): string[] {
  return [starter, ...rec.argv.slice(1).map((a, i) => (i === 0 && a === rec.env.SHELL ? shell : a))];
}

/**
 * The descriptors above 2 pbs_mom leaves open in the starter (Torque 6.1: the
 * read end of the job shell's stdin pipe again at 9, and a pipe's write end
 * at 14, or 13 for qsub -I): 'stdin' where the recording had stdin's pipe
 * again, else the recorded end ('r' or 'w') of a new pipe.
 */
export function extraFds(rec: Recording): Record<string, 'stdin' | 'r' | 'w'> {
  const extra: Record<string, 'stdin' | 'r' | 'w'> = {};
  for (const [n, fd] of Object.entries(rec.fds)) {
    if (Number(n) <= 2 || fd.kind !== 'fifo') continue;
    const sameAsStdin = fd.target !== undefined && fd.target === rec.fds['0']?.target;
    extra[n] = sameAsStdin ? 'stdin' : (Number.parseInt(fd.flags ?? '0', 8) & 3) === 1 ? 'w' : 'r';
  }
  return extra;
}
