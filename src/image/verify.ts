// Verify once, reuse many times. A verdict (format facts and guest facts) is
// keyed by the image's sha256, the checker version and the policy it was
// checked under; the rules are evaluated against the job's request each time,
// which costs nothing. A stat memo spares re-hashing an unchanged pool image.
import { createHash } from 'node:crypto';
import { constants, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault, type Problem } from '../core/errors.js';
import { writeFileAtomic } from '../tools/atomic.js';
import type { AuthorisedImage } from './authorise.js';
import { checkHeader, checkWithQemuImg, type FormatVerdict } from './format.js';
import { assertIdentity, NotTheAuthorisedFile, readHeader, type HeaderFacts } from './header.js';
import { gatherGuestFacts, type GuestFacts } from './guestfs.js';
import { resolveAccel } from './accel.js';
import { evaluateRules, familyOf, type Expectation, type RuleResult } from './rules.js';
import type { Family } from '../request/keys.js';

/** Bump when a change to the checks could change a verdict. */
export const CHECKER_VERSION = 3;

export interface Verdict {
  checker: number;
  policy: string;
  digest: string;
  format: FormatVerdict;
  facts: GuestFacts;
  checkedAt: string;
  ms: { qemuImg: number; guestfs: number };
}

export interface ImageReport {
  image: AuthorisedImage;
  digest: string;
  verdict: Verdict;
  rules: RuleResult[];
  /** What the image really is; fills the request's distro when the job gave none. */
  family?: Family;
  fromCache: boolean;
  hashed: boolean;
}

