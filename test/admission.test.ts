// Admission through pbs_mom's hooks (src/launch/admission.ts): before any copy
// or boot, a node checks that it can hold the job's VMs. A request larger than
// the node is the job's fault (exit 1, the limit named); one that fits but not
// beside the VM jobs already here goes back to the queue (exit 2) and the node
// is never offlined; one that fits runs. The node is made "small" with
// [launch] reserve_memory, so that it gives VMs exactly 3 GiB.
import t from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom } from './harness/mom.js';

const memKiB = Number(/^MemTotal:\s+([0-9]+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
/** The host keeps all but 3 GiB: this node gives VMs at most 3 GiB. */
const SMALL = `reserve_memory = ${memKiB - 3 * 1024 * 1024}K\n`;
const smallNode = (more = ''): Mom => {
  const mom = new Mom();
  writeFileSync(mom.configFile, mom.defaultIni() + SMALL + more);
  return mom;
};
const script = (vm: string) => `#!/bin/bash\n#VM img=debian12.qcow2,${vm}\nhostname\n`;
const offlines = (mom: Mom) => mom.pbsnodesCalls().filter((c) => c.startsWith('-o') || c.includes(' -o'));

t.test('a request larger than the node is the job\'s fault: exit 1, the limit named, the node left alone', async (t) => {
  const mom = smallNode();
  const r = await mom.prologue({ id: '70.srv', script: script('ram=4G'), qstat: { start_count: '1' } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, 'this node gives VMs at most 3.0 GiB of RAM');
  t.match(r.er, '[launch] reserve_memory keeps');
  t.match(r.er, 'ask for at most 2.8 GiB of ram per VM');
  t.same(mom.pbsnodesCalls(), [], 'pbsnodes is never asked');
  t.same(mom.nodeState('node01').state, 'free');
  t.notOk(mom.logLines().some((l) => l.job === '70.srv' && l.stage === 'image'), 'refused before the image was looked at or copied');
  t.ok(mom.logLines().some((l) => l.job === '70.srv' && l.msg === 'request resolved'), 'after the request was resolved');
});

t.test('on a sister too (prologue.parallel, the request from the job\'s variables)', async (t) => {
  const mom = smallNode();
  writeFileSync(mom.configFile, readFileSync(mom.configFile, 'utf8').replace('node_name = node01', 'node_name = node02'));
  const id = '71.srv';
  mkdirSync(join(mom.torqueHome, 'aux'), { recursive: true });
  writeFileSync(join(mom.torqueHome, 'aux', id), 'node01\nnode02\n');
  const qstat = { Variable_List: 'PBS_O_HOME=/nonexistent,PBS_O_WORKDIR=/tmp,VM_IMG=debian12.qcow2,VM_RAM=2G,VM_VMS_PER_NODE=2', exec_host: 'node01/0+node02/0', start_count: '1' };
  mom.submit({ id, qstat });
  const r = await mom.run('prologue.parallel', { id, qstat });
  t.equal(r.code, 1, r.er);
  t.match(r.er, 'this node gives VMs at most 3.0 GiB of RAM');
  t.match(r.er, '2 VMs x (2.0 GiB + 256 MiB for qemu) = 4.5 GiB');
  t.same(offlines(mom), [], 'never offlined');
});

t.test('fits, but not beside the VM job already here: requeued (exit 2), the node stays up; once that job ends, it runs', async (t) => {
  const mom = smallNode();
  // [launch] start = false: job A's VMs belong to the site's launcher while its files exist.
  const a = await mom.prologue({ id: '72.srv', script: script('ram=1G'), qstat: { start_count: '1' } });
  t.equal(a.code, 0, a.er);
  const b = await mom.prologue({ id: '73.srv', script: script('ram=2G'), qstat: { start_count: '1' } });
  t.equal(b.code, 2, b.er);
  t.match(b.er, 'node node01 cannot take VM job 73.srv now');
  t.match(b.er, 'The job goes back to the queue');
  t.match(b.er, 'other VM jobs hold 1.3 GiB of the 3.0 GiB this node gives VMs (72.srv)');
  t.notMatch(b.er, /\(admin\)/, 'nothing for the admin to do');
  t.same(offlines(mom), [], 'the node is not offlined');
  t.equal(mom.nodeState('node01').state, 'free');
  const busy = mom.logLines().find((l) => l.msg === 'job failed' && (l.err as { name?: string })?.name === 'NodeBusy');
  t.ok(busy, 'the admin log says NodeBusy');

  const end = await mom.run('epilogue', { id: '72.srv' });
  t.equal(end.code, 0, end.er);
  const again = await mom.prologue({ id: '73.srv', script: script('ram=2G'), qstat: { start_count: '2' } });
  t.equal(again.code, 0, again.er);
  t.match(again.ou, 'VM job 73.srv: 1 VM of debian12.qcow2');
});

t.test('a running prologue\'s reservation counts while that prologue lives, and is dropped once it is gone', async (t) => {
  const mom = smallNode();
  // What a concurrent prologue of job 74.srv wrote: its pid and start time, 2.5 GiB held.
  const holder = spawn('/bin/sleep', ['600'], { stdio: 'ignore' });
  t.teardown(() => { holder.kill('SIGKILL'); });
  const stat = readFileSync(`/proc/${holder.pid}/stat`, 'utf8');
  const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  const dir = join(mom.jobDir, '.admission');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, '74.srv.json');
  writeFileSync(file, JSON.stringify({ version: 1, jobId: '74.srv', pid: holder.pid, start, memory: 2.5 * 1024 ** 3, vcpus: 1, ramdiskWorst: 0 }), { mode: 0o600 });
  const b = await mom.prologue({ id: '75.srv', script: script('ram=1G'), qstat: { start_count: '1' } });
  t.equal(b.code, 2, b.er);
  t.match(b.er, '(74.srv)');
  t.same(offlines(mom), []);
  holder.kill('SIGKILL');
  await new Promise((res) => holder.once('exit', res));
  const c = await mom.prologue({ id: '75.srv', script: script('ram=1G'), qstat: { start_count: '2' } });
  t.equal(c.code, 0, c.er);
  t.notOk(readdirSync(dir).includes('74.srv.json'), 'the dead prologue\'s reservation is removed');
  t.notOk(readdirSync(dir).includes('75.srv.json'), 'a prepared job\'s reservation gives way to its manifest');
});

t.test("a reservation whose prologue has died but is not reaped yet (a zombie) holds nothing", async (t) => {
  const mom = smallNode();
  // A parent that forks a child which exits at once, and never waits for it: the child stays a zombie
  // with its pid and start time, as a killed prologue does until pbs_mom reaps it.
  const parent = spawn('/usr/bin/python3', ['-c', 'import os, sys, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(600)\n'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => { parent.kill('SIGKILL'); });
  const pid = Number(await new Promise<string>((res) => parent.stdout!.once('data', (d) => res(String(d).trim()))));
  let stat = '';
  for (let i = 0; i < 50 && !/^\d+ \(.*\) Z /.test(stat); i++) {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    await new Promise((res) => setTimeout(res, 100));
  }
  t.match(stat, /\) Z /, 'the child is a zombie');
  const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  const dir = join(mom.jobDir, '.admission');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, '77.srv.json'), JSON.stringify({ version: 1, jobId: '77.srv', pid, start, memory: 2.5 * 1024 ** 3, vcpus: 1, ramdiskWorst: 0 }), { mode: 0o600 });
  const r = await mom.prologue({ id: '78.srv', script: script('ram=1G'), qstat: { start_count: '1' } });
  t.equal(r.code, 0, r.er);
  t.notOk(readdirSync(dir).includes('77.srv.json'), "the zombie's reservation is removed");
});

