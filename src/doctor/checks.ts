// The node checks of `doctor`, one named function each, in the manner of LBNL
// NHC: each says what it looked at, what it found, what it should be, and how
// to fix it, in one line. The comment above each says what makes it fail.
import { accessSync, constants, existsSync, lstatSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadConfig } from '../config/load.js';
import { SCHEMA, type Config } from '../config/schema.js';
import { isVtorqueError } from '../torque/exit.js';
import { runTool, ToolError } from '../tools/run.js';

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
}

export const CHECK_IDS = ['config', 'tools', 'guestfs', 'kvm', 'dirs', 'space', 'mom_priv', 'torque'] as const;
export type CheckId = (typeof CHECK_IDS)[number];

const r = (check: string, status: Status, message: string, fix?: string, extra: Partial<CheckResult> = {}): CheckResult => ({ check, status, message, ...(fix ? { fix } : {}), ...extra });
const mode = (m: number) => (m & 0o7777).toString(8).padStart(4, '0');
const firstLine = (s: string) => s.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function human(bytes: number): string {
  const units = ['B', 'K', 'M', 'G', 'T', 'P'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)}${units[i]}`;
}

// Fails when the ini cannot be read, is not an ini, or any key has a value
// outside what the schema allows. Unknown keys are warnings, as in the prologue.
export function checkConfig(ctx: DoctorContext): CheckResult[] {
  try {
    const { config, warnings } = loadConfig(ctx.configFile);
    ctx.config = config;
    return [
      r('config', 'ok', `${ctx.configFile} is valid`),
      ...warnings.map((w) => r('config', 'warn', w, 'remove the key or fix its name; conf/prologue.ini lists every key')),
    ];
  } catch (e) {
    if (!isVtorqueError(e)) throw e;
    if (e.problems.length === 0) return [r('config', 'FAIL', e.message, 'start again from conf/prologue.ini')];
    return e.problems.map((p) => r('config', 'FAIL', `${p.where ? `${p.where}: ` : ''}${p.message}`, p.fix));
  }
}

// Fails when a [tools] program is missing, not executable, or writable by
// anyone but root (we run it as root). Its version is what `--version` says.
export async function checkTools(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  const out: CheckResult[] = [];
  for (const key of Object.keys(SCHEMA.tools) as (keyof Config['tools'])[]) {
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
    if (st.uid !== 0 || st.mode & 0o022) {
      out.push(r('tools', 'FAIL', `${where} is owned by uid ${st.uid} with mode ${mode(st.mode)}; should be root-owned and writable only by root, since the prologue runs it as root`, `chown root ${path} && chmod go-w ${path}`));
      continue;
    }
    const v = await runTool(path, ['--version'], { timeout: Math.min(10, config.timeouts.tool) * 1000, toolKey: key, maxBuffer: 1024 * 1024 })
      .then((x) => firstLine(x.stdout) || firstLine(x.stderr), () => '');
    out.push(r('tools', 'ok', `${where}: ${v || 'present (no version from --version)'}`, undefined, { data: { key, path, version: v || null } }));
  }
  return out;
}

function guestfsEnv(config: Config, accel: 'kvm' | 'tcg'): Record<string, string> {
  const env: Record<string, string> = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_MEMSIZE: String(config.guestfs.memsize), HOME: '/root' };
  if (accel === 'tcg') env.LIBGUESTFS_BACKEND_SETTINGS = 'force_tcg';
  return env;
}

// Fails when the libguestfs appliance cannot start within [timeouts] tool,
// with the accelerator the prologue would use ([guestfs] accel; auto probes
// KVM once, up to 90 s, and remembers the answer in <cache_dir>/accel.json).
export async function checkGuestfs(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  const { resolveAccel } = await import('../image/accel.js');
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
  const slow = accel === 'tcg' ? '; each new image costs one such launch' : '';
  return [r('guestfs', 'ok', `libguestfs launched with ${accel.toUpperCase()} in ${secs(ms)} (${how}${probeMs > 1000 ? `, KVM probe ${secs(probeMs)}` : ''})${slow}`, undefined,
    { ms: Math.round(ms), data: { accel, how, launchMs: Math.round(ms), probeMs: Math.round(probeMs) } })];
}

/** Starts qemu paused with KVM and this -cpu, and quits it: init (where a bad MSR aborts) is all it does. */
async function qemuStarts(config: Config, cpu: string, signal?: AbortSignal): Promise<{ ok: true } | { ok: false; why: string }> {
  try {
    await runTool(config.tools.qemu_system, ['-machine', 'accel=kvm', '-cpu', cpu, '-m', '64', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'none', '-S', '-monitor', 'stdio'], {
      // The monitor reads "quit" only once init is done, so exit 0 means init passed.
      input: 'quit\n', timeout: 20_000, toolKey: 'qemu_system', signal, maxBuffer: 1024 * 1024,
    });
    return { ok: true };
  } catch (e) {
    const t = e as ToolError;
    // The first error line says it ("failed to set MSR 0x10a to 0x69"); the assertion after it adds nothing.
    const err = (t.stderrHead ?? '').split(' | ').map((l) => l.replace(/^\(qemu\)\s*/, '').replace(/^\S*qemu-system-\S+: (error: )?/, '')).find((l) => l !== '' && !/^QEMU .* monitor/.test(l));
    return { ok: false, why: err ?? t.message };
  }
}

// Fails when /dev/kvm exists but qemu cannot start a KVM machine with either
// `-cpu host` or `-cpu host,-arch-capabilities`. Warns when there is no
// /dev/kvm (everything runs, slowly, under TCG) or when only the second works:
// nested hosts that refuse the IA32_ARCH_CAPABILITIES MSR make plain
// `-cpu host` abort, so whatever starts the VMs must pass the quirk.
export async function checkKvm(ctx: DoctorContext): Promise<CheckResult[]> {
  const config = ctx.config!;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return [r('kvm', 'warn', `/dev/kvm is ${code === 'ENOENT' ? 'missing' : `not usable (${code})`}: libguestfs and VMs run under TCG, about 10 times slower`,
      'enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd; for a nested node, enable nested virtualisation on its host', { data: { kvm: false } })];
  }
  const t0 = performance.now();
  const plain = await qemuStarts(config, 'host', ctx.signal);
  if (plain.ok) {
    return [r('kvm', 'ok', `KVM works with -cpu host (${secs(performance.now() - t0)})`, undefined, { data: { kvm: true, cpu: 'host' } })];
  }
  const quirk = await qemuStarts(config, 'host,-arch-capabilities', ctx.signal);
  if (quirk.ok) {
    return [r('kvm', 'warn', `KVM works only with -cpu host,-arch-capabilities; plain -cpu host aborts (${plain.why})`,
      'start VMs with -cpu host,-arch-capabilities: this (nested) host refuses the IA32_ARCH_CAPABILITIES MSR; a newer host kernel or hypervisor usually fixes it',
      { data: { kvm: true, cpu: 'host,-arch-capabilities', plainCpuHost: plain.why } })];
  }
  return [r('kvm', 'FAIL', `/dev/kvm exists but qemu cannot start a KVM machine: ${plain.why}`,
    `run ${config.tools.qemu_system} -machine accel=kvm -cpu host -nodefaults -display none -S by hand; check dmesg for kvm errors, or set [guestfs] accel = tcg`,
    { data: { kvm: false, plainCpuHost: plain.why, quirkCpu: quirk.why } })];
}

/**
 * Why a directory is unsafe for root to trust, or undefined: someone other
 * than root could replace it or what is in it, through it or any directory
 * above it. A sticky directory (/tmp) only lets owners rename their own
 * entries, so a root-owned entry in it is safe.
 */
function unsafeDir(path: string): string | undefined {
  let p = resolve(path);
  let child: { uid: number } | undefined;
  for (;;) {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return `${p} is a symlink; should be a directory`;
    if (!st.isDirectory()) return `${p} is not a directory`;
    if (st.uid !== 0) return `${p} is owned by uid ${st.uid}; should be owned by root`;
    const sticky = (st.mode & 0o1000) !== 0 && child?.uid === 0;
    if (st.mode & 0o022 && !sticky) return `${p} has mode ${mode(st.mode)}, writable by ${st.mode & 0o020 ? 'group' : 'others'}; should be 0755 or stricter`;
    if (p === '/') return undefined;
    child = st;
    p = dirname(p);
  }
}

// Fails when the image pool is missing, or when any of pool, cache, job and
// log directories (or a directory above them) could be changed by anyone but
// root. Warns when cache, job or log directory does not exist yet: the first
// VM job creates them, but install.sh should have.
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
  const out: CheckResult[] = [];
  for (const [what, dir, required] of dirs) {
    if (!existsSync(dir)) {
      const isRam = what.includes('ramdisk');
      out.push(r('dirs', required ? 'FAIL' : isRam ? 'ok' : 'warn', `${what} ${dir} does not exist${isRam ? '; made when a job asks for fs_type=ramdisk' : ''}`,
        isRam ? undefined : `install -d -o root -g root -m 0755 ${dir} (install.sh does this)`));
      continue;
    }
    const bad = unsafeDir(dir);
    if (bad) out.push(r('dirs', 'FAIL', `${what} ${dir}: ${bad}`, 'chown root:root and chmod 0755 it (and every directory above it), so only root can change what the prologue trusts'));
    else out.push(r('dirs', 'ok', `${what} ${dir} is root-owned and not writable by others (${mode(statSync(dir).mode)})`));
  }
  return out;
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
    return [r('space', 'FAIL', `the cache filesystem (${dir}) has ${human(free)} free; [cache] min_free is ${human(c.cache.min_free)}`,
      'free space there, move [paths] cache_dir to a larger filesystem, or lower [cache] min_free', { data })];
  }
  if (free + used < c.cache.max_size) {
    return [r('space', 'warn', `the cache (${human(used)} now) can grow to ${human(free + used)} on ${dir}, less than [cache] max_size ${human(c.cache.max_size)}: images are evicted sooner`,
      'lower [cache] max_size to what the filesystem holds, or move [paths] cache_dir', { data })];
  }
  return [r('space', 'ok', `the cache filesystem (${dir}) has ${human(free)} free, the cache holds ${human(used)}; min_free ${human(c.cache.min_free)}, max_size ${human(c.cache.max_size)}`, undefined, { data })];
}

export const HOOKS = ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel'] as const;
const WRAPPER = /^exec\s+(\S+)\s+(\S+)\s+--config\s+(\S+)\s+(\S+)\s+"\$@"\s*$/m;

// Fails when a mom_priv hook is missing, is not a root-owned 0500 regular
// file, or does not run vtorque-prologue's subcommand of the same name with
// an existing node and program; when a chained <hook>.orig is not root's; or
// when the hook reads another ini than the one doctor checked (a warning).
export function checkMomPriv(ctx: DoctorContext): CheckResult[] {
  const c = ctx.config!;
  const mom = join(c.paths.torque_home, 'mom_priv');
  if (!existsSync(mom)) {
    return [r('mom_priv', 'FAIL', `${mom} does not exist`, 'set [paths] torque_home to TORQUE_HOME, or run install.sh --torque-home DIR')];
  }
  const out: CheckResult[] = [];
  const bad = unsafeDir(mom);
  if (bad) out.push(r('mom_priv', 'FAIL', `${mom}: ${bad}`, `chown root:root ${mom} && chmod 0751 ${mom}`));
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
    const text = readFileSync(path, 'utf8');
    const m = WRAPPER.exec(text);
    if (!m || m[4] !== sub || !m[2]!.endsWith('vtorque-prologue')) {
      out.push(r('mom_priv', 'FAIL', `${path} does not run vtorque-prologue ${sub}`, 'run install.sh; it keeps the script that is there as .orig and runs it first'));
      continue;
    }
    const [, node, bin, conf] = m as unknown as [string, string, string, string];
    const missing = [node, bin].find((f) => !existsSync(f));
    if (missing) {
      out.push(r('mom_priv', 'FAIL', `${path} runs ${missing}, which does not exist`, 'run install.sh again, e.g. after moving Node.js or the program'));
      continue;
    }
    if (existsSync(`${path}.orig`)) {
      const o = lstatSync(`${path}.orig`);
      if (!o.isFile() || o.uid !== 0 || o.mode & 0o022) {
        out.push(r('mom_priv', 'FAIL', `${path}.orig, run first by the wrapper, is owned by uid ${o.uid} with mode ${mode(o.mode)}; should be root's and writable only by root`, `chown root:root ${path}.orig && chmod 0500 ${path}.orig`));
        continue;
      }
    }
    if (resolve(conf) !== resolve(ctx.configFile)) {
      out.push(r('mom_priv', 'warn', `${path} uses --config ${conf}, not ${ctx.configFile} that doctor checked`, `run: vtorque-prologue --config ${conf} doctor`));
      continue;
    }
    out.push(r('mom_priv', 'ok', `${path} runs vtorque-prologue ${sub} (root, 0500${existsSync(`${path}.orig`) ? `, after ${h}.orig` : ''})`));
  }
  return out;
}

