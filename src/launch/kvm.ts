// Whether KVM really runs a guest on this node: the one probe behind
// [launch] accel = auto (the job's VMs), [guestfs] accel = auto (libguestfs)
// and doctor's kvm line. A /dev/kvm that opens, or a qemu that starts paused
// on it, proves nothing: on a nested /dev/kvm qemu initialises a KVM machine
// in 0.2 s and then hangs every guest kernel with an empty console. So the
// probe boots a real kernel, this node's own (/boot/vmlinuz-$(uname -r), else
// the newest /boot/vmlinuz-*), without an initramfs and with root= a device
// that does not exist: a kernel that runs reaches "Kernel panic - not
// syncing: VFS: Unable to mount root fs" on the serial console, panic=-1
// reboots at once and -no-reboot makes qemu exit. That line, and nothing
// else, is KVM shown to work. qemu runs as the launch account (setpriv, as
// for the VMs), in a process group of its own that runTool kills whole.
//
// Measured on the 2-core build machine (AMD EPYC, nested /dev/kvm, Debian
// kernel 6.1.0-57-amd64, qemu 7.2): the same boot under TCG reaches the panic
// line and qemu exits in 4.7-5.1 s at load 1.3, 8.6-11.2 s at load 4-5;
// under the nested KVM it never does (not one console byte in 60 s), and
// plain -cpu host aborts at once (failed to set MSR 0x10a). A working KVM
// boots the same kernel to the panic in a second or two. PROBE_SECONDS = 20
// is about twice a loaded TCG boot: a KVM that has not booted the kernel by
// then is slower than software emulation, so TCG is the better answer whether
// it hangs or crawls.
import { closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { release } from 'node:os';
import type { Config } from '../config/schema.js';
import { NodeFault } from '../core/errors.js';
import { runTool, ToolError } from '../tools/run.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { ensureRootDir } from '../tools/safedir.js';
import { kvmProbeMemoPath, kvmProbeKernelPath, layoutOf } from '../cache/layout.js';
import { asLaunchAccount, type LaunchAccount } from './qemu.js';

export type Accel = 'kvm' | 'tcg';

export const PROBE_SECONDS = 20;

/** What the probe found. boots: KVM ran the kernel to its panic line; hangs: no such line within the time box; fails: qemu stopped without it; unprobed: the probe could not be run. */
export type ProbeOutcome = 'boots' | 'hangs' | 'fails' | 'unprobed';

export interface KvmVerdict {
  /** kvm only when the kernel was shown to boot under KVM. */
  accel: Accel;
  outcome: ProbeOutcome;
  /** One sentence for the admin log, doctor and fault messages. */
  how: string;
  /** How long the probe boot took (now, or when it was memoised). */
  ms?: number;
  /** The kernel it booted. */
  kernel?: string;
  /** qemu's first error line, or the last console lines, when it did not boot. */
  detail?: string;
  /** The memo this answer was read from; absent when probed in this process. */
  memo?: string;
}

/**
 * The qemu options whose KVM use the probe vouches for: the machine, the CPU
 * and whatever else changes how the guest runs. label says whose they are.
 */
export interface ProbeShape {
  label: string;
  args: string[];
}

const extraArgs = (config: Config): string[] => (config.launch.extra_args.trim() === '' ? [] : config.launch.extra_args.trim().split(/ +/));

/** The job's VMs: qemuArgv's machine and -cpu host, then [launch] extra_args (a later -cpu there wins, as it does for the VMs). */
export const launchShape = (config: Config): ProbeShape => ({
  label: 'VMs', args: ['-machine', `${config.launch.machine},accel=kvm`, '-cpu', 'host', ...extraArgs(config)],
});

/**
 * libguestfs's appliance: its direct backend (1.48, LIBGUESTFS_DEBUG=1) runs
 * qemu with -machine accel=kvm:tcg,graphics=off -cpu max,la57=off; the probe
 * asks for KVM alone, so a KVM that cannot start is a failure, not a quiet TCG.
 */
export const GUESTFS_SHAPE: ProbeShape = { label: 'libguestfs', args: ['-machine', 'accel=kvm', '-cpu', 'max,la57=off'] };

/**
 * Whether the launch account can open /dev/kvm read-write: by its uid, its
 * group or a supplementary group (qemu gets them all through setpriv).
 */
export function kvmUsableBy(account: LaunchAccount): boolean {
  try {
    const st = statSync('/dev/kvm');
    if (!st.isCharacterDevice()) return false;
    if (st.uid === account.uid) return (st.mode & 0o600) === 0o600;
    if (st.gid === account.gid || account.groups.includes(st.gid)) return (st.mode & 0o060) === 0o060;
    return (st.mode & 0o006) === 0o006;
  } catch {
    return false;
  }
}

/** What names the qemu binary for the memo: a new package replaces the file, so its inode, size or mtime change. */
export interface QemuIdentity { path: string; dev: number; ino: number; size: number; mtimeMs: number }

export function qemuIdentity(config: Config): QemuIdentity {
  const path = realpathSync(config.tools.qemu_system);
  const st = statSync(path);
  return { path, dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

/**
 * The kernel to probe with: this node's running one in bootDir, else the
 * newest vmlinuz-VERSION there (a container or a netbooted node may run a
 * kernel that is not in /boot; any kernel that boots shows KVM works). Only a
 * root-owned regular file, opened without following links.
 */
export function probeKernel(bootDir = '/boot'): { path: string } | { why: string } {
  const own = `${bootDir}/vmlinuz-${release()}`;
  if (rootFile(own)) return { path: own };
  let names: string[];
  try {
    names = readdirSync(bootDir);
  } catch (e) {
    return { why: `${bootDir} cannot be read (${(e as NodeJS.ErrnoException).code ?? e})` };
  }
  const newest = names.map((n) => /^vmlinuz-(.+)$/.exec(n)?.[1]).filter((v): v is string => v !== undefined && !v.includes('rescue'))
    .sort((a, b) => compareVersions(b, a)).map((v) => `${bootDir}/vmlinuz-${v}`).find(rootFile);
  return newest ? { path: newest } : { why: `no kernel to boot: neither ${own} nor another root-owned ${bootDir}/vmlinuz-* exists` };
}

function rootFile(path: string): boolean {
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      return st.isFile() && st.uid === 0 && st.size > 0;
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

/** Whether account can read the file by its mode bits (uid, group or others), as qemu will open it. */
function readableBy(path: string, account: LaunchAccount): boolean {
  const st = statSync(path);
  if (st.uid === account.uid) return (st.mode & 0o400) !== 0;
  if (st.gid === account.gid || account.groups.includes(st.gid)) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

/**
 * The kernel as the launch account can read it: the file itself, or, where
 * /boot keeps kernels root's alone (Ubuntu: 0600), a copy root makes in its
 * cache directory, 0644: the node's stock kernel holds no secret, and qemu
 * must never run as root to read it.
 */
function kernelForAccount(config: Config, kernel: string, account: LaunchAccount): string {
  if (readableBy(kernel, account)) return kernel;
  const fd = openSync(kernel, constants.O_RDONLY | constants.O_NOFOLLOW);
  let data: Buffer;
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== 0) throw new Error(`${kernel} is not a regular file of root's`);
    data = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, data, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    data = data.subarray(0, off);
  } finally {
    closeSync(fd);
  }
  ensureRootDir(config.paths.cache_dir, 0o755, '[paths] cache_dir');
  const copy = kvmProbeKernelPath(layoutOf(config));
  writeFileAtomic(copy, data, 0o644);
  return copy;
}

const APPEND = 'console=ttyS0 panic=-1 root=/dev/nonexistent';
const PANIC = /Kernel panic - not syncing/;

/** One boot of kernel to its panic line, as account, with these options; accel tcg measures what KVM is compared with. */
export interface PanicBoot {
  /** The panic line was printed: the kernel ran. */
  panicked: boolean;
  /** The time box ran out first (qemu's process group was killed). */
  timedOut: boolean;
  ms: number;
  /** qemu's first error line when it stopped without the panic line. */
  error?: string;
  /** The last console lines. */
  tail: string[];
}

/**
 * Boots kernel once and reports what happened. A stop by signal (the
 * prologue's deadline, qdel) is thrown: it says nothing about KVM.
 */
export async function bootToPanic(o: { config: Config; account: LaunchAccount; kernel: string; args: readonly string[]; timeoutMs: number; signal?: AbortSignal }): Promise<PanicBoot> {
  // The console is kept to its last 64 KiB: the panic line is near the end.
  let text = '';
  let panicked = false;
  const argv = [
    ...o.args, '-m', '256', '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio', '-kernel', o.kernel, '-append', APPEND,
  ];
  const t0 = performance.now();
  try {
    await runTool(...asLaunchAccount(o.config, o.account, o.config.tools.qemu_system, argv), {
      timeout: o.timeoutMs, toolKey: 'qemu_system', signal: o.signal, maxBuffer: 1024 * 1024,
      onStdout: (b) => {
        text = (text + b.toString('utf8')).slice(-65536);
        if (!panicked && PANIC.test(text)) panicked = true;
      },
    });
    return { panicked, timedOut: false, ms: performance.now() - t0, tail: tailOf(text) };
  } catch (e) {
    const ms = performance.now() - t0;
    if (e instanceof ToolError && e.failure === 'stopped') throw e;
    // A panic printed before qemu failed still shows the kernel ran.
    if (e instanceof ToolError && e.failure === 'timeout') return { panicked, timedOut: !panicked, ms, tail: tailOf(text) };
    return { panicked, timedOut: false, ms, error: firstError(e), tail: tailOf(text) };
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]|\u001b\[[0-9;?]*[A-Za-z]/g;
const tailOf = (text: string, n = 5): string[] => text.replace(CONTROL, '').split(/\r?\n/).map((l) => l.trimEnd()).filter((l) => l !== '').slice(-n).map((l) => l.slice(0, 200));

/** qemu's own first line ("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"), without the program name. */
function firstError(e: unknown): string {
  if (!(e instanceof ToolError)) return String((e as Error)?.message ?? e).slice(0, 300);
  const line = (e.stderrHead ?? '').split(' | ').map((l) => l.replace(/^\S*qemu-system-\S+: (error: )?/, '').trim()).find((l) => l !== '');
  return (line ?? e.message).slice(0, 300);
}

interface Memo {
  kernel: string;
  qemu: QemuIdentity;
  args: string[];
  accel: Accel;
  outcome: 'boots' | 'hangs';
  how: string;
  ms: number;
  probeKernel: string;
  probedAt: string;
}

const memoFile = (config: Config, shape: ProbeShape): string =>
  kvmProbeMemoPath(layoutOf(config), createHash('sha256').update(JSON.stringify(shape.args)).digest('hex').slice(0, 16));

const sameQemu = (a: QemuIdentity | undefined, b: QemuIdentity): boolean =>
  a !== undefined && a.path === b.path && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;

/**
 * The memoised answer for shape, if it was found on this kernel release,
 * with this very qemu binary and these options; anything else is not this
 * node's answer any more (a new kernel or qemu changes KVM), and is ignored.
 */
export function memoisedKvm(config: Config, shape: ProbeShape): KvmVerdict | undefined {
  const file = memoFile(config, shape);
  try {
    const m = JSON.parse(readFileSync(file, 'utf8')) as Partial<Memo>;
    if (m.kernel !== release() || !sameQemu(m.qemu, qemuIdentity(config)) || JSON.stringify(m.args) !== JSON.stringify(shape.args)) return undefined;
    if (!((m.outcome === 'boots' && m.accel === 'kvm') || (m.outcome === 'hangs' && m.accel === 'tcg')) || typeof m.how !== 'string') return undefined;
    return { accel: m.accel, outcome: m.outcome, how: `${m.how}, probed ${m.probedAt ?? 'earlier'} (${file})`, ms: m.ms, kernel: m.probeKernel, memo: file };
  } catch {
    return undefined;
  }
}

/**
 * Keeps a finished look only: the kernel booted, or it did not within the
 * probe's own time box. A hang is memoised too (else every VM job on a
 * nested node would spend the whole box again); a loaded node that was merely
 * slow is set right by doctor, which always probes afresh. A quick failure
 * (qemu aborting, a kernel it could not read) is not kept: asking again costs
 * a fraction of a second, and the cause may be fixed meanwhile.
 */
function memoise(config: Config, shape: ProbeShape, v: KvmVerdict, kernel: string): void {
  if (v.outcome !== 'boots' && v.outcome !== 'hangs') return;
  try {
    ensureRootDir(config.paths.cache_dir, 0o755, '[paths] cache_dir');
    const m: Memo = {
      kernel: release(), qemu: qemuIdentity(config), args: shape.args, accel: v.accel, outcome: v.outcome, how: v.how,
      ms: Math.round(v.ms ?? 0), probeKernel: kernel, probedAt: new Date().toISOString(),
    };
    writeFileAtomic(memoFile(config, shape), JSON.stringify(m) + '\n', 0o644);
  } catch {
    /* the answer still holds for this run; the next one probes again */
  }
}

// One probe per shape and process: the prologue asks for libguestfs up to
// three times (verify, boot files, inject); a failed promise is forgotten.
const inProcess = new Map<string, Promise<KvmVerdict>>();

export interface ProbeOptions {
  shape: ProbeShape;
  /** The account qemu runs as; asked only when a probe runs. */
  account: () => Promise<LaunchAccount>;
  signal?: AbortSignal;
  /** Probe even when a memo holds an answer (doctor), and keep the new one. */
  fresh?: boolean;
  /** Where the kernels are: /boot, or a test's staged directory. */
  bootDir?: string;
  timeoutMs?: number;
}

/**
 * Whether KVM may be used for shape on this node: kvm only when a probe boot
 * of a real kernel under KVM reached its panic line, now or in a memo that
 * still applies. Throws only when the probe was stopped by the caller's
 * signal, which is no answer.
 */
export function probeKvm(config: Config, o: ProbeOptions): Promise<KvmVerdict> {
  const key = memoFile(config, o.shape);
  const known = o.fresh ? undefined : inProcess.get(key);
  if (known) return known;
  const p = probeOnce(config, o);
  inProcess.set(key, p);
  p.catch(() => inProcess.delete(key));
  return p;
}

async function probeOnce(config: Config, o: ProbeOptions): Promise<KvmVerdict> {
  const unprobed = (why: string): KvmVerdict => ({ accel: 'tcg', outcome: 'unprobed', how: `KVM not probed: ${why}` });
  try {
    if (!statSync('/dev/kvm').isCharacterDevice()) return unprobed('/dev/kvm is not a character device');
  } catch {
    return unprobed('/dev/kvm does not exist');
  }
  if (!o.fresh) {
    const m = memoisedKvm(config, o.shape);
    if (m) return m;
  }
  let account: LaunchAccount;
  try {
    account = await o.account();
  } catch (e) {
    return unprobed(`the launch account is not usable (${(e as Error).message})`);
  }
  if (!kvmUsableBy(account)) return unprobed(`/dev/kvm cannot be opened by ${account.user}`);
  const k = probeKernel(o.bootDir);
  if ('why' in k) return unprobed(k.why);
  let kernel: string;
  try {
    kernel = kernelForAccount(config, k.path, account);
  } catch (e) {
    return unprobed(`${k.path} cannot be made readable to ${account.user} (${(e as Error).message})`);
  }
  const timeoutMs = o.timeoutMs ?? PROBE_SECONDS * 1000;
  const b = await bootToPanic({ config, account, kernel, args: o.shape.args, timeoutMs, signal: o.signal });
  const s = (b.ms / 1000).toFixed(1);
  const name = k.path;
  const opts = o.shape.args.join(' ');
  let v: KvmVerdict;
  if (b.panicked) v = { accel: 'kvm', outcome: 'boots', how: `KVM booted ${name} to its panic line in ${s} s (${opts})`, ms: b.ms, kernel: name };
  else if (b.timedOut) {
    v = {
      accel: 'tcg', outcome: 'hangs', ms: b.ms, kernel: name, detail: b.tail.length > 0 ? b.tail.join(' | ') : 'the console stayed empty',
      how: `KVM did not boot ${name} to its panic line within ${Math.round(timeoutMs / 1000)} s (${opts}; ${b.tail.length > 0 ? 'console stopped at: ' + b.tail[b.tail.length - 1] : 'empty console'}): a nested or broken KVM`,
    };
  } else {
    v = {
      accel: 'tcg', outcome: 'fails', ms: b.ms, kernel: name, detail: b.error ?? b.tail.join(' | '),
      how: `qemu did not boot ${name} under KVM (${opts}): ${b.error ?? `it exited without the panic line${b.tail.length > 0 ? ` after: ${b.tail[b.tail.length - 1]}` : ''}`}`,
    };
  }
  memoise(config, o.shape, v, name);
  return v;
}

/**
 * [launch] accel as an accelerator: kvm and tcg as said; auto is KVM when
 * the launch account can open /dev/kvm and the probe booted a kernel under
 * KVM with the VMs' options; else TCG if allow_tcg, else a node fault.
 */
export async function launchAccel(config: Config, account: LaunchAccount, signal?: AbortSignal): Promise<{ accel: Accel; how: string }> {
  const l = config.launch;
  if (l.accel !== 'auto') return { accel: l.accel, how: '[launch] accel' };
  const tcg = (why: string) => {
    if (!l.allow_tcg) {
      throw new NodeFault(`KVM cannot be used on this node (${why}) and [launch] allow_tcg is false`, [{
        id: 'launch', where: '[launch]', message: why,
        fix: `give ${account.user} access to /dev/kvm (make [launch] group the kvm group) and make KVM boot a guest (vtorque-prologue doctor says why not), or set allow_tcg = true`,
      }]);
    }
    return { accel: 'tcg' as const, how: why };
  };
  if (!kvmUsableBy(account)) return tcg(`/dev/kvm is not usable by ${account.user}`);
  const v = await probeKvm(config, { shape: launchShape(config), account: async () => account, signal });
  return v.accel === 'kvm' ? { accel: 'kvm', how: v.how } : tcg(v.how);
}

/** Kernel versions as sort -V orders them: 6.1.0-10 after 6.1.0-9. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/([0-9]+)/);
  const pb = b.split(/([0-9]+)/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    if (x === y) continue;
    if (i % 2 === 1) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return 0;
}
