// A VM job on three nodes, in Torque's order: the sisters run prologue.parallel
// as they join (before Mother Superior's prologue), without the job script,
// and learn the request from qstat; each node prepares its own VMs.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom } from './harness/mom.js';

const NODES = ['node01', 'node02', 'node03'];
const SCRIPT = '#!/bin/bash\n#PBS -l nodes=3:ppn=2\n#VM img=debian12.qcow2,vcpus=2\n#VM vms_per_node=2\nmpirun hostname\n';
const NODEFILE = NODES.flatMap((n) => [n, n]).join('\n') + '\n';
const EXEC_HOST = NODES.map((n) => `${n}/0-1`).join('+');

/** What qsub does with the submit filter, with the node's ini (never the machine's): the script it gets back carries the request in a #PBS -v line. */
function submitFiltered(mom: Mom, script: string): { script: string; variables: string } {
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'submit-filter'], { input: script, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`submit-filter refused: ${r.stderr}`);
  const m = /^#PBS -v (.*)$/m.exec(r.stdout);
  if (!m) throw new Error('submit-filter added no #PBS -v line');
  return { script: r.stdout, variables: `PBS_O_HOME=/nonexistent,PBS_O_WORKDIR=/tmp,${m[1]}` };
}

/** Three nodes, each with its own cache; the verdict is known on all (as with [paths] shared_verdicts). Built once. */
let built: Mom[] | undefined;
function cluster(): Mom[] {
  if (built) return built;
  const moms = NODES.map(() => new Mom({ privateCache: true }));
  moms.forEach((m, i) => writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01', `node_name = ${NODES[i]}`)));
  const chk = spawnSync(process.execPath, [BIN, '--config', moms[0]!.configFile, 'check', '--image', 'debian12.qcow2'], { encoding: 'utf8', timeout: 600_000 });
  if (chk.status !== 0) throw new Error(chk.stdout + chk.stderr);
  for (const m of moms.slice(1)) cpSync(join(moms[0]!.cacheDir, 'verdicts'), join(m.cacheDir, 'verdicts'), { recursive: true });
  return (built = moms);
}

function nodefile(mom: Mom, id: string, text = NODEFILE): void {
  mkdirSync(join(mom.torqueHome, 'aux'), { recursive: true });
  writeFileSync(join(mom.torqueHome, 'aux', id), text);
}

const manifest = (mom: Mom, id: string) => JSON.parse(readFileSync(join(mom.jobDir, id, 'manifest.json'), 'utf8'));

t.test('a 3-node VM job: sisters first, from qstat; every node prepares its own VMs, with job-wide unique names', async (t) => {
  const moms = cluster();
  const { script, variables } = submitFiltered(moms[0]!, SCRIPT);
  const qstat = { Variable_List: variables, exec_host: EXEC_HOST, start_count: '1' };
  const id = '42.head';
  for (const m of moms) nodefile(m, id);
  for (const [i, m] of moms.entries()) {
    if (i === 0) continue;
    m.submit({ id, qstat }); // no script: a sister has only the job's attributes
    const r = await m.run('prologue.parallel', { id, qstat });
    t.equal(r.code, 0, `sister ${NODES[i]}: ${r.er}`);
    t.match(r.ou, /VM job 42\.head: 2 VMs of debian12\.qcow2/);
  }
  const ms = await moms[0]!.prologue({ id, script, qstat });
  t.equal(ms.code, 0, ms.er);
  t.notMatch(ms.ou, /differ/, 'the script and VTORQUE_REQUEST agree');

  const all = moms.map((m) => manifest(m, id));
  all.forEach((m, i) => {
    t.equal(m.position, i, `${NODES[i]} knows its place`);
    t.equal(m.vms.length, 2, `${NODES[i]} made its own two overlays`);
    t.equal(m.request.vcpus, 2, 'every node resolved the same request');
    t.equal(m.requestSource, i === 0 ? 'script' : 'VTORQUE_REQUEST');
  });
  const vms = all.flatMap((m) => m.vms);
  t.same(vms.map((v: { jobIndex: number }) => v.jobIndex), [0, 1, 2, 3, 4, 5], 'VM indices are unique across the job');
  t.same(vms.map((v: { hostname: string }) => v.hostname), ['vnode01-0', 'vnode01-1', 'vnode02-0', 'vnode02-1', 'vnode03-0', 'vnode03-1']);
  t.same(all[0].job.hosts, NODES, "Mother Superior's manifest lists the hosts");
  t.same(all[0].job.vms.map((v: { hostname: string }) => v.hostname), vms.map((v: { hostname: string }) => v.hostname), 'and every VM of the job');
  t.ok(moms[1]!.qstatCalls().length >= 1, 'the sister asked Torque');
});

t.test('a sister finds its place from exec_host when it has no PBS_NODEFILE', async (t) => {
  const [, m2] = cluster();
  const { variables } = submitFiltered(m2!, SCRIPT);
  const id = '43.head';
  nodefile(m2!, id, '');
  m2!.submit({ id, qstat: { Variable_List: variables, exec_host: EXEC_HOST } });
  const r = await m2!.run('prologue.parallel', { id });
  t.equal(r.code, 0, r.er);
  t.same(manifest(m2!, id).vms.map((v: { hostname: string }) => v.hostname), ['vnode02-0', 'vnode02-1']);
});

t.test('sisters: no request in the variables is not a VM job; no answer from Torque is a node fault', async (t) => {
  const m = new Mom();
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01', 'node_name = node02'));
  nodefile(m, '44.head');
  m.submit({ id: '44.head', qstat: { Variable_List: 'PBS_O_HOME=/home/a,OMP_NUM_THREADS=4' } });
  const plain = await m.run('prologue.parallel', { id: '44.head' });
  t.equal(plain.code, 0, plain.er);
  t.equal(plain.ou, '', 'a plain job sees nothing of us on a sister either');
  t.ok(m.logLines().some((l) => /not a VM job/.test(String(l.msg))), 'the admin log says why the sister did nothing');

  nodefile(m, '45.head');
  const lost = await m.run('prologue.parallel', { id: '45.head' }); // qstat: Unknown Job Id
  t.equal(lost.code, 2, 'requeue: the node could not learn the request');
  t.match(lost.er, /cannot get job 45\.head's VM request from Torque on this sister node/);
  t.match(lost.er, /Fix: \(admin\) a sister has no job script and learns the VM request from qstat/);
});

t.test("Mother Superior follows the script when VTORQUE_REQUEST disagrees, and says so", async (t) => {
  const m = new Mom();
  const { script } = submitFiltered(m, SCRIPT);
  const { variables } = submitFiltered(m, SCRIPT.replace('vcpus=2', 'vcpus=4'));
  nodefile(m, '46.head', 'node01\n');
  const r = await m.prologue({ id: '46.head', script, qstat: { Variable_List: variables } });
  t.equal(r.code, 0, r.er);
  t.match(r.ou, /warning: your #VM lines and VTORQUE_REQUEST differ \(vcpus: #VM 2, VTORQUE_REQUEST 4/);
  t.equal(manifest(m, '46.head').request.vcpus, 2);
  t.ok(m.logLines().some((l) => l.level === 40 && /disagree/.test(String(l.msg))));
});
