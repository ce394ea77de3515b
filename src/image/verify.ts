// Verify once, reuse many times: the image's file read safely (opened once,
// checked to be the authorised file, hashed), its header judged, then either
// its verdict found in the store (verdicts.ts) or made with qemu-img and one
// libguestfs appliance for all the images that need one.
import { createHash } from 'node:crypto';
import { constants, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault } from '../core/errors.js';
import type { AuthorisedImage } from './authorise.js';
import { checkHeader, checkWithQemuImg, type FormatVerdict } from './format.js';
import { assertIdentity, NotTheAuthorisedFile, readHeader, type HeaderFacts } from './header.js';
import { gatherGuestFacts } from './guestfs.js';
import { resolveAccel } from './accel.js';
import type { Expectation } from './rules.js';
import { checkSums, judge, keepBootFiles, memoDigest, readVerdict, rememberDigest, shareVerdict, stageBootFiles, writeVerdict, type ImageReport, type Verdict } from './verdicts.js';

export interface Logish {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
}

/** The sha256 of what an open descriptor holds from offset 0 to its end. */
export async function hashHandle(fh: FileHandle, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  for (let pos = 0; ; ) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return h.digest('hex');
}

/** Opens without following a final symlink or blocking on a FIFO; the caller checks what it got with fstat. */
export const openNoFollow = (path: string) => open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);

/** sha256 of a regular file at path (a symlink or FIFO there is refused). For root-owned files, such as cached bases. */
export async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  const fh = await openNoFollow(path);
  try {
    assertIdentity(await fh.stat(), undefined, path);
    return await hashHandle(fh, signal);
  } finally {
    await fh.close();
  }
}

/**
 * The image's file changed between its checks and its use. The user's own
 * file is the job's fault; a pool file is the admin's, and so the node's.
 */
export function changedFault(img: AuthorisedImage, message: string): JobFault | NodeFault {
  if (img.origin === 'user') {
    return new JobFault(`image ${img.name} changed while it was being read`, [
      { id: 'image-changed', where: img.name, message, fix: 'leave the image file alone from submission until the job has started, then submit again' },
    ]);
  }
  return new NodeFault(`image ${img.name} changed while it was being cached`, [{ id: 'cache-source', where: img.path, message, fix: 'replace pool images by rename, never in place' }]);
}

/** The user's file could not be read: their file, their fault. Anything else is the node's, as before. */
export function unreadableFault(img: AuthorisedImage, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (img.origin !== 'user' || !code) return e;
  return new JobFault(`image ${img.name} cannot be read (${code})`, [
    { id: 'image-unreadable', where: img.name, message: `cannot be read: ${code}`, fix: 'use an image file on a local or healthy filesystem, as a plain file you own' },
  ]);
}

/** Opens the authorised image and checks that it is still the file authorised (dev, inode, owner). */
export async function openAuthorised(img: AuthorisedImage): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await openNoFollow(img.path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw changedFault(img, `${img.path} was replaced by a symlink after it was checked`);
    throw unreadableFault(img, e);
  }
  try {
    assertIdentity(await fh.stat(), img.stat, img.path);
    return fh;
  } catch (e) {
    await fh.close();
    if (e instanceof NotTheAuthorisedFile) throw changedFault(img, e.message);
    throw unreadableFault(img, e);
  }
}

/** sha256 of the authorised image, read from the descriptor that was checked to be it. */
export async function hashAuthorised(img: AuthorisedImage, signal?: AbortSignal): Promise<string> {
  const fh = await openAuthorised(img);
  try {
    return await hashHandle(fh, signal);
  } catch (e) {
    throw unreadableFault(img, e);
  } finally {
    await fh.close();
  }
}

/** sha256 of the image, from the stat memo when the pool file is unchanged. User images are always hashed. */
export async function digestOf(img: AuthorisedImage, config: Config, signal?: AbortSignal): Promise<{ digest: string; hashed: boolean }> {
  const known = memoDigest(img, config);
  if (known) return { digest: known, hashed: false };
  const digest = await hashAuthorised(img, signal);
  rememberDigest(img, config, digest);
  return { digest, hashed: true };
}

export interface VerifyOptions {
  config: Config;
  want: Expectation;
  signal?: AbortSignal;
  log?: Logish;
  /**
   * The prologue, on its cached copy: the appliance that inspects the image
   * also takes out its kernel and initrd, kept with the verdict (keepBootFiles).
   */
  keepBootFiles?: boolean;
}

/** An image past the cheap checks: either its verdict is known, or it waits for libguestfs. */
export type Screened =
  | { img: AuthorisedImage; digest: string; hashed: boolean; cached: Verdict }
  | { img: AuthorisedImage; digest: string; hashed: boolean; cached?: undefined; format: FormatVerdict; qemuMs: number };

