// `doctor` against a staged node: the harness Mom gives a torque_home with
// wrappers, a pool, recording qstat/pbsnodes stand-ins and an ini. Real
// qemu-img, guestfish and qemu-system; only Torque's tools are stand-ins.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, NOBODY, REPO, type MomOptions } from './harness/mom.js';

const FAST = ['--skip', 'guestfs,kvm'];

/** A node as install.sh leaves it: its wrappers (clean environment), program, and cache, job, ramdisk and log directories. */
function stagedNode(opts: MomOptions = {}): Mom {
  const mom = new Mom({ privateCache: true, ...opts });
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) rmSync(join(mom.momPriv, h));
  const r = spawnSync('bash', [join(REPO, 'install.sh'), '--prefix', join(mom.root, 'opt'), '--torque-home', mom.torqueHome,
    '--config', mom.root, '--logrotate', join(mom.root, 'logrotate.d'), '--bin-dir', join(mom.root, 'usr-bin'), '--no-doctor'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`install.sh: ${r.stderr}`);
  return mom;
}

function doctor(mom: Mom, ...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'doctor', ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, out: r.stdout, err: r.stderr, lines: r.stdout.split('\n') };
}

const linesOf = (out: string, check: string) => out.split('\n').filter((l) => l.slice(6).startsWith(check + ' '));

t.test('a healthy staged node passes every check, libguestfs launch timed, in one line each', async (t) => {
  const mom = stagedNode({ ini: '[cache]\nmax_size = 1G\nmin_free = 1M\n' });
  const r = doctor(mom);
  t.equal(r.code, 0, r.out + r.err);
  t.match(r.out, /^ok {4}config {4}.* is valid, root's, and not writable by others$/m);
  t.match(r.out, /^ok {4}tools {5}\[tools\] qemu_img \/usr\/bin\/qemu-img: qemu-img version \d/m);
  t.match(r.out, /^ok {4}tools {5}\[tools\] pbsnodes .*: version: 6\.1\.2/m, "a tool's --version on stderr counts");
  t.match(r.out, /^ok {4}guestfs {3}libguestfs launched with TCG in \d+\.\d s \(\[guestfs\] accel\)/m);
  t.match(r.out, /^ok {4}kvm {7}KVM not probed: \[launch\] accel and \[guestfs\] accel are both tcg$/m, 'no probe where nothing would use KVM');
  t.match(r.out, /^ok {4}timeouts  \[timeouts\] total 240 s fits \$prologalarm 300 s \(/m);
  t.equal(linesOf(r.out, 'mom_priv').filter((l) => l.startsWith('ok ') && l.includes(' runs vtorque-prologue ')).length, 4, 'four hooks, all ours');
  t.match(r.out, /^ok {4}mom_priv {2}\/\S+\/node and the program in \S+\/opt are root's, as is every directory above them$/m);
  t.ok(r.lines.some((l) => l.startsWith(`ok    torque    ${mom.root}/bin/qstat -B reaches pbs_server (`)), 'the torque line names the qstat it ran');
  t.ok(r.lines.includes(`ok    torque    ${mom.root}/bin/pbsnodes: node node01 is free`), 'and the pbsnodes');
  t.match(r.out, /^healthy/m);
  t.notMatch(r.out, /^FAIL/m);
});

t.test('--json gives every check with status, message and fix', async (t) => {
  const mom = stagedNode();
  const r = doctor(mom, '--json', ...FAST);
  const j = JSON.parse(r.out);
  t.equal(j.config, mom.configFile);
  t.same([...new Set(j.checks.map((c: { check: string }) => c.check))], ['config', 'tools', 'kvm', 'guestfs', 'timeouts', 'dirs', 'space', 'mom_priv', 'launch', 'torque']);
  t.equal(j.checks.find((c: { check: string }) => c.check === 'guestfs').status, 'skip');
  t.equal(j.healthy, r.code === 0);
});

t.test('an invalid ini fails the config check with file, key and fix; the other checks are skipped', async (t) => {
  const mom = stagedNode({ ini: '[defaults]\nram = 12X\n' });
  const r = doctor(mom);
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}config {4}.*prologue\.ini \[defaults\] ram: "12X" is not a size\. Fix: allowed: /m);
  t.match(r.out, /^skip {2}guestfs {3}needs a valid config$/m);
  t.match(r.out, /^1 problem/m);
});

t.test('a missing tool is named with its [tools] key and what provides it', async (t) => {
  const mom = stagedNode({ ini: '[tools]\nqemu_img = /nonexistent/qemu-img\n' });
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}tools {5}\[tools\] qemu_img \/nonexistent\/qemu-img does not exist\. Fix: install it \(qemu-img, from qemu-utils/m);
});

