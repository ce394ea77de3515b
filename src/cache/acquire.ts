// A job's image, verified and cached on this node, with the job's lease on it.
//
// The order is what makes it safe:
// 1. the cheap header check and the digest (from the stat memo; on a miss,
//    hashed under a per-source lock so concurrent prologues hash once);
// 2. everything else under the digest's lock, so exactly one prologue copies
//    and verifies a new image while the others wait and then find it cached;
// 3. the copy goes to tmp/, is hashed as it is written and must match the
//    digest; libguestfs then inspects that private copy, not the pool file a
//    writer could still change; only a compliant copy is renamed into images/;
// 4. the lease is written under the same lock that eviction takes, so an
//    image cannot be evicted between "it is cached" and "this job holds it".
//
// A user's image (allow_user_images) is read once: opened, checked to be the
// authorised file, judged by its header, size and holes before a byte more is
// read, then copied and hashed in one pass from that descriptor, within
// [timeouts] user_image_read and never up to the deadline; the digest lock is
// taken with the copy in hand. Whatever of this a user's file makes fail or
// time out (its inspection included) is the job's fault. Its base is root's
// alone (0400) and its .json names only the owner's uid, never the path.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, lstatSync, openSync, renameSync, rmSync, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { formatBytes, formatSize } from '../config/values.js';
import { isNodeFault, JobFault, NodeFault } from '../core/errors.js';
import { fsyncDir } from '../tools/atomic.js';
import type { AuthorisedImage } from '../image/authorise.js';
import type { Expectation } from '../image/rules.js';
import {
  assertSafeHeader, changedFault, checkFormatHeader, digestOf, inspectImages, openAuthorised, reportFor, screenImage, unreadableFault, type Logish,
} from '../image/verify.js';
import { assertCompliant, bootFilesHeld, checkSums, dropBootFiles, forgetDigest, memoDigest, readVerdict, type ImageReport } from '../image/verdicts.js';
import { readHeaderFrom } from '../image/header.js';
import { copyAndHash, SourceChanged, SourceUnreadable } from './copy.js';
import { findBase, readMeta, touch, userSource, writeMeta } from './entries.js';
import { basePath, ensureLayout, layoutOf, type CacheLayout } from './layout.js';
import { writeLease, type RunsHere } from './leases.js';
import { holderMaxSeconds, withLock, type LockOptions } from './lock.js';
import { makeRoom, reservations } from './space.js';

export interface CachedBase {
  digest: string;
  path: string;
  format: string;
  size: number;
}

export interface Acquired {
  report: ImageReport;
  base: CachedBase;
  /** This run copied the image into the cache. */
  ingested: boolean;
  /** This run ran qemu-img and libguestfs on it. */
  verified: boolean;
  /** This run read the whole pool file to learn its digest (the stat memo did not know it). */
  hashed: boolean;
}

export interface AcquireOptions {
  config: Config;
  img: AuthorisedImage;
  want: Expectation;
  job: string;
  node: string;
  /** The engine's runsHere: making room keeps the bases of jobs this node still holds. */
  runsHere: RunsHere;
  signal?: AbortSignal;
  log?: Logish;
}

const short = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 32);

export async function acquireImage(o: AcquireOptions): Promise<Acquired> {
  const { config, img } = o;
  const l = layoutOf(config);
  ensureLayout(l);
  reservations(l); // partial copies of killed prologues go first
  if (img.origin === 'user') return acquireUserImage(o, l);
  const locks = lockOptions(o, l);
  checkFormatHeader(img, config);

  let digest = memoDigest(img, config);
  let hashed = false;
  if (!digest) {
    // digestOf looks at the memo again: the holder before us may have written it.
    const r = await withLock(`src-${short(img.path)}`, locks('hashing'), () => digestOf(img, config, o.signal));
    digest = r.digest;
    hashed = r.hashed;
  }
  checkSums(img, digest, config);
  const d = digest;
  return { ...(await withLock(`img-${d}`, locks('caching or verifying'), () => underDigestLock(o, l, d))), hashed };
}

/** The user's image, staged in tmp/ with its digest, then cached under the digest's lock like a pool image. */
async function acquireUserImage(o: AcquireOptions, l: CacheLayout): Promise<Acquired> {
  const staged = await stageUserImage(o, l);
  try {
    return { ...(await withLock(`img-${staged.digest}`, lockOptions(o, l)('caching or verifying'), () => underDigestLock(o, l, staged.digest, staged.tmp))), hashed: true };
  } finally {
    rmSync(staged.tmp, { force: true }); // gone already when it became the base
  }
}

/** What a copy of the source occupies (a sparse raw image is copied sparse), plus the slack of our 64 KiB zero-block granularity against the source's 4 KiB blocks. */
const spaceFor = (st: Pick<Stats, 'size' | 'blocks'>) => Math.min(st.size, st.blocks * 512 + 4 * 1024 * 1024);

