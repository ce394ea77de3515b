// qdel while the prologue still works. pbs_mom does not wait for the
// prologue: a SIGKILL for a job with no process yet forces it to EXITING
// (Torque 6.1 src/resmom/requests.c req_signaljob, "job recycled into exiting")
// and scan_for_exiting -> preobit_preparation (catch_child.c) runs the
// epilogue at once, while the prologue goes on in the starter child. So the
// two agree through a marker: the epilogue writes <cache_dir>/ended/<jobid>.json
// BEFORE it removes anything, and the prologue looks for it after each thing
// it publishes (lease, job directory, booted qemu) and at its end. Whichever
// runs second sees the other's work: the epilogue removes what was published
// before its marker, the prologue removes everything once it sees the marker.
//
// A requeued job has the same id, and pbs_mom runs the epilogue after a failed
// prologue too (start_exec.c exec_bail -> EXITING -> scan_for_exiting), so an
// earlier start's marker is normal. A marker counts only when it was written
// after this prologue process started: both sides read the boot-time clock
// (CLOCK_BOOTTIME: /proc/uptime, and the start time in /proc/self/stat), so
// the wall clock stepping does not matter, and a marker of an earlier boot
// (another boot_id) never counts. Removing any marker at the start instead
// would lose one written between pbs_mom's fork and that removal.
//
// The directory is root's alone (safedir.ts), so nobody else can plant or
// remove a marker. A marker matters only while a prologue that started before
// it may still run, at most [timeouts] total (and the 5 s hard stop) after it:
// the epilogue and `cache gc` sweep older ones.
import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, rmSync, unlinkSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { ensureRootDir } from '../tools/safedir.js';
import { endedMarkerPath, layoutOf, leasePath } from '../cache/layout.js';

export interface EndedMarker {
  job: string;
  /** /proc/sys/kernel/random/boot_id when written. */
  boot: string;
  /** Seconds since boot (CLOCK_BOOTTIME, /proc/uptime) when written. */
  uptime: number;
  at: string;
  pid: number;
}

/**
 * Thrown by the prologue when it finds the job's epilogue has run: not a fault
 * of the job or the node. Also the reason watchEnded aborts the run's signal
 * with, so whatever that stops (a tool, a lock wait, the boot wait) says the
 * job was deleted, not that a deadline passed (core/errors.ts stopReason).
 */
export class JobEnded extends Error {
  override readonly name = 'JobEnded';
  readonly fix = 'nothing to fix: the job was deleted';
  constructor(readonly jobId: string, readonly where: string) {
    super(`job ${jobId} was deleted (its epilogue ran) while the prologue was ${where}`);
  }
}

export const endedDir = (config: Config): string => layoutOf(config).ended;
const markerPath = (config: Config, jobId: string) => endedMarkerPath(layoutOf(config), jobId);

/** The directory, verified root's alone (made if missing) once per process. */
let ensured: string | undefined;
export function ensureEndedDir(config: Config): string {
  const dir = endedDir(config);
  if (ensured !== dir) {
    ensureRootDir(dir, 0o700, '[paths] cache_dir');
    ensured = dir;
  }
  return dir;
}

const bootId = (): string => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const uptime = (): number => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);

/**
 * This process's start in seconds since boot: /proc/self/stat field 22, in
 * USER_HZ ticks (100 on every architecture Node runs on). The fork, not
 * Node's start: an epilogue during the wrapper's exec or Node's startup counts.
 */
function processStart(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[19]) / 100;
}

let started: { boot: string; at: number } | undefined;
const ownStart = () => (started ??= { boot: bootId(), at: processStart() });

/**
 * The epilogue's side, for every job (whether it wanted VMs is in a script
 * the epilogue does not read): written before it removes anything. Old
 * markers go at the same time, so the directory holds only the last
 * endedTtlSeconds of jobs even where nobody runs cache gc. jobId passed
 * parseJobArgs' pattern: a plain file name.
 */
export function markEnded(config: Config, jobId: string): EndedMarker {
  ensureEndedDir(config);
  const m: EndedMarker = { job: jobId, boot: bootId(), uptime: uptime(), at: new Date().toISOString(), pid: process.pid };
  writeFileAtomic(markerPath(config, jobId), JSON.stringify(m) + '\n', 0o600);
  sweepEnded(config);
  return m;
}

