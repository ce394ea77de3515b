// The VM launcher end to end, under TCG: the prologue of a #VM job boots the
// real Debian boot guest (scripts/build-boot-guest) as the launch account and
// waits for its guest agent; the job owner can neither change nor touch the
// VM; the epilogue leaves no qemu and no file. A guest that does not answer
// within [launch] boot fails the job (exit 1) with its console tail.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from './harness/mom.js';
import { bootGuestImage, ensureLaunchUser, qemusOf, bootingIni } from './harness/launch-user.js';
import { asUser } from './harness/attacker.js';
import { processes } from './harness/procs.js';

t.setTimeout(1800_000);
const LAUNCH = ensureLaunchUser();
const guest = bootGuestImage();
const QEMU = '/usr/bin/qemu-system-x86_64';

const script = '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho hello\n';


/** Runs a small node program as nobody (the attacker harness's clean environment) and returns what it printed. */
const asNobody = (code: string): string => asUser(code).stdout.trim();

t.test('a #VM job boots in a VM of the launch account that the job owner cannot change or touch; the epilogue stops it', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: bootingIni(600) });
  const job = { id: `${process.pid}1.head`, script };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const r = await mom.prologue(job, { alarm: 1300 });
  t.comment(r.ou + r.er);
  t.equal(r.code, 0, 'the prologue succeeds');
  t.match(r.ou, /vtorque: VM \S+ booted in [0-9.]+ s \(tcg\)/, 'the job output says the VM booted, and with which accelerator');
  t.match(r.ou, /vtorque: manifest: .*\nvtorque: VM \S+ booted in/, 'after the summary (the boot comes last, a real Torque run printed it first)');
  const dir = join(mom.jobDir, job.id);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  const vm = manifest.vms[0];
  t.equal(manifest.accel.accel, 'tcg');
  const pid: number = vm.run.pid;
  t.same(qemusOf(job.id), [pid], 'one qemu for the job, the one in the manifest');
  // The prologue told its boot guard the VM is the job's: the guard left, the VM stays.
  const guards = () => processes().filter((p) => p.cmdline.includes('vtorque-boot-guard') && p.cmdline.includes(join(dir, 'run')));
  for (let i = 0; i < 50 && guards().length > 0; i++) await new Promise((res) => setTimeout(res, 100));
  t.same(guards(), [], 'the boot guard is gone, and left the VM running');

  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  t.match(status, new RegExp(`^Uid:\\s+${LAUNCH.uid}\\s+${LAUNCH.uid}\\s+${LAUNCH.uid}\\s+${LAUNCH.uid}$`, 'm'), 'qemu runs as the launch account (every uid)');
  t.match(status, new RegExp(`^Gid:\\s+${LAUNCH.gid}\\s`, 'm'), 'and its group');
  t.equal(readlinkSync(`/proc/${pid}/exe`), QEMU);

  for (const f of [vm.overlay, vm.seed.path, join(dir, 'manifest.json')]) {
    t.equal(asNobody(`try { require('fs').openSync(${JSON.stringify(f)}, 'r+'); console.log('opened') } catch (e) { console.log(e.code) }`), 'EACCES', `the job owner cannot write ${f.slice(dir.length + 1)}`);
  }
  t.equal(asNobody(`try { require('fs').readdirSync(${JSON.stringify(dir)}); console.log('listed') } catch (e) { console.log(e.code) }`), 'EACCES', 'the job owner cannot list the job directory');
  t.equal(asNobody(`try { process.kill(${pid}, 0); console.log('signalled') } catch (e) { console.log(e.code) }`), 'EPERM', 'the job owner cannot signal qemu');
  const ptrace = spawnSync('/usr/bin/python3', ['-c', `import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.ptrace(16, ${pid}, 0, 0); print(r, os.strerror(ctypes.get_errno()))`], { uid: NOBODY.uid, gid: NOBODY.gid, encoding: 'utf8' });
  t.match(ptrace.stdout, /^-1 Operation not permitted/, 'the job owner cannot ptrace qemu');
  const agent = lstatSync(join(dir, 'vm-0.agent'));
  t.ok(agent.isSocket(), 'the agent socket is in the job directory');
  t.same([agent.uid, agent.mode & 0o777], [NOBODY.uid, 0o600], 'owned by the job owner, 0600');
  const run = statSync(join(dir, 'run'));
  t.same([run.uid, run.mode & 0o777], [LAUNCH.uid, 0o700], 'run/ is the launch account\'s alone');
  t.equal(existsSync(join(dir, 'run', 'vm-0.agent')), false, 'the socket was moved out of run/');

  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, 'the epilogue succeeds');
  t.same(qemusOf(job.id), [], 'no qemu left');
  t.equal(existsSync(dir), false, 'no job files left');
});

t.test('a VM that does not answer within [launch] boot fails the job with its console tail, and leaves no qemu', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: bootingIni(40) });
  const job = { id: `${process.pid}2.head`, script };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const r = await mom.prologue(job, { alarm: 1300 });
  t.comment(r.er);
  t.equal(r.code, 1, 'the job\'s fault: exit 1');
  t.match(r.er, /VM \S+ did not answer within [0-9]+ s \(\[launch\] boot, tcg\)/, 'the report says which VM and why');
  t.match(r.er, /vtorque:\s+\S+ console: /, 'and shows lines of its console');
  t.notMatch(r.er, /the console is empty/, 'the guest printed something in 40 s');
  t.ok(r.er.split('\n').filter((l) => / console: /.test(l)).length <= 20, 'at most 20 console lines');
  t.same(qemusOf(job.id), [], 'no qemu left');
  t.equal(existsSync(join(mom.jobDir, job.id)), false, 'no job files left');
});
