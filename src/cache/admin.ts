// `cache list | gc | verify | evict DIGEST`, for admins. Each prints a table,
// or JSON with --json, and exits 0 when all is well, 1 when something was
// found (a mismatch, a refused eviction), 2 when it cannot run.
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import { EXIT_JOB_FAULT, EXIT_NODE_FAULT, EXIT_RUN, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import type { BatchSystem } from '../core/engine.js';
import { hashFile } from '../image/verify.js';
import { listEntries, type Entry } from './entries.js';
import { ensureLayout, layoutOf, metaPath, type CacheLayout } from './layout.js';
import { readLeases, sweepEndedJobs, sweepLeases } from './leases.js';
import { endedTtlSeconds, sweepEnded } from '../pipeline/ended.js';
import { tryLock } from './lock.js';
import { evictOne, makeRoom, reservations, spaceView } from './space.js';

export interface CacheCommand {
  action: 'list' | 'gc' | 'verify' | 'evict';
  digest?: string;
  json: boolean;
  config: Config;
  /** gc asks it which leased jobs have ended. */
  engine: BatchSystem;
  io: HookIO;
}

export async function runCacheCommand(c: CacheCommand): Promise<ExitCode> {
  const l = layoutOf(c.config);
  ensureLayout(l);
  switch (c.action) {
    case 'list':
      return list(c, l);
    case 'gc':
      return gc(c, l);
    case 'verify':
      return verify(c, l);
    case 'evict':
      return evict(c, l);
  }
}

const age = (ms: number) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : s < 172800 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
};

function list(c: CacheCommand, l: CacheLayout): ExitCode {
  const entries = listEntries(l).sort((a, b) => b.lastUsedMs - a.lastUsedMs);
  const held = new Map<string, string[]>();
  for (const f of readLeases(l)) for (const d of f.lease?.digests ?? []) held.set(d, [...(held.get(d) ?? []), f.lease!.job]);
  const view = spaceView(c.config, l, entries);
  if (c.json) {
    c.io.out(JSON.stringify({
      cacheDir: l.root,
      space: view,
      images: entries.map((e) => ({ digest: e.digest, format: e.format, size: e.size, allocated: e.allocated, lastUsed: new Date(e.lastUsedMs).toISOString(), ingestedAt: e.ingestedAt, leases: held.get(e.digest) ?? [], sources: e.sources, path: e.path })),
    }, null, 2) + '\n');
    return EXIT_RUN;
  }
  const rows = entries.map((e) => [e.digest.slice(0, 16), e.format, formatBytes(e.allocated), age(e.lastUsedMs), (held.get(e.digest) ?? []).join(' ') || '-', e.sources.join(' ') || '?']);
  c.io.out(table(['DIGEST', 'FORMAT', 'SIZE', 'LAST USE', 'LEASES (JOBS)', 'POOL NAMES'], rows));
  c.io.out(`${entries.length} image${entries.length === 1 ? '' : 's'}, ${formatBytes(view.used)} of max_size ${formatBytes(view.maxSize)}; ${formatBytes(view.free)} free on the filesystem (min_free ${formatBytes(view.minFree)})\n`);
  return EXIT_RUN;
}

async function gc(c: CacheCommand, l: CacheLayout): Promise<ExitCode> {
  const tmp = reservations(l).swept;
  // Leases of jobs that ended without their epilogue, or whose prologue published after it (qdel during the prologue): before eviction, which they would hold up.
  const leases = await sweepEndedJobs(c.config, l, c.engine);
  const markers = sweepEnded(c.config);
  const evicted = await makeRoom({ config: c.config, layout: l, need: 0, runsHere: c.engine.runsHere });
  const result = {
    // qstatUnavailable: the key --json has always had, whichever batch system's tool could not answer.
    tmpRemoved: tmp, leasesSwept: leases.swept, jobsGone: leases.gone, qstatUnavailable: leases.serverUnavailable ?? null,
    endedMarkersSwept: markers, evicted: evicted.map((e) => ({ digest: e.digest, bytes: e.bytes })),
  };
  if (c.json) c.io.out(JSON.stringify(result, null, 2) + '\n');
  else {
    const n = leases.swept.length;
    c.io.out(`removed ${tmp.length} partial cop${tmp.length === 1 ? 'y' : 'ies'} left by killed prologues\n`);
    c.io.out(`swept ${n} stale lease${n === 1 ? '' : 's'}${n ? `: ${leases.swept.join(' ')}` : ''}${leases.gone.length ? ` (ended according to ${c.engine.recordTool}: ${leases.gone.join(' ')})` : ''}\n`);
    c.io.out(`removed ${markers.length} job-ended marker${markers.length === 1 ? '' : 's'} older than ${endedTtlSeconds(c.config)} s\n`);
    c.io.out(`evicted ${evicted.length} image${evicted.length === 1 ? '' : 's'}${evicted.map((e) => `\n  ${e.digest.slice(0, 16)} ${formatBytes(e.bytes)}`).join('')}\n`);
  }
  if (leases.serverUnavailable !== undefined) {
    const { recordTool: tool, terms } = c.engine;
    c.io.err(`vtorque: ${tool} could not say which jobs ${terms.name} still has (${leases.serverUnavailable}); leases of jobs this node no longer runs were kept until [cache] lease_max_age (${c.config.cache.lease_max_age} s). Fix: check [tools] ${tool} and that ${terms.serverCheck}, then run cache gc again\n`);
  }
  return EXIT_RUN;
}

