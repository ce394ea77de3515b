// Issue 14, item 7: a site whose Torque node names are not the hosts' short
// names. One answer to "this node's Torque name" serves placement, pbsnodes
// and the check against PBS_NODENUM: [torque] node_name, else what pbs_mom
// says (PBS_MSHOST on Mother Superior, the PBS_NODENUM-th exec host on a
// sister), else the host name. Driven through the pbs_mom harness.
import t from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Mom } from './harness/mom.js';
import { torqueNodeName } from '../src/torque/contract.js';

// Names no test machine has: the short host name cannot find them.
const NAMES = ['cn-a', 'cn-b'];
const EXEC_HOST = NAMES.map((n) => `${n}/0-1`).join('+');
const SCRIPT = '#!/bin/bash\n#PBS -l nodes=2:ppn=2\n#VM img=debian12.qcow2\nhostname\n';
const VARS = 'PBS_O_HOME=/nonexistent,PBS_O_WORKDIR=/tmp,VTORQUE_REQUEST=v1:img=debian12.qcow2';

/** A node of the harness with no [torque] node_name: it must learn its name from Torque. */
function unnamed(ini = ''): Mom {
  const m = new Mom({ ini });
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01\n', ''));
  return m;
}

function nodefile(m: Mom, id: string, text: string): void {
  mkdirSync(join(m.torqueHome, 'aux'), { recursive: true });
  writeFileSync(join(m.torqueHome, 'aux', id), text);
}

const manifest = (m: Mom, id: string) => JSON.parse(readFileSync(join(m.jobDir, id, 'manifest.json'), 'utf8'));

t.test('Mother Superior named cn-a by Torque (not its host name, no node_name) is placed first, not requeued', async (t) => {
  t.notOk(hostname().split('.')[0] === 'cn-a', 'the test machine is not called cn-a');
  const m = unnamed();
  nodefile(m, '60.head', 'cn-a\ncn-a\ncn-b\ncn-b\n');
  const r = await m.prologue({ id: '60.head', script: SCRIPT }, { env: { PBS_MSHOST: 'cn-a', PBS_NODENUM: '0' } });
  t.equal(r.code, 0, r.er);
  const man = manifest(m, '60.head');
  t.equal(man.position, 0);
  t.same(man.job.hosts, NAMES);
  t.same(man.vms.map((v: { hostname: string }) => v.hostname), ['vcn-a']);
});

t.test('a sister learns its name from PBS_NODENUM and exec_host', async (t) => {
  const m = unnamed();
  m.submit({ id: '61.head', qstat: { Variable_List: VARS, exec_host: EXEC_HOST } });
  nodefile(m, '61.head', '');
  const r = await m.run('prologue.parallel', { id: '61.head' }, { env: { PBS_MSHOST: 'cn-a', PBS_NODENUM: '1' } });
  t.equal(r.code, 0, r.er);
  const man = manifest(m, '61.head');
  t.equal(man.position, 1);
  t.same(man.vms.map((v: { hostname: string }) => v.hostname), ['vcn-b']);
});

t.test('with job_radix pbs_mom numbers sisters within their radix group, so PBS_NODENUM is not used; node_name then decides', async (t) => {
  const m = unnamed();
  m.submit({ id: '62.head', qstat: { Variable_List: VARS, exec_host: EXEC_HOST, job_radix: '2' } });
  nodefile(m, '62.head', '');
  const r = await m.run('prologue.parallel', { id: '62.head' }, { env: { PBS_MSHOST: 'cn-a', PBS_NODENUM: '1' } });
  t.equal(r.code, 2, 'no trustworthy name: a node fault');
  t.match(r.er, /Fix: \(admin\) .*\[torque\] node_name/);
  const named = new Mom();
  writeFileSync(named.configFile, readFileSync(named.configFile, 'utf8').replace('node_name = node01', 'node_name = cn-b'));
  named.submit({ id: '63.head', qstat: { Variable_List: VARS, exec_host: EXEC_HOST, job_radix: '2' } });
  nodefile(named, '63.head', '');
  const ok = await named.run('prologue.parallel', { id: '63.head' }, { env: { PBS_MSHOST: 'cn-a', PBS_NODENUM: '1' } });
  t.equal(ok.code, 0, ok.er);
  t.equal(manifest(named, '63.head').position, 1);
});

t.test('a node fault offlines the node under the name Torque gave it, and tells the admin to set node_name', async (t) => {
  const m = unnamed();
  writeFileSync(join(m.root, 'notadir'), '');
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace(`job_dir = ${m.jobDir}`, `job_dir = ${join(m.root, 'notadir', 'jobs')}`));
  nodefile(m, '64.head', 'cn-a\ncn-b\n');
  const r = await m.prologue({ id: '64.head', script: SCRIPT, qstat: { start_count: '1' } }, { env: { PBS_MSHOST: 'cn-a', PBS_NODENUM: '0' } });
  t.equal(r.code, 2, r.er);
  t.equal(m.nodeState('cn-a').state, 'offline', 'pbsnodes was asked about cn-a');
  t.ok(m.pbsnodesCalls().every((c) => c.endsWith(' cn-a')), m.pbsnodesCalls().join('; '));
  t.match(r.er, /node cn-a cannot prepare VM job 64\.head now/);
  t.ok(m.logLines().some((l) => /set \[torque\] node_name = cn-a/.test(String(l.msg))), 'the admin log says how doctor will find this node');
});

t.test('torqueNodeName: node_name, else PBS_MSHOST on Mother Superior, else hosts[PBS_NODENUM] on a sister without job_radix, else the host name', async (t) => {
  const hosts = ['cn-a', 'cn-b', 'cn-c'];
  const env = { msHost: 'cn-a', nodeNum: 2 };
  t.match(torqueNodeName({ configured: 'x1', kind: 'prologue-parallel', env, hosts }), { name: 'x1', from: '[torque] node_name', torque: 'cn-c' });
  t.match(torqueNodeName({ configured: '', kind: 'prologue', env, hosts }), { name: 'cn-a', from: 'PBS_MSHOST' });
  t.match(torqueNodeName({ configured: '', kind: 'epilogue', env, hosts }), { name: 'cn-a', from: 'PBS_MSHOST' });
  t.match(torqueNodeName({ configured: '', kind: 'prologue-parallel', env, hosts }), { name: 'cn-c', from: 'PBS_NODENUM' });
  t.match(torqueNodeName({ configured: '', kind: 'prologue-parallel', env, hosts, radix: true }), { name: hostname(), from: 'hostname' });
  t.match(torqueNodeName({ configured: '', kind: 'prologue-parallel', env: { nodeNum: 0 }, hosts }), { from: 'hostname' }, 'node 0 is Mother Superior, never a sister');
  t.match(torqueNodeName({ configured: '', kind: 'prologue-parallel', env: { nodeNum: 7 }, hosts }), { from: 'hostname' }, 'out of range');
  t.match(torqueNodeName({ configured: '' }), { name: hostname(), from: 'hostname' }, 'no job (doctor): the host name');
});
