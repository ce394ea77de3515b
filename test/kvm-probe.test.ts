// The one KVM probe (src/launch/kvm.ts) behind [launch] accel = auto,
// [guestfs] accel = auto and doctor: KVM is used only when it booted a real
// kernel, this node's, to its panic line within the time box; the answer is
// kept per kernel release, qemu binary and qemu options, and only when it came
// from a finished look. Real qemu, real setpriv, the launch account, and this
// machine's nested /dev/kvm, which hangs guest kernels.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, chownSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { isNodeFault } from '../src/core/errors.js';
import { resolveAccel } from '../src/image/accel.js';
import { GUESTFS_SHAPE, PROBE_SECONDS, launchAccel, launchShape, memoisedKvm, probeKernel, probeKvm, type ProbeShape } from '../src/launch/kvm.js';
import { resolveLaunchAccount } from '../src/launch/qemu.js';
import { ToolError } from '../src/tools/run.js';
import { ensureLaunchUser, LAUNCH_NAME } from './harness/launch-user.js';
import { NOBODY } from './harness/mom.js';

t.setTimeout(900_000);
const LAUNCH = ensureLaunchUser();
// As install.sh does (usermod -aG kvm): the probe runs as the account, which must open /dev/kvm.
if (spawnSync('getent', ['group', 'kvm']).status === 0 && !spawnSync('id', ['-nG', LAUNCH_NAME], { encoding: 'utf8' }).stdout.split(/\s+/).includes('kvm')) {
  spawnSync('gpasswd', ['-a', LAUNCH_NAME, 'kvm']);
}
const QEMU = '/usr/bin/qemu-system-x86_64';
// The quirk this nested host needs for qemu to start a KVM guest at all (doctor's hint); the guest then hangs.
const QUIRK = '-cpu host,-arch-capabilities';

function node(ini = ''): ReturnType<typeof parseConfig>['config'] {
  const root = mkdtempSync(join(tmpdir(), 'vt-kvm-'));
  chmodSync(root, 0o755);
  return parseConfig(`[paths]\ncache_dir = ${root}/cache\n${ini}`, 'test.ini').config;
}

const account = (config: ReturnType<typeof node>) => () => resolveLaunchAccount(config);
const memoFiles = (config: ReturnType<typeof node>) => (existsSync(config.paths.cache_dir) ? readdirSync(config.paths.cache_dir).filter((n) => /^kvm-probe-[0-9a-f]+\.json$/.test(n)) : []);

/** qemus of the launch account still booting a probe kernel. */
function probeQemus(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      const uid = Number(/^Uid:\s+([0-9]+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
      if (uid === LAUNCH.uid && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('root=/dev/nonexistent')) out.push(Number(p));
    } catch { /* gone */ }
  }
  return out;
}

/** The probe qemus still there after up to 5 s: a killed one may linger a moment as its group dies. */
async function probeQemusLeft(): Promise<number[]> {
  for (let i = 0; i < 50 && probeQemus().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  return probeQemus();
}

/**
 * What this machine's KVM does with the same kernel, found without our code:
 * qemu as root, twice the probe's time box. 'boots' or 'hangs' (or 'fails').
 */
function groundTruth(kernel: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const q = spawn(QEMU, [...args, '-m', '256', '-nodefaults', '-display', 'none', '-no-reboot', '-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 root=/dev/nonexistent'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    q.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    const timer = setTimeout(() => q.kill('SIGKILL'), 2 * PROBE_SECONDS * 1000);
    q.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve(/Kernel panic - not syncing/.test(out) ? 'boots' : signal === 'SIGKILL' ? 'hangs' : `fails (exit ${code})`);
    });
  });
}

t.test("the probe boots this node's kernel: under TCG it reaches the panic line, as the launch account, with a kernel /boot keeps root's alone", async (t) => {
  const k = probeKernel();
  if ('why' in k) throw new Error(k.why);
  // A /boot whose kernel the launch account cannot read (Ubuntu keeps them 0600): root copies it for the probe.
  const boot = mkdtempSync(join(tmpdir(), 'vt-boot-'));
  chmodSync(boot, 0o755);
  const staged = join(boot, `vmlinuz-${release()}`);
  copyFileSync(k.path, staged);
  chmodSync(staged, 0o600);
  const config = node();
  const tcg: ProbeShape = { label: 'TCG', args: ['-machine', 'q35,accel=tcg'] };
  const v = await probeKvm(config, { shape: tcg, account: account(config), bootDir: boot, timeoutMs: 300_000 });
  t.comment(`TCG boot of ${k.path} to its panic line: ${((v.ms ?? 0) / 1000).toFixed(1)} s (the time box is ${PROBE_SECONDS} s)`);
  t.equal(v.outcome, 'boots', v.how);
  t.equal(v.kernel, staged, 'the staged kernel, named as it is in /boot');
  const copy = statSync(join(config.paths.cache_dir, 'kvm-probe-vmlinuz'));
  t.same([copy.uid, copy.mode & 0o777], [0, 0o644], "qemu read root's copy of it, 0644 in the cache directory");
  t.equal(memoFiles(config).length, 1, 'a finished look is kept');
  t.same(await probeQemusLeft(), [], 'no probe qemu left running');
});

