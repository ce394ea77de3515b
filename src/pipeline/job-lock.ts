// One job's files are removed by two parties when the job is deleted during
// its prologue: the epilogue, and the prologue once it sees the epilogue's
// marker (src/pipeline/ended.ts). Apart from the fast path's bundle, which
// must not carry proper-lockfile.
import type { Config } from '../config/schema.js';
import { acquireLock, holderMaxSeconds, type Release } from '../cache/lock.js';
import { ensureEndedDir } from './ended.js';

/**
 * Serialises those two removals, so that two rm -r and two qemu stops do not
 * trip over each other. undefined: not taken within the holder's longest hold
 * (holderMaxSeconds); the caller goes on without it, as removal must not be skipped.
 */
export async function lockJobFiles(config: Config, jobId: string): Promise<Release | undefined> {
  try {
    return await acquireLock(`job-${jobId}`, { dir: ensureEndedDir(config), waitSeconds: holderMaxSeconds(config), staleSeconds: config.cache.lock_stale });
  } catch {
    return undefined;
  }
}
