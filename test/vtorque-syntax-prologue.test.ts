// A vTorque user's script with #PBS -vm lines runs unchanged (issue 14, item 9):
// the prologue, driven as pbs_mom drives it, makes of it what it makes of the
// #VM form, and check --job reads it the same way.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Mom, NOBODY } from './harness/mom.js';

const NATIVE = '#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#VM img=debian12.qcow2,vcpus=2,ram=4G\n#VM vms_per_node=2\nhostname\n';
const VTORQUE = '#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#PBS -vm img=debian12.qcow2,vcpus=2,ram=4G\n#PBS -vm vms_per_node=2\nhostname\n';

t.test('a script with #PBS -vm lines gets the manifest the #VM form gets', async (t) => {
  const mom = new Mom();
  const a = await mom.prologue({ id: '1.srv', script: NATIVE });
  const b = await mom.prologue({ id: '2.srv', script: VTORQUE });
  t.equal(a.code, 0, a.er);
  t.equal(b.code, 0, b.er);
  const manifest = (id: string) => JSON.parse(readFileSync(join(mom.jobDir, id, 'manifest.json'), 'utf8'));
  const ma = manifest('1.srv');
  const mb = manifest('2.srv');
  t.same(mb.request, ma.request, 'the same resolved request, values and sources');
  t.equal(mb.vms.length, ma.vms.length);
  t.same(mb.image, ma.image, 'the same image');
  const [note, ...rest] = b.ou.split('\n');
  t.match(note, /^vtorque: lines 3, 4: '#PBS -vm' is vTorque's form of '#VM'.*native form$/, 'the job output notes the form');
  t.equal(rest.join('\n').replace(/2\.srv/g, 'JOB'), a.ou.replace(/1\.srv/g, 'JOB'), 'then the same summary as the #VM form');
});

t.test('check --job reads #PBS -vm lines, and says #VM is the native form', async (t) => {
  const mom = new Mom();
  const dir = mkdtempSync(join(tmpdir(), 'vt-syntax-'));
  chmodSync(dir, 0o755);
  const script = join(dir, 'vt.pbs');
  writeFileSync(script, VTORQUE, { mode: 0o644 });
  const r = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, BIN, '--config', mom.configFile, 'check', '--job', script], {
    encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout + r.stderr, /lines 3, 4: '#PBS -vm' is vTorque's form of '#VM'.*native form/);
  t.match(r.stdout, /vcpus\s+2/);
});
