// A job's hold on the base images its VMs run on: one file per job, written
// before the job is told its overlays are ready and removed by its epilogue.
// Eviction never removes a leased base. A lease whose epilogue never ran (node
// crash, killed mom) ends after [cache] lease_max_age, once the batch system
// no longer has the job on this node; `cache gc` also ends it at once when the
// batch system's server no longer has the job either (sweepEndedJobs).
import { lstatSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import type { BatchSystem } from '../core/engine.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { DIGEST, leasePath, type CacheLayout } from './layout.js';

export interface Lease {
  job: string;
  node: string;
  digests: string[];
  createdAt: string;
}

export function writeLease(l: CacheLayout, lease: Lease): void {
  writeFileAtomic(leasePath(l, lease.job), JSON.stringify(lease) + '\n', 0o644);
}

export function removeLease(l: CacheLayout, jobId: string): boolean {
  try {
    unlinkSync(leasePath(l, jobId));
    return true;
  } catch {
    return false;
  }
}

export interface LeaseFile {
  file: string;
  lease: Lease | undefined;
  mtimeMs: number;
}

export function readLeases(l: CacheLayout): LeaseFile[] {
  let names: string[];
  try {
    names = readdirSync(l.leases);
  } catch {
    return [];
  }
  const out: LeaseFile[] = [];
  for (const n of names) {
    if (!n.endsWith('.json') || n.startsWith('.')) continue;
    const file = `${l.leases}/${n}`;
    try {
      const mtimeMs = lstatSync(file).mtimeMs;
      let lease: Lease | undefined;
      try {
        const v = JSON.parse(readFileSync(file, 'utf8')) as Lease;
        if (typeof v.job === 'string' && Array.isArray(v.digests)) lease = { ...v, digests: v.digests.filter((d) => DIGEST.test(d)) };
      } catch {
        /* unreadable lease: it still holds nothing, and is swept when old */
      }
      out.push({ file, lease, mtimeMs });
    } catch {
      /* removed while we looked */
    }
  }
  return out;
}

/** Whether this node still holds a job: the engine's runsHere. */
export type RunsHere = BatchSystem['runsHere'];

export function isStale(config: Config, f: LeaseFile, runsHere: RunsHere, now = Date.now()): boolean {
  if (now - f.mtimeMs < config.cache.lease_max_age * 1000) return false;
  return !f.lease || !runsHere(config, f.lease.job);
}

/** Removes stale leases; returns the digests the remaining leases hold, and what was swept. */
export function sweepLeases(config: Config, l: CacheLayout, runsHere: RunsHere): { held: Map<string, string[]>; swept: string[] } {
  const held = new Map<string, string[]>();
  const swept: string[] = [];
  for (const f of readLeases(l)) {
    if (isStale(config, f, runsHere)) {
      try {
        unlinkSync(f.file);
        swept.push(f.lease?.job ?? f.file);
      } catch {
        /* gone already */
      }
      continue;
    }
    for (const d of f.lease?.digests ?? []) held.set(d, [...(held.get(d) ?? []), f.lease!.job]);
  }
  return { held, swept };
}

/** What sweepEndedJobs did: the leases it removed and why, and whether the batch system could answer. */
export interface EndedJobsSweep {
  held: Map<string, string[]>;
  /** By age (sweepLeases) and by the batch system, job ids. */
  swept: string[];
  /** Jobs the batch system said its server no longer has (or has completed). */
  gone: string[];
  /** Why the batch system (its engine's recordTool) could not answer; the leases it would have judged are kept (swept by age only). */
  serverUnavailable?: string;
}

/**
 * sweepLeases, then asks the batch system's server (engine.jobPresence) about
 * each job still holding a lease that this node no longer runs: a job the
 * server does not know, or has completed, has ended, and its lease goes
 * whatever its age. The server failing to answer (down, tool missing,
 * timeout) is not an answer: those leases stay until lease_max_age, and the
 * first failure stops the asking, so gc never waits out one timeout per lease.
 */
export async function sweepEndedJobs(config: Config, l: CacheLayout, engine: BatchSystem): Promise<EndedJobsSweep> {
  const { swept } = sweepLeases(config, l, engine.runsHere);
  const gone: string[] = [];
  let serverUnavailable: string | undefined;
  const held = new Map<string, string[]>();
  for (const f of readLeases(l)) {
    const job = f.lease?.job;
    if (!job) continue;
    // The lease file's own name is what the prologue wrote it under; a lease naming another job is not ours to ask the server about.
    const mine = f.file === leasePath(l, job) && engine.isJobId(job);
    if (mine && serverUnavailable === undefined && !engine.runsHere(config, job)) {
      try {
        const presence = await engine.jobPresence(config, job);
        if (presence !== 'active') {
          try {
            unlinkSync(f.file);
          } catch {
            /* its epilogue removed it meanwhile */
          }
          gone.push(job);
          swept.push(job);
          continue;
        }
      } catch (e) {
        serverUnavailable = String((e as Error).message ?? e);
      }
    }
    for (const d of f.lease?.digests ?? []) held.set(d, [...(held.get(d) ?? []), job]);
  }
  return { held, swept, gone, serverUnavailable };
}