t.test('a setpriv without --pdeathsig (util-linux before 2.33) fails the tools check: no tool could run', async (t) => {
  const mom = stagedNode();
  // As util-linux 2.32's setpriv answers an option it does not know.
  const old = join(mom.root, 'bin', 'setpriv');
  writeFileSync(old, `#!/bin/sh\n[ "$1" = --version ] && { echo 'setpriv from util-linux 2.32.1'; exit 0; }\necho "setpriv: unrecognized option '$1'" >&2\nexit 1\n`);
  chmodSync(old, 0o755);
  writeFileSync(mom.configFile, readFileSync(mom.configFile, 'utf8') + `[tools]\nsetpriv = ${old}\n`);
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.match(r.out, new RegExp(`^FAIL {2}tools {5}no tool can run under ${old} --pdeathsig TERM -- /usr/bin/timeout: .*unrecognized option '--pdeathsig'.*\\. Fix: install util-linux 2\\.33 or later`, 'm'));
});

t.test('a tool that others may write is a problem, since root runs it', async (t) => {
  const mom = stagedNode();
  chmodSync(join(mom.root, 'bin', 'qstat'), 0o777);
  const r = doctor(mom, ...FAST);
  t.match(r.out, /^FAIL {2}tools {5}\[tools\] qstat \S+: \S+\/qstat has mode 0777, writable by group and others; should be root's and writable only by root/m);
});

t.test('mom_priv hooks: wrong mode, another program, a missing hook, a user-owned .orig', async (t) => {
  const mom = stagedNode();
  chmodSync(join(mom.momPriv, 'prologue'), 0o755);
  writeFileSync(join(mom.momPriv, 'epilogue'), '#!/bin/sh\nexit 0\n', { mode: 0o500 });
  rmSync(join(mom.momPriv, 'epilogue.parallel'));
  writeFileSync(join(mom.momPriv, 'prologue.parallel.orig'), '#!/bin/sh\n', { mode: 0o500 });
  chownSync(join(mom.momPriv, 'prologue.parallel.orig'), NOBODY.uid, NOBODY.gid);
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}mom_priv {2}.*mom_priv\/prologue is owned by uid 0 with mode 0755; should be root-owned, mode 0500, as pbs_mom requires\. Fix: chown root:root .* && chmod 0500/m);
  t.match(r.out, /^FAIL {2}mom_priv {2}.*mom_priv\/epilogue does not run vtorque-prologue epilogue\. Fix: run install\.sh/m);
  t.match(r.out, /^FAIL {2}mom_priv {2}.*mom_priv\/epilogue\.parallel is missing/m);
  t.match(r.out, new RegExp(`^FAIL {2}mom_priv {2}.*prologue\\.parallel\\.orig, run first by the wrapper, is owned by uid ${NOBODY.uid}`, 'm'));
});

t.test('a hook that reads another ini is a warning naming both files', async (t) => {
  const mom = stagedNode();
  const other = join(mom.root, 'other.ini');
  writeFileSync(other, mom.defaultIni());
  const r = spawnSync(process.execPath, [BIN, '--config', other, 'doctor', ...FAST, '--json'], { encoding: 'utf8' });
  const j = JSON.parse(r.stdout);
  const w = j.checks.filter((c: { check: string; status: string }) => c.check === 'mom_priv' && c.status === 'warn');
  t.equal(w.length, 4);
  t.match(w[0].message, new RegExp(`uses --config ${mom.configFile.replace(/[.]/g, '\\.')}, not ${other.replace(/[.]/g, '\\.')}`));
});

t.test('a pool writable by others, or a missing pool, fails; a missing job directory under /tmp fails', async (t) => {
  const mom = stagedNode();
  chmodSync(mom.poolDir, 0o777);
  rmSync(mom.jobDir, { recursive: true });
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}dirs {6}\[paths\] image_pool .*pool has mode 0777, writable by group and others\. Fix: chown root:root and chmod 0755/m);
  t.match(r.out, /^FAIL {2}dirs {6}\[paths\] job_dir .* does not exist, and \/tmp is writable by every user \(mode 1777\): any user could create it first/m);
  t.match(r.out, /^WARN {2}dirs {6}\[paths\] cache_dir .* is root's now, but \/tmp is writable by every user/m);
  rmSync(mom.poolDir, { recursive: true });
  t.match(doctor(mom, ...FAST).out, /^FAIL {2}dirs {6}\[paths\] image_pool .* does not exist/m);
});