/**
 * The front of every epilogue (torque/hook.ts, slurm/hook.ts), before the
 * heavy bundle loads: the marker first, for every job, since a prologue still
 * at work (a job deleted during its prologue) publishes after this and must
 * learn that the job ended. `done`: nothing of the job is on this node (no
 * job directory, ramdisk directory or lease; a prologue killed before it made
 * the job directory may still have leased an image), so the epilogue has
 * nothing to clean. `marked` false: not written; cleanUpJob tries again and
 * logs why, and the epilogue is never done early without its marker.
 */
export function epilogueFront(config: Config, jobId: string): { marked: boolean; done: boolean } {
  let marked = true;
  try {
    markEnded(config, jobId);
  } catch {
    marked = false;
  }
  const { job_dir, ramdisk_dir } = config.paths;
  const done = marked && ![`${job_dir}/${jobId}`, `${ramdisk_dir}/${jobId}`, leasePath(layoutOf(config), jobId)].some((p) => existsSync(p));
  return { marked, done };
}

function readMarker(path: string): EndedMarker | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const v = JSON.parse(buf.subarray(0, n).toString('utf8')) as Partial<EndedMarker>;
    if (typeof v.boot !== 'string' || typeof v.uptime !== 'number') return undefined;
    return v as EndedMarker;
  } catch {
    return undefined; // half a marker cannot exist (written by rename); anything else is not ours
  } finally {
    closeSync(fd);
  }
}

/**
 * The prologue's side: has the job's epilogue run since this process started?
 * An older marker (an earlier start of a requeued job, or an earlier boot) is
 * removed and does not count.
 */
export function jobEnded(config: Config, jobId: string): boolean {
  const path = `${ensureEndedDir(config)}/${jobId}.json`;
  try {
    lstatSync(path);
  } catch {
    return false; // the common case, one failed lstat per check
  }
  const m = readMarker(path);
  const me = ownStart();
  if (m && m.boot === me.boot && m.uptime >= me.at) return true;
  rmSync(path, { force: true });
  return false;
}

/** Throws JobEnded if the job's epilogue has run; where says what the prologue was doing, for the admin log. */
export function assertNotEnded(config: Config, jobId: string, where: string): void {
  if (jobEnded(config, jobId)) throw new JobEnded(jobId, where);
}

/** The prologue removes the marker once it has removed what it made: nothing else will read it. */
export function clearEnded(config: Config, jobId: string): void {
  rmSync(markerPath(config, jobId), { force: true });
}

/**
 * Polls for the marker, so that a prologue whose job was deleted stops its
 * tools (a libguestfs inspection, a copy, a boot wait) within about a second
 * instead of finishing work nobody will use. The caller's signal aborts too.
 */
export function watchEnded(config: Config, jobId: string, parent: AbortSignal, everyMs = 1000): { signal: AbortSignal; stop: () => void } {
  const ac = new AbortController();
  const timer = setInterval(() => {
    try {
      if (jobEnded(config, jobId)) ac.abort(new JobEnded(jobId, 'working'));
    } catch {
      /* an unreadable marker directory is reported at the next publish point */
    }
  }, everyMs);
  timer.unref();
  const stop = () => clearInterval(timer);
  ac.signal.addEventListener('abort', stop, { once: true });
  return { signal: AbortSignal.any([parent, ac.signal]), stop };
}

/** How long a marker (or a lock left by a killed process) can still matter. */
export const endedTtlSeconds = (config: Config): number => config.timeouts.total + 600;

/** Removes markers and abandoned locks older than endedTtlSeconds; returns the job ids whose marker went. */
export function sweepEnded(config: Config, now = Date.now()): string[] {
  const dir = endedDir(config);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const swept: string[] = [];
  const cutoff = now - endedTtlSeconds(config) * 1000;
  for (const n of names) {
    const path = `${dir}/${n}`;
    try {
      const st = lstatSync(path);
      if (st.mtimeMs >= cutoff) continue;
      // A held lock is refreshed every lock_stale/3 seconds: one this old was left by a killed process.
      if (n.endsWith('.lock') && st.isDirectory()) rmSync(path, { recursive: true, force: true });
      else if (st.isFile()) {
        unlinkSync(path);
        if (n.endsWith('.json') && !n.startsWith('.')) swept.push(n.slice(0, -'.json'.length));
      }
    } catch {
      /* removed while we looked */
    }
  }
  return swept;
}
