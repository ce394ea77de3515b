// A job's hold on the base images its VMs run on: one file per job, written
// before the job is told its overlays are ready and removed by its epilogue.
// Eviction never removes a leased base. A lease whose epilogue never ran (node
// crash, killed mom) ends after [cache] lease_max_age, once Torque no longer
// has the job on this node; `cache gc` also ends it at once when Torque's
// server no longer has the job either (sweepEndedJobs).
import { existsSync, lstatSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { jobPresence } from '../torque/qstat.js';
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

/** Torque keeps <jobid>.JB in mom_priv/jobs while this node has the job. */
export function jobKnownToTorque(config: Config, jobId: string): boolean {
  return existsSync(`${config.paths.torque_home}/mom_priv/jobs/${jobId}.JB`);
}

export function isStale(config: Config, f: LeaseFile, now = Date.now()): boolean {
  if (now - f.mtimeMs < config.cache.lease_max_age * 1000) return false;
  return !f.lease || !jobKnownToTorque(config, f.lease.job);
}

/** Removes stale leases; returns the digests the remaining leases hold, and what was swept. */
export function sweepLeases(config: Config, l: CacheLayout): { held: Map<string, string[]>; swept: string[] } {
  const held = new Map<string, string[]>();
  const swept: string[] = [];
  for (const f of readLeases(l)) {
    if (isStale(config, f)) {
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

/** A Torque job id as parseJobArgs accepts it: only such a name goes to qstat's argv. */
const JOB_ID = /^[0-9]{1,12}(\[[0-9]{0,9}\])?(\.[A-Za-z0-9][A-Za-z0-9.-]{0,252})?$/;

/** What sweepEndedJobs did: the leases it removed and why, and whether qstat could answer. */
export interface EndedJobsSweep {
  held: Map<string, string[]>;
  /** By age (sweepLeases) and by qstat, job ids. */
  swept: string[];
  /** Jobs qstat said the server no longer has (or has completed). */
  gone: string[];
  /** Why qstat could not answer; the leases it would have judged are kept (swept by age only). */
  qstatUnavailable?: string;
}

/**
 * sweepLeases, then asks Torque's server (qstat) about each job still
 * holding a lease that this mom no longer has (<jobid>.JB): a job the
 * server does not know, or has completed, has ended, and its lease goes
 * whatever its age. qstat failing (server down, tool missing, timeout) is
 * not an answer: those leases stay until lease_max_age, and the first
 * failure stops the asking, so gc never waits out one timeout per lease.
 */
export async function sweepEndedJobs(config: Config, l: CacheLayout): Promise<EndedJobsSweep> {
  const { swept } = sweepLeases(config, l);
  const gone: string[] = [];
  let qstatUnavailable: string | undefined;
  const held = new Map<string, string[]>();
  for (const f of readLeases(l)) {
    const job = f.lease?.job;
    if (!job) continue;
    // The lease file's own name is what the prologue wrote it under; a lease naming another job is not ours to judge by qstat.
    const mine = f.file === leasePath(l, job) && JOB_ID.test(job);
    if (mine && qstatUnavailable === undefined && !jobKnownToTorque(config, job)) {
      try {
        const presence = await jobPresence(config, job);
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
        qstatUnavailable = String((e as Error).message ?? e);
      }
    }
    for (const d of f.lease?.digests ?? []) held.set(d, [...(held.get(d) ?? []), job]);
  }
  return { held, swept, gone, qstatUnavailable };
}
