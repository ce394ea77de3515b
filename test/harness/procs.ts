// The processes of one run, as /proc shows them: what a hook started (its
// descendants, its session) and what names the run on its command line, so a
// test can kill the hook and then look for anything of it left behind.
import { readdirSync, readFileSync } from 'node:fs';
import { killSession, type Job, type Mom, type RunResult } from './mom.js';

export interface Proc {
  pid: number;
  ppid: number;
  session: number;
  /** Start time in clock ticks since boot: with the pid, names one process even if the pid is reused. */
  start: string;
  state: string;
  cmdline: string[];
}

function read(pid: string): Proc | undefined {
  try {
    // The fields after the command name, which may hold spaces and parentheses.
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    return { pid: Number(pid), ppid: Number(f[1]), session: Number(f[3]), start: f[19]!, state: f[0]!, cmdline };
  } catch {
    return undefined;
  }
}

/** Every process there is now; zombies (dead, waiting for a reaper) are not counted. */
export function processes(): Proc[] {
  return readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p)).map(read).filter((p): p is Proc => p !== undefined && p.state !== 'Z');
}

/** pid and everything under it. */
export function treeOf(pid: number): Proc[] {
  const all = processes();
  const out = all.filter((p) => p.pid === pid);
  for (let i = 0; i < out.length; i++) out.push(...all.filter((p) => p.ppid === out[i]!.pid));
  return out;
}

/** Still running (not a zombie), and still the same process. */
export function running(p: Proc): boolean {
  const now = read(String(p.pid));
  return now !== undefined && now.start === p.start && now.state !== 'Z';
}

/** What of a run is still there: processes of `before` still running, processes in the session, and processes whose command line mentions one of `names`. */
export function leftOf(o: { before: Proc[]; session: number; names: string[] }): Proc[] {
  const left = new Map<number, Proc>();
  for (const p of o.before) if (running(p)) left.set(p.pid, p);
  for (const p of processes()) {
    if (p.session === o.session || p.cmdline.some((a) => o.names.some((n) => a.includes(n)))) left.set(p.pid, p);
  }
  return [...left.values()];
}

/** Waits up to `ms` for nothing of the run to be left; returns what still is (empty: all gone). */
export async function waitGone(o: { before: Proc[]; session: number; names: string[] }, ms = 10_000): Promise<Proc[]> {
  const t0 = Date.now();
  for (;;) {
    const left = leftOf(o);
    if (left.length === 0 || Date.now() - t0 > ms) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Runs the job's prologue until `ready` says the moment has come (polled), then
 * kills it as `how` says: its whole session, as pbs_mom's $prologalarm does,
 * or node alone, as an admin's kill -9 or the OOM killer would. Returns what
 * of it is left once things settle (`ms` after the kill).
 */
export async function killMidway(mom: Mom, job: Job, how: 'session' | 'node', ready: (pid: number) => boolean, names: string[]): Promise<{ r: RunResult; before: Proc[]; left: Proc[]; seen: boolean; ms: number }> {
  let pid = 0;
  const run = mom.prologue(job, { onSpawn: (p) => { pid = p; } });
  let ended = false;
  void run.then(() => { ended = true; });
  // The prologue's own deadline ([timeouts] total) is far: it is still at work when it is killed.
  for (const t0 = Date.now(); !ended && Date.now() - t0 < 180_000 && !(pid && ready(pid));) await new Promise((r) => setTimeout(r, 50));
  const seen = !ended && pid !== 0 && ready(pid);
  if (!seen) return { r: await run, before: [], left: [], seen, ms: 0 };
  const before = treeOf(pid);
  // pbs_mom's $prologalarm: every process of the session. Or node alone, as an admin's kill -9 or the OOM killer would.
  const t0 = performance.now();
  if (how === 'session') killSession(pid);
  else process.kill(pid, 'SIGKILL');
  const r = await run;
  const left = await waitGone({ before, session: pid, names });
  return { r, before, left, seen, ms: Math.round(performance.now() - t0) };
}

export const describe = (ps: Proc[]): string => ps.map((p) => `${p.pid} ${p.cmdline.join(' ').slice(0, 120)}`).join('; ');
