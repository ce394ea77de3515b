// The prologue end to end, driven exactly as pbs_mom drives it.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, NOBODY, type Job } from './harness/mom.js';
import { ensureLaunchUser } from './harness/launch-user.js';

// [jobfiles] owner and group default to the launch account ([launch] user): never the job owner.
const LAUNCH = ensureLaunchUser();

const VM_SCRIPT = '#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#VM img=debian12.qcow2,vcpus=2,ram=4G\n#VM vms_per_node=2\nhostname\n';
const BAD_SCRIPT = '#!/bin/bash\n#VM ram=12X\nhostname\n';

t.test('an ordinary job sees nothing of us: no output, exit 0, nothing left behind', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '1.srv', script: '#!/bin/sh\n#PBS -N plain\necho hi\n' });
  t.equal(r.code, 0);
  t.equal(r.ou, '', 'pbs_mom appends what a prologue prints to the job\'s .o: a plain job gets no line of ours');
  t.equal(r.er, '');
  t.notOk(existsSync(join(mom.jobDir, '1.srv')));
  t.same(mom.qstatCalls(), [], 'the fast path asks Torque nothing');
});

t.test('a VM job gets a manifest with the resolved request and a summary in its output', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '2.srv', script: VM_SCRIPT });
  t.equal(r.code, 0, r.er);
  t.match(r.ou, /VM job 2\.srv: 2 VMs of debian12\.qcow2 \(debian, x86_64\), 2 vCPUs and 4G RAM each/);
  const path = join(mom.jobDir, '2.srv', 'manifest.json');
  const m = JSON.parse(readFileSync(path, 'utf8'));
  t.equal(m.request.vcpus, 2);
  t.equal(m.request.sources.ram, 'job');
  t.equal(m.job.user, NOBODY.name);
  t.equal(m.vms.length, 2);
  const st = statSync(path);
  t.equal(st.mode & 0o777, 0o600, 'modes are set explicitly ([jobfiles] file_mode), despite umask 0077');
  t.equal(st.uid, LAUNCH.uid, '[jobfiles] owner = the launch account by default: the job owner cannot rewrite what launches their VM');
  for (const vm of m.vms) {
    t.equal(vm.seed.media, 'iso');
    t.equal(vm.seed.path, join(vm.dir, 'seed.iso'));
    const ss = statSync(vm.seed.path);
    t.equal(ss.mode & 0o777, 0o600, 'a seed holds user data: its owner only');
    t.equal(ss.uid, LAUNCH.uid, 'the seed is the launch account\'s: a job owner who could write it would be root in the VM');
  }
  t.same(m.vms.map((v: { hostname: string }) => v.hostname), ['vnode01-0', 'vnode01-1']);
  t.match(r.ou, /cloud-init: vnode01-0, vnode01-1 \(NoCloud seeds on iso media\)/);
  // Torque requeues and restarts: the same VMs get new instance-ids, so cloud-init runs its first-boot modules again.
  const again = await mom.prologue({ id: '2.srv', script: VM_SCRIPT });
  t.equal(again.code, 0, again.er);
  const m2 = JSON.parse(readFileSync(path, 'utf8'));
  const ids = [...m.vms, ...m2.vms].map((v: { seed: { instanceId: string } }) => v.seed.instanceId);
  t.equal(new Set(ids).size, 4, `instance-ids are unique per VM and per start: ${ids.join(' ')}`);
});

t.test('every admin log line carries job id, node and stage', async (t) => {
  const mom = new Mom();
  await mom.prologue({ id: '3.srv', script: VM_SCRIPT });
  await mom.prologue({ id: '4.srv', script: BAD_SCRIPT });
  const lines = mom.logLines();
  t.ok(lines.length >= 4);
  for (const l of lines) {
    t.ok(typeof l.job === 'string' && typeof l.node === 'string' && typeof l.stage === 'string', JSON.stringify(l));
  }
  t.ok(lines.some((l) => l.job === '4.srv' && l.stage === 'report'));
});

t.test('old Torque (7 arguments) is served from TORQUE_HOME/mom_priv/jobs/<jobid>.SC', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '5.srv', script: VM_SCRIPT }, { oldTorque: true });
  t.equal(r.code, 0);
  t.match(r.ou, /VM job 5\.srv/);
});