t.test('a busy node ends the loop at max_start_count: the job is aborted (exit 1), the node still not offlined', async (t) => {
  const mom = smallNode();
  t.equal((await mom.prologue({ id: '76.srv', script: script('ram=1G'), qstat: { start_count: '1' } })).code, 0);
  const r = await mom.prologue({ id: '77.srv', script: script('ram=2G'), qstat: { start_count: '5' } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, 'it was started 5 times and each time its node had no room for it yet');
  t.same(offlines(mom), []);
});

t.test('vCPUs beyond the node\'s cores x vcpus_per_core never fit', async (t) => {
  const mom = smallNode('vcpus_per_core = 1\n');
  const r = await mom.prologue({ id: '78.srv', script: script('vcpus=64'), qstat: { start_count: '1' } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /this node gives VMs at most \d+ vCPUs \(\d+ cores? x \[launch\] vcpus_per_core 1\)/);
  t.same(mom.pbsnodesCalls(), []);
});

t.test('fs_type=ramdisk: the copy and the overlays at their worst against [cache] ramdisk_job_max; the fix is the user\'s', async (t) => {
  const mom = new Mom();
  writeFileSync(mom.configFile, mom.defaultIni() + '[cache]\nramdisk_job_max = 1M\n');
  const r = await mom.prologue({ id: '79.srv', script: script('fs_type=ramdisk'), qstat: { start_count: '1' } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, "a job may take at most 1.0 MiB of this node's ramdisk ([cache] ramdisk_job_max)");
  t.match(r.er, 'use an image with a smaller virtual disk, fewer VMs per node, or fs_type=sharedfs');
  t.same(mom.pbsnodesCalls(), []);
  t.notOk(existsSync(join(mom.root, 'shm', '79.srv')), 'nothing copied into the ramdisk');
});

t.test("fs_type=ramdisk: a job whose overlays could not grow beside a running ramdisk job's waits in the queue; once that job ends, it runs", async (t) => {
  const mom = new Mom();
  // A 100 MiB tmpfs of the node's own: the test image's copy (1.2 MiB) and its overlay at its worst (64 MiB virtual) fit once, not twice.
  const shm = join(mom.root, 'shm');
  mkdirSync(shm, { recursive: true, mode: 0o755 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=100M,mode=0755', 'tmpfs', shm]);
  t.teardown(() => { spawnSync('umount', ['-l', shm]); });
  const a = await mom.prologue({ id: '80.srv', script: script('fs_type=ramdisk'), qstat: { start_count: '1' } });
  t.equal(a.code, 0, a.er);
  const b = await mom.prologue({ id: '81.srv', script: script('fs_type=ramdisk'), qstat: { start_count: '1' } });
  t.equal(b.code, 2, b.er);
  t.match(b.er, 'node node01 cannot take VM job 81.srv now');
  t.match(b.er, /the ramdisk has [0-9.]+ MiB free, of which other jobs' overlays may still take [0-9.]+ MiB/);
  t.notMatch(b.er, /sharedfs/, 'nothing to change for the user, nothing for the admin');
  t.same(offlines(mom), []);
  t.equal((await mom.run('epilogue', { id: '80.srv' })).code, 0);
  const again = await mom.prologue({ id: '81.srv', script: script('fs_type=ramdisk'), qstat: { start_count: '2' } });
  t.equal(again.code, 0, again.er);
});
