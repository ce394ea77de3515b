// qdel while the prologue still works (issue 14): pbs_mom runs the epilogue at
// once (Torque's req_signaljob, src/resmom/requests.c: a SIGKILL that finds no
// job process forces the job to EXITING, and scan_for_exiting ->
// preobit_preparation runs the epilogue) while the prologue, in the starter
// child, goes on. Whichever of the two runs second must leave nothing behind.
// Real races: the epilogue runs while a cold prologue's libguestfs inspects
// the image, and while a prologue's qemu boots.
import t from 'tap';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY, type Job } from './harness/mom.js';
import { bootGuestImage, bootingIni, qemusOf } from './harness/launch-user.js';

t.setTimeout(1800_000);

const script = (vm: string) => `#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#VM ${vm}\nhostname\n`;
const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DELETED = 'the job was deleted (qdel; its epilogue ran) while it was prepared: everything made for it is removed';

/** A process and all its live descendants: the prologue runs its tools in process groups of their own. */
function tree(root: number): { pid: number; comm: string }[] {
  const procs: { pid: number; ppid: number; comm: string }[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      procs.push({ pid: Number(p), ppid: Number(stat.slice(close + 2).split(' ')[1]), comm: stat.slice(stat.indexOf('(') + 1, close) });
    } catch { /* gone */ }
  }
  const mine = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) if (!mine.has(p.pid) && mine.has(p.ppid)) { mine.add(p.pid); grew = true; }
  }
  return procs.filter((p) => mine.has(p.pid));
}

/** Waits (bounded) until test() holds, polling; false if it never did while the prologue ran. */
async function until(test: () => boolean, running: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end && running()) {
    if (test()) return true;
    await sleep(100);
  }
  return false;
}

/** What a job left on the node: its directories, its lease, its ended marker. */
function leftovers(mom: Mom, id: string): string[] {
  return [
    join(mom.jobDir, id),
    join(mom.root, 'shm', id),
    join(mom.cacheDir, 'leases', `${id}.json`),
    join(mom.cacheDir, 'ended', `${id}.json`),
  ].filter((p) => existsSync(p));
}

t.test('an epilogue run while a cold prologue inspects the image: the prologue publishes nothing and leaves no job files, lease or marker', async (t) => {
  const mom = new Mom({ privateCache: true });
  const job: Job = { id: '31.srv', script: script('img=debian12.qcow2,vms_per_node=2') };
  let pgid = 0;
  let done = false;
  const p = mom.prologue(job, { onSpawn: (pid) => { pgid = pid; } }).finally(() => { done = true; });
  let tools: { pid: number; comm: string }[] = [];
  const inspecting = await until(() => (tools = tree(pgid).filter((p) => p.comm !== 'node')).some((p) => p.comm === 'guestfish'), () => !done, 600_000);
  t.ok(inspecting, 'caught the prologue while guestfish inspected the new image');
  t.same(leftovers(mom, job.id), [], 'nothing published yet when qdel comes');
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.notOk(done, 'the prologue was still working when the epilogue ended');
  const r = await p;
  t.equal(r.code, 1, 'exit 1: the job is gone, pbs_mom must not start it; never 2, which would requeue it and may offline the node');
  t.match(r.er, /^vtorque: job 31\.srv was deleted while this node prepared its VMs; everything made for it on \S+ is removed\. Fix: /m);
  t.same(leftovers(mom, job.id), [], 'no job directory, ramdisk copy, lease or marker is left');
  // .admission holds running prologues' reservations (launch/admission.ts): none is left.
  t.same(ls(mom.jobDir).filter((n) => n !== '.admission'), []);
  t.same(ls(join(mom.jobDir, '.admission')), [], 'no admission reservation is left');
  t.same(mom.pbsnodesCalls().filter((c) => c.includes('-o')), [], 'the node is not offlined for a qdel');
  // SIGKILLed with the prologue's exit; init reaps them a moment later (a zombie is no process left running).
  const alive = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 100 && tools.some((p) => alive(p.pid)); i++) await sleep(100);
  t.same(tools.filter((p) => alive(p.pid)), [], 'no guestfish (or its appliance) of the prologue is left');
  const log = mom.logLines();
  t.ok(log.some((l) => l.msg === DELETED), 'the admin log says why the prologue stopped');
  t.notOk(log.some((l) => l.msg === 'job failed'), 'not logged as a failure of the job or the node');
  t.same(log.filter((l) => /deadline/.test(JSON.stringify(l))), [], 'no log line of the job speaks of a deadline');

  // The node still works: the same image, now for a job nobody deletes.
  const next: Job = { id: '32.srv', script: script('img=debian12.qcow2') };
  const r2 = await mom.prologue(next);
  t.equal(r2.code, 0, r2.er);
  t.ok(existsSync(join(mom.jobDir, next.id, 'manifest.json')));
  const e2 = await mom.run('epilogue', next);
  t.equal(e2.code, 0, e2.er);
  t.same(leftovers(mom, next.id).filter((f) => !f.endsWith(join('ended', `${next.id}.json`))), [], 'the normal order still removes everything');
});

