// The verdict store: the one owner of what is known about an image by its
// sha256 (and of the stat memo that maps an unchanged pool file to it). A verdict (format facts and guest facts) is kept under the image's
// digest, the checker version and the policy it was checked under, in the
// node's <cache_dir>/verdicts/ and, optionally, in [paths] shared_verdicts.
// The rules are judged against a request each time, which costs nothing.
// The prologue (cache/acquire.ts), check --image, check --job and the submit
// filter all read, write and judge verdicts through here; the last two never
// hash an image nor run libguestfs, so they find the digest through the
// node's stat memo or the pool's SHA256SUMS (heldVerdict).
//
// Who reads what: check --job and the submit filter run as the user, and must
// give the answer root gets for a pool image. So a pool image's records are
// world-readable: its verdict (0644) and its stat memo (0644, in 0755
// directories). They hold only what any user may know: the verdict, facts of
// the image's content (OS, packages, cloud-init config), for an image the admin
// offers to everyone; the memo, a pool path (the pool is listed to users in
// poolHint anyway), its stat numbers and its sha256. A user's private image
// never gets a memo (rememberDigest), and its verdict is 0600: it describes a
// file only its owner may read, and no record names its path (cache/acquire.ts
// keeps user:<uid> instead). A file name in verdicts/ is a digest, as in
// images/, which anyone may list already. The one case where a private verdict
// becomes public is a pool image with the same digest: its content is then the
// pool's (shareVerdict).
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, fchmodSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault, type Problem } from '../core/errors.js';
import type { Family } from '../request/keys.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { authoriseImage, type AuthorisedImage } from './authorise.js';
import type { FormatVerdict } from './format.js';
import { SAFE_PATH, type BootFacts, type GuestFacts } from './guestfs.js';
import { RULES, RULE_IDS, evaluateRules, familyOf, type Expectation, type RuleResult } from './rules.js';
import { kernelsPath, layoutOf, processAlive, statMemoPath } from '../cache/layout.js';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** Bump when guestfs.ts gathers the same probes differently (the rules' own probes are hashed below). */
const CHECKER_EPOCH = 4;

/**
 * The checker version verdicts are stored under: the epoch, and a hash of what
 * each rule probes. A rule added, removed or probing something new changes it,
 * so verdicts made without those facts go stale once and are made again. A
 * change to a check alone does not: checks run on the stored facts every time.
 */
export const CHECKER_VERSION = `${CHECKER_EPOCH}.${sha256(JSON.stringify(RULES.map((r) => [r.id, r.probes]))).slice(0, 8)}`;

export interface Verdict {
  checker: string;
  policy: string;
  digest: string;
  format: FormatVerdict;
  facts: GuestFacts;
  checkedAt: string;
  ms: { qemuImg: number; guestfs: number };
}

export function policyHash(config: Config): string {
  return sha256(JSON.stringify({ formats: config.policy.formats, max: config.policy.max_virtual_size })).slice(0, 16);
}

/** The file name a verdict has in any store, node or shared. */
const verdictName = (config: Config, digest: string) => `${digest}-v${CHECKER_VERSION}-${policyHash(config)}.json`;
const nodeDir = (config: Config) => layoutOf(config).verdicts;

/** A corrupt, foreign or stale verdict file means "verify again", never a crash. */
function readFrom(dir: string, config: Config, digest: string): Verdict | undefined {
  try {
    const v = JSON.parse(readFileSync(`${dir}/${verdictName(config, digest)}`, 'utf8')) as Verdict;
    if (v.checker === CHECKER_VERSION && v.digest === digest && v.policy === policyHash(config) && v.facts && typeof v.facts.exists === 'object' && v.format?.format) return v;
  } catch {
    /* verify again */
  }
  return undefined;
}

/** This node's verdict for the digest. */
export function readVerdict(config: Config, digest: string): Verdict | undefined {
  return readFrom(nodeDir(config), config, digest);
}

/** A verdict another node stored in [paths] shared_verdicts. */
export function sharedVerdict(config: Config, digest: string): Verdict | undefined {
  const dir = config.paths.shared_verdicts;
  return dir ? readFrom(dir, config, digest) : undefined;
}

/**
 * Stores a fresh verdict on this node. What a user's private image holds (its
 * OS, its cloud-init config) is not for other users to read: `private` makes it 0600.
 */
export function writeVerdict(config: Config, v: Omit<Verdict, 'checker' | 'policy' | 'checkedAt'>, priv: boolean): Verdict {
  const verdict: Verdict = { checker: CHECKER_VERSION, policy: policyHash(config), digest: v.digest, format: v.format, facts: v.facts, checkedAt: new Date().toISOString(), ms: v.ms };
  mkdirSync(nodeDir(config), { recursive: true, mode: 0o755 });
  // pbs_mom's umask 0077 would make it 0700: users' check --job reads pool verdicts here.
  chmodSync(nodeDir(config), 0o755);
  writeFileAtomic(`${nodeDir(config)}/${verdictName(config, v.digest)}`, JSON.stringify(verdict) + '\n', priv ? 0o600 : 0o644);
  return verdict;
}

/**
 * A pool image's verdict made readable (0644) when it was stored private
 * (0600) because a user's image with the same sha256 was checked first: the
 * same bytes are in the pool, so the verdict tells nothing private. Root only,
 * by descriptor; anything but root's regular file is left alone.
 */
export function shareVerdict(config: Config, digest: string): void {
  if (process.getuid?.() !== 0) return;
  let fd: number;
  try {
    fd = openSync(`${nodeDir(config)}/${verdictName(config, digest)}`, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return;
  }
  try {
    const st = fstatSync(fd);
    if (st.isFile() && st.uid === 0 && (st.mode & 0o777) !== 0o644) fchmodSync(fd, 0o644);
  } finally {
    closeSync(fd);
  }
}

// The stat memo: a pool image's digest, remembered with the stat of the file
// it was hashed from, so an unchanged pool image is not read whole again.
// Root's and node-local (under cache_dir): only the prologue writes it. It is
// world-readable (0644, see the top) so that a user's check --job finds the
// digest root finds, without hashing; it is believed only while the pool
// file's stat, as the reader sees it, is the one it was hashed with.
const memoPath = (config: Config, img: AuthorisedImage) => statMemoPath(layoutOf(config), sha256(img.path).slice(0, 32));
const memoKey = (img: AuthorisedImage) => ({ path: img.path, dev: img.stat.dev, ino: img.stat.ino, size: img.stat.size, mtimeMs: img.stat.mtimeMs, ctimeMs: img.stat.ctimeMs });

/** The digest the stat memo remembers for an unchanged pool image; undefined means "hash it". */
export function memoDigest(img: AuthorisedImage, config: Config): string | undefined {
  if (img.origin !== 'pool') return undefined;
  try {
    const m = JSON.parse(readMemo(memoPath(config, img))) as Record<string, unknown>;
    const key = memoKey(img);
    const same = (Object.keys(key) as (keyof typeof key)[]).every((k) => m[k] === key[k]);
    if (same && typeof m.sha256 === 'string' && /^[0-9a-f]{64}$/.test(m.sha256)) return m.sha256;
  } catch {
    /* no memo, or a broken one */
  }
  return undefined;
}

/**
 * A memo's text (4 KiB at most; a memo is a few hundred bytes), by descriptor.
 * Root mends a memo an older version wrote 0600 in a 0700 directory, once, so
 * that users' check --job finds the digest too.
 */
function readMemo(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return '';
    if (process.getuid?.() === 0 && st.uid === 0 && (st.mode & 0o777) !== 0o644) {
      fchmodSync(fd, 0o644);
      chmodSync(path.slice(0, path.lastIndexOf('/')), 0o755);
    }
    const buf = Buffer.alloc(4096);
    return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Remembers a pool image's digest for its current stat. User images are never remembered: they are hashed each time. */
export function rememberDigest(img: AuthorisedImage, config: Config, digest: string): void {
  if (img.origin !== 'pool') return;
  const dir = layoutOf(config).statmemo;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755); // pbs_mom's umask 0077 would make it 0700
  writeFileAtomic(memoPath(config, img), JSON.stringify({ ...memoKey(img), sha256: digest }) + '\n', 0o644);
}

/** Forgets a pool image's digest, so the next run hashes it again (its content changed under an unchanged stat). */
export function forgetDigest(img: AuthorisedImage, config: Config): void {
  rmSync(memoPath(config, img), { force: true });
}

/** The pool's SHA256SUMS: its path, and the line for an image as the sha256sum format gives it. */
export const sumsFile = (config: Config) => `${config.paths.image_pool}/SHA256SUMS`;

/** The digest SHA256SUMS text lists for the pool image (by its #VM name or file name), lower case; undefined when not listed. */
export function sumsEntry(text: string, img: AuthorisedImage): string | undefined {
  const rel = img.path.slice(img.path.lastIndexOf('/') + 1);
  for (const l of text.split('\n')) {
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(l);
    if (m && (m[2] === img.name || m[2] === rel)) return m[1]!.toLowerCase();
  }
  return undefined;
}

/** With [policy] require_checksums, a pool image must be listed in SHA256SUMS with the digest it has. */
export function checkSums(img: AuthorisedImage, digest: string, config: Config): void {
  if (!config.policy.require_checksums || img.origin !== 'pool') return;
  const file = sumsFile(config);
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new NodeFault(`${file} is missing`, [{ id: 'checksums', where: file, message: 'is missing but [policy] require_checksums is on', fix: 'create it with: cd POOL && sha256sum IMAGES > SHA256SUMS' }], { cause: e });
  }
  const listed = sumsEntry(text, img);
  if (!listed) throw new JobFault(`image ${img.name} is not listed in SHA256SUMS`, [{ id: 'checksum', where: img.name, message: 'is not listed in the pool\'s SHA256SUMS', fix: 'ask your admin to add it (sha256sum IMAGE >> SHA256SUMS)' }]);
  if (listed !== digest) throw new JobFault(`image ${img.name} does not match SHA256SUMS`, [{ id: 'checksum', where: img.name, message: `has sha256 ${digest.slice(0, 12)}…, SHA256SUMS says ${listed.slice(0, 12)}…`, fix: 'the image changed after it was listed: ask your admin' }]);
}

/** The pool's own word for the image's digest, when it can be trusted for the file as it is now. */
export function listedDigest(img: AuthorisedImage, config: Config): string | undefined {
  if (img.origin !== 'pool') return undefined;
  const file = sumsFile(config);
  try {
    // Listed after the image last changed, or checked against it by the prologue anyway.
    if (!config.policy.require_checksums && statSync(file).mtimeMs < img.stat.mtimeMs) return undefined;
    return sumsEntry(readFileSync(file, 'utf8'), img);
  } catch {
    return undefined; // no list: no digest, no verdict
  }
}

export interface HeldVerdict {
  verdict: Verdict;
  digest: string;
  /** Which store holds it: this node's cache, or the directory all nodes share. */
  where: 'node' | 'shared';
}

/**
 * The verdict held for a pool image, found without hashing: the digest from
 * the stat memo (root's: the prologue's, and check --job run as root) or from
 * SHA256SUMS (what a user gets).
 */
export function heldVerdict(img: AuthorisedImage, config: Config): HeldVerdict | undefined {
  if (img.origin !== 'pool') return undefined;
  for (const digest of new Set([memoDigest(img, config), listedDigest(img, config)])) {
    if (!digest) continue;
    const node = readVerdict(config, digest);
    if (node) return { verdict: node, digest, where: 'node' };
    const shared = sharedVerdict(config, digest);
    if (shared) return { verdict: shared, digest, where: 'shared' };
  }
  return undefined;
}

export interface Judgement {
  rules: RuleResult[];
  /** The rules at level error that fail: they stop the job. */
  failed: RuleResult[];
  /** The rules at level warn that fail: shown, the job runs. */
  warned: RuleResult[];
  /** What the image really is; fills the request's distro when the job gave none. */
  family?: Family;
}

/** A verdict's facts against a request, under this site's rule levels. */
export function judge(verdict: Verdict, want: Expectation, config: Config): Judgement {
  const rules = evaluateRules(verdict.facts, want, config);
  return { rules, failed: rules.filter((r) => !r.ok && r.level === 'error'), warned: rules.filter((r) => !r.ok && r.level === 'warn'), family: familyOf(verdict.facts) };
}

/** The failed rules as problems with their fix hints; `held` names the store the verdict came from, for a user who wonders why. */
export function ruleProblems(imageName: string, failed: readonly RuleResult[], held?: string): Problem[] {
  return failed.map((x) => ({ id: x.id, where: `image ${imageName}`, message: `fails ${x.id}: ${x.message}${held ? ` (verdict held by ${held})` : ''}`, fix: x.fix }));
}

/** The JobFault that refuses an image failing any rule at level error, or undefined when it complies. */
export function complianceFault(imageName: string, failed: readonly RuleResult[]): JobFault | undefined {
  if (failed.length === 0) return undefined;
  return new JobFault(`image ${imageName} does not meet this site's guest image requirements (${failed.length} rule${failed.length > 1 ? 's' : ''})`, ruleProblems(imageName, failed));
}

/** A job's view of an image: its verdict, judged against what the job asked for. */
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

/** The rules that stop the job, as problems with their fix hints. */
export function failedRules(r: ImageReport): Problem[] {
  return ruleProblems(r.image.name, r.rules.filter((x) => !x.ok && x.level === 'error'));
}

export function warnedRules(r: ImageReport): RuleResult[] {
  return r.rules.filter((x) => !x.ok && x.level === 'warn');
}

/** Throws the JobFault that rejects a job whose image fails any rule at level error. */
export function assertCompliant(r: ImageReport): void {
  const fault = complianceFault(r.image.name, r.rules.filter((x) => !x.ok && x.level === 'error'));
  if (fault) throw fault;
}

// A pool is the admin's few dozen images, not a file tree to walk without end.
const MAX_POOL_ENTRIES = 500;
const MAX_DEPTH = 2;

/** Image names in the pool (relative paths, as #VM img= takes them), in name order. */
function poolNames(pool: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, prefix: string, depth: number) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (out.length >= MAX_POOL_ENTRIES) return;
      if (e.name.startsWith('.') || e.name === 'SHA256SUMS') continue;
      if (e.isDirectory() && depth < MAX_DEPTH) walk(`${dir}/${e.name}`, `${prefix}${e.name}/`, depth + 1);
      else if (e.isFile()) out.push(`${prefix}${e.name}`);
    }
  };
  walk(pool, '', 1);
  return out;
}