/**
 * Opens the user's file once and judges it from its header and size; only an
 * image this node could take is then read, from that same descriptor, into tmp/.
 */
async function stageUserImage(o: AcquireOptions, l: CacheLayout): Promise<{ tmp: string; digest: string }> {
  const { config, img } = o;
  const fh = await openAuthorised(img);
  try {
    let st: Stats;
    try {
      st = await fh.stat();
      assertSafeHeader(img, await readHeaderFrom(fh, st.size), config);
    } catch (e) {
      throw unreadableFault(img, e);
    }
    assertFewHoles(img, st, config);
    const need = spaceFor(st);
    if (need > config.cache.max_size) {
      throw new JobFault(`image ${img.name} is larger than this node's image cache`, [
        { id: 'too-large', where: img.name, message: `needs ${formatBytes(need)} in the cache, more than it may ever hold ([cache] max_size ${formatSize(config.cache.max_size)})`, fix: 'use a smaller image (qemu-img convert -c -O qcow2 SRC DST compresses it), or ask your admin to raise [cache] max_size' },
      ]);
    }
    // Named like any ingest (tmp/<64 hex>.<pid>.<bytes>.part) so that space accounting and sweeping count it; the digest is not known yet.
    const tmp = await reserve(o, l, randomBytes(32).toString('hex'), need);
    return { tmp, digest: (await copyIn(o, l, fh, tmp, need)).digest };
  } finally {
    await fh.close();
  }
}

/**
 * A user image costs the node its file's length, not what it holds: the copy
 * hashes holes as zeros, because the digest is the cache key shared with pool
 * images (a user's base may later serve the same pool image) and `cache
 * verify` checks every base against the sha256 of its bytes. Hashing by
 * extents would need a digest of its own and still hash zeros for a plain
 * sha256. So a file with more holes than [policy] user_image_max_holes is
 * refused from its fstat, before a byte is read; the time its allocated bytes
 * cost is bounded by [timeouts] user_image_read (copyIn).
 */
function assertFewHoles(img: AuthorisedImage, st: Pick<Stats, 'size' | 'blocks'>, config: Config): void {
  const allocated = Math.min(st.size, st.blocks * 512);
  const holes = st.size - allocated;
  if (holes <= config.policy.user_image_max_holes) return;
  throw new JobFault(`image ${img.name} is a sparse file the node would have to read in full`, [{
    id: 'image-sparse', where: img.name,
    message: `is ${formatBytes(st.size)} long but holds ${formatBytes(allocated)}: its ${formatBytes(holes)} of holes are more than this site reads for a user image ([policy] user_image_max_holes ${formatSize(config.policy.user_image_max_holes)})`,
    fix: 'convert it to qcow2, which stores no holes (qemu-img convert -O qcow2 SRC DST.qcow2, -c to also compress it), and name the .qcow2 file in img=',
  }]);
}

/** Makes room for `need` bytes and creates the placeholder that reserves them, under the space lock. */
function reserve(o: AcquireOptions, l: CacheLayout, name: string, need: number, keep?: string): Promise<string> {
  return withLock('space', lockOptions(o, l)('making room in the cache for'), async () => {
    await makeRoom({ config: o.config, layout: l, need, keep: new Set(keep ? [keep] : []), log: o.log, runsHere: o.runsHere });
    // Created before the lock is released, so the next prologue to make room counts it.
    const path = `${l.tmp}/${name}.${process.pid}.${need}.part`;
    closeSync(openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600));
    return path;
  });
}

/** Copies the authorised source, from its checked descriptor, over the placeholder tmp; on failure tmp is removed and the fault says whose it is. */
async function copyIn(o: AcquireOptions, l: CacheLayout, src: FileHandle, tmp: string, need: number): Promise<{ digest: string; bytes: number }> {
  const { img } = o;
  o.log?.info({ image: img.path, bytes: img.stat.size, allocated: need }, 'copying the image into the cache');
  const box = img.origin === 'user' ? userReadBox(o.config) : undefined;
  try {
    const r = await copyAndHash(src, tmp, {
      name: img.path,
      reserved: true,
      expect: { dev: img.stat.dev, ino: img.stat.ino },
      signal: box ? (o.signal ? AbortSignal.any([o.signal, box.signal]) : box.signal) : o.signal,
      onProgress: (p) => o.log?.info({ bytes: p.bytes, total: p.total, percent: Math.floor((100 * p.bytes) / Math.max(1, p.total)), MBps: Math.round(p.bytes / 1048576 / (p.ms / 1000)) }, 'copy progress'),
    });
    o.log?.info({ image: img.path, bytes: r.bytes, ms: Math.round(r.ms), MBps: Math.round(r.bytes / 1048576 / Math.max(0.001, r.ms / 1000)), cloned: r.cloned }, 'image copied');
    return r;
  } catch (e) {
    rmSync(tmp, { force: true });
    if (box && e === box.signal.reason) throw slowFault(img, box.seconds, box.cut, e);
    if (e instanceof SourceChanged) throw changedFault(img, e.message);
    if (e instanceof SourceUnreadable && img.origin === 'user') throw unreadableFault(img, e);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      throw new NodeFault(`the cache filesystem filled up while caching image ${img.name}`, [
        { id: 'cache-full', where: l.root, message: `${code} while writing a ${formatBytes(need)} copy; nothing was kept`, fix: 'free space on the cache filesystem or lower [cache] max_size so that eviction starts earlier' },
      ]);
    }
    if (code) {
      throw new NodeFault(`cannot copy image ${img.name} into the cache (${code})`, [{ id: 'cache-io', where: l.tmp, message: (e as Error).message, fix: 'check the cache filesystem (dmesg, df)' }]);
    }
    throw e;
  } finally {
    box?.stop();
  }
}

