// Finding 6: disk=, vm_prologue= and vm_epilogue= name the user's files, and
// nothing on this site reads them yet. Checked only for their characters, they
// would land as they are in the root-written manifest.json, where a later VM
// launcher could take /dev/sda or ../../../../etc/shadow as vetted. They are
// refused, everywhere a request is read, until something reads them as the user.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Mom } from '../harness/mom.js';

const HOSTILE: [string, RegExp][] = [
  ['disk=/dev/sda', /disk/],
  ['vm_prologue=../../../../etc/shadow', /vm_prologue/],
  ['vm_epilogue=../../../../etc/shadow', /vm_epilogue/],
];

t.test('a #VM line naming a host device or a path out of the job cannot reach the manifest', async (t) => {
  const m = new Mom();
  for (const [i, [item, key]] of HOSTILE.entries()) {
    const id = `${61 + i}.head`;
    const r = await m.prologue({ id, script: `#!/bin/sh\n#VM img=debian12.qcow2\n#VM ${item}\necho\n` });
    t.equal(r.code, 1, `${item}: the job's fault\n${r.er}`);
    t.match(r.er, key, `${item}: names the key`);
    t.match(r.er, /not supported/, `${item}: says why`);
    t.match(r.er, /Fix: /);
    t.notOk(existsSync(join(m.jobDir, id)), `${item}: no job directory, so no manifest`);
  }
});

t.test('the same request through VTORQUE_REQUEST or VM_ variables on a sister is refused too', async (t) => {
  const m = new Mom();
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01', 'node_name = node02'));
  const lists = ['VTORQUE_REQUEST=v1:disk=/dev/sda', 'VTORQUE_REQUEST=v1:vm_prologue=../../../../etc/shadow', 'VM_DISK=/dev/sda', 'VM_VM_EPILOGUE=../../../../etc/shadow'];
  for (const [i, vl] of lists.entries()) {
    const id = `${65 + i}.head`;
    mkdirSync(join(m.torqueHome, 'aux'), { recursive: true });
    writeFileSync(join(m.torqueHome, 'aux', id), 'node01\nnode02\n');
    m.submit({ id, qstat: { Variable_List: `PBS_O_HOME=/nonexistent,${vl}`, exec_host: 'node01/0+node02/0', start_count: '1' } });
    const r = await m.run('prologue.parallel', { id });
    t.equal(r.code, 1, `${vl}: the job's fault\n${r.er}`);
    t.match(r.er, /not supported/, vl);
    t.notOk(existsSync(join(m.jobDir, id)), `${vl}: no job directory, so no manifest`);
    t.equal(m.nodeState('node02').state, 'free', `${vl}: the sister stays up`);
  }
});

t.test('check --job and the submit filter refuse them before the job is queued', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'vtorque-paths-'));
  const ini = join(d, 'p.ini');
  writeFileSync(ini, '');
  for (const [item, key] of HOSTILE) {
    const script = join(d, 'job.sh');
    writeFileSync(script, `#!/bin/sh\n#VM ${item}\necho\n`);
    const chk = spawnSync(process.execPath, [BIN, '--config', ini, 'check', '--job', script], { encoding: 'utf8' });
    t.equal(chk.status, 1, `check --job ${item}: ${chk.stdout}${chk.stderr}`);
    t.match(chk.stdout, key);
    t.match(chk.stdout, /not supported/);
    const sub = spawnSync(process.execPath, [BIN, '--config', ini, 'submit-filter'], { input: `#!/bin/sh\n#VM ${item}\necho\n`, encoding: 'utf8' });
    t.not(sub.status, 0, `submit-filter ${item}: refused`);
    t.match(sub.stderr, /not supported/, `submit-filter ${item}: ${sub.stderr}`);
  }
});

t.test('metadata= stays: it is read as the user, never by root', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'vtorque-paths-'));
  const ini = join(d, 'p.ini');
  writeFileSync(ini, '');
  const script = join(d, 'job.sh');
  writeFileSync(script, '#!/bin/sh\n#VM metadata=cc.yaml\necho\n');
  const chk = spawnSync(process.execPath, [BIN, '--config', ini, 'check', '--job', script], { encoding: 'utf8' });
  t.equal(chk.status, 0, chk.stdout + chk.stderr);
});