export interface PoolListing {
  /** Pool images whose held verdict meets the requirements for the request. */
  passing: string[];
  /** Pool images with no verdict held here: nobody knows yet. */
  unknown: number;
}

/** Which pool images are known to pass for this request. Never hashes an image nor runs libguestfs. */
export async function poolImagesFor(config: Config, want: Expectation): Promise<PoolListing> {
  const passing: string[] = [];
  let unknown = 0;
  for (const name of poolNames(config.paths.image_pool)) {
    let img: AuthorisedImage;
    try {
      img = await authoriseImage({ img: name, config });
    } catch {
      continue;
    }
    const held = heldVerdict(img, config);
    if (!held) unknown++;
    else if (judge(held.verdict, want, config).failed.length === 0) passing.push(name);
  }
  return { passing, unknown };
}

// What the user can only fix by choosing another image: the requirements and the format checks.
const IMAGE_IDS: ReadonlySet<string> = new Set([
  ...RULE_IDS, 'vmdk-extent', 'backing-file', 'corrupt', 'format-mismatch', 'data-file', 'encrypted', 'too-large', 'format-not-allowed',
]);

/** Does this rejection concern the image itself (another image would do), rather than the request? */
export function isImageRejection(problems: readonly { id: string }[]): boolean {
  return problems.length > 0 && problems.some((p) => IMAGE_IDS.has(p.id));
}