// Fails when qstat cannot reach pbs_server (qstat -B), or pbsnodes cannot, or
// does not know this node. Warns when the node is offline, saying whose note
// it carries: ours is cleared by doctor --clear, an operator's never.
export async function checkTorque(ctx: DoctorContext): Promise<CheckResult[]> {
  const c = ctx.config!;
  const out: CheckResult[] = [];
  const t0 = performance.now();
  try {
    await runTool(c.tools.qstat, ['-B'], { timeout: c.timeouts.qstat * 1000, toolKey: 'qstat', maxBuffer: 1024 * 1024 });
    out.push(r('torque', 'ok', `qstat -B reaches pbs_server (${Math.round(performance.now() - t0)} ms)`));
  } catch (e) {
    out.push(r('torque', 'FAIL', `qstat -B fails: ${(e as Error).message}`, `check [tools] qstat, ${c.paths.torque_home}/server_name, and that pbs_server runs and accepts this host`));
  }
  const p = await import('../torque/pbsnodes.js');
  const s = p.pbsnodesSettings(c);
  try {
    const n = await p.readNode(s);
    const data = { node: n.node, state: n.state, note: n.note };
    if (!p.isOffline(n)) out.push(r('torque', 'ok', `pbsnodes: node ${n.node} is ${n.state}${n.note ? ` (note: ${n.note})` : ''}`, undefined, { data }));
    else if (p.isOurNote(n.note)) out.push(r('torque', 'warn', `pbsnodes: node ${n.node} is ${n.state}, taken out by vtorque: ${n.note}`, 'fix the cause, then run: vtorque-prologue doctor --clear', { data }));
    else out.push(r('torque', 'warn', `pbsnodes: node ${n.node} is ${n.state}${n.note ? `, with an operator's note: ${n.note}` : ' without a note (taken out by hand)'}`, `an operator's offline is theirs to end (pbsnodes -c ${n.node}); doctor --clear leaves it alone`, { data }));
  } catch (e) {
    out.push(r('torque', 'FAIL', `pbsnodes -l -n all ${s.node} fails: ${(e as Error).message}`, "check [tools] pbsnodes, that pbs_server accepts this host as an operator, and [torque] node_name"));
  }
  return out;
}