t.test('a rejected job gets its report in its error path, written as its owner', async (t) => {
  const mom = new Mom();
  const errPath = join(mom.workdir, 'custom.err');
  const job: Job = { id: '6.srv', name: 'bad', script: BAD_SCRIPT, qstat: { Error_Path: `login1:${errPath}`, Output_Path: `login1:${mom.workdir}/o`, Join_Path: 'n', start_count: '1' } };
  const r = await mom.prologue(job);
  t.equal(r.code, 1);
  t.match(r.er, /line 2: ram: "12X" is not a size/);
  const st = statSync(errPath);
  t.equal(st.uid, NOBODY.uid, 'owned by the job owner, not root');
  t.equal(st.mode & 0o777, 0o600);
  const delivered = readFileSync(errPath, 'utf8');
  t.match(delivered, /job 6\.srv \(name "[^"]*", submitted from "[^"]*"\) was not started/);
  t.match(delivered, /ram: "12X" is not a size/);
  t.match(r.er, new RegExp(`also written to ${errPath}`));
  t.same(mom.qstatCalls(), ['-f -1 6.srv']);
});

t.test('with Join_Path=oe the report goes to the output path', async (t) => {
  const mom = new Mom();
  const out = join(mom.workdir, 'joined.out');
  await mom.prologue({ id: '7.srv', script: BAD_SCRIPT, qstat: { Error_Path: `h:${mom.workdir}/e`, Output_Path: `h:${out}`, Join_Path: 'oe' } });
  t.match(readFileSync(out, 'utf8'), /job 7\.srv \(name "[^"]*", submitted from "[^"]*"\) was not started/);
});

t.test('without qstat the report goes to Torque\'s default PBS_O_WORKDIR/<name>.e<seq>', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '8[3].srv', name: 'arr', script: BAD_SCRIPT });
  t.equal(r.code, 1);
  t.match(readFileSync(join(mom.workdir, 'arr.e8-3'), 'utf8'), /was not started/);
  t.ok(mom.logLines().some((l) => /qstat unavailable/.test(String(l.msg))));
});

t.test('a symlink at the error path is not followed', async (t) => {
  const mom = new Mom();
  const victim = join(mom.root, 'victim');
  writeFileSync(victim, 'untouched\n');
  const link = join(mom.workdir, 'bad.e9');
  symlinkSync(victim, link);
  chownSync(link, NOBODY.uid, NOBODY.gid, );
  const r = await mom.prologue({ id: '9.srv', name: 'bad', script: BAD_SCRIPT });
  t.equal(r.code, 1, 'the job is still rejected with exit 1');
  t.equal(readFileSync(victim, 'utf8'), 'untouched\n');
  t.ok(mom.logLines().some((l) => l.msg === 'report could not be delivered to the job owner'));
});

t.test('a file at the error path that the owner does not own is not written', async (t) => {
  const mom = new Mom();
  const f = join(mom.workdir, 'bad.e10');
  writeFileSync(f, 'root data\n', { mode: 0o666 });
  await mom.prologue({ id: '10.srv', name: 'bad', script: BAD_SCRIPT });
  t.equal(readFileSync(f, 'utf8'), 'root data\n');
});

t.test('a hung qstat is killed at [timeouts] qstat and the default path is used', async (t) => {
  const mom = new Mom({ ini: '[timeouts]\nqstat = 1\n' });
  writeFileSync(join(mom.root, 'qstat.sleep'), '30');
  const r = await mom.prologue({ id: '11.srv', name: 'slow', script: BAD_SCRIPT });
  t.equal(r.code, 1);
  t.ok(r.ms < 20_000, `took ${Math.round(r.ms)} ms`);
  t.ok(existsSync(join(mom.workdir, 'slow.e11')));
});

function brokenJobDirMom(): Mom {
  const mom = new Mom();
  writeFileSync(join(mom.root, 'notadir'), '');
  writeFileSync(mom.configFile, mom.defaultIni().replace(`job_dir = ${mom.jobDir}`, `job_dir = ${join(mom.root, 'notadir', 'jobs')}`));
  return mom;
}

t.test('a node fault exits 2, tells the user it is not their fault, and the admin what to fix', async (t) => {
  const mom = brokenJobDirMom();
  const r = await mom.prologue({ id: '12.srv', script: VM_SCRIPT, qstat: { start_count: '1' } });
  t.equal(r.code, 2);
  t.match(r.er, /cannot prepare VM job 12\.srv now: cannot create the job directory .*goes back to the queue; this is not your fault/);
  t.match(r.er, /Fix: \(admin\) check \[paths\] job_dir/);
});