t.test('under directories only root can write, a missing job directory warns and a missing ramdisk_dir is made on demand', async (t) => {
  const root = mkdtempSync('/run/vt-doctor-');
  chmodSync(root, 0o755);
  const mom = stagedNode({ root });
  rmSync(mom.jobDir, { recursive: true });
  rmSync(join(root, 'shm'), { recursive: true });
  const r = doctor(mom, ...FAST);
  t.match(r.out, /^WARN {2}dirs {6}\[paths\] job_dir \/run\/vt-doctor-\w+\/jobs does not exist\. Fix: install -d -o root -g root -m 0755/m);
  t.match(r.out, /^ok {4}dirs {6}\[paths\] ramdisk_dir \/run\/vt-doctor-\w+\/shm does not exist; made on demand \(only root can create it there\)$/m);
  t.match(r.out, /^ok {4}dirs {6}\[paths\] cache_dir \/run\/vt-doctor-\w+\/cache is root-owned and not writable by others \(0755\)$/m);
  rmSync(root, { recursive: true, force: true });
});

t.test('a directory above the pool that others may write fails too', async (t) => {
  const mom = stagedNode();
  const up = join(mom.root, 'shared');
  mkdirSync(join(up, 'pool'), { recursive: true });
  chmodSync(up, 0o777);
  writeFileSync(mom.configFile, mom.defaultIni().replace(`image_pool = ${mom.poolDir}`, `image_pool = ${join(up, 'pool')}`));
  t.match(doctor(mom, ...FAST).out, /^FAIL {2}dirs {6}\[paths\] image_pool .*shared\/pool: .*\/shared has mode 0777/m);
});

t.test('free space below [cache] min_free fails; a max_size the filesystem cannot hold warns', async (t) => {
  const mom = stagedNode({ ini: '[cache]\nmin_free = 1000T\n' });
  t.match(doctor(mom, ...FAST).out, /^FAIL {2}space {5}the cache filesystem \(.*\) has \S+ free; \[cache\] min_free is 1000T/m);
  const big = stagedNode({ ini: '[cache]\nmax_size = 1000T\nmin_free = 1M\n' });
  const r = doctor(big, ...FAST);
  t.match(r.out, /^WARN {2}space {5}the cache \(0B now\) can grow to \S+ .*less than \[cache\] max_size 1000T/m);
});

t.test('an unreachable pbs_server fails the torque check for qstat and pbsnodes', async (t) => {
  const mom = stagedNode();
  writeFileSync(join(mom.root, 'qstat.fail'), 'qstat: cannot connect to server head (errno=111) Connection refused\n');
  writeFileSync(join(mom.root, 'pbsnodes.fail'), 'pbsnodes: cannot connect to server head, error=111 (Connection refused)\n');
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}torque {4}\S+\/bin\/qstat -B fails: .*Connection refused/m);
  t.match(r.out, /^FAIL {2}torque {4}\S+\/bin\/pbsnodes -l -n all node01 fails: .*Connection refused/m);
});

t.test('doctor --clear brings back a healthy node that vtorque took offline, and clears our note', async (t) => {
  const mom = stagedNode({ ini: '[cache]\nmax_size = 1G\nmin_free = 1M\n' });
  mom.setNode('node01', 'offline', 'vtorque: cannot create the job directory (job 1.srv)');
  const before = doctor(mom, ...FAST);
  t.match(before.out, /^WARN {2}torque {4}\S+\/bin\/pbsnodes: node node01 is offline, taken out by vtorque: .*Fix: fix the cause, then run: vtorque-prologue doctor --clear/m);
  const r = doctor(mom, ...FAST, '--clear');
  t.equal(r.code, 0, r.out);
  t.match(r.out, /^ok {4}clear {5}node node01 is back online; our note "vtorque: cannot create the job directory \(job 1\.srv\)" is cleared\. /m);
  const qmgr = `${mom.root}/bin/qmgr -c "set server scheduling = true"`;
  t.ok(r.lines.find((l) => l.startsWith('ok    clear '))?.endsWith(`A requeued job may wait for pbs_sched's next cycle (scheduler_iteration, 600 s by default); to start one now, as a Torque operator: ${qmgr}`),
    'says a requeued job can wait for the next scheduling cycle, and the command that starts one now, beside the [tools] qstat');
  t.same(mom.nodeState('node01'), { state: 'free', note: '' });
  t.ok(mom.pbsnodesCalls().includes('-c -N n node01'));
});