// What the prologue keeps after a user image's copy at the latest, for its report and its cleanup.
const USER_READ_MARGIN_MS = 10_000;

/**
 * The time a user image's copy may take: [timeouts] user_image_read, and never
 * past USER_READ_MARGIN_MS before the prologue's deadline, so that a user's
 * file (sparse, huge, on a slow filesystem) ends as the job's fault and never
 * runs into the deadline, which is the node's. The deadline starts with the
 * process, so the time left is measured from the process's own start.
 */
function userReadBox(config: Config): { signal: AbortSignal; seconds: number; cut: boolean; stop: () => void } {
  const left = config.timeouts.total * 1000 - performance.now() - USER_READ_MARGIN_MS;
  const ms = Math.max(1000, Math.min(config.timeouts.user_image_read * 1000, left));
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`reading the user image took longer than ${Math.round(ms / 1000)} s`)), ms);
  timer.unref();
  return { signal: ac.signal, seconds: Math.round(ms / 1000), cut: ms < config.timeouts.user_image_read * 1000, stop: () => clearTimeout(timer) };
}

function slowFault(img: AuthorisedImage, seconds: number, cut: boolean, cause: unknown): JobFault {
  const limit = cut ? `the ${seconds} s the prologue had left before its deadline ([timeouts] total)` : `${seconds} s ([timeouts] user_image_read)`;
  return new JobFault(`image ${img.name} could not be read in the time this node gives a user image`, [{
    id: 'image-slow', where: img.name,
    message: `copying and hashing it into the node's cache did not finish within ${limit}`,
    fix: 'make the image smaller (qemu-img convert -c -O qcow2 SRC DST.qcow2 writes a compact, compressed copy) or put it on a faster filesystem, such as local scratch',
  }], { cause });
}

async function underDigestLock(o: AcquireOptions, l: CacheLayout, digest: string, staged?: string): Promise<Omit<Acquired, 'hashed'>> {
  const { config, img } = o;
  const vo = { config, want: o.want, signal: o.signal, log: o.log };
  let verdict = readVerdict(config, digest);
  let report = verdict ? reportFor(img, digest, verdict, vo, true, false) : undefined;
  // A known verdict refuses a non-compliant image before a single byte is copied.
  if (report) assertCompliant(report);
  let found = findBase(l, digest, verdict?.format.format);
  // A verdict without the boot files it names (kept while its base was evicted
  // or its copy refused, or made by check --image) is made again: the one
  // appliance that verifies the copy takes them out too.
  if (verdict && !bootFilesHeld(config, digest, verdict)) report = undefined;
  let ingested = false;
  let verified = false;

  if (!found) {
    const tmp = staged ?? (await ingest(o, l, digest));
    try {
      if (!report) {
        report = await verifyCopy(o, tmp, digest);
        verified = true;
        assertCompliant(report);
      }
      const format = report.verdict.format.format;
      // A user's image stays as private as it was: root's alone. A pool image is public anyway.
      chmodSync(tmp, img.origin === 'user' ? 0o400 : 0o444);
      renameSync(tmp, basePath(l, digest, format));
      fsyncDir(l.images);
      found = { path: basePath(l, digest, format), format };
      ingested = true;
    } catch (e) {
      rmSync(tmp, { force: true });
      dropBootFiles(config, digest); // they go with the base, which is not kept
      throw e;
    }
  } else if (!report) {
    // Cached, but the verdict is gone (checker or policy changed) or its boot files are: verify the cached base itself.
    report = await verifyCopy(o, found.path, digest);
    verified = true;
    assertCompliant(report);
  }

  const st = lstatSync(found.path);
  // The same content is in the pool, so readable by all: a base a user brought first may now be public too.
  if (img.origin === 'pool' && (st.mode & 0o444) !== 0o444) chmodSync(found.path, 0o444);
  const size = st.size;
  const meta = readMeta(l, digest);
  const source = img.origin === 'user' ? userSource(img.stat.uid) : img.name;
  if (!meta || !meta.sources.includes(source)) {
    writeMeta(l, {
      digest, format: found.format, size, ingestedAt: meta?.ingestedAt ?? new Date().toISOString(),
      sources: [...(meta?.sources ?? []), source].slice(-20),
    });
  }
  touch(l, digest);
  writeLease(l, { job: o.job, node: o.node, digests: [digest], createdAt: new Date().toISOString() });
  // The image report names the pool image the job asked for, whatever path was inspected.
  return { report: { ...report, image: img }, base: { digest, path: found.path, format: found.format, size }, ingested, verified };
}