t.test("this node's kernel: the running release in /boot, else the newest root-owned vmlinuz-*, never a symlink or another user's file", async (t) => {
  const boot = mkdtempSync(join(tmpdir(), 'vt-boot-'));
  for (const v of ['6.1.0-9-amd64', '6.1.0-10-amd64', '5.10.0-30-amd64', '0-rescue-abc']) writeFileSync(join(boot, `vmlinuz-${v}`), 'kernel');
  writeFileSync(join(boot, 'vmlinuz-9.9.9'), 'kernel');
  chownSync(join(boot, 'vmlinuz-9.9.9'), NOBODY.uid, NOBODY.gid);
  symlinkSync(join(boot, 'vmlinuz-6.1.0-9-amd64'), join(boot, 'vmlinuz-9.9.10'));
  t.same(probeKernel(boot), { path: join(boot, 'vmlinuz-6.1.0-10-amd64') }, 'the newest, by version');
  writeFileSync(join(boot, `vmlinuz-${release()}`), 'kernel');
  t.same(probeKernel(boot), { path: join(boot, `vmlinuz-${release()}`) }, 'the running one first');
  const empty = mkdtempSync(join(tmpdir(), 'vt-boot-'));
  t.match(probeKernel(empty), { why: /no kernel to boot/ });
});

