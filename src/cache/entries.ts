// The cached base images and what is known of each. The base file itself is
// the truth (it appears by rename, complete); its .json beside it is a
// convenience that a crash may leave missing or stale, and is rebuilt then.
import { lstatSync, readdirSync, readFileSync, rmSync, unlinkSync, utimesSync } from 'node:fs';
import { writeFileAtomic } from '../tools/atomic.js';
import { BASE_NAME, basePath, kernelsPath, metaPath, type CacheLayout } from './layout.js';

export interface EntryMeta {
  digest: string;
  format: string;
  /** Logical size in bytes. */
  size: number;
  ingestedAt: string;
  /** Pool names that were found to have this content, and `user:<uid>` for a user's own image (never its path). */
  sources: string[];
}

export interface Entry extends EntryMeta {
  path: string;
  /** Bytes really used on disk (sparse raw images use less than size). */
  allocated: number;
  /** Last time a job took it (mtime of the .json, touched on every use), ms since the epoch. */
  lastUsedMs: number;
}

export function readMeta(l: CacheLayout, digest: string): EntryMeta | undefined {
  try {
    const m = JSON.parse(readFileSync(metaPath(l, digest), 'utf8')) as EntryMeta;
    if (m.digest === digest && Array.isArray(m.sources)) return m;
  } catch {
    /* missing or broken: the caller rebuilds it */
  }
  return undefined;
}

/** How a user's image is named in the cache: by its owner, since its path is the user's private business. */
export const userSource = (uid: number) => `user:${uid}`;

/** Readable by all while only pool names are in it; an entry a user brought stays root's. */
export function writeMeta(l: CacheLayout, m: EntryMeta): void {
  const mode = m.sources.some((s) => s.startsWith('user:')) ? 0o600 : 0o644;
  writeFileAtomic(metaPath(l, m.digest), JSON.stringify(m) + '\n', mode);
}

/** Marks an entry as just used, for least-recently-used eviction. */
export function touch(l: CacheLayout, digest: string): void {
  const now = new Date();
  try {
    utimesSync(metaPath(l, digest), now, now);
  } catch {
    /* no .json yet: the caller writes one */
  }
}

/** The cached base of a digest, if present, as a complete file. */
export function findBase(l: CacheLayout, digest: string, format?: string): { path: string; format: string } | undefined {
  for (const fmt of format ? [format] : ['qcow2', 'raw', 'vmdk']) {
    const p = basePath(l, digest, fmt);
    try {
      if (lstatSync(p).isFile()) return { path: p, format: fmt };
    } catch {
      /* not this format */
    }
  }
  return undefined;
}

export function listEntries(l: CacheLayout): Entry[] {
  let names: string[];
  try {
    names = readdirSync(l.images);
  } catch {
    return [];
  }
  const out: Entry[] = [];
  for (const n of names) {
    const m = BASE_NAME.exec(n);
    if (!m) continue;
    const [, digest, format] = m as unknown as [string, string, string];
    const path = `${l.images}/${n}`;
    let st;
    try {
      st = lstatSync(path);
    } catch {
      continue; // evicted while we looked
    }
    if (!st.isFile()) continue;
    const meta = readMeta(l, digest);
    let lastUsedMs = st.mtimeMs;
    try {
      lastUsedMs = lstatSync(metaPath(l, digest)).mtimeMs;
    } catch {
      /* no .json: the base's own time */
    }
    out.push({
      digest, format, path, size: st.size, allocated: st.blocks * 512, lastUsedMs,
      ingestedAt: meta?.ingestedAt ?? st.mtime.toISOString(), sources: meta?.sources ?? [],
    });
  }
  return out;
}

/** Removes a base, its .json and its boot files. The caller holds the digest's lock and has checked the leases. */
export function removeEntry(l: CacheLayout, e: Pick<Entry, 'digest' | 'path'>): void {
  for (const p of [e.path, metaPath(l, e.digest)]) {
    try {
      unlinkSync(p);
    } catch {
      /* already gone */
    }
  }
  // Root's directory in root's cache (rm -r does not follow links in it).
  rmSync(kernelsPath(l, e.digest), { recursive: true, force: true });
}
