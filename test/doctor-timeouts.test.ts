// doctor's timeouts check, in process: $prologalarm read as pbs_mom reads
// mom_priv/config, and the budget of a VM job (a new image's libguestfs work,
// then a boot with the accelerator the kvm check found) against [launch] boot,
// [timeouts] total and the batch system's alarm. Staged files, no probe.
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { checkTimeouts } from '../src/doctor/timeouts.js';
import type { DoctorContext } from '../src/doctor/checks.js';
import { readPrologAlarm } from '../src/torque/mom-config.js';

t.test('$prologalarm as pbs_mom reads it: last good line wins, case-insensitive, comments and bad values ignored, else 300', async (t) => {
  const cases: [string, number, number?][] = [
    ['', 300],
    ['$pbsserver head\n$job_starter /x\n', 300],
    ['$prologalarm 600\n', 600, 1],
    ['$PrologAlarm\t900\n', 900, 1],
    ['  $prologalarm 450   # raised for TCG\n', 450, 1],
    ['#$prologalarm 100\n', 300],
    ['$prologalarm 600\n$prologalarm 0\n', 600, 1],
    ['$prologalarm 600\n$prologalarm -5\n', 600, 1],
    ['$prologalarm 600\n$prologalarm abc\n', 600, 1],
    ['$prologalarm 600\n$prologalarm 700\n', 700, 2],
    ['$prologalarm 650s\n', 650, 1],
    ['$prologalarm=600\n', 300],
    ['$prologalarmx 600\n', 300],
    ['$prologalarm # 600\n', 300],
  ];
  for (const [text, seconds, line] of cases) t.match(readPrologAlarm(text), { seconds, line }, JSON.stringify(text));
});

/** A node's ini with a Torque home whose mom_priv/config holds momConfig (undefined: no file). */
function node(ini: string, momConfig?: string) {
  const root = mkdtempSync(join(tmpdir(), 'vt-timeouts-'));
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'torque', 'mom_priv'), { recursive: true });
  if (momConfig !== undefined) writeFileSync(join(root, 'torque', 'mom_priv', 'config'), momConfig);
  const configFile = join(root, 'prologue.ini');
  const config = parseConfig(`[paths]\ncache_dir = ${root}/cache\ntorque_home = ${root}/torque\n${ini}`, configFile).config;
  return { root, configFile, config, momConfig: join(root, 'torque', 'mom_priv', 'config') };
}

const said = (lines: { status: string; message: string }[]) => lines.map((l) => `${l.status} ${l.message}`).join('\n');
const run = (n: ReturnType<typeof node>, found: Partial<DoctorContext> = {}) => checkTimeouts({ configFile: n.configFile, config: n.config, ...found });