const MAX_LISTED = 20;

/** The hint for a rejected image: the pool images that pass, or that none is known to. Plain text for report/user.ts line(). */
export function poolHint(l: PoolListing): string[] {
  const others = l.unknown > 0 ? `${l.unknown} other pool image${l.unknown > 1 ? 's have' : ' has'} not been checked yet on this node` : '';
  if (l.passing.length === 0) {
    return [`no pool image is known yet to meet the requirements for this request${others ? ` (${others})` : ''}. Fix: ask your admin which image to use`];
  }
  const shown = l.passing.slice(0, MAX_LISTED).join(', ') + (l.passing.length > MAX_LISTED ? `, ... (${l.passing.length - MAX_LISTED} more)` : '');
  return [
    `pool images known to meet the requirements for this request: ${shown}. Fix: pick one with #VM img=NAME`,
    ...(others ? [`${others}; it may meet them too`] : []),
  ];
}

// Boot files: node-local copies of the kernel and initrd a verdict's
// facts.boot names, in <cache_dir>/kernels/<digest>/ (vmlinuz, initrd.img, and
// boot.json saying which guest files they are, at which sizes). The appliance
// that verifies a cached copy downloads them (verify.ts, keepBootFiles), so a
// cold image costs one appliance launch; they go with the base: removed with
// it (cache/entries.ts), dropped with a copy that is not kept (cache/acquire.ts).
// A verdict without them (made by check --image, or kept while its base was
// evicted or its copy refused) is not used for a job: the copy is verified
// again (cache/acquire.ts, bootFilesHeld), one appliance as for a new image.
// Root's: a pool image's 0755, a user's 0700 until the boot grants the launch
// group alone (launch/bootfiles.ts).

