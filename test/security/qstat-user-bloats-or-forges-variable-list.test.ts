// Finding 7: a sister learns the VM request from `qstat -f -1 JOBID`, whose
// Variable_List the user fills (qsub -v, qsub -V with any environment). A
// huge list must not make the sister a "sick node" (exit 2, pbsnodes -o), and
// a line break inside a variable must not forge the attributes we act on
// (Error_Path, Output_Path, Join_Path, exec_host, start_count).
import t from 'tap';
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';
import { QstatParser, parseQstat } from '../../src/torque/qstat.js';
import { isJobFault, type Problem } from '../../src/core/errors.js';

/** Torque's prt_attr (src/cmds/qstat.c) under -1: "    name = ", commas kept, "\n\t" where a line would pass 65536 characters. */
function prtAttr(name: string, value: string, linesize = 65536): string {
  let out = `    ${name} = `;
  let start = name.length + 7;
  const items = value.split(',').filter((s) => s !== ''); // strtok
  items.forEach((c, i) => {
    if (c.length + start < linesize) {
      out += c;
      start += c.length;
    } else {
      if (i > 0) {
        out += '\n\t';
        start = 9;
      }
      for (let k = 0; k < c.length; k++) {
        out += c[k];
        if (++start > linesize) {
          start = 8;
          out += '\n\t';
        }
      }
    }
    if (i < items.length - 1) out += ',';
  });
  return out + '\n';
}

/** What `qstat -f -1` prints for a running job, attributes in pbs_server's order (Variable_List after the paths, before start_count). */
function record(id: string, mom: Mom, variableList: string, over: Record<string, string> = {}): string {
  const a: [string, string][] = [
    ['Job_Name', 'job'],
    ['Job_Owner', 'nobody@head'],
    ['job_state', 'R'],
    ['Error_Path', `head:${mom.workdir}/job.e${id.split('.')[0]}`],
    ['exec_host', 'node01/0-1+node02/0-1'],
    ['Join_Path', 'n'],
    ['Output_Path', `head:${mom.workdir}/job.o${id.split('.')[0]}`],
    ['Variable_List', variableList],
    ['euser', 'nobody'],
    ['start_count', '1'],
  ];
  return `Job Id: ${id}\n` + a.map(([k, v]) => prtAttr(k, over[k] ?? v)).join('');
}

function sister(): Mom {
  const m = new Mom();
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01', 'node_name = node02'));
  return m;
}

/** pbs_mom's side of a sister job: the node file, and what qstat says of the job. */
function serve(m: Mom, id: string, text: string): void {
  mkdirSync(join(m.torqueHome, 'aux'), { recursive: true });
  writeFileSync(join(m.torqueHome, 'aux', id), 'node01\nnode01\nnode02\nnode02\n');
  writeFileSync(join(m.root, 'qstat', id), text);
}

const notOfflined = (t: Tap, m: Mom) => {
  t.equal(m.nodeState('node02').state, 'free', 'the sister stays in scheduling');
  t.notOk(m.pbsnodesCalls().some((c) => /(^| )-o( |$)/.test(c)), 'no pbsnodes -o');
};
type Tap = Pick<typeof t, 'equal' | 'notOk'>;

/** About 6 MiB of the user's environment, as qsub -V passes it, with one 2 MiB variable among it. */
function bloated(): string {
  const items = ['PBS_O_HOME=/nonexistent', `PBS_O_WORKDIR=/tmp`];
  for (let i = 0; i < 4000; i++) items.push(`JUNK_${i}=${'x'.repeat(1000)}`);
  items.push(`HUGE=${'y'.repeat(2 * 1024 * 1024)}`);
  return items.join(',');
}

t.test('a 6 MiB Variable_List cannot take a sister offline: the job\'s own bad request is the job\'s fault', async (t) => {
  const m = sister();
  const id = '71.head';
  serve(m, id, record(id, m, `${bloated()},VTORQUE_REQUEST=v1:vcpus=999`));
  const r = await m.run('prologue.parallel', { id });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vcpus=999 is more than this site allows/, 'the request at the end of the list was read');
  notOfflined(t, m);
});

t.test('a 6 MiB Variable_List, wrapped as Torque wraps it, still gives a sister its VMs', async (t) => {
  const m = sister();
  const id = '72.head';
  serve(m, id, record(id, m, `${bloated()},VM_VCPUS=1,VTORQUE_REQUEST=v1:vcpus=2`));
  const r = await m.run('prologue.parallel', { id });
  t.equal(r.code, 0, r.er);
  const manifest = JSON.parse(readFileSync(join(m.jobDir, id, 'manifest.json'), 'utf8'));
  t.equal(manifest.requestSource, 'VTORQUE_REQUEST');
  t.equal(manifest.request.vcpus, 2);
  notOfflined(t, m);
});