t.test("doctor --clear never touches an operator's offline or note", async (t) => {
  const mom = stagedNode({ ini: '[cache]\nmax_size = 1G\nmin_free = 1M\n' });
  mom.setNode('node01', 'offline', 'alice: firmware update');
  const r = doctor(mom, ...FAST, '--clear');
  t.match(r.out, /^ok {4}clear {5}node node01 left as it is: its note is not ours: "alice: firmware update"$/m);
  t.same(mom.nodeState('node01'), { state: 'offline', note: 'alice: firmware update' });
  mom.setNode('node01', 'offline');
  t.match(doctor(mom, ...FAST, '--clear').out, /left as it is: offline without a note: an operator took it out/);
  t.same(mom.nodeState('node01'), { state: 'offline', note: '' });
  t.notOk(mom.pbsnodesCalls().some((c) => c.startsWith('-c')), 'pbsnodes -c never ran');
});

t.test('doctor --clear leaves the node offline while a problem remains', async (t) => {
  const mom = stagedNode({ ini: '[tools]\nqemu_img = /nonexistent/qemu-img\n' });
  mom.setNode('node01', 'offline', 'vtorque: /nonexistent/qemu-img is not installed');
  const r = doctor(mom, ...FAST, '--clear');
  t.equal(r.code, 1);
  t.match(r.out, /^FAIL {2}clear {5}node left as it is: 1 problem remains; fix it and run doctor --clear again$/m);
  t.equal(mom.nodeState('node01').state, 'offline');
});

t.test('bad options exit 2 with a pointer to help; --help teaches', async (t) => {
  const mom = stagedNode();
  const bad = doctor(mom, '--skip', 'config');
  t.equal(bad.code, 2);
  t.match(bad.err, /"config" is not a check that can be skipped; checks: tools, kvm, guestfs, timeouts, dirs, space, mom_priv, launch, torque/);
  t.equal(doctor(mom, '--frobnicate').code, 2);
  const h = doctor(mom, '--help');
  t.equal(h.code, 0);
  t.match(h.out, /Exit codes: 0 healthy/);
  t.match(h.out, /Examples:\n {2}vtorque-prologue doctor\n/);
});