export interface Logish {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function policyHash(config: Config): string {
  return sha256(JSON.stringify({ formats: config.policy.formats, max: config.policy.max_virtual_size })).slice(0, 16);
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

function memoPath(config: Config, img: AuthorisedImage): string {
  return `${config.paths.cache_dir}/statmemo/${sha256(img.path).slice(0, 32)}.json`;
}

/** The digest the stat memo remembers for an unchanged pool image; undefined means "hash it". */
export function memoDigest(img: AuthorisedImage, config: Config): string | undefined {
  if (img.origin !== 'pool') return undefined;
  try {
    const m = JSON.parse(readFileSync(memoPath(config, img), 'utf8')) as Record<string, unknown>;
    const key = memoKey(img);
    const same = (Object.keys(key) as (keyof typeof key)[]).every((k) => m[k] === key[k]);
    if (same && typeof m.sha256 === 'string' && /^[0-9a-f]{64}$/.test(m.sha256)) return m.sha256;
  } catch {
    /* no memo, or a broken one */
  }
  return undefined;
}

const memoKey = (img: AuthorisedImage) => ({ path: img.path, dev: img.stat.dev, ino: img.stat.ino, size: img.stat.size, mtimeMs: img.stat.mtimeMs, ctimeMs: img.stat.ctimeMs });

/** Forgets a pool image's digest, so the next run hashes it again (its content changed under an unchanged stat). */
export function forgetDigest(img: AuthorisedImage, config: Config): void {
  rmSync(memoPath(config, img), { force: true });
}

/** sha256 of the image, from the stat memo when the pool file is unchanged. User images are always hashed. */
export async function digestOf(img: AuthorisedImage, config: Config, signal?: AbortSignal): Promise<{ digest: string; hashed: boolean }> {
  const known = memoDigest(img, config);
  if (known) return { digest: known, hashed: false };
  const digest = await hashAuthorised(img, signal);
  if (img.origin === 'pool') {
    mkdirSync(`${config.paths.cache_dir}/statmemo`, { recursive: true, mode: 0o700 });
    writeFileAtomic(memoPath(config, img), JSON.stringify({ ...memoKey(img), sha256: digest }) + '\n', 0o600);
  }
  return { digest, hashed: true };
}

export function checkSums(img: AuthorisedImage, digest: string, config: Config): void {
  if (!config.policy.require_checksums || img.origin !== 'pool') return;
  const file = `${config.paths.image_pool}/SHA256SUMS`;
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new NodeFault(`${file} is missing`, [{ id: 'checksums', where: file, message: 'is missing but [policy] require_checksums is on', fix: 'create it with: cd POOL && sha256sum IMAGES > SHA256SUMS' }]);
  }
  const rel = img.path.slice(img.path.lastIndexOf('/') + 1);
  const listed = text.split('\n').map((l) => /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(l)).find((m) => m && (m[2] === img.name || m[2] === rel));
  if (!listed) throw new JobFault(`image ${img.name} is not listed in SHA256SUMS`, [{ id: 'checksum', where: img.name, message: 'is not listed in the pool\'s SHA256SUMS', fix: 'ask your admin to add it (sha256sum IMAGE >> SHA256SUMS)' }]);
  if (listed[1]!.toLowerCase() !== digest) throw new JobFault(`image ${img.name} does not match SHA256SUMS`, [{ id: 'checksum', where: img.name, message: `has sha256 ${digest.slice(0, 12)}…, SHA256SUMS says ${listed[1]!.slice(0, 12)}…`, fix: 'the image changed after it was listed: ask your admin' }]);
}

function verdictPath(config: Config, digest: string): string {
  return `${config.paths.cache_dir}/verdicts/${digest}-v${CHECKER_VERSION}-${policyHash(config)}.json`;
}

/** A corrupt or foreign verdict file means "verify again", never a crash. */
export function readVerdict(config: Config, digest: string): Verdict | undefined {
  try {
    const v = JSON.parse(readFileSync(verdictPath(config, digest), 'utf8')) as Verdict;
    if (v.checker === CHECKER_VERSION && v.digest === digest && v.policy === policyHash(config) && v.facts && typeof v.facts.exists === 'object' && v.format?.format) return v;
  } catch {
    /* verify again */
  }
  return undefined;
}

export interface VerifyOptions {
  config: Config;
  want: Expectation;
  signal?: AbortSignal;
  log?: Logish;
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
  if (cached) return { img, digest, hashed, cached };
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
    const facts = await gatherGuestFacts(pending.map((p) => ({ path: p.img.path, format: p.format.format })), config, { accel, signal: o.signal });
    const { effectiveDatasources } = await import('./datasources.js');
    for (const f of facts) f.datasources = effectiveDatasources(f);
    const gms = performance.now() - t0;
    mkdirSync(`${config.paths.cache_dir}/verdicts`, { recursive: true, mode: 0o755 });
    pending.forEach((p, i) => {
      const v: Verdict = {
        checker: CHECKER_VERSION, policy: policyHash(config), digest: p.digest, format: p.format, facts: facts[i]!,
        checkedAt: new Date().toISOString(), ms: { qemuImg: Math.round(p.qemuMs), guestfs: Math.round(gms) },
      };
      // What a user's private image holds (its OS, its cloud-init config) is not for other users to read.
      writeFileAtomic(verdictPath(config, p.digest), JSON.stringify(v) + '\n', p.img.origin === 'user' ? 0o600 : 0o644);
      o.log?.info({ image: p.img.path, digest: p.digest, ms: v.ms }, 'verdict stored');
      fresh.set(p, v);
    });
  }
  return screened.map((s) => reportFor(s.img, s.digest, s.cached ?? fresh.get(s)!, o, s.cached !== undefined, s.hashed));
}

/** The job's view of a verdict: the rules evaluated against what it asked for. */
export function reportFor(img: AuthorisedImage, digest: string, verdict: Verdict, o: VerifyOptions, fromCache: boolean, hashed: boolean): ImageReport {
  return { image: img, digest, verdict, rules: evaluateRules(verdict.facts, o.want, o.config), family: familyOf(verdict.facts), fromCache, hashed };
}

/** The rules that stop the job, as problems with their fix hints. */
export function failedRules(r: ImageReport): Problem[] {
  return r.rules.filter((x) => !x.ok && x.level === 'error').map((x) => ({ id: x.id, where: `image ${r.image.name}`, message: `fails ${x.id}: ${x.message}`, fix: x.fix }));
}

/** Throws the JobFault that rejects a job whose image fails any rule at level error. */
export function assertCompliant(r: ImageReport): void {
  const failed = failedRules(r);
  if (failed.length > 0) {
    throw new JobFault(`image ${r.image.name} does not meet this site's guest image requirements (${failed.length} rule${failed.length > 1 ? 's' : ''})`, failed);
  }
}

export function warnedRules(r: ImageReport): RuleResult[] {
  return r.rules.filter((x) => !x.ok && x.level === 'warn');
}
