// Room for a new base: under [cache] max_size, and leaving [cache] min_free on
// the filesystem. Ingests in progress reserve their size by the name of their
// temporary file (tmp/<digest>.<pid>.<bytes>.part), so two prologues that
// make room at the same time do not count the same free space twice. Least
// recently used bases go first; a leased base, or one whose lock is held, never.
import { lstatSync, readdirSync, statfsSync, unlinkSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import { JobFault, NodeBusy, NodeFault } from '../core/errors.js';
import { listEntries, removeEntry, type Entry } from './entries.js';
import { processAlive, sweepStrays, type CacheLayout } from './layout.js';
import { sweepLeases, type RunsHere } from './leases.js';
import { tryLock } from './lock.js';

export const TMP_NAME = /^([0-9a-f]{64})\.([0-9]+)\.([0-9]+)\.part$/;

export interface Reservation {
  file: string;
  pid: number;
  bytes: number;
  written: number;
}

/** Ingests in progress. A file whose process is gone was left by a killed prologue, and is removed. */
export function reservations(l: CacheLayout, sweep = true): { live: Reservation[]; swept: string[] } {
  const live: Reservation[] = [];
  const swept: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(l.tmp);
  } catch {
    return { live, swept };
  }
  for (const n of names) {
    const file = `${l.tmp}/${n}`;
    const m = TMP_NAME.exec(n);
    const pid = m ? Number(m[2]) : 0;
    if (m && pid !== process.pid && processAlive(pid)) {
      let written = 0;
      try {
        written = lstatSync(file).blocks * 512;
      } catch {
        continue;
      }
      live.push({ file, pid, bytes: Number(m[3]), written });
    } else if (sweep && (!m || pid !== process.pid)) {
      try {
        unlinkSync(file);
        swept.push(n);
      } catch {
        /* gone */
      }
    }
  }
  if (sweep) for (const dir of [l.images, l.leases]) swept.push(...sweepStrays(dir));
  return { live, swept };
}

export interface SpaceView {
  used: number;
  reserved: number;
  free: number;
  /** The cache filesystem's size, bytes. */
  size: number;
  maxSize: number;
  minFree: number;
  /** What a new base of `need` bytes may take now: min of quota room and disk room. */
  room: number;
}

export function spaceView(config: Config, l: CacheLayout, entries: Entry[] = listEntries(l)): SpaceView {
  const live = reservations(l, false).live;
  const used = entries.reduce((a, e) => a + e.allocated, 0);
  const reserved = live.reduce((a, r) => a + r.bytes, 0);
  const pending = live.reduce((a, r) => a + Math.max(0, r.bytes - r.written), 0);
  const fs = statfsSync(l.root);
  const free = fs.bavail * fs.bsize;
  const maxSize = config.cache.max_size;
  const minFree = config.cache.min_free;
  return { used, reserved, free, size: fs.blocks * fs.bsize, maxSize, minFree, room: Math.min(maxSize - used - reserved, free - pending - minFree) };
}

export interface Eviction {
  digest: string;
  bytes: number;
  lastUsedMs: number;
}

export interface RoomOptions {
  config: Config;
  layout: CacheLayout;
  need: number;
  /** Never evict these (the image being ingested). */
  keep?: ReadonlySet<string>;
  log?: { info(o: object, m: string): void };
  /** Whether this node still holds a job (the engine's runsHere): an old lease of such a job still holds its base. */
  runsHere: RunsHere;
}

/**
 * Evicts least recently used unleased bases until `need` bytes fit. If they
 * cannot: the job's fault when the image is larger than the cache could ever
 * hold on this node, busy (requeue, node online) when running jobs hold the
 * missing room, else a node fault (the filesystem is full of something else).
 */
export async function makeRoom(o: RoomOptions): Promise<Eviction[]> {
  const { config, layout: l, need } = o;
  let entries = listEntries(l);
  let view = spaceView(config, l, entries);
  const evicted: Eviction[] = [];
  if (view.room >= need) return evicted;
  const { held } = sweepLeases(config, l, o.runsHere);
  const candidates = entries
    .filter((e) => !held.has(e.digest) && !o.keep?.has(e.digest))
    .sort((a, b) => a.lastUsedMs - b.lastUsedMs);
  for (const e of candidates) {
    if (view.room >= need) break;
    if (await evictOne(config, l, e, o.runsHere)) {
      evicted.push({ digest: e.digest, bytes: e.allocated, lastUsedMs: e.lastUsedMs });
      o.log?.info({ digest: e.digest, bytes: e.allocated, lastUsed: new Date(e.lastUsedMs).toISOString(), sources: e.sources }, 'evicted from the cache');
      entries = entries.filter((x) => x !== e);
      view = spaceView(config, l, entries);
    }
  }
  if (view.room < need) {
    const leased = entries.filter((e) => held.has(e.digest)).reduce((a, e) => a + e.allocated, 0);
    const said = `needs ${formatBytes(need)}; found ${formatBytes(Math.max(0, view.room))} (cache holds ${formatBytes(view.used)} of max_size ${formatBytes(view.maxSize)}, ${formatBytes(view.reserved)} reserved by ingests in progress; the filesystem has ${formatBytes(view.free)} free and min_free is ${formatBytes(view.minFree)}; ${formatBytes(leased)} is held by running jobs)`;
    // Larger than this node's cache could hold were it empty and its
    // filesystem held nothing else: the image can never fit here, whatever
    // the node does. That is the job's image, not the node's state.
    const most = Math.min(view.maxSize, view.size - view.minFree);
    if (need > most) {
      throw new JobFault(`image needs ${formatBytes(need)} in this node's image cache, more than it can ever hold`, [
        { id: 'too-large', where: l.root, message: `this node's cache holds at most ${formatBytes(Math.max(0, most))} (max_size ${formatBytes(view.maxSize)}; its filesystem is ${formatBytes(view.size)}, min_free ${formatBytes(view.minFree)})`, fix: 'use a smaller image (qemu-img convert -c -O qcow2 SRC DST compresses it), or ask your admin for a node with more cache space' },
      ]);
    }
    // Room that other jobs hold (the images they run on, the copies other
    // prologues are making) comes back when they end: the job fits this node,
    // but not now. Whatever those jobs' users put there, it is not the node's
    // fault, so the node stays online and the job goes back to the queue.
    if (view.room + leased + view.reserved >= need) {
      throw new NodeBusy(`the image cache has no room for a ${formatBytes(need)} image while other jobs' images are in use`, [
        { id: 'cache-busy', where: l.root, message: said, fix: 'none needed: the job goes back to the queue and starts once jobs running here have ended; an admin can raise [cache] max_size' },
      ]);
    }
    throw new NodeFault(`the image cache has no room for a ${formatBytes(need)} image`, [
      {
        id: 'cache-full',
        where: l.root,
        message: said,
        fix: 'free space on the cache filesystem, or raise [cache] max_size / lower [cache] min_free; `vtorque-prologue cache list` shows what is cached',
      },
    ]);
  }
  return evicted;
}

/** Removes one base if no job holds it and no prologue has its lock. */
export async function evictOne(config: Config, l: CacheLayout, e: Pick<Entry, 'digest' | 'path'>, runsHere: RunsHere): Promise<boolean> {
  const release = await tryLock(`img-${e.digest}`, { dir: l.locks, staleSeconds: config.cache.lock_stale });
  if (!release) return false;
  try {
    // A job may have leased it between our look and the lock; leases are written under this lock.
    if (sweepLeases(config, l, runsHere).held.has(e.digest)) return false;
    removeEntry(l, e);
    return true;
  } finally {
    await release().catch(() => undefined);
  }
}