t.test('a requeued job (same id) is not refused by the marker its previous start\'s epilogue left', async (t) => {
  const mom = new Mom();
  const job: Job = { id: `${process.pid}3.srv`, script: script('img=debian12.qcow2') };
  // Its first start failed (say, exit 2) and pbs_mom ran the epilogue after the prologue (exec_bail -> scan_for_exiting).
  mom.submit(job);
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.ok(existsSync(join(mom.cacheDir, 'ended', `${job.id}.json`)), 'the epilogue left its marker');
  await sleep(50);
  const r = await mom.prologue(job);
  t.equal(r.code, 0, r.er);
  t.ok(existsSync(join(mom.jobDir, job.id, 'manifest.json')), 'the rerun is prepared');
  t.ok(existsSync(join(mom.cacheDir, 'leases', `${job.id}.json`)), 'and holds its lease');
  t.notOk(existsSync(join(mom.cacheDir, 'ended', `${job.id}.json`)), 'the stale marker was removed by the rerun');
  await mom.run('epilogue', job);
  t.same(leftovers(mom, job.id).filter((f) => !f.includes(`${join('ended', job.id)}`)), []);
});

t.test('an epilogue run while the prologue boots the VM: no qemu, tap, file or lease is left', async (t) => {
  const guest = bootGuestImage();
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: bootingIni(600) });
  const job: Job = { id: `${process.pid}7.head`, script: '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho hello\n' };
  t.teardown(() => { for (const q of qemusOf(job.id)) try { process.kill(q, 'SIGKILL'); } catch { /* gone */ } });
  let done = false;
  const p = mom.prologue(job, { alarm: 1300 }).finally(() => { done = true; });
  // In the boot wait: its qemu runs and the prologue has handed the agent socket to the job owner, the
  // last step before the wait (on a fast machine an epilogue between qemu's start and that step
  // catches the prologue before its wait, and the log cannot say the wait was stopped).
  const agent = join(mom.jobDir, job.id, 'vm-0.agent');
  const handedOver = () => { try { return lstatSync(agent).uid === NOBODY.uid; } catch { return false; } };
  const booting = await until(() => qemusOf(job.id).length > 0 && handedOver(), () => !done, 900_000);
  t.ok(booting, 'caught the prologue while its qemu booted');
  const e = await mom.run('epilogue', job, { alarm: 600 });
  t.equal(e.code, 0, e.er);
  const r = await p;
  t.equal(r.code, 1, r.er);
  t.match(r.er, /was deleted while this node prepared its VMs/);
  t.notMatch(r.er, /deadline|did not come up|did not answer/, 'the job\'s report speaks of its deletion only');
  t.same(qemusOf(job.id), [], 'no qemu of the job is left');
  t.same(leftovers(mom, job.id), [], 'no job directory, lease or marker is left');
  // The boot wait was stopped by the job's deletion: the admin log says qdel, not a deadline nor a VM that did not come up.
  const log = mom.logLines().filter((l) => l.job === job.id);
  t.notOk(log.some((l) => l.msg === 'VM did not come up'), 'not logged as a VM that did not come up');
  t.same(log.filter((l) => /deadline/.test(JSON.stringify(l))), [], 'no log line of the job speaks of a deadline');
  t.ok(log.some((l) => l.msg === 'boot wait stopped: the job was deleted (qdel) while its VM booted'), 'the boot stage says the wait ended by qdel');
  const ended = log.find((l) => l.msg === DELETED);
  t.ok(ended, 'the admin log says the job was deleted (qdel)');
  t.match(ended?.during, /^waiting for VM \S+ to boot$/, 'and that it was deleted while its VM booted');
  t.notOk(log.some((l) => l.msg === 'job failed'), 'not logged as a failure of the job or the node');
});