t.test('a line break in a job variable cannot forge Error_Path: the report does not go there and the node stays up', async (t) => {
  const m = sister();
  const id = '73.head';
  const forged = join(m.root, 'forged');
  mkdirSync(forged, { mode: 0o755 });
  chownSync(forged, NOBODY.uid, NOBODY.gid);
  const vl = `PBS_O_WORKDIR=${m.workdir},X=1\n    Error_Path = head:${forged},VTORQUE_REQUEST=v1:vcpus=999`;
  serve(m, id, record(id, m, vl));
  const r = await m.run('prologue.parallel', { id });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /Error_Path/, 'names the forged attribute');
  t.match(r.er, /Fix: .*line break/i);
  t.same(readdirSync(forged), [], 'nothing was written where the forged line points');
  notOfflined(t, m);
});

t.test('a line break in a job variable cannot forge any attribute we act on', async (t) => {
  const real = { Error_Path: 'h:/home/u/e', Output_Path: 'h:/home/u/o', Join_Path: 'n', exec_host: 'node01/0', start_count: '1' };
  for (const k of Object.keys(real)) {
    const text = 'Job Id: 1.h\n' + Object.entries(real).map(([a, v]) => (a === 'start_count' ? `    Variable_List = A=1\n    ${k} = forged,B=2\n` : '') + `    ${a} = ${v}\n`).join('');
    try {
      parseQstat(text);
      t.fail(`${k}: a forged second ${k} was accepted`);
    } catch (e) {
      t.ok(isJobFault(e), `${k}: the job's fault (exit 1), never the node's`);
      t.match((e as { problems: Problem[] }).problems.map((p) => p.message).join(' '), new RegExp(k), `${k}: named`);
    }
  }
  // A bash function exported with qsub -V holds raw line breaks: no attribute
  // shape, so it stays inside the variable and the variables after it survive.
  const fn = parseQstat('Job Id: 1.h\n    Error_Path = h:/e\n    Variable_List = BASH_FUNC_f%%=() {  echo hi\n}\n,VTORQUE_REQUEST=v1:vcpus=2,PBS_O_HOME=/h\n    start_count = 1\n');
  t.equal(fn.variables.VTORQUE_REQUEST, 'v1:vcpus=2');
  t.equal(fn.variables.PBS_O_HOME, '/h');
  t.equal(fn.errorPath, '/e');
  t.equal(fn.startCount, 1);
});

t.test('an oversized VTORQUE_REQUEST is refused as the job\'s fault, not dropped', async (t) => {
  const m = sister();
  const id = '74.head';
  serve(m, id, record(id, m, `PBS_O_HOME=/x,VTORQUE_REQUEST=v1:img=${'a'.repeat(200_000)}`));
  const r = await m.run('prologue.parallel', { id });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /VTORQUE_REQUEST/);
  t.notOk(existsSync(join(m.jobDir, id)), 'no job directory');
  notOfflined(t, m);
});

t.test('the record reads the same however qstat\'s output is cut into chunks', async (t) => {
  const vl = 'PBS_O_HOME=/home/é\\,x,JUNK=' + 'z'.repeat(300) + ',VM_RAM=2G,VTORQUE_REQUEST=v1:vcpus=2:ram=2G,PBS_O_WORKDIR=/w';
  const text = 'Job Id: 9.h\n' + prtAttr('Error_Path', 'h:/home/u/e', 40) + prtAttr('exec_host', 'n1/0+n2/0', 40) + prtAttr('Variable_List', vl, 40) + prtAttr('start_count', '3', 40) + '\n';
  const whole = parseQstat(text);
  t.same(whole.variables, { PBS_O_HOME: '/home/é,x', VM_RAM: '2G', VTORQUE_REQUEST: 'v1:vcpus=2:ram=2G', PBS_O_WORKDIR: '/w' }, 'wrapped lines joined, escaped comma kept, other variables dropped');
  t.same([whole.errorPath, whole.raw.exec_host, whole.startCount], ['/home/u/e', 'n1/0+n2/0', 3]);
  const bytes = Buffer.from(text);
  for (const size of [1, 2, 3, 5, 7, 64]) {
    const p = new QstatParser();
    for (let i = 0; i < bytes.length; i += size) p.push(bytes.subarray(i, i + size));
    t.same(p.end(), whole, `chunks of ${size} bytes`);
  }
});