t.test('past max_start_count a node fault aborts the job (exit 1) instead of looping', async (t) => {
  const mom = brokenJobDirMom();
  const r = await mom.prologue({ id: '13.srv', name: 'loop', script: VM_SCRIPT, qstat: { start_count: '5' } });
  t.equal(r.code, 1);
  t.match(r.er, /was started 5 times and each time a node could not prepare it/);
  t.match(readFileSync(join(mom.workdir, 'loop.e13'), 'utf8'), /aborted after 5 starts/);
});

t.test('a queue listed in vm_queues runs its jobs in VMs even without #VM lines', async (t) => {
  const mom = new Mom({ ini: '[policy]\nvm_queues = vmq, other\n' });
  const r = await mom.prologue({ id: '14.srv', queue: 'vmq', script: '#!/bin/sh\necho\n' });
  t.equal(r.code, 0);
  t.match(r.ou, /VM job 14\.srv: 1 VM of debian12\.qcow2/);
  t.ok(existsSync(join(mom.jobDir, '14.srv', 'manifest.json')));
});

t.test('the epilogue removes this job\'s files and nothing else', async (t) => {
  const mom = new Mom();
  await mom.prologue({ id: '15.srv', script: VM_SCRIPT });
  await mom.prologue({ id: '16.srv', script: VM_SCRIPT });
  const r = await mom.run('epilogue', { id: '15.srv' });
  t.equal(r.code, 0);
  t.notOk(existsSync(join(mom.jobDir, '15.srv')));
  t.ok(existsSync(join(mom.jobDir, '16.srv', 'manifest.json')));
  const plain = await mom.run('epilogue.parallel', { id: '17.srv' });
  t.equal(plain.code, 0);
});

t.test('the whole run has a deadline that ends before $prologalarm', async (t) => {
  // A qstat that hangs past [timeouts] total: the run must end by itself with exit 2.
  const mom = new Mom({ ini: '[timeouts]\ntotal = 10\ntool = 5\nqstat = 60\n' });
  writeFileSync(join(mom.root, 'qstat.sleep'), '100');
  const r = await mom.prologue({ id: '18.srv', script: BAD_SCRIPT }, { alarm: 40 });
  t.notOk(r.killedByAlarm, 'ended before pbs_mom would kill it');
  t.equal(r.code, 2);
  t.match(r.er, /did not prepare job 18\.srv within 10 s/);
});

t.test('a broken ini stops VM jobs (exit 2) but not ordinary jobs', async (t) => {
  const mom = new Mom({ iniText: '[policy\nvm_queues = x\n' });
  const plain = await mom.prologue({ id: '20.srv', script: '#!/bin/sh\necho\n' });
  t.equal(plain.code, 0);
  t.equal(plain.ou + plain.er, '', 'the plain job sees nothing of the broken ini');
  const vm = await mom.prologue({ id: '21.srv', script: VM_SCRIPT });
  t.equal(vm.code, 2);
  t.match(vm.er, /is not a valid ini file/);
});