/** Copies a pool image into tmp/, hashing it; the result must have the digest it was checked under. */
async function ingest(o: AcquireOptions, l: CacheLayout, digest: string): Promise<string> {
  const { config, img } = o;
  const src = await openAuthorised(img);
  try {
    const need = spaceFor(await src.stat());
    const tmp = await reserve(o, l, digest, need, digest);
    const r = await copyIn(o, l, src, tmp, need);
    if (r.digest !== digest) {
      rmSync(tmp, { force: true });
      forgetDigest(img, config);
      throw new NodeFault(`image ${img.name} changed while it was being cached`, [
        { id: 'cache-digest', where: img.path, message: `sha256 was ${digest.slice(0, 12)}… when checked and ${r.digest.slice(0, 12)}… when copied`, fix: 'do not modify pool images in place: write a new file and rename it over the old one' },
      ]);
    }
    o.log?.info({ image: img.path, digest }, 'image ingested');
    return tmp;
  } finally {
    await src.close();
  }
}

/** qemu-img and libguestfs on our own copy; stores the verdict under the digest, and the boot files from the same appliance. */
async function verifyCopy(o: AcquireOptions, path: string, digest: string): Promise<ImageReport> {
  const st = lstatSync(path);
  const copy: AuthorisedImage = { ...o.img, path, stat: { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, uid: st.uid } };
  const vo = { config: o.config, want: o.want, signal: o.signal, log: o.log, keepBootFiles: true };
  const screened = await screenImage(copy, vo, { digest }).catch((e: unknown) => {
    throw userTimeoutFault(o.img, 'qemu-img', o.config, e) ?? e;
  });
  const [r] = await inspectImages([screened], vo).catch((e: unknown) => {
    throw userTimeoutFault(o.img, 'libguestfs', o.config, e) ?? e;
  });
  return r!;
}

/**
 * A tool that ran past [timeouts] tool on an image told us nothing about it:
 * nothing is stored (the throw comes before writeVerdict and before the copy
 * becomes a base). Whose fault it is depends on whose image it is: a pool
 * image, or a slow node, is the node's, as before; a user's image is the
 * job's, since the user chose the file and a node must never go offline over
 * it. Recognised by the typed ToolError failure (qemu-img, through runTool),
 * and by the guestfish session's own "did not answer" (image/guestfs.ts).
 * Here and not in image/verify.ts: `check --image` by an admin keeps the
 * node's answer (exit 2, not checked) for the same time-out.
 */
function userTimeoutFault(img: AuthorisedImage, tool: 'qemu-img' | 'libguestfs', config: Config, e: unknown): JobFault | undefined {
  if (img.origin !== 'user' || !timedOut(e)) return undefined;
  return new JobFault(`image ${img.name} could not be inspected in the time this node gives a tool`, [{
    id: 'inspection-timeout', where: img.name,
    message: `${tool} did not finish looking inside it within ${config.timeouts.tool} s ([timeouts] tool); nothing was recorded about it`,
    fix: 'submit again; if it happens again, give the image one plain root filesystem and a compact format (qemu-img convert -O qcow2 SRC DST.qcow2), or ask your admin to put it in the image pool',
  }], { cause: e });
}

const timedOut = (e: unknown): boolean =>
  isNodeFault(e) && ((e as { failure?: unknown }).failure === 'timeout' || e.problems.some((p) => p.id === 'guestfs' && /did not answer within/.test(p.message)));

function lockOptions(o: AcquireOptions, l: CacheLayout): (what: string) => LockOptions {
  return (what) => ({
    dir: l.locks,
    waitSeconds: holderMaxSeconds(o.config),
    staleSeconds: o.config.cache.lock_stale,
    signal: o.signal,
    onWait: () => o.log?.info({ image: o.img.path }, `another prologue is ${what} this image: waiting for it`),
    onCompromised: (err) => o.log?.warn({ err: err.message }, 'a cache lock was taken over while held (this run stalled past lock_stale)'),
  });
}