/** Our own reading of the header: the cheap first layer, before anything reads the whole file. */
export function checkFormatHeader(img: AuthorisedImage, config: Config): NonNullable<ReturnType<typeof checkHeader>['format']> {
  let h: HeaderFacts;
  try {
    h = readHeader(img.path, img.stat);
  } catch (e) {
    if (e instanceof NotTheAuthorisedFile) throw changedFault(img, e.message);
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw changedFault(img, `${img.path} was replaced by a symlink after it was checked`);
    throw unreadableFault(img, e);
  }
  return assertSafeHeader(img, h, config);
}

/** Throws the JobFault for a header that fails layer 1; else the format both layers must agree on. */
export function assertSafeHeader(img: AuthorisedImage, h: HeaderFacts, config: Config): NonNullable<ReturnType<typeof checkHeader>['format']> {
  const layer1 = checkHeader(img, h, config);
  if (layer1.problems.length > 0 || !layer1.format) throw new JobFault(`image ${img.name} is not a safe disk image`, layer1.problems);
  return layer1.format;
}

/** Header, digest, checksums, cached verdict, else qemu-img. Throws a JobFault for an unsafe image. */
export async function screenImage(img: AuthorisedImage, o: VerifyOptions, known?: { digest: string }): Promise<Screened> {
  const { config } = o;
  const format = checkFormatHeader(img, config);
  const { digest, hashed } = known ? { digest: known.digest, hashed: false } : await digestOf(img, config, o.signal);
  if (!known) checkSums(img, digest, config);
  const cached = known ? undefined : readVerdict(config, digest);
  if (cached) {
    if (img.origin === 'pool') shareVerdict(config, digest);
    return { img, digest, hashed, cached };
  }
  const t0 = performance.now();
  const layer2 = await checkWithQemuImg(img, format, config, o.signal);
  if (!layer2.verdict) throw new JobFault(`image ${img.name} is not a safe disk image`, layer2.problems);
  if (layer2.verdict.leaks) o.log?.warn({ image: img.path, leaks: layer2.verdict.leaks }, 'qemu-img check found leaked clusters (harmless)');
  return { img, digest, hashed, format: layer2.verdict, qemuMs: performance.now() - t0 };
}

/** Verdicts for screened images: the cached ones as they are, the rest from one libguestfs appliance. */
export async function inspectImages(screened: readonly Screened[], o: VerifyOptions): Promise<ImageReport[]> {
  const { config } = o;
  const pending = screened.filter((s): s is Extract<Screened, { cached?: undefined }> => s.cached === undefined);
  const fresh = new Map<Screened, Verdict>();
  if (pending.length > 0) {
    const { accel, how } = await resolveAccel(config, o.signal);
    const t0 = performance.now();
    o.log?.info({ images: pending.map((p) => p.img.path), accel, how }, 'inspecting images with libguestfs');
    // With keepBootFiles the same appliance takes out each image's kernel and initrd; a look that did not finish keeps nothing.
    const staged = pending.map((p) => (o.keepBootFiles ? stageBootFiles(config, p.digest) : undefined));
    const facts = await gatherGuestFacts(pending.map((p, i) => ({ path: p.img.path, format: p.format.format, bootTo: staged[i] })), config, { accel, signal: o.signal })
      .catch((e: unknown) => { for (const d of staged) if (d) rmSync(d, { recursive: true, force: true }); throw e; });
    const { effectiveDatasources } = await import('./datasources.js');
    for (const f of facts) f.datasources = effectiveDatasources(f);
    const gms = performance.now() - t0;
    pending.forEach((p, i) => {
      const v = writeVerdict(config, { digest: p.digest, format: p.format, facts: facts[i]!, ms: { qemuImg: Math.round(p.qemuMs), guestfs: Math.round(gms) } }, p.img.origin === 'user');
      const kept = staged[i] !== undefined && keepBootFiles(config, p.digest, staged[i], facts[i]!.boot?.root ? facts[i]!.boot?.kernel : undefined, p.img.origin === 'user');
      o.log?.info({ image: p.img.path, digest: p.digest, ms: v.ms, ...(o.keepBootFiles ? { bootFiles: kept } : {}) }, 'verdict stored');
      fresh.set(p, v);
    });
  }
  return screened.map((s) => reportFor(s.img, s.digest, s.cached ?? fresh.get(s)!, o, s.cached !== undefined, s.hashed));
}

/** The job's view of a verdict: the rules evaluated against what it asked for. */
export function reportFor(img: AuthorisedImage, digest: string, verdict: Verdict, o: VerifyOptions, fromCache: boolean, hashed: boolean): ImageReport {
  const { rules, family } = judge(verdict, o.want, o.config);
  return { image: img, digest, verdict, rules, family, fromCache, hashed };
}