t.test('on a KVM that does not boot the kernel (this nested /dev/kvm), the probe answers tcg when its box runs out, keeps that, and leaves no qemu', async (t) => {
  const k = probeKernel();
  if ('why' in k) throw new Error(k.why);
  const config = node(`[launch]\nextra_args = ${QUIRK}\n`);
  const shape = launchShape(config);
  const [truth, v] = await Promise.all([groundTruth(k.path, shape.args), probeKvm(config, { shape, account: account(config) })]);
  t.comment(`KVM, by a boot of our own: ${truth}; the probe: ${v.outcome} after ${((v.ms ?? 0) / 1000).toFixed(1)} s: ${v.how}`);
  t.equal(truth, 'hangs', 'this machine: its nested KVM hangs the kernel (if this fails, the machine changed, not the code)');
  t.equal(v.accel, 'tcg', 'not shown to work: TCG');
  t.equal(v.outcome, 'hangs', 'the probe\'s own time box ran out');
  t.match(v.how, new RegExp(`did not boot \\S+ to its panic line within ${PROBE_SECONDS} s`));
  t.same(await probeQemusLeft(), [], 'no probe qemu left running');

  const kept = memoisedKvm(config, shape);
  t.match(kept, { accel: 'tcg', outcome: 'hangs' }, 'the answer is kept: the next job does not spend the box again');
  // The next prologue (another process) takes the kept answer.
  const next = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const { parseConfig } = await import(${JSON.stringify(new URL('../src/config/load.js', import.meta.url).href)});
    const { launchAccel } = await import(${JSON.stringify(new URL('../src/launch/kvm.js', import.meta.url).href)});
    const { resolveLaunchAccount } = await import(${JSON.stringify(new URL('../src/launch/qemu.js', import.meta.url).href)});
    const config = parseConfig(process.argv[1], 'x').config;
    console.log(JSON.stringify(await launchAccel(config, await resolveLaunchAccount(config))));`,
  `[paths]\ncache_dir = ${config.paths.cache_dir}\n[launch]\nextra_args = ${QUIRK}\n`], { encoding: 'utf8', timeout: 60_000 });
  const a = JSON.parse(next.stdout || '{}') as { accel?: string; how?: string };
  t.equal(a.accel, 'tcg', next.stderr);
  t.match(a.how, /kvm-probe-[0-9a-f]+\.json/, 'from the kept answer');
  const strict = parseConfig(`[paths]\ncache_dir = ${config.paths.cache_dir}\n[launch]\nextra_args = ${QUIRK}\nallow_tcg = false\n`, 'x').config;
  await t.rejects(launchAccel(strict, await resolveLaunchAccount(strict)), { message: /KVM cannot be used on this node \(KVM did not boot .* and \[launch\] allow_tcg is false/ }, 'allow_tcg = false: a node fault');
  await launchAccel(strict, await resolveLaunchAccount(strict)).catch((e) => t.ok(isNodeFault(e), 'exit 2'));
  const forced = parseConfig(`[paths]\ncache_dir = ${config.paths.cache_dir}\n[launch]\naccel = kvm\n`, 'x').config;
  t.same(await launchAccel(forced, await resolveLaunchAccount(forced)), { accel: 'kvm', how: '[launch] accel' }, 'accel = kvm: the admin said so, no probe');
});

t.test('a kept answer counts only on the same kernel release, qemu binary and qemu options', async (t) => {
  const config = node(`[launch]\nextra_args = ${QUIRK}\n`);
  const shape = launchShape(config);
  // A short box makes a real "hangs" answer quickly.
  const v = await probeKvm(config, { shape, account: account(config), timeoutMs: 2000 });
  t.equal(v.outcome, 'hangs', v.how);
  const [name] = memoFiles(config);
  const file = join(config.paths.cache_dir, name!);
  const good = readFileSync(file, 'utf8');
  t.ok(memoisedKvm(config, shape), 'as written, it counts');
  const edit = (f: (m: Record<string, any>) => void) => { const m = JSON.parse(good); f(m); writeFileSync(file, JSON.stringify(m)); };
  for (const [what, f] of [
    ['another kernel release', (m: Record<string, any>) => { m.kernel = '5.10.0-30-amd64'; }],
    ['another qemu (a new package: other mtime)', (m: Record<string, any>) => { m.qemu.mtimeMs += 1000; }],
    ['another qemu (other inode)', (m: Record<string, any>) => { m.qemu.ino += 1; }],
    ['other qemu options', (m: Record<string, any>) => { m.args = ['-machine', 'q35,accel=kvm', '-cpu', 'host']; }],
    ['a quick failure, which is never kept', (m: Record<string, any>) => { m.outcome = 'fails'; }],
    ['kvm for a hang', (m: Record<string, any>) => { m.accel = 'kvm'; }],
  ] as const) {
    edit(f);
    t.equal(memoisedKvm(config, shape), undefined, `ignored: ${what}`);
  }
  writeFileSync(file, '{');
  t.equal(memoisedKvm(config, shape), undefined, 'ignored: not JSON');
  writeFileSync(file, good);
  // The same answer read through another qemu binary ([tools] qemu_system): not that binary's answer.
  const dir = mkdtempSync(join(tmpdir(), 'vt-qemu-'));
  chmodSync(dir, 0o755);
  copyFileSync(QEMU, join(dir, 'qemu-system-x86_64'));
  chmodSync(join(dir, 'qemu-system-x86_64'), 0o755);
  const other = parseConfig(`[paths]\ncache_dir = ${config.paths.cache_dir}\n[launch]\nextra_args = ${QUIRK}\n[tools]\nqemu_system = ${join(dir, 'qemu-system-x86_64')}\n`, 'x').config;
  t.equal(memoisedKvm(other, launchShape(other)), undefined, 'ignored by another qemu binary');
  t.ok(memoisedKvm(config, shape), 'still counts for its own');
});

t.test("a probe stopped by the caller's signal (deadline, qdel) is no answer: it throws, keeps nothing, and leaves no qemu", async (t) => {
  const config = node(`[launch]\nextra_args = ${QUIRK}\n`);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 2000);
  const err = await probeKvm(config, { shape: launchShape(config), account: account(config), signal: ac.signal }).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof ToolError && err.failure === 'stopped', `stopped, not answered: ${String(err)}`);
  t.same(memoFiles(config), [], 'nothing kept');
  t.same(await probeQemusLeft(), [], 'no probe qemu left running');
});

t.test('a qemu that stops at once without booting says no to KVM, and is asked again next time', async (t) => {
  const config = node();
  const bad: ProbeShape = { label: 'VMs', args: ['-machine', 'q35,accel=kvm', '-cpu', 'no-such-cpu-model'] };
  const v = await probeKvm(config, { shape: bad, account: account(config) });
  t.match(v, { accel: 'tcg', outcome: 'fails' });
  t.match(v.how, /qemu did not boot \S+ under KVM .*: .*no-such-cpu-model/, "qemu's own reason");
  t.same(memoFiles(config), [], 'not kept: it may be fixed meanwhile, and asking costs a fraction of a second');
});

t.test('libguestfs ([guestfs] accel = auto) gets KVM only from the probe: a qemu that cannot run means TCG', async (t) => {
  const config = node('[tools]\nqemu_system = /nonexistent/qemu-system-x86_64\n');
  const a = await resolveAccel(config);
  t.equal(a.accel, 'tcg', a.how);
  t.same(memoFiles(config), [], 'nothing kept');
  const forced = node('[guestfs]\naccel = tcg\n');
  t.same(await resolveAccel(forced), { accel: 'tcg', how: '[guestfs] accel' });
  t.same(GUESTFS_SHAPE.args, ['-machine', 'accel=kvm', '-cpu', 'max,la57=off'], "libguestfs 1.48's own -machine and -cpu, with KVM alone");
});

t.test('no /dev/kvm to open for the account: not probed, TCG, nothing kept', async (t) => {
  const config = node();
  const v = await probeKvm(config, {
    shape: launchShape(config), account: async () => ({ user: 'nobody', uid: NOBODY.uid, gid: NOBODY.gid, groups: [] }),
  });
  t.match(v, { accel: 'tcg', outcome: 'unprobed' });
  t.match(v.how, /\/dev\/kvm cannot be opened by nobody|\/dev\/kvm does not exist/);
  t.same(memoFiles(config), []);
});
