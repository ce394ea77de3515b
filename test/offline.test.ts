// A node fault takes the node out of scheduling (pbsnodes -o -N "vtorque: ..."),
// as LBNL NHC does, so Torque does not restart the requeued job on it four
// times a second. Driven through the pbs_mom harness and its pbsnodes stand-in.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, type MomOptions } from './harness/mom.js';
import { noteFor, parseNodeLine } from '../src/torque/pbsnodes.js';

const VM_SCRIPT = '#!/bin/bash\n#VM img=debian12.qcow2\nhostname\n';
const BAD_SCRIPT = '#!/bin/bash\n#VM ram=12X\nhostname\n';

/** A node whose job_dir cannot be created: every VM job is a node fault (exit 2). */
function sickNode(opts: MomOptions = {}): Mom {
  const mom = new Mom(opts);
  writeFileSync(join(mom.root, 'notadir'), '');
  writeFileSync(mom.configFile, mom.defaultIni().replace(`job_dir = ${mom.jobDir}`, `job_dir = ${join(mom.root, 'notadir', 'jobs')}`) + (opts.ini ?? ''));
  return mom;
}

t.test('a node fault offlines the node with a "vtorque:" note naming the problem and the job', async (t) => {
  const mom = sickNode();
  const r = await mom.prologue({ id: '30.srv', script: VM_SCRIPT, qstat: { start_count: '1' } });
  t.equal(r.code, 2);
  const n = mom.nodeState('node01');
  t.equal(n.state, 'offline');
  t.match(n.note, /^vtorque: .*notadir.* \(job 30\.srv, \d{4}-\d\d-\d\dT\d\d:\d\dZ; vtorque-prologue doctor --clear once fixed\)$/);
  t.ok(n.note.length <= 200, 'fits pbs_server');
  t.same(mom.pbsnodesCalls().map((c) => c.split(' ').slice(0, 2).join(' ')), ['-l -n', '-o -N'], 'reads the note first, then offlines');
  t.match(r.er, /\(admin\) node node01 was taken offline with the note "vtorque: .*notadir/);
  const log = mom.logLines().find((l) => typeof l.msg === 'string' && l.msg.startsWith('node node01 was taken offline'));
  t.ok(log, 'the admin log says so');
  t.equal(log?.job, '30.srv');
});

t.test("an operator's note is kept: the node is offlined, the note is not replaced", async (t) => {
  const mom = sickNode();
  mom.setNode('node01', 'free', 'bob: new DIMM, watch ECC');
  const r = await mom.prologue({ id: '31.srv', script: VM_SCRIPT });
  t.equal(r.code, 2);
  t.same(mom.nodeState('node01'), { state: 'offline', note: 'bob: new DIMM, watch ECC' });
  t.notOk(mom.pbsnodesCalls().some((c) => c.includes('-N')), 'never passes -N over an operator note');
  t.match(r.er, /the operator's note "bob: new DIMM, watch ECC" was kept/);
});

t.test('a node an operator took offline without a note is left alone', async (t) => {
  const mom = sickNode();
  mom.setNode('node01', 'offline');
  const r = await mom.prologue({ id: '32.srv', script: VM_SCRIPT });
  t.equal(r.code, 2);
  t.same(mom.pbsnodesCalls(), ['-l -n all node01']);
  t.same(mom.nodeState('node01'), { state: 'offline', note: '' });
});

t.test('our own earlier note is replaced by the newest reason', async (t) => {
  const mom = sickNode();
  mom.setNode('node01', 'offline', 'vtorque: old reason');
  await mom.prologue({ id: '33.srv', script: VM_SCRIPT });
  t.match(mom.nodeState('node01').note, /^vtorque: .*notadir.*job 33\.srv/);
});

t.test('a job fault never offlines the node', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '34.srv', script: BAD_SCRIPT });
  t.equal(r.code, 1);
  t.same(mom.pbsnodesCalls(), []);
});

t.test('a node fault turned into a job fault at max_start_count does not offline the node', async (t) => {
  const mom = sickNode();
  const r = await mom.prologue({ id: '35.srv', script: VM_SCRIPT, qstat: { start_count: '5' } });
  t.equal(r.code, 1);
  t.same(mom.pbsnodesCalls(), []);
});

t.test('offline_on_fault = false does nothing', async (t) => {
  const mom = sickNode({ ini: '[torque]\noffline_on_fault = false\n' });
  const r = await mom.prologue({ id: '36.srv', script: VM_SCRIPT });
  t.equal(r.code, 2);
  t.same(mom.pbsnodesCalls(), []);
  t.notMatch(r.er, /offline/);
});

t.test('an ini that does not validate still offlines the node, unless it says offline_on_fault = false', async (t) => {
  const mom = new Mom({ ini: '[defaults]\nram = 12X\n' });
  const r = await mom.prologue({ id: '37.srv', script: VM_SCRIPT });
  t.equal(r.code, 2);
  t.match(r.er, /config .* is invalid/);
  t.equal(mom.nodeState('node01').state, 'offline');
  t.match(mom.nodeState('node01').note, /^vtorque: config .* is invalid/);
  const off = new Mom({ ini: '[defaults]\nram = 12X\n[torque]\noffline_on_fault = false\n' });
  t.equal((await off.prologue({ id: '38.srv', script: VM_SCRIPT })).code, 2);
  t.same(off.pbsnodesCalls(), []);
});

t.test('an unreachable pbs_server: the job is still requeued, and the .ER says the node could not be offlined', async (t) => {
  const mom = sickNode();
  writeFileSync(join(mom.root, 'pbsnodes.fail'), 'pbsnodes: cannot connect to server head, error=111 (Connection refused)\n');
  const r = await mom.prologue({ id: '39.srv', script: VM_SCRIPT });
  t.equal(r.code, 2);
  t.match(r.er, /node node01 could not be taken offline .*Connection refused.*Fix: check \[tools\] pbsnodes/);
});

t.test("pbsnodes -l -n lines are read as Torque prints them, names cut to 20 characters", async (t) => {
  t.same(parseNodeLine('node01               free\n', 'node01'), { node: 'node01', state: 'free', note: '' });
  t.same(parseNodeLine('node01               job-exclusive,offline  vtorque: disk full  (job 1)\n', 'node01'),
    { node: 'node01', state: 'job-exclusive,offline', note: 'vtorque: disk full  (job 1)' });
  t.same(parseNodeLine('c01-r12-n345.cluster free\n', 'c01-r12-n345.cluster.example.org')?.state, 'free');
  t.equal(parseNodeLine('node011              free\n', 'node01'), undefined, 'another node is not ours');
});

t.test('a note is one line, without control characters, short enough for pbs_server', async (t) => {
  t.equal(noteFor('disk\nfull\u001b[2J now'), 'vtorque: disk full [2J now');
  const long = noteFor('x'.repeat(500), '(job 1.srv)');
  t.equal(long.length, 200);
  t.ok(long.endsWith('... (job 1.srv)'), 'the reason is cut, the job id stays');
});
