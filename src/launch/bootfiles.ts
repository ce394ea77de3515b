// The kernel, initrd and root file system of a cached base, for direct kernel
// boot: images without a bootloader (debootstrap builds, the test guest) boot
// only this way, and the rest boot faster. Taken out once per digest with
// guestfish --ro into <cache_dir>/kernels/<digest>/, root-owned 0644 (the
// launch account reads them); boot.json records the answer, "none" included,
// so an image with no usable kernel is not inspected again. Only an answer
// about the image is recorded: what a guestfish that finished found ("no
// operating system" included), or that the image made it print past its
// bound. One that timed out, was stopped, was killed or failed otherwise told
// us nothing about the image, so it is a node fault naming guestfish (exit 2,
// no VM is started) and the next job looks again. A user's private
// image (base root 0400) stays private: its base and its kernels directory are
// opened to the launch group alone (0440, 0750), since qemu reads both.
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { kernelsPath, layoutOf } from '../cache/layout.js';
import { holderMaxSeconds, withLock } from '../cache/lock.js';
import { NodeFault, isVtorqueError } from '../core/errors.js';
import { ToolError, runTool } from '../tools/run.js';
import { guestfsEnv, resolveAccel } from '../image/accel.js';
import { compareVersions } from './kvm.js';

export interface BootFiles {
  /** Absent: boot from the disk's own bootloader. */
  kernel?: string;
  initrd?: string;
  /** root= for the kernel command line: UUID=... or a device-mapper path. */
  root?: string;
  /** What the guest held, for the log. */
  source: string;
}

/**
 * v: 2 marks an answer from a finished look. Before it, a guestfish that timed
 * out or crashed was recorded as kernel: false; such an entry is looked at
 * again once instead of being believed.
 */
interface BootJson { v?: number; kernel: boolean; root?: string; source: string }
const BOOT_JSON_VERSION = 2;

/** What extract learnt: an answer to record in boot.json, or (keep false) one that holds for this run only. */
interface Found { json: BootJson; keep: boolean }

// Paths we hand guestfish in its script: ours, but its parser splits on blanks and quotes.
const PLAIN = /^[A-Za-z0-9._\/+-]+$/;
// Whole-disk and partition devices of the first disk; guestfish has no variables, so the UUIDs are asked for all of them.
const CANDIDATES = ['/dev/sda', ...Array.from({ length: 16 }, (_, i) => `/dev/sda${i + 1}`)];

export function kernelsDir(config: Config, digest: string): string {
  return kernelsPath(layoutOf(config), digest);
}

/**
 * Lets the launch group read a private base (a user's image: root 0400, not
 * readable by others), by descriptor: root:gid 0440. Returns that gid for
 * bootFiles, or undefined for a public base, which stays as it is.
 */
export function grantLaunchRead(basePath: string, gid: number): number | undefined {
  const fd = openSync(basePath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== 0) throw new Error(`${basePath} is not a regular file of root's`);
    if ((st.mode & 0o004) !== 0) return undefined;
    if (st.gid !== gid) fchownSync(fd, 0, gid);
    if ((st.mode & 0o777) !== 0o440) fchmodSync(fd, 0o440);
    return gid;
  } finally {
    closeSync(fd);
  }
}

/**
 * The boot files of a cached base, extracting them on first use under the
 * digest's lock. privateTo: the base is private and only this group (the
 * launch group) may read its kernels.
 */