t.test('launch: the $job_starter install.sh wrote, its trust, a privileged starter, the launch account', async (t) => {
  const mom = stagedNode();
  const launch = (r: ReturnType<typeof doctor>) => linesOf(r.out, 'launch').join('\n');
  const good = doctor(mom, ...FAST, '--json');
  const ok = (JSON.parse(good.out) as { checks: { check: string; status: string; message: string }[] }).checks.filter((x) => x.check === 'launch');
  t.ok(ok.some((x) => x.status === 'ok' && /pbs_mom starts jobs through \S+\/opt\/bin\/vtorque-starter \(root's/.test(x.message)), JSON.stringify(ok));
  t.ok(ok.some((x) => x.status === 'ok' && /^launch account vtorque-launch \(uid \d+\)$/.test(x.message)));
  t.ok(ok.some((x) => /\/dev\/kvm/.test(x.message)), 'says whether the launch account can use KVM');
  t.notOk(ok.some((x) => x.status === 'FAIL'), JSON.stringify(ok));
  const starter = join(mom.root, 'opt', 'bin', 'vtorque-starter');
  const cfg = join(mom.momPriv, 'config');
  chownSync(starter, NOBODY.uid, NOBODY.gid);
  t.match(launch(doctor(mom, ...FAST)), /^FAIL  launch {4}\S+vtorque-starter, which pbs_mom runs to start every job: \S+ is owned by uid 65534, not root\. Fix: chown root:root/m, 'a starter the user owns fails');
  chownSync(starter, 0, 0);
  writeFileSync(cfg, `$job_starter ${starter}\n$job_starter_run_privileged true\n`);
  t.match(launch(doctor(mom, ...FAST)), /^FAIL  launch {4}.*config sets \$job_starter_run_privileged: pbs_mom would run the job starter as root/m);
  writeFileSync(cfg, '$pbsserver head\n');
  const none = doctor(mom, ...FAST);
  t.equal(none.code, 1);
  t.match(launch(none), /^FAIL  launch {4}.*config has no \$job_starter: #VM jobs' scripts would run on the host, not in their VM\. Fix: run install\.sh/m);
  writeFileSync(cfg, `$job_starter ${starter}\n`);
  writeFileSync(mom.configFile, readFileSync(mom.configFile, 'utf8') + '[launch]\nuser = vtorque-nosuch\n');
  t.match(launch(doctor(mom, ...FAST)), /^FAIL  launch {4}the launch account vtorque-nosuch \(\[launch\] user\) does not exist; qemu cannot be started\. Fix: run install\.sh, or: useradd --system/m);
});

t.test("kvm: the line says what the probe's kernel boot did; on this machine's nested /dev/kvm it never says KVM works", async (t) => {
  // The quirk doctor used to advise here: qemu then starts a KVM guest, which hangs (test/kvm-probe.test.ts checks that against a boot of its own).
  const mom = stagedNode({ ini: '[launch]\nstart = true\naccel = auto\nextra_args = -cpu host,-arch-capabilities\n[guestfs]\naccel = auto\n' });
  const r = doctor(mom, '--skip', 'guestfs', '--json');
  const j = JSON.parse(r.out) as { checks: { check: string; status: string; message: string; fix?: string; data?: Record<string, unknown> }[] };
  const kvm = j.checks.filter((c) => c.check === 'kvm');
  t.comment(kvm.map((c) => `${c.status} ${c.message}`).join('\n'));
  t.equal(kvm.length, 2, "one line for the VMs' qemu options, one for libguestfs's");
  t.match(kvm[0], { status: 'warn', message: /^VMs: KVM did not boot \/boot\/vmlinuz-\S+ to its panic line within 20 s \(-machine q35,accel=kvm -cpu host -cpu host,-arch-capabilities; empty console\): a nested or broken KVM: jobs' VMs run under TCG$/, data: { kvm: false, outcome: 'hangs' } });
  t.match(kvm[1], { status: 'warn', message: /^libguestfs: .*: libguestfs run under TCG$/, data: { kvm: false } });
  t.notOk(j.checks.some((c) => /KVM works|KVM booted/.test(c.message)), 'no line says KVM works');
  t.match(j.checks.find((c) => c.check === 'timeouts' && c.status === 'warn')?.message, /^VMs boot with TCG here \(as the kvm check found\)/, 'the timeouts check budgets for TCG');
  t.ok(readdirSync(mom.cacheDir).some((n) => /^kvm-probe-[0-9a-f]+\.json$/.test(n)), 'the answer is kept for the prologue');
});

t.test('timeouts: a $prologalarm in mom_priv/config below [timeouts] total + 20 s fails, with the line to change', async (t) => {
  const mom = stagedNode();
  const cfg = join(mom.momPriv, 'config');
  const before = readFileSync(cfg, 'utf8');
  const n = before.split('\n').length - 1;
  writeFileSync(cfg, before + '#$prologalarm 900\n$prologalarm 250 # set long ago\n');
  const r = doctor(mom, ...FAST);
  t.equal(r.code, 1);
  t.ok(r.lines.includes(`FAIL  timeouts  $prologalarm is 250 s (${cfg} line ${n + 2}: $prologalarm 250 # set long ago), and [timeouts] total is 240 s: pbs_mom kills the prologue at 240 s ($prologalarm - 10 s), before its own deadline (total, then up to 5 s to report) can requeue the job and say why. Fix: set in ${cfg}: $prologalarm 260 (then kill -HUP the pbs_mom), or in ${mom.configFile}: [timeouts] total = 230`), r.out);
  writeFileSync(cfg, readFileSync(cfg, 'utf8') + '$PROLOGALARM 300\n');
  const ok = doctor(mom, ...FAST);
  t.match(ok.out, new RegExp(`^ok {4}timeouts  \\[timeouts\\] total 240 s fits \\$prologalarm 300 s \\(${cfg.replace(/[.]/g, '\\.')} line ${n + 3}: \\$PROLOGALARM 300; it needs total \\+ 20 s\\)$`, 'm'), 'the last line counts, in any case');
});

t.test('timeouts: VMs that boot under TCG need more than the shipped [launch] boot and [timeouts] total; the fix says what to set', async (t) => {
  const mom = stagedNode({ ini: '[launch]\nstart = true\naccel = tcg\n' });
  const r = doctor(mom, ...FAST);
  const warn = linesOf(r.out, 'timeouts').filter((l) => l.startsWith('WARN'));
  t.equal(warn.length, 2, r.out);
  t.match(warn[0], /^WARN  timeouts  VMs boot with TCG here \(\[launch\] accel = tcg\) and get 180 s to answer \(\[launch\] boot\); a TCG boot of a Debian guest through cloud-init takes 70-300 s: slower boots fail their job \(exit 1, vm-boot\)\. Fix: set in \S+prologue\.ini: \[launch\] boot = 300, \[timeouts\] total = 420; and in \S+mom_priv\/config: \$prologalarm 440, then kill -HUP the pbs_mom$/);
  t.match(warn[1], /^WARN  timeouts  a job on an image new to this node spends about 108 s in libguestfs .*an estimate: the guestfs check did not run/);
  t.equal(r.code, 0, 'warnings: the node still works, slow boots fail their jobs');
});
