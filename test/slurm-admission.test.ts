// A busy node under real Slurm (test/harness/slurm.ts): a Prolog that exits
// non-zero drains the node, so a job that fits but not now is put back in the
// queue by the Prolog itself (scontrol requeue, our reason in its comment) and
// the Prolog exits 0. The node must never be drained for it, the job must not
// run without its VMs, and it runs once the node has room. The node is made
// "small" with [launch] reserve_memory; the room is held by a reservation, as
// a concurrent prologue's, whose process ends when the test says.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENDED } from './harness/slurm.js';
import { NOBODY } from './harness/mom.js';
import { nodePaths, poolImage, slurmTestNode, startSlurmNode } from './harness/slurm-wiring.js';
import { ensureLaunchUser } from './harness/launch-user.js';

ensureLaunchUser();
const node = slurmTestNode('vt-slurm-admit-');
const { jobDir, ini } = node;
poolImage(node, 'debian12.qcow2', 'debian-ok.qcow2');
const memKiB = Number(/^MemTotal:\s+([0-9]+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
writeFileSync(ini, [
  ...nodePaths(node),
  '[guestfs]', 'accel = tcg', '[launch]', 'start = false', 'accel = tcg',
  // This node gives VMs 3 GiB.
  `reserve_memory = ${memKiB - 3 * 1024 * 1024}K`, '',
].join('\n'));

const { s, logs } = await startSlurmNode(t, node);

t.test('a busy node: the Prolog requeues the job with our reason and exits 0; the node is never drained; the job runs once there is room', async (t) => {
  // A live prologue of job 999999 holds 2.5 GiB of the 3.
  const holder = spawn('/bin/sleep', ['600'], { stdio: 'ignore' });
  t.teardown(() => { holder.kill('SIGKILL'); });
  const stat = readFileSync(`/proc/${holder.pid}/stat`, 'utf8');
  // Where a running prologue keeps its reservation (launch/admission.ts): beside the job directories.
  mkdirSync(jobDir, { recursive: true, mode: 0o755 });
  const dir = join(jobDir, '.admission');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, '999999.json'), JSON.stringify({
    version: 1, jobId: '999999', pid: holder.pid, start: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19], memory: 2.5 * 1024 ** 3, vcpus: 1, ramdiskWorst: 0,
  }), { mode: 0o600 });

  const udir = s.userDir(NOBODY, 'busy');
  const r = await s.sbatch(NOBODY, udir, ['-o', join(udir, '%j.out')], '#!/bin/sh\n#VM img=debian12.qcow2,ram=1G\necho busy-job-ran\n');
  t.equal(r.code, 0, r.stderr);
  const id = r.jobId!;
  let show = '';
  const until = Date.now() + 300_000;
  while (Date.now() < until) {
    show = (await s.run('scontrol', ['show', 'job', id])).stdout;
    if (/Comment=vtorque: node busy, job requeued/.test(show) && /Restarts=[1-9]/.test(show)) break;
    await new Promise((res) => setTimeout(res, 500));
  }
  t.match(show, /Comment=vtorque: node busy, job requeued: other VM jobs hold the room its VMs need/, 'our reason, where the user sees it', /Comment=vtorque: node busy/.test(show) ? {} : { logs: logs() });
  t.match(show, /Restarts=[1-9]/, 'slurmctld requeued it');
  const state = await s.jobState(id);
  t.comment(`after the requeue: ${JSON.stringify(state)}; ${/JobState=\S+/.exec(show)?.[0]} ${/Reason=\S+/.exec(show)?.[0]} ${/EligibleTime=\S+/.exec(show)?.[0]}`);
  t.notMatch(state?.reason ?? '', /held/, 'not held: it waits to be scheduled again');
  const node = await s.nodeState();
  t.notMatch(node.state, /drain/, `the node is not drained: ${JSON.stringify(node)}`);
  const out = join(udir, `${id}.out`);
  t.notMatch(existsSync(out) ? readFileSync(out, 'utf8') : '', /busy-job-ran/, 'the job did not run without its VMs');

  // The holder ends: its reservation no longer counts, and the job's next start has room.
  holder.kill('SIGKILL');
  const done = await s.waitJob(id, (j) => ENDED.has(j.state), 600_000);
  t.equal(done.state, 'COMPLETED', 'the job ran at a later start', done.state === 'COMPLETED' ? {} : { logs: logs() });
  t.equal(readFileSync(out, 'utf8').split('busy-job-ran').length, 2, 'once');
  t.notMatch((await s.nodeState()).state, /drain/);
});