t.test('a job refused after its image was cached leaves no VM files and no lease behind', async (t) => {
  const mom = new Mom({ privateCache: false });
  writeFileSync(join(mom.workdir, 'meta.yaml'), '#cloud-config\nruncmd: [id]\n');
  const r = await mom.prologue({ id: '7031.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2,metadata=meta.yaml\necho\n', qstat: { start_count: '1' } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /metadata/);
  t.notOk(existsSync(join(mom.jobDir, '7031.srv')), 'no overlays or seeds');
  t.notOk(existsSync(join(mom.cacheDir, 'leases', '7031.srv.json')), 'no lease: the image may be evicted');
});

// Issue 14, item 4: what the user reads names what the user knows, and each kind of rejection gets the hint that helps with it.
const FIX_WHO = /Fix: \((admin|you)\) /;

t.test("a rejected job's report names its job name and submit directory, never Torque's spool copy of the script", async (t) => {
  const mom = new Mom();
  const name = 'my "run" \u2028two';
  const r = await mom.prologue({ id: '40.srv', name, script: BAD_SCRIPT });
  t.equal(r.code, 1);
  const first = r.er.split('\n')[0]!;
  t.notMatch(r.er, /mom_priv/, 'the spool copy is not named');
  t.match(first, /^vtorque: job 40\.srv \(name "my \\"run\\" \\u2028two", submitted from "[^"]+\/home"\) was not started: /, `job name and submit directory, escaped: ${first}`);
  t.notOk(r.er.includes('\u2028'), 'a separator in the job name cannot forge a line');
  t.match(r.er, /vtorque: try a job script before submitting it: vtorque-prologue check --job SCRIPT/, 'a request problem gets the check --job hint');
});

t.test('past max_start_count: no check --job hint (the script is fine), and every fix line says who acts', async (t) => {
  const mom = brokenJobDirMom();
  const r = await mom.prologue({ id: '41.srv', name: 'loop', script: VM_SCRIPT, qstat: { start_count: '5' } });
  t.equal(r.code, 1);
  t.notMatch(r.er, /check --job/, 'check --job would say all is well: not offered');
  const fixes = r.er.split('\n').filter((l) => l.includes('Fix: '));
  t.ok(fixes.length >= 2, r.er);
  for (const f of fixes) t.match(f, FIX_WHO, `each fix line starts with who acts: ${f}`);
  t.match(r.er, /Fix: \(admin\) check \[paths\] job_dir/, "the node's problem is the admin's");
  t.match(r.er, /Fix: \(you\) resubmit later/, 'the abort is the user\'s to act on');
});

// Not the runner's environment: tap's NODE_OPTIONS hooks would write where nobody cannot.
const USER_ENV = { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' };

function sums(mom: Mom, names: string[]): void {
  const lines = names.map((n) => `${execFileSync('sha256sum', [join(mom.poolDir, n)], { encoding: 'utf8' }).split(' ')[0]}  ${n}`);
  writeFileSync(join(mom.poolDir, 'SHA256SUMS'), lines.join('\n') + '\n');
}

t.test('an image that fails the requirements: the report lists the pool images that pass, and check --job reports the verdict the node holds', async (t) => {
  const mom = new Mom({ pool: { 'debian12.qcow2': 'debian-ok.qcow2', 'nocloud.qcow2': 'debian-no-cloud-init.qcow2' } });
  // An image no node has checked: its digest is new to every verdict store.
  const fresh = join(mom.root, 'fresh.qcow2');
  writeFileSync(fresh, `never checked ${process.pid} ${Date.now()}\n`, { mode: 0o644 });
  mom.addImage('unknown.qcow2', fresh);
  // Digests the pool lists, so that held verdicts can be found without hashing; unknown.qcow2 has no verdict anywhere.
  sums(mom, ['debian12.qcow2', 'nocloud.qcow2', 'unknown.qcow2']);
  const script = '#!/bin/bash\n#VM img=nocloud.qcow2\nhostname\n';
  const r = await mom.prologue({ id: '42.srv', name: 'img', script });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /fails cloud-init-installed/);
  t.notMatch(r.er, /check --job/, 'check --job is not the hint for an image that fails');
  t.match(r.er, /vtorque: pool images known to meet the requirements for this request: debian12\.qcow2\. Fix: pick one with #VM img=NAME/);
  t.match(r.er, /1 other pool image has not been checked yet/);
  t.notMatch(r.er.split('pool images known')[1] ?? '', /nocloud|unknown\.qcow2/, 'the failing and the unchecked images are not offered');

  // The node now holds a failing verdict: check --job, as the user, says so instead of "all is well".
  const f = join(mom.workdir, 'img.pbs');
  writeFileSync(f, script);
  chownSync(f, NOBODY.uid, NOBODY.gid);
  const chk = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--job', f], { encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: mom.workdir, env: USER_ENV });
  t.equal(chk.status, 1, `check --job exits 1: ${chk.stdout}${chk.stderr}`);
  t.match(chk.stdout, /image nocloud\.qcow2: fails cloud-init-installed: .*\(verdict held by this node\)/);
  t.match(chk.stdout, /pool images known to meet the requirements for this request: debian12\.qcow2/);
  const ok = join(mom.workdir, 'ok.pbs');
  writeFileSync(ok, '#!/bin/bash\n#VM img=debian12.qcow2\nhostname\n');
  const good = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--job', ok], { encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: mom.workdir, env: USER_ENV });
  t.equal(good.status, 0, good.stdout + good.stderr);
  t.match(good.stdout, /image debian12\.qcow2 meets this site's guest image requirements \(verdict held by this node\)/);
});
