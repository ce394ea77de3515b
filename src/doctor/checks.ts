// The node checks of `doctor`, one named function each, in the manner of LBNL
// NHC: each says what it looked at, what it found, what it should be, and how
// to fix it, in one line. The comment above each says what makes it fail.
import { accessSync, constants, existsSync, lstatSync, readFileSync, readdirSync, statSync, statfsSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadConfig } from '../config/load.js';
import { SCHEMA, type Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import { isVtorqueError } from '../core/errors.js';
import { runTool, ToolError } from '../tools/run.js';
import { squattable, untrustedEntry, untrustedPath, untrustedResolved } from '../tools/trust.js';
import type { Accel, KvmVerdict, ProbeShape } from '../launch/kvm.js';

export type Status = 'ok' | 'warn' | 'FAIL' | 'skip';

export interface CheckResult {
  check: string;
  status: Status;
  message: string;
  fix?: string;
  /** Milliseconds the check took, where time is the point (launches, probes). */
  ms?: number;
  /** Facts for --json readers (versions, accel, the -cpu that works). */
  data?: Record<string, unknown>;
}

export interface DoctorContext {
  configFile: string;
  config?: Config;
  signal?: AbortSignal;
  /** The environment doctor runs in: SLURM_CONF and SLURMD_NODENAME, when the admin gives them. */
  env?: NodeJS.ProcessEnv;
  /** What the slurm check learnt for the launch check: the job runner job_submit.lua names. */
  slurmRunner?: string;
  /** The accelerators the kvm check found the VMs and libguestfs would get, for the timeouts check. */
  accel?: { vms: Accel; guestfs: Accel };
  /** How long the guestfs check's appliance launch took, and with which accelerator. */
  guestfsLaunch?: { ms: number; accel: Accel };
}

export const CHECK_IDS = ['config', 'tools', 'kvm', 'guestfs', 'timeouts', 'dirs', 'space', 'mom_priv', 'launch', 'torque', 'slurm'] as const;
export type CheckId = (typeof CHECK_IDS)[number];
/**
 * The order checks run and print in: kvm probes before guestfs, which then
 * uses its answer, and both before timeouts, which budgets with what they
 * found; slurm before launch, which checks the job runner the slurm check found.
 */
export const RUN_ORDER: readonly CheckId[] = ['config', 'tools', 'kvm', 'guestfs', 'timeouts', 'dirs', 'space', 'mom_priv', 'slurm', 'launch', 'torque'];

/** The checks of one batch system only; the other's are not run, nor listed ([batch] system). */
export const BATCH_CHECKS: Record<Config['batch']['system'], readonly CheckId[]> = { torque: ['mom_priv', 'torque'], slurm: ['slurm'] };
/** The [tools] only one batch system uses: a Torque node need not have scontrol, nor a Slurm node qstat. */
const BATCH_TOOLS: Record<Config['batch']['system'], readonly (keyof Config['tools'])[]> = { torque: ['qstat', 'pbsnodes'], slurm: ['scontrol', 'scancel'] };

/** Whether check id belongs to the other batch system than the one [batch] system names. */
export function otherBatchSystems(config: Config, id: CheckId): boolean {
  return Object.entries(BATCH_CHECKS).some(([sys, ids]) => sys !== config.batch.system && ids.includes(id));
}

const r = (check: string, status: Status, message: string, fix?: string, extra: Partial<CheckResult> = {}): CheckResult => ({ check, status, message, ...(fix ? { fix } : {}), ...extra });
export const mode = (m: number) => (m & 0o7777).toString(8).padStart(4, '0');
const firstLine = (s: string) => s.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Why root should not read or run the file at path (it, a symlink on the way, or a directory above it is not root's alone), or undefined; a missing file is judged elsewhere. */
export function untrustedFile(path: string): string | undefined {
  try {
    return untrustedResolved(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** The FAIL for an ini that the prologue reads as root but others could change. */
export function iniTrust(check: string, file: string): CheckResult | undefined {
  const why = untrustedFile(file);
  if (!why) return undefined;
  return r(check, 'FAIL', `${file}, which the prologue reads as root: ${why}`,
    `chown root:root ${file} && chmod 0644 ${file}, and make every directory above it root's and not writable by group or others: whoever can change the ini chooses the tools root runs`);
}

// Fails when the ini cannot be read, is not an ini, or any key has a value
// outside what the schema allows; or when it, or a directory above it, is not
// root's alone. Unknown keys are warnings, as in the prologue.
export function checkConfig(ctx: DoctorContext): CheckResult[] {
  const trust = iniTrust('config', ctx.configFile);
  const head = trust ? [trust] : [];
  try {
    const { config, warnings } = loadConfig(ctx.configFile);
    ctx.config = config;
    return [
      ...(trust ? head : [r('config', 'ok', `${ctx.configFile} is valid, root's, and not writable by others`)]),
      ...warnings.map((w) => r('config', 'warn', w, 'remove the key or fix its name; conf/prologue.ini lists every key')),
    ];
  } catch (e) {
    if (!isVtorqueError(e)) throw e;
    if (e.problems.length === 0) return [...head, r('config', 'FAIL', e.message, 'start again from conf/prologue.ini')];
    return [...head, ...e.problems.map((p) => r('config', 'FAIL', `${p.where ? `${p.where}: ` : ''}${p.message}`, p.fix))];
  }
}

// Fails when a [tools] program is missing, not executable, or could be
// changed by anyone but root, through it or a directory above it (we run it
// as root). Its version is what `--version` says.
export async function checkTools(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  const out: CheckResult[] = [];
  const others = Object.entries(BATCH_TOOLS).filter(([sys]) => sys !== config.batch.system).flatMap(([, keys]) => keys);
  for (const key of Object.keys(SCHEMA.tools) as (keyof Config['tools'])[]) {
    if (others.includes(key)) continue;
    const path = config.tools[key];
    const where = `[tools] ${key} ${path}`;
    let st;
    try {
      st = statSync(path);
    } catch {
      out.push(r('tools', 'FAIL', `${where} does not exist`, `install it (${SCHEMA.tools[key].doc}), or set [tools] ${key} to where it is`));
      continue;
    }
    if (!st.isFile() || (st.mode & 0o111) === 0) {
      out.push(r('tools', 'FAIL', `${where} is not an executable file (mode ${mode(st.mode)})`, `chmod 0755 ${path}, or set [tools] ${key}`));
      continue;
    }
    const why = untrustedFile(path);
    if (why) {
      out.push(r('tools', 'FAIL', `${where}: ${why}; should be root's and writable only by root, as every directory above it, since the prologue runs it as root`, `chown root ${path} && chmod go-w ${path}, and the same for the directory it names that is not`));
      continue;
    }
    const v = await runTool(path, ['--version'], { timeout: Math.min(10, config.timeouts.tool) * 1000, toolKey: key, maxBuffer: 1024 * 1024 })
      .then((x) => firstLine(x.stdout) || firstLine(x.stderr), () => '');
    out.push(r('tools', 'ok', `${where}: ${v || 'present (no version from --version)'}`, undefined, { data: { key, path, version: v || null } }));
  }
  out.push(await checkGuards(config));
  return out;
}

// Every tool runs under setpriv --pdeathsig and timeout (tools/run.ts): fails
// when they cannot run a program that way (setpriv older than util-linux 2.33
// has no --pdeathsig), since then no tool runs at all.
async function checkGuards(config: Config): Promise<CheckResult> {
  const how = `${config.tools.setpriv} --pdeathsig TERM -- ${config.tools.timeout}`;
  try {
    await runTool('/bin/true', [], { timeout: Math.min(10, config.timeouts.tool) * 1000 });
    return r('tools', 'ok', `every tool runs under ${how}: it dies when the prologue dies, whoever kills it, and on its own deadline`);
  } catch (e) {
    return r('tools', 'FAIL', `no tool can run under ${how}: ${(e as Error).message}`,
      'install util-linux 2.33 or later (setpriv --pdeathsig) and coreutils (timeout), or set [tools] setpriv and [tools] timeout');
  }
}

// Fails when the libguestfs appliance cannot start within [timeouts] tool,
// with the accelerator the prologue would use ([guestfs] accel; auto takes
// the kvm check's probe, or probes now when that check was skipped).
export async function checkGuestfs(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  const { guestfsEnv, resolveAccel } = await import('../image/accel.js');
  const t0 = performance.now();
  const { accel, how } = await resolveAccel(config, ctx.signal);
  const probeMs = performance.now() - t0;
  const t1 = performance.now();
  try {
    await runTool(config.tools.guestfish, ['--ro', '-a', '/dev/null', 'run'], {
      timeout: config.timeouts.tool * 1000, toolKey: 'guestfish', env: guestfsEnv(config, accel), signal: ctx.signal,
    });
  } catch (e) {
    const why = e instanceof ToolError ? e.message : String(e);
    return [r('guestfs', 'FAIL', `libguestfs could not launch its appliance with ${accel.toUpperCase()} (${how}): ${why}`,
      `run LIBGUESTFS_BACKEND=direct${accel === 'tcg' ? ' LIBGUESTFS_BACKEND_SETTINGS=force_tcg' : ''} libguestfs-test-tool; a kernel in /boot that root cannot read, or a missing supermin appliance, are the usual causes${accel === 'kvm' ? '; or set [guestfs] accel = tcg' : ''}`,
      { ms: Math.round(performance.now() - t1) })];
  }
  const ms = performance.now() - t1;
  ctx.guestfsLaunch = { ms, accel };
  const shortHow = how === '[guestfs] accel' ? how : `[guestfs] accel = auto: ${accel === 'kvm' ? 'KVM booted a kernel' : 'KVM not shown to work'}${probeMs > 1000 ? `, probed in ${secs(probeMs)}` : ', see the kvm line'}`;
  return [r('guestfs', 'ok', `libguestfs launched with ${accel.toUpperCase()} in ${secs(ms)} (${shortHow}); a new image costs about one such launch (its check, which takes out its boot files too)`, undefined,
    { ms: Math.round(ms), data: { accel, how, launchMs: Math.round(ms), probeMs: Math.round(probeMs) } })];
}

/** One probe's line: ok when KVM booted the kernel, else why not; FAIL only when the config demands KVM from whom the probe speaks for. */
function kvmLine(config: Config, v: KvmVerdict, shape: ProbeShape, who: 'launch' | 'guestfs', hint?: string): CheckResult {
  const setting = who === 'launch' ? config.launch.accel : config.guestfs.accel;
  const key = who === 'launch' ? '[launch] accel' : '[guestfs] accel';
  const data = { kvm: v.accel === 'kvm', outcome: v.outcome, for: shape.label, args: shape.args, ms: v.ms === undefined ? null : Math.round(v.ms), kernel: v.kernel ?? null };
  const whom = who === 'launch' ? "jobs' VMs" : 'libguestfs';
  if (v.accel === 'kvm') {
    const uses = setting === 'tcg' ? `, but ${key} = tcg keeps ${whom} on TCG` : `: ${whom} use KVM`;
    return r('kvm', 'ok', `${shape.label}: ${v.how}${uses}`, undefined, { ...(v.ms !== undefined ? { ms: Math.round(v.ms) } : {}), data });
  }
  const fix = hint ?? (v.outcome === 'hangs'
    ? 'this /dev/kvm hangs guests (a nested one, usually): fix nested virtualisation on the host, or leave it: TCG works, and the timeouts line says what it needs'
    : v.outcome === 'unprobed' ? 'fix what the line says; doctor probes again at each run'
      : `boot the kernel by hand as ${config.launch.user} to see why: ${config.tools.qemu_system} ${shape.args.join(' ')} -m 256 -nodefaults -display none -no-reboot -serial stdio -kernel ${v.kernel ?? '/boot/vmlinuz-$(uname -r)'} -append "console=ttyS0 panic=-1 root=/dev/nonexistent"`);
  if (setting === 'kvm') {
    return r('kvm', 'FAIL', `${shape.label}: ${v.how}; yet ${key} = kvm runs ${whom} on it`, `set ${key} = auto (TCG where KVM does not work); ${fix}`, { data });
  }
  if (who === 'launch' && setting === 'auto' && !config.launch.allow_tcg && config.launch.start) {
    return r('kvm', 'FAIL', `${shape.label}: ${v.how}; with [launch] allow_tcg = false every VM job would be requeued (exit 2) and the node taken offline`, `set [launch] allow_tcg = true; ${fix}`, { data });
  }
  return r('kvm', 'warn', `${shape.label}: ${v.how}: ${whom} run under TCG${setting === 'tcg' ? ` (${key} = tcg)` : ''}`, fix, { data });
}

// qemu's abort on nested hosts that refuse the IA32_ARCH_CAPABILITIES MSR ("failed to set MSR 0x10a to 0x69").
const MSR_QUIRK = /MSR 0x10a\b/;
const QUIRK_CPU = 'host,-arch-capabilities';

// Warns when KVM was not shown to boot a kernel on this node: there is no
// usable /dev/kvm, qemu fails on it, or the kernel does not reach its panic
// line within the probe's time box (a nested /dev/kvm hangs guests); the VMs
// and libguestfs then run under TCG. Fails when the config demands KVM anyway
// ([launch] or [guestfs] accel = kvm, or [launch] allow_tcg = false). Probes
// afresh at each run (src/launch/kvm.ts), the VMs' qemu options and
// libguestfs's side by side, and renews the answers the prologue keeps. When
// -cpu host aborts on the IA32_ARCH_CAPABILITIES MSR (a nested-host quirk),
// it also boots the kernel with -cpu host,-arch-capabilities, and says
// whether [launch] extra_args with it would give the VMs KVM.
export async function checkKvm(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  const { GUESTFS_SHAPE, launchShape, probeKvm } = await import('../launch/kvm.js');
  const { resolveLaunchAccount } = await import('../launch/qemu.js');
  const decide = (setting: Config['launch']['accel'], v: KvmVerdict | undefined): Accel => (setting === 'auto' ? v?.accel ?? 'tcg' : setting);
  const demanded = config.launch.accel === 'kvm' || config.guestfs.accel === 'kvm' || (config.launch.accel === 'auto' && !config.launch.allow_tcg && config.launch.start);
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ctx.accel = { vms: decide(config.launch.accel, undefined), guestfs: decide(config.guestfs.accel, undefined) };
    return [r('kvm', demanded ? 'FAIL' : 'warn', `/dev/kvm is ${code === 'ENOENT' ? 'missing' : `not usable (${code})`}: libguestfs and VMs run under TCG, about 10 times slower${demanded ? ', which the config does not allow ([launch] or [guestfs] accel = kvm, or [launch] allow_tcg = false)' : ''}`,
      'enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd; for a nested node, enable nested virtualisation on its host', { data: { kvm: false } })];
  }
  if (config.launch.accel === 'tcg' && config.guestfs.accel === 'tcg') {
    ctx.accel = { vms: 'tcg', guestfs: 'tcg' };
    return [r('kvm', 'ok', 'KVM not probed: [launch] accel and [guestfs] accel are both tcg', undefined, { data: { kvm: null } })];
  }
  let accountP: ReturnType<typeof resolveLaunchAccount> | undefined;
  const account = () => (accountP ??= resolveLaunchAccount(config, ctx.signal));
  const vmsShape = launchShape(config);
  const [vms, fish] = await Promise.all([
    probeKvm(config, { shape: vmsShape, account, signal: ctx.signal, fresh: true }),
    config.guestfs.accel === 'tcg' ? undefined : probeKvm(config, { shape: GUESTFS_SHAPE, account, signal: ctx.signal, fresh: true }),
  ]);
  ctx.accel = { vms: decide(config.launch.accel, vms), guestfs: decide(config.guestfs.accel, fish) };
  let hint: string | undefined;
  // The shape's own -cpu is its 4th argument; another one after it is the admin's (extra_args).
  if (vms.outcome === 'fails' && MSR_QUIRK.test(vms.detail ?? '') && !vmsShape.args.slice(4).includes('-cpu')) {
    const quirk = { label: `VMs with -cpu ${QUIRK_CPU}`, args: [...vmsShape.args, '-cpu', QUIRK_CPU] };
    const q = await probeKvm(config, { shape: quirk, account, signal: ctx.signal, fresh: true });
    hint = q.accel === 'kvm'
      ? `set [launch] extra_args = -cpu ${QUIRK_CPU}: this (nested) host refuses the IA32_ARCH_CAPABILITIES MSR, and with that -cpu ${q.how}`
      : `this (nested) host refuses the IA32_ARCH_CAPABILITIES MSR, and -cpu ${QUIRK_CPU} does not help: ${q.how}; so leave it: TCG works, and the timeouts line says what it needs`;
  }
  const out = [kvmLine(config, vms, vmsShape, 'launch', hint)];
  if (fish) out.push(kvmLine(config, fish, GUESTFS_SHAPE, 'guestfs', fish.outcome === 'fails' && MSR_QUIRK.test(fish.detail ?? '') ? 'nothing to do: libguestfs chooses its own -cpu, and runs under TCG on this host' : undefined));
  return out;
}

/** The nearest directory at or above path that exists. */
function existingAbove(path: string): string {
  let p = dirname(resolve(path));
  while (!existsSync(p)) p = dirname(p);
  return p;
}

const SAFE_PLACE = 'a directory that only root can write all the way up, e.g. /run/vtorque/ramdisk for ramdisk_dir or /var/lib/vtorque for the others';

/** What doctor says of one [paths] directory. required: missing is a failure; onDemand: the prologue makes it when missing. */
function checkDirectory(what: string, dir: string, required: boolean, onDemand: boolean): CheckResult {
  let st: Stats | undefined;
  try {
    st = lstatSync(dir);
  } catch {
    st = undefined;
  }
  if (!st) {
    // Whoever creates a missing directory first owns it, and the prologue would then work in it as root.
    const squat = squattable(dir);
    if (squat) {
      return r('dirs', 'FAIL', `${what} ${dir} does not exist, and ${squat}: any user could create it first and own what the prologue puts there`,
        `set it to ${SAFE_PLACE}`);
    }
    const above = existingAbove(dir);
    const bad = untrustedPath(above);
    if (bad) return r('dirs', 'FAIL', `${what} ${dir} does not exist, and whoever creates it could: ${bad}`, `chown root:root and chmod 0755 ${above} and every directory above it, or set it to ${SAFE_PLACE}`);
    if (required) return r('dirs', 'FAIL', `${what} ${dir} does not exist`, `install -d -o root -g root -m 0755 ${dir} (install.sh does this)`);
    if (onDemand) return r('dirs', 'ok', `${what} ${dir} does not exist; made on demand (only root can create it there)`);
    return r('dirs', 'warn', `${what} ${dir} does not exist`, `install -d -o root -g root -m 0755 ${dir} (install.sh does this)`);
  }
  const bad = untrustedPath(dir) ?? (st.isDirectory() ? undefined : `${dir} is not a directory`);
  if (bad) return r('dirs', 'FAIL', `${what} ${dir}: ${bad}`, 'chown root:root and chmod 0755 it (and every directory above it), so only root can change what the prologue trusts');
  const squat = squattable(dir);
  if (squat) {
    return r('dirs', 'warn', `${what} ${dir} is root's now, but ${squat}: once it is gone (a reboot empties a tmpfs), any user could create it first`,
      `set it to ${SAFE_PLACE}`);
  }
  return r('dirs', 'ok', `${what} ${dir} is root-owned and not writable by others (${mode(st.mode)})`);
}

// Fails when the image pool is missing, or when any of pool, cache, job,
// ramdisk and log directories (or a directory above them) could be changed by
// anyone but root, or is missing where another user could create it first
// (under a world-writable directory such as /dev/shm or /tmp). Warns when one
// exists under such a directory (gone after a reboot, then anyone's), and when
// cache, job or log directory does not exist yet: the first VM job creates
// them, but install.sh should have. A missing ramdisk_dir under directories
// only root can write is made on demand (/run is emptied at boot).
export function checkDirectories(ctx: DoctorContext): CheckResult[] {
  const c = ctx.config!;
  const dirs: [string, string, boolean][] = [
    ['[paths] image_pool', c.paths.image_pool, true],
    ['[paths] cache_dir', c.paths.cache_dir, false],
    ['[paths] job_dir', c.paths.job_dir, false],
    ['[paths] ramdisk_dir', c.paths.ramdisk_dir, false],
  ];
  if (c.paths.log_file) dirs.push(['[paths] log_file directory', dirname(c.paths.log_file), false]);
  if (c.paths.shared_verdicts) dirs.push(['[paths] shared_verdicts', c.paths.shared_verdicts, true]);
  return dirs.map(([what, dir, required]) => checkDirectory(what, dir, required, what === '[paths] ramdisk_dir'));
}

/** Allocated bytes under dir, without following symlinks; stops counting at 100000 entries. */
function usage(dir: string): number {
  let total = 0;
  let seen = 0;
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      if (++seen > 100_000) return;
      const p = join(d, n);
      try {
        const st = lstatSync(p);
        total += st.blocks * 512;
        if (st.isDirectory()) walk(p);
      } catch {
        /* gone meanwhile */
      }
    }
  };
  walk(dir);
  return total;
}

// Fails when the cache filesystem has less free space than [cache] min_free.
// Warns when free space plus what the cache already holds is below [cache]
// max_size: the cache will evict long before it reaches max_size.
export function checkFreeSpace(ctx: DoctorContext): CheckResult[] {
  const c = ctx.config!;
  let dir = c.paths.cache_dir;
  while (!existsSync(dir)) dir = dirname(dir);
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  const used = existsSync(c.paths.cache_dir) ? usage(c.paths.cache_dir) : 0;
  const data = { dir, free, used, min_free: c.cache.min_free, max_size: c.cache.max_size };
  if (free < c.cache.min_free) {
    return [r('space', 'FAIL', `the cache filesystem (${dir}) has ${formatBytes(free, 'compact')} free; [cache] min_free is ${formatBytes(c.cache.min_free, 'compact')}`,
      'free space there, move [paths] cache_dir to a larger filesystem, or lower [cache] min_free', { data })];
  }
  if (free + used < c.cache.max_size) {
    return [r('space', 'warn', `the cache (${formatBytes(used, 'compact')} now) can grow to ${formatBytes(free + used, 'compact')} on ${dir}, less than [cache] max_size ${formatBytes(c.cache.max_size, 'compact')}: images are evicted sooner`,
      'lower [cache] max_size to what the filesystem holds, or move [paths] cache_dir', { data })];
  }
  return [r('space', 'ok', `the cache filesystem (${dir}) has ${formatBytes(free, 'compact')} free, the cache holds ${formatBytes(used, 'compact')}; min_free ${formatBytes(c.cache.min_free, 'compact')}, max_size ${formatBytes(c.cache.max_size, 'compact')}`, undefined, { data })];
}

export const HOOKS = ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel'] as const;

/** What a wrapper's exec line runs: exec [ENV -i NAME=VALUE...] NODE [--flag...] PROGRAM --config INI SUBCOMMAND "$@". */
export interface WrapperLine {
  /** The env that clears the environment, or undefined: node gets pbs_mom's whole environment. */
  env?: string;
  /** What env passes on: NAME=VALUE, or ${NAME+"NAME=$NAME"} (the variable when pbs_mom set it). */
  passes: string[];
  node: string;
  program: string;
  config: string;
  sub: string;
}

// The only variables a hook needs: what the prologue reads (src/torque/contract.ts) and a fixed LANG and PATH.
const PASSED = /^(?:LANG=[A-Za-z0-9_.@-]+|PATH=\/bin:\/usr\/bin|\$\{(PBS_[A-Z_]+)\+"\1=\$\1"\})$/;

/** Reads the exec line install.sh writes (continuation lines joined); undefined when there is none of that shape. */
export function parseWrapper(text: string): WrapperLine | undefined {
  const line = text.replace(/\\\n/g, ' ').split('\n').find((l) => /^\s*exec\s/.test(l));
  if (!line) return undefined;
  const w = line.trim().split(/\s+/);
  let i = 1;
  let env: string | undefined;
  const passes: string[] = [];
  if (w[i]?.endsWith('/env') && w[i + 1] === '-i') {
    env = w[i];
    i += 2;
    while (w[i] !== undefined && !w[i]!.startsWith('/')) passes.push(w[i++]!);
  }
  const node = w[i++];
  while (w[i]?.startsWith('--') && w[i] !== '--config') i++;
  const [program, flag, config, sub, all, ...rest] = w.slice(i);
  if (!node?.startsWith('/') || !program?.startsWith('/') || flag !== '--config' || !config || !sub || all !== '"$@"' || rest.length > 0) return undefined;
  return { ...(env ? { env } : {}), passes, node, program, config, sub };
}

/**
 * The files node loads to run the program at bin (<prefix>/bin/vtorque-prologue):
 * the script, its package.json, the bundles in <prefix>/dist, and
 * <prefix>/node_modules if there is one; each with the directory holding it.
 */
function programFiles(bin: string): string[] {
  const prefix = dirname(dirname(bin));
  const files = [bin];
  const pkg = join(dirname(bin), 'package.json');
  if (existsSync(pkg)) files.push(pkg);
  const dist = join(prefix, 'dist');
  try {
    files.push(dist, ...readdirSync(dist).filter((n) => n.endsWith('.cjs')).sort().map((n) => join(dist, n)));
  } catch {
    /* no dist: the program is judged by what it has */
  }
  return files;
}

/** Why an entry below node_modules could be changed by others, or undefined; stops at 100000 entries. */
function untrustedTree(dir: string): string | undefined {
  let seen = 0;
  const walk = (d: string, dst: Stats): string | undefined => {
    for (const n of readdirSync(d)) {
      if (++seen > 100_000) return undefined;
      const p = join(d, n);
      const st = lstatSync(p);
      // A symlink in a directory only root can write stays as root made it; it needs to be root's only for the sticky rule.
      const why = untrustedEntry(d, dst, st) ?? (st.isSymbolicLink() ? (st.uid === 0 ? undefined : `${p} is a symlink owned by uid ${st.uid}`) : untrustedEntry(p, st));
      if (why) return why;
      if (st.isDirectory()) {
        const deeper = walk(p, st);
        if (deeper) return deeper;
      }
    }
    return undefined;
  };
  return walk(dir, lstatSync(dir));
}

/** Why node, the program or its ini could be changed by someone but root, or undefined. */
function untrustedProgram(program: string): string | undefined {
  for (const f of programFiles(program)) {
    const why = untrustedFile(f);
    if (why) return why;
  }
  const modules = join(dirname(dirname(program)), 'node_modules');
  return existsSync(modules) ? untrustedResolved(modules) ?? untrustedTree(modules) : undefined;
}

const ROOT_ONLY_FIX = 'make it root-owned and writable only by root (chown root:root; chmod go-w), and every directory above it, then run install.sh again';

/** One result for each distinct env, node, program and ini the hooks run or read as root, under check (mom_priv, slurm). */
export function checkWhatHooksRun(ctx: DoctorContext, wrappers: readonly WrapperLine[], check = 'mom_priv'): CheckResult[] {
  const uniq = (xs: readonly (string | undefined)[]) => [...new Set(xs.filter((x): x is string => x !== undefined))];
  const out: CheckResult[] = [];
  for (const [what, paths] of [['env', uniq(wrappers.map((w) => w.env))], ['node', uniq(wrappers.map((w) => w.node))]] as const) {
    for (const path of paths) {
      const why = untrustedFile(path);
      if (why) out.push(r(check, 'FAIL', `${what} ${path}, which the hooks run as root: ${why}`, `${ROOT_ONLY_FIX}${what === 'node' ? ', with a root-owned Node.js first on its PATH' : ''}`));
    }
  }
  for (const program of uniq(wrappers.map((w) => w.program))) {
    const why = untrustedProgram(program);
    if (why) out.push(r(check, 'FAIL', `the program ${program}, which the hooks run as root: ${why}`, `${ROOT_ONLY_FIX} (it installs the program root-owned)`));
  }
  for (const ini of uniq(wrappers.map((w) => w.config)).filter((f) => resolve(f) !== resolve(ctx.configFile))) {
    const t = iniTrust(check, ini);
    if (t) out.push(t);
  }
  if (out.length === 0 && wrappers.length > 0) {
    out.push(r(check, 'ok', `${uniq(wrappers.map((w) => w.node)).join(', ')} and the program in ${uniq(wrappers.map((w) => dirname(dirname(w.program)))).join(', ')} are root's, as is every directory above them`));
  }
  return out;
}

// Fails when a mom_priv hook is missing, is not a root-owned 0500 regular
// file, or does not run vtorque-prologue's subcommand of the same name with
// an existing node and program; when a chained <hook>.orig is not root's;
// when the node, env or program files it runs, or a directory above them,
// are not root's alone. Warns when the hook hands node pbs_mom's whole
// environment (a NODE_OPTIONS there loads code into the root prologue), or
// reads another ini than the one doctor checked.
export function checkMomPriv(ctx: DoctorContext): CheckResult[] {
  const c = ctx.config!;
  const mom = join(c.paths.torque_home, 'mom_priv');
  if (!existsSync(mom)) {
    return [r('mom_priv', 'FAIL', `${mom} does not exist`, 'set [paths] torque_home to TORQUE_HOME, or run install.sh --torque-home DIR')];
  }
  const out: CheckResult[] = [];
  const bad = untrustedPath(mom);
  if (bad) out.push(r('mom_priv', 'FAIL', `${mom}: ${bad}`, `chown root:root ${mom} && chmod 0751 ${mom}`));
  const wrappers: WrapperLine[] = [];
  for (const h of HOOKS) {
    const path = join(mom, h);
    const sub = h.replace('.', '-');
    let st;
    try {
      st = lstatSync(path);
    } catch {
      out.push(r('mom_priv', 'FAIL', `${path} is missing; pbs_mom will not run vtorque-prologue ${sub}`, 'run install.sh'));
      continue;
    }
    if (!st.isFile()) {
      out.push(r('mom_priv', 'FAIL', `${path} is not a regular file`, 'run install.sh, which writes a wrapper there'));
      continue;
    }
    if (st.uid !== 0 || (st.mode & 0o7777) !== 0o500) {
      out.push(r('mom_priv', 'FAIL', `${path} is owned by uid ${st.uid} with mode ${mode(st.mode)}; should be root-owned, mode 0500, as pbs_mom requires`, `chown root:root ${path} && chmod 0500 ${path}`));
      continue;
    }
    const w = parseWrapper(readFileSync(path, 'utf8'));
    if (!w || w.sub !== sub || !w.program.endsWith('/vtorque-prologue')) {
      out.push(r('mom_priv', 'FAIL', `${path} does not run vtorque-prologue ${sub}`, 'run install.sh; it keeps the script that is there as .orig and runs it first'));
      continue;
    }
    const missing = [w.env, w.node, w.program].find((f) => f !== undefined && !existsSync(f));
    if (missing) {
      out.push(r('mom_priv', 'FAIL', `${path} runs ${missing}, which does not exist`, 'run install.sh again, e.g. after moving Node.js or the program'));
      continue;
    }
    wrappers.push(w);
    if (existsSync(`${path}.orig`)) {
      const o = lstatSync(`${path}.orig`);
      if (!o.isFile() || o.uid !== 0 || o.mode & 0o022) {
        out.push(r('mom_priv', 'FAIL', `${path}.orig, run first by the wrapper, is owned by uid ${o.uid} with mode ${mode(o.mode)}; should be root's and writable only by root`, `chown root:root ${path}.orig && chmod 0500 ${path}.orig`));
        continue;
      }
    }
    const extra = w.passes.filter((p) => !PASSED.test(p));
    if (!w.env || extra.length > 0) {
      out.push(r('mom_priv', 'warn', `${path} hands node ${w.env ? `more than LANG, PATH and PBS_*: ${extra.join(' ')}` : "pbs_mom's whole environment"}; a NODE_OPTIONS there would load code into the prologue as root`,
        'run install.sh again: its wrappers start node through env -i with only what the prologue reads'));
      continue;
    }
    if (resolve(w.config) !== resolve(ctx.configFile)) {
      out.push(r('mom_priv', 'warn', `${path} uses --config ${w.config}, not ${ctx.configFile} that doctor checked`, `run: vtorque-prologue --config ${w.config} doctor`));
      continue;
    }
    out.push(r('mom_priv', 'ok', `${path} runs vtorque-prologue ${sub} (root, 0500, clean environment${existsSync(`${path}.orig`) ? `, after ${h}.orig` : ''})`));
  }
  return [...out, ...checkWhatHooksRun(ctx, wrappers)];
}

// Fails when qstat cannot reach pbs_server (qstat -B), or pbsnodes cannot, or
// does not know this node. Each line names the [tools] path it ran, so an
// admin sees which Torque install.sh found. Warns when the node is offline, saying whose note
// it carries: ours is cleared by doctor --clear, an operator's never.
export async function checkTorque(ctx: DoctorContext): Promise<CheckResult[]> {
  const c = ctx.config!;
  const out: CheckResult[] = [];
  const t0 = performance.now();
  try {
    await runTool(c.tools.qstat, ['-B'], { timeout: c.timeouts.qstat * 1000, toolKey: 'qstat', maxBuffer: 1024 * 1024 });
    out.push(r('torque', 'ok', `${c.tools.qstat} -B reaches pbs_server (${Math.round(performance.now() - t0)} ms)`, undefined, { data: { qstat: c.tools.qstat } }));
  } catch (e) {
    out.push(r('torque', 'FAIL', `${c.tools.qstat} -B fails: ${(e as Error).message}`, `check [tools] qstat, ${c.paths.torque_home}/server_name, and that pbs_server runs and accepts this host`));
  }
  const p = await import('../torque/pbsnodes.js');
  const s = p.pbsnodesSettings(c);
  try {
    const n = await p.readNode(s);
    const data = { pbsnodes: c.tools.pbsnodes, node: n.node, state: n.state, note: n.note };
    const pbsnodes = c.tools.pbsnodes;
    if (!p.isOffline(n)) out.push(r('torque', 'ok', `${pbsnodes}: node ${n.node} is ${n.state}${n.note ? ` (note: ${n.note})` : ''}`, undefined, { data }));
    else if (p.isOurNote(n.note)) out.push(r('torque', 'warn', `${pbsnodes}: node ${n.node} is ${n.state}, taken out by vtorque: ${n.note}`, 'fix the cause, then run: vtorque-prologue doctor --clear', { data }));
    else out.push(r('torque', 'warn', `${pbsnodes}: node ${n.node} is ${n.state}${n.note ? `, with an operator's note: ${n.note}` : ' without a note (taken out by hand)'}`, `an operator's offline is theirs to end (pbsnodes -c ${n.node}); doctor --clear leaves it alone`, { data }));
  } catch (e) {
    out.push(r('torque', 'FAIL', `${c.tools.pbsnodes} -l -n all ${s.node} fails: ${(e as Error).message}`, "check [tools] pbsnodes, that pbs_server accepts this host as an operator, and [torque] node_name"));
  }
  return out;
}
