// Single flight on one node: prologues that want the same image take the same
// proper-lockfile lock (an atomic mkdir, refreshed while held). A holder that
// was killed stops refreshing it, and the next waiter takes it over once it is
// [cache] lock_stale old. Every wait is bounded and listens to the run's deadline.
import { mkdirSync } from 'node:fs';
import lockfile from 'proper-lockfile';
import type { Config } from '../config/schema.js';
import { NodeFault, isNodeFault, stopReason } from '../core/errors.js';

/** A prologue still running this long after its deadline is ended (pipeline/context.ts startDeadline). */
export const HARD_STOP_SECONDS = 5;

/**
 * How long another run on this node may hold a lock we wait for: a prologue
 * holds one at most until its deadline ([timeouts] total), is ended
 * HARD_STOP_SECONDS later if it has not stopped by then, and a lock left by a
 * killed holder is taken over [cache] lock_stale after its last refresh. Every
 * wait is bounded by this, and by the waiter's own deadline, which comes first
 * unless the holder overran its own. A shorter bound (the old [timeouts] lock,
 * 200 s against a total of 240 s) gave up on a holder that was only slow, a
 * cold copy of a big image, and made a job that only had to wait a node fault.
 */
export function holderMaxSeconds(config: Pick<Config, 'timeouts' | 'cache'>): number {
  return config.timeouts.total + HARD_STOP_SECONDS + config.cache.lock_stale;
}

export interface LockOptions {
  dir: string;
  /** Seconds to wait for the holder before giving up (a node fault): holderMaxSeconds, or 0 for tryLock. */
  waitSeconds: number;
  /** Seconds without a refresh after which a lock counts as abandoned. */
  staleSeconds: number;
  signal?: AbortSignal;
  /** Called once when the lock is held by another process, so the log shows why we wait. */
  onWait?: () => void;
  /** Called if a held lock was taken away (our refreshes stalled past stale). */
  onCompromised?: (err: Error) => void;
}

export type Release = () => Promise<void>;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Takes the named lock, waiting at most waitSeconds. Names are [a-z0-9-] chosen by us, never by users. */
export async function acquireLock(name: string, o: LockOptions): Promise<Release> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const target = `${o.dir}/${name}`;
  const staleMs = o.staleSeconds * 1000;
  const until = Date.now() + o.waitSeconds * 1000;
  let waited = false;
  for (let attempt = 0; ; attempt++) {
    if (o.signal?.aborted) throw waitFault(name, o, stopReason(o.signal).why);
    try {
      return await lockfile.lock(target, {
        lockfilePath: `${target}.lock`,
        realpath: false,
        stale: staleMs,
        update: Math.max(1000, Math.floor(staleMs / 3)),
        retries: 0,
        onCompromised: (err) => (o.onCompromised ?? (() => undefined))(err),
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') {
        throw new NodeFault(`cannot take the cache lock ${name} (${(e as Error).message})`, [
          { id: 'cache-lock', where: target, message: (e as Error).message, fix: 'check that [paths] cache_dir is a local, writable filesystem' },
        ]);
      }
    }
    if (!waited) {
      waited = true;
      o.onWait?.();
    }
    if (Date.now() >= until) throw waitFault(name, o, `it was still held after ${o.waitSeconds} s`);
    // Short polls first: most holders are warm prologues that keep it for milliseconds.
    await sleep(Math.min(25 * 2 ** Math.min(attempt, 3), 250) + Math.random() * 25, o.signal);
  }
}

export async function withLock<T>(name: string, o: LockOptions, fn: () => Promise<T>): Promise<T> {
  const release = await acquireLock(name, o);
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined); // compromised or already gone: nothing left to release
  }
}

/** Takes the lock only if nobody holds it; eviction skips images in use this way. */
export async function tryLock(name: string, o: Pick<LockOptions, 'dir' | 'staleSeconds'>): Promise<Release | undefined> {
  try {
    return await acquireLock(name, { ...o, waitSeconds: 0 });
  } catch (e) {
    if (isNodeFault(e) && e.problems[0]?.id === 'cache-lock-wait') return undefined;
    throw e;
  }
}

function waitFault(name: string, o: LockOptions, why: string): NodeFault {
  return new NodeFault(`another prologue on this node is still preparing the same image (lock ${name}: ${why})`, [
    {
      id: 'cache-lock-wait',
      where: `${o.dir}/${name}.lock`,
      message: why,
      fix: 'the holder ran past its own deadline ([timeouts] total): see its job in the admin log; if no prologue is running, the lock is taken over after [cache] lock_stale',
    },
  ]);
}