t.test('a $prologalarm that does not leave [timeouts] total + 20 s fails, naming the line and both ways out', async (t) => {
  const n = node('', '$pbsserver head\n$prologalarm 250\n');
  const [line] = await run(n, { accel: { vms: 'kvm', guestfs: 'kvm' } });
  t.equal(line!.status, 'FAIL');
  t.equal(line!.message, `$prologalarm is 250 s (${n.momConfig} line 2: $prologalarm 250), and [timeouts] total is 240 s: pbs_mom kills the prologue at 240 s ($prologalarm - 10 s), before its own deadline (total, then up to 5 s to report) can requeue the job and say why`);
  t.equal(line!.fix, `set in ${n.momConfig}: $prologalarm 260 (then kill -HUP the pbs_mom), or in ${n.configFile}: [timeouts] total = 230`);
  const ok = await run(node('', '$prologalarm 260\n'), { accel: { vms: 'kvm', guestfs: 'kvm' } });
  t.match(ok[0], { status: 'ok', message: /^\[timeouts\] total 240 s fits \$prologalarm 260 s \(\S+ line 1: \$prologalarm 260; it needs total \+ 20 s\)$/ });
  const none = await run(node(''), { accel: { vms: 'kvm', guestfs: 'kvm' } });
  t.match(none[0], { status: 'ok', message: /fits \$prologalarm 300 s \(\S+mom_priv\/config does not exist: Torque's default; / });
});

t.test('under TCG the shipped boot 180 s and total 240 s are too short: the fix names boot, total and $prologalarm together, and following it is ok', async (t) => {
  const n = node('');
  const found = { accel: { vms: 'tcg', guestfs: 'tcg' }, guestfsLaunch: { ms: 88_000, accel: 'tcg' } } as const;
  const lines = await run(n, found);
  t.same(lines.map((l) => l.status), ['ok', 'warn', 'warn'], said(lines));
  t.equal(lines[1]!.message, 'VMs boot with TCG here (as the kvm check found) and get 180 s to answer ([launch] boot); a TCG boot of a Debian guest through cloud-init takes 70-300 s: slower boots fail their job (exit 1, vm-boot)');
  // 1.2 launches of 88 s = 106 s (the check takes the kernel out in its own appliance); + a 300 s boot + the 10 s the wait leaves = 416 s, to 420 s.
  t.match(lines[2]!.message, /^a job on an image new to this node spends about 106 s in libguestfs before its VMs boot \(its check, which takes out its kernel too, TCG, 88\.0 s a launch, measured by the guestfs check\); with a TCG boot \(up to 300 s\) that passes \[timeouts\] total 240 s: such a job is requeued before its VMs boot \(boot-time: less than \[launch\] boot is left; the node stays online and the next start finds the image cached\)$/);
  const fix = `set in ${n.configFile}: [launch] boot = 300, [timeouts] total = 420; and in ${n.momConfig}: $prologalarm 440, then kill -HUP the pbs_mom`;
  t.equal(lines[1]!.fix, fix);
  t.equal(lines[2]!.fix, fix);
  const fixed = node('[launch]\nboot = 300\n[timeouts]\ntotal = 420\n', '$prologalarm 440\n');
  const after = await run(fixed, found);
  t.same(after.map((l) => l.status), ['ok', 'ok'], said(after));
  t.match(after[1]!.message, /^\[launch\] boot 300 s and \[timeouts\] total 420 s cover a TCG boot \(up to 300 s\), after a new image's libguestfs work \(about 106 s, TCG\)$/);
});

t.test('under KVM the shipped timeouts fit', async (t) => {
  const lines = await run(node(''), { accel: { vms: 'kvm', guestfs: 'kvm' }, guestfsLaunch: { ms: 4_000, accel: 'kvm' } });
  t.same(lines.map((l) => l.status), ['ok', 'ok'], said(lines));
  t.match(lines[1]!.message, /cover a KVM boot \(up to 60 s\)/);
});

t.test('without the kvm check, the accelerator is the config\'s, else TCG is assumed and said so', async (t) => {
  const forced = await run(node('[launch]\naccel = tcg\n'));
  t.match(forced[1]!.message, /^VMs boot with TCG here \(\[launch\] accel = tcg\)/);
  const unknown = await run(node(''));
  t.match(unknown[1]!.message, /^VMs boot with TCG here \(assumed: the kvm check did not run, and no probe answer is kept\)/);
  t.match(unknown[2]!.message, /90\.0 s a launch, an estimate: the guestfs check did not run/);
  t.same((await run(node('[launch]\naccel = kvm\n[guestfs]\naccel = kvm\n'))).map((l) => l.status), ['ok', 'ok'], 'accel = kvm: a KVM boot, KVM appliance launches');
});

t.test('a total the boot wait cannot use: boot is cut 10 s before total', async (t) => {
  const lines = await run(node('[launch]\nboot = 600\n[timeouts]\ntotal = 250\n', '$prologalarm 900\n'), { accel: { vms: 'tcg', guestfs: 'kvm' }, guestfsLaunch: { ms: 5_000, accel: 'kvm' } });
  t.match(lines[1], { status: 'warn', message: /and get 235 s to answer \(\[launch\] boot is 600 s, but \[timeouts\] total 250 s ends the wait 10 s before it\)/ });
  t.match(lines[1]!.message, /: the prologue starts no boot with less than \[launch\] boot left, so every VM job is requeued \(exit 2, boot-time\)$/);
  t.match(lines[1]!.fix, /\[timeouts\] total = 620$/, 'a total that holds the boot (600 s) and a new image (6 s: its check takes out the kernel too)');
  t.notMatch(lines[1]!.fix, /\[launch\] boot =/, 'boot is long enough already');
  t.notMatch(lines[1]!.fix, /prologalarm/, '$prologalarm 900 holds 620 + 20 already');
});

t.test('[launch] start = false: only a new image\'s libguestfs work counts', async (t) => {
  const ok = await run(node('[launch]\nstart = false\n'), { accel: { vms: 'tcg', guestfs: 'tcg' }, guestfsLaunch: { ms: 88_000, accel: 'tcg' } });
  t.same(ok.map((l) => l.status), ['ok'], 'one line: $prologalarm');
  // (1.2 launches for the check, which takes out the kernel too, + 1 for inject) x 150 s = 330 s.
  const slow = await run(node('[launch]\nstart = false\n[seed]\nmedia = inject\n'), { accel: { vms: 'tcg', guestfs: 'tcg' }, guestfsLaunch: { ms: 150_000, accel: 'tcg' } });
  t.match(slow[1], { status: 'warn', message: /spends about 330 s in libguestfs/, fix: /\[timeouts\] total = 350; and in \S+: \$prologalarm 370/ });
});

t.test('on a Slurm node the fix names PrologEpilogTimeout for the new total (the slurm check compares it); no $prologalarm line', async (t) => {
  const n = node('[batch]\nsystem = slurm\n');
  const lines = await run(n, { accel: { vms: 'tcg', guestfs: 'tcg' }, guestfsLaunch: { ms: 88_000, accel: 'tcg' } });
  t.same(lines.map((l) => l.status), ['warn', 'warn']);
  t.notOk(lines.some((l) => /prologalarm/.test(l.message + (l.fix ?? ''))), 'Torque is not this node\'s');
  t.equal(lines[0]!.fix, `set in ${n.configFile}: [launch] boot = 300, [timeouts] total = 420; and in slurm.conf PrologEpilogTimeout=450 or more, then scontrol reconfigure`);
});