export async function bootFiles(config: Config, base: { path: string; digest: string; format: string }, signal?: AbortSignal, privateTo?: number): Promise<BootFiles> {
  const dir = kernelsDir(config, base.digest);
  const known = readBootJson(dir);
  if (known) {
    if (privateTo !== undefined) restrictDir(dir, privateTo);
    return filesOf(dir, known);
  }
  const l = layoutOf(config);
  return withLock(`img-${base.digest}`, { dir: l.locks, waitSeconds: holderMaxSeconds(config), staleSeconds: config.cache.lock_stale, signal }, async () => {
    const again = readBootJson(dir);
    if (again) return filesOf(dir, again);
    mkdirSync(l.kernels, { mode: 0o755, recursive: true });
    // pbs_mom's umask 0077 would leave it unreadable to the launch account, which reads the kernels.
    fchmodDir(l.kernels, 0o755);
    const tmp = `${l.kernels}/.tmp-${base.digest}-${process.pid}-${randomBytes(4).toString('hex')}`;
    mkdirSync(tmp, { mode: 0o700 });
    try {
      const { json: found, keep } = await extract(config, base, tmp, signal);
      if (!keep) return filesOf(dir, found);
      writeFileSync(`${tmp}/boot.json`, JSON.stringify(found) + '\n', { mode: 0o644, flag: 'wx' });
      for (const f of ['vmlinuz', 'initrd.img', 'boot.json']) publish(`${tmp}/${f}`);
      if (privateTo === undefined) fchmodDir(tmp, 0o755);
      else restrictDir(tmp, privateTo);
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
      return filesOf(dir, found);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

function readBootJson(dir: string): BootJson | undefined {
  try {
    const j = JSON.parse(readFileSync(`${dir}/boot.json`, 'utf8')) as BootJson;
    if (typeof j.kernel !== 'boolean' || typeof j.source !== 'string') return undefined;
    // A "no kernel" of an older version may be a time-out written down as an answer: look again.
    return j.kernel || j.v === BOOT_JSON_VERSION ? j : undefined;
  } catch {
    return undefined;
  }
}

const filesOf = (dir: string, j: BootJson): BootFiles => (j.kernel && j.root
  ? { kernel: `${dir}/vmlinuz`, initrd: `${dir}/initrd.img`, root: j.root, source: j.source }
  : { source: j.source });

/** Root-owned, 0644, by descriptor; a missing file (no kernel found) is fine. */
function publish(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return;
  }
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${path} is not a regular file`);
    fchmodSync(fd, 0o644);
  } finally {
    closeSync(fd);
  }
}

/** root:gid 0750, by descriptor: what a private base's kernels directory is. */
function restrictDir(path: string, gid: number): void {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (st.uid !== 0) throw new Error(`${path} is not root's`);
    if (st.gid !== gid) fchownSync(fd, 0, gid);
    if ((st.mode & 0o777) !== 0o750) fchmodSync(fd, 0o750);
  } finally {
    closeSync(fd);
  }
}

function fchmodDir(path: string, mode: number): void {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * One appliance launch: inspect, mount (-i), the root's UUID, /vmlinuz and
 * /initrd.img (Debian and Ubuntu keep these links to the newest kernel). Without
 * those links, the newest /boot/vmlinuz-VERSION and its initrd in a second launch.
 * Throws a NodeFault when guestfish did not finish its look (see the top).
 */
async function extract(config: Config, base: { path: string; format: string; digest: string }, tmp: string, signal?: AbortSignal): Promise<Found> {
  const answer = (json: Omit<BootJson, 'v'>): Found => ({ json: { v: BOOT_JSON_VERSION, ...json }, keep: true });
  // Our own paths, not the image's: nothing learnt about the image, so nothing to record.
  if (!PLAIN.test(tmp) || !PLAIN.test(base.path)) return { json: { kernel: false, source: 'paths guestfish cannot be given' }, keep: false };
  const { accel } = await resolveAccel(config, signal);
  const env = guestfsEnv(config, accel);
  // A random marker: file names in the guest's /boot cannot forge a section.
  const mark = `@@vt${randomBytes(6).toString('hex')}`;
  const script = [
    `echo ${mark} roots`, 'inspect-get-roots',
    ...CANDIDATES.flatMap((d) => [`echo ${mark} uuid ${d}`, `-vfs-uuid ${d}`]),
    `echo ${mark} links`, `-download /vmlinuz ${tmp}/vmlinuz`, `-download /initrd.img ${tmp}/initrd.img`,
    `echo ${mark} boot`, '-ls /boot',
    `echo ${mark} end`, '',
  ].join('\n');
  const fish = (args: string[], input: string) => runTool(config.tools.guestfish, ['--ro', `--format=${base.format}`, '-a', base.path, ...args], {
    timeout: config.timeouts.tool * 1000, toolKey: 'guestfish', env, signal, input, maxBuffer: 1024 * 1024,
  });
  let out: string;
  try {
    out = (await fish(['-i'], script)).stdout;
  } catch (e) {
    const none = noOperatingSystem(e);
    if (none) return answer({ kernel: false, source: `no operating system found (guestfish -i: ${none})` });
    // The image's own content (a /boot of thousands of names, say) made guestfish
    // print past maxBuffer: the same every time, so an answer, never a node fault
    // a user's image could cause at will. The bootloader boots it.
    if (e instanceof ToolError && e.failure === 'overflow') return answer({ kernel: false, source: 'guestfish printed more than 1 MiB about the image (its /boot or its file systems)' });
    throw lookFault(config, base.digest, e);
  }
  const sections = new Map<string, string[]>();
  let cur = '';
  for (const l of out.split('\n')) {
    if (l.startsWith(`${mark} `)) {
      cur = l.slice(mark.length + 1);
      sections.set(cur, []);
    } else if (l !== '') sections.get(cur)?.push(l);
  }
  const rootDev = sections.get('roots')?.[0]?.trim() ?? '';
  const uuid = sections.get(`uuid ${rootDev}`)?.[0]?.trim();
  let root: string | undefined;
  if (uuid && /^[0-9A-Fa-f-]{8,64}$/.test(uuid)) root = `UUID=${uuid}`;
  // Device-mapper names (LVM) are the same inside the guest; /dev/sdX are not (the guest sees vdX).
  else if (/^\/dev\/mapper\/[A-Za-z0-9._+-]+$/.test(rootDev)) root = rootDev;
  if (!root) return answer({ kernel: false, source: `root file system ${rootDev || '(none)'} has no UUID we can read` });
  if (isFile(`${tmp}/vmlinuz`) && isFile(`${tmp}/initrd.img`)) return answer({ kernel: true, root, source: '/vmlinuz and /initrd.img' });

  const names = (sections.get('boot') ?? []).filter((n) => /^[A-Za-z0-9._+-]+$/.test(n));
  const newest = names.map((n) => /^vmlinuz-(.+)$/.exec(n)?.[1]).filter((v): v is string => v !== undefined && !v.includes('rescue'))
    .map((v) => ({ v, initrd: [`initrd.img-${v}`, `initramfs-${v}.img`].find((i) => names.includes(i)) }))
    .filter((k): k is { v: string; initrd: string } => k.initrd !== undefined)
    .sort((a, b) => compareVersions(b.v, a.v))[0];
  if (!newest) return answer({ kernel: false, source: 'no /vmlinuz, and no /boot/vmlinuz-VERSION with its initrd' });
  // '-download': a file the root alone does not hold (/boot on a partition of
  // its own, which -m of the root does not see) is an answer, and guestfish
  // still exits 0; so any failure of this launch is guestfish's, not the image's.
  try {
    await fish(['-m', `${rootDev}:/:ro`], [`-download /boot/vmlinuz-${newest.v} ${tmp}/vmlinuz`, `-download /boot/${newest.initrd} ${tmp}/initrd.img`, ''].join('\n'));
  } catch (e) {
    throw lookFault(config, base.digest, e);
  }
  // Not there: the bootloader boots it.
  return isFile(`${tmp}/vmlinuz`) && isFile(`${tmp}/initrd.img`)
    ? answer({ kernel: true, root, source: `/boot/vmlinuz-${newest.v} and /boot/${newest.initrd}` })
    : answer({ kernel: false, source: `/boot/vmlinuz-${newest.v} and /boot/${newest.initrd} cannot be read from the root file system alone` });
}

// What guestfish -i says, and exits 1 with, when its inspection finished and
// found no operating system it can mount (libguestfs fish/inspect.c). LANG is
// C.UTF-8 (tools/run.ts), so the words are these.
const NO_OS = /no operating system was found on this disk|multi-boot operating systems are not supported/;

/** The finished "no OS" answer of guestfish -i, or undefined for every other failure (time-out, stop, kill, crash, launch failure). */
function noOperatingSystem(e: unknown): string | undefined {
  if (!(e instanceof ToolError) || e.failure !== 'failed' || e.toolExitCode !== 1) return undefined;
  return NO_OS.exec(e.stderrHead)?.[0];
}

/**
 * A look that did not finish: the node's fault, naming guestfish and keeping
 * its error (a stop by qdel or the deadline included: the pipeline tells those apart).
 */
function lookFault(config: Config, digest: string, e: unknown): NodeFault {
  const first = isVtorqueError(e) ? e.problems[0] : undefined;
  const why = (e as Error)?.message ?? String(e);
  return new NodeFault(`guestfish could not look for the kernel of cached image ${digest.slice(0, 12)}: ${why}`, [{
    id: 'guestfs', where: `[tools] guestfish (${config.tools.guestfish})`, message: why,
    fix: `${first?.fix ?? 'run libguestfs-test-tool on this node'}; nothing was recorded, so the next job looks again`,
  }], { cause: e });
}

function isFile(path: string): boolean {
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      return st.isFile() && st.size > 0;
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}