/** v 3: the guest paths and sizes of facts.boot.kernel. Older boot.json (kernel, root, source) are not read: their verdicts are stale too (rule bootable changed the checker version). */
const BOOT_JSON_VERSION = 3;
interface BootJson { v: number; vmlinuz: string; initrd: string; bytes: [number, number] }

export interface StoredBootFiles { dir: string; vmlinuz: string; initrd: string }

/** A fresh, empty directory of root's (0700) under kernels/ for an appliance to download into; undefined when guestfish cannot be given its path. */
export function stageBootFiles(config: Config, digest: string): string | undefined {
  const l = layoutOf(config);
  mkdirSync(l.kernels, { mode: 0o755, recursive: true });
  // pbs_mom's umask 0077 would leave it unreadable to the launch account, which reads the kernels.
  chmodSync(l.kernels, 0o755);
  sweepStaged(l.kernels);
  const dir = `${l.kernels}/.tmp-${digest}-${process.pid}-${randomBytes(4).toString('hex')}`;
  if (!SAFE_PATH.test(dir)) return undefined;
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** Staging directories of prologues that died before they kept or removed them. */
function sweepStaged(kernels: string): void {
  for (const n of readdirSync(kernels)) {
    const m = /^\.tmp-[0-9a-f]{64}-([0-9]+)-[0-9a-f]{8}$/.exec(n);
    if (m && !processAlive(Number(m[1]))) rmSync(`${kernels}/${n}`, { recursive: true, force: true });
  }
}

/**
 * Makes the staged files the digest's boot files when both are there whole
 * (the sizes facts.boot names); removes the staging directory either way.
 * The caller holds the digest's lock. Returns whether they were kept.
 */
export function keepBootFiles(config: Config, digest: string, staged: string, kernel: BootFacts['kernel'], priv: boolean): boolean {
  try {
    if (!kernel || !wholeFile(`${staged}/vmlinuz`, kernel.bytes[0]) || !wholeFile(`${staged}/initrd.img`, kernel.bytes[1])) return false;
    const json: BootJson = { v: BOOT_JSON_VERSION, vmlinuz: kernel.vmlinuz, initrd: kernel.initrd, bytes: kernel.bytes };
    writeFileSync(`${staged}/boot.json`, JSON.stringify(json) + '\n', { mode: 0o644, flag: 'wx' });
    for (const f of ['vmlinuz', 'initrd.img', 'boot.json']) chmodSync(`${staged}/${f}`, 0o644); // checked regular files in our 0700 directory
    chmodSync(staged, priv ? 0o700 : 0o755);
    const dir = kernelsPath(layoutOf(config), digest);
    rmSync(dir, { recursive: true, force: true });
    renameSync(staged, dir);
    return true;
  } finally {
    rmSync(staged, { recursive: true, force: true });
  }
}

/** The digest's boot files, when they are the kernel and initrd the verdict names, whole. */
export function storedBootFiles(config: Config, digest: string, kernel: NonNullable<BootFacts['kernel']>): StoredBootFiles | undefined {
  const dir = kernelsPath(layoutOf(config), digest);
  try {
    const j = JSON.parse(readFileSync(`${dir}/boot.json`, 'utf8')) as BootJson;
    const same = j.v === BOOT_JSON_VERSION && j.vmlinuz === kernel.vmlinuz && j.initrd === kernel.initrd && j.bytes?.[0] === kernel.bytes[0] && j.bytes?.[1] === kernel.bytes[1];
    if (same && wholeFile(`${dir}/vmlinuz`, kernel.bytes[0]) && wholeFile(`${dir}/initrd.img`, kernel.bytes[1])) return { dir, vmlinuz: `${dir}/vmlinuz`, initrd: `${dir}/initrd.img` };
  } catch {
    /* none, or an older version's: taken out again */
  }
  return undefined;
}

/** Does this node hold the boot files the verdict names (or does it name none)? */
export function bootFilesHeld(config: Config, digest: string, v: Verdict): boolean {
  const b = v.facts.boot;
  return !b?.kernel || !b.root || storedBootFiles(config, digest, b.kernel) !== undefined;
}

/** Removes the digest's boot files: its copy was not kept. The caller holds the digest's lock. */
export function dropBootFiles(config: Config, digest: string): void {
  rmSync(kernelsPath(layoutOf(config), digest), { recursive: true, force: true });
}

/** Root's regular file of exactly `bytes` bytes, by descriptor. */
function wholeFile(path: string, bytes: number): boolean {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const st = fstatSync(fd);
    return st.isFile() && st.uid === (process.getuid?.() ?? 0) && st.size === bytes && bytes > 0;
  } finally {
    closeSync(fd);
  }
}