/** Re-hashes every base. A mismatch means the disk or someone changed an immutable file: move it aside. */
async function verify(c: CacheCommand, l: CacheLayout): Promise<ExitCode> {
  const out: { digest: string; ok: boolean; actual?: string; quarantined?: string; skipped?: string }[] = [];
  for (const e of listEntries(l)) {
    const actual = await hashFile(e.path);
    if (actual === e.digest) {
      out.push({ digest: e.digest, ok: true });
      continue;
    }
    out.push({ digest: e.digest, ok: false, actual, ...(await quarantine(c.config, l, e)) });
  }
  const bad = out.filter((r) => !r.ok);
  if (c.json) c.io.out(JSON.stringify({ checked: out.length, mismatches: bad.length, images: out }, null, 2) + '\n');
  else {
    for (const r of out) {
      c.io.out(r.ok ? `ok    ${r.digest.slice(0, 16)}\n` : `FAIL  ${r.digest.slice(0, 16)}: content hashes to ${r.actual!.slice(0, 16)}; ${r.quarantined ? `moved to ${r.quarantined}` : `left in place (${r.skipped})`}\n`);
    }
    c.io.out(`${out.length} checked, ${bad.length} mismatch${bad.length === 1 ? '' : 'es'}${bad.length ? '. Fix: check the disk (dmesg, smartctl); the next job re-copies the image from the pool' : ''}\n`);
  }
  return bad.length > 0 ? EXIT_JOB_FAULT : EXIT_RUN;
}

async function quarantine(config: Config, l: CacheLayout, e: Entry): Promise<{ quarantined?: string; skipped?: string }> {
  const release = await tryLock(`img-${e.digest}`, { dir: l.locks, staleSeconds: config.cache.lock_stale });
  if (!release) return { skipped: 'a prologue holds its lock; run cache verify again' };
  try {
    const dir = l.quarantine;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const dest = `${dir}/${e.digest}.${e.format}.${Date.now()}`;
    // Running VMs keep their open file; new jobs no longer find it and copy afresh.
    renameSync(e.path, dest);
    rmSync(metaPath(l, e.digest), { force: true });
    return { quarantined: dest };
  } finally {
    await release().catch(() => undefined);
  }
}

async function evict(c: CacheCommand, l: CacheLayout): Promise<ExitCode> {
  const want = (c.digest ?? '').toLowerCase();
  if (!/^[0-9a-f]{8,64}$/.test(want)) {
    c.io.err('vtorque: cache evict needs a DIGEST (at least 8 hex digits, as cache list shows). Fix: run cache list\n');
    return EXIT_NODE_FAULT;
  }
  const hits = listEntries(l).filter((e) => e.digest.startsWith(want));
  const say = (ok: boolean, message: string, extra: object = {}) => {
    if (c.json) c.io.out(JSON.stringify({ digest: hits[0]?.digest ?? want, evicted: ok, message, ...extra }) + '\n');
    else (ok ? c.io.out : c.io.err)(`${ok ? '' : 'vtorque: '}${message}\n`);
    return ok ? EXIT_RUN : EXIT_JOB_FAULT;
  };
  if (hits.length === 0) return say(false, `no cached image has digest ${want}. Fix: run cache list`);
  if (hits.length > 1) return say(false, `${want} matches ${hits.length} images. Fix: give more digits`);
  const e = hits[0]!;
  const jobs = sweepLeases(c.config, l, c.engine.runsHere).held.get(e.digest);
  if (jobs) return say(false, `${e.digest.slice(0, 16)} is in use by job${jobs.length > 1 ? 's' : ''} ${jobs.join(' ')}; not evicted. Fix: wait for the jobs to end; if they have ended, run cache gc (it asks ${c.engine.recordTool}) and evict again`, { leases: jobs });
  if (!(await evictOne(c.config, l, e, c.engine.runsHere))) return say(false, `${e.digest.slice(0, 16)} is being used by a prologue right now; not evicted. Fix: try again`);
  return say(true, `evicted ${e.digest.slice(0, 16)} (${formatBytes(e.allocated)})`, { bytes: e.allocated });
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ')).join('\n') + '\n';
}
