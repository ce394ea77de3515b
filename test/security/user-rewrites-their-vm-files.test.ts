// Finding 3: with [jobfiles] owner = job (the old default) the job owner
// owned their VM's seed, overlay and manifest, and could rewrite user-data
// (root in the VM, and so root against the cluster's NFS exports), repoint the
// overlay's backing file, or point the manifest at /dev/sda.
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Mom } from '../harness/mom.js';
import { ensureLaunchUser } from '../harness/launch-user.js';

// [jobfiles] owner and group default to the launch account ([launch] user): never the job owner.
const LAUNCH = ensureLaunchUser();
import { asUser, writeOpenAs } from '../harness/attacker.js';

const TRY = `
const fs = require('fs');
const out = {};
const attempt = (name, fn) => { try { fn(); out[name] = 'OK'; } catch (e) { out[name] = e.code; } };
const [dir, file] = process.argv.slice(1);
attempt('chmod', () => fs.chmodSync(file, 0o666));
attempt('rename', () => fs.renameSync(file, file + '.mine'));
attempt('unlink', () => fs.unlinkSync(file));
attempt('create', () => fs.writeFileSync(dir + '/planted', 'x'));
attempt('read', () => fs.readFileSync(file));
console.log(JSON.stringify(out));
`;

t.test('the job owner can neither write nor replace their VM\'s seed, overlay or manifest', async (t) => {
  const mom = new Mom();
  for (const [id, fs] of [['1.srv', 'sharedfs'], ['2.srv', 'ramdisk']] as const) {
    const r = await mom.prologue({ id, script: `#!/bin/sh\n#VM img=debian12.qcow2,vms_per_node=2,fs_type=${fs}\necho\n` });
    t.equal(r.code, 0, r.er);
    const manifest = join(mom.jobDir, id, 'manifest.json');
    const m = JSON.parse(readFileSync(manifest, 'utf8'));
    const files = [manifest, ...m.vms.flatMap((v: { overlay: string; seed: { path: string } }) => [v.overlay, v.seed.path])];
    if (m.base.ramdiskCopy) files.push(m.base.ramdiskCopy);
    for (const f of files) {
      t.equal(writeOpenAs(f), 'EACCES', `${f}: no write`);
      const dir = f.slice(0, f.lastIndexOf('/'));
      const got = JSON.parse(asUser(TRY, [dir, f]).stdout);
      t.same(Object.keys(got), ['chmod', 'rename', 'unlink', 'create', 'read']);
      for (const [what, code] of Object.entries(got)) t.match(code, /^(EACCES|EPERM)$/, `${f}: ${what} is refused (${code})`);
      t.equal(statSync(f).uid, LAUNCH.uid, `${f}: the launch account's`);
    }
    t.same(readdirSync(join(mom.jobDir, id)).filter((n) => n === 'planted'), []);
  }
});

t.test('an ini that still gives the job owner their VM files is refused with the reason', async (t) => {
  const mom = new Mom({ ini: '[jobfiles]\nowner = job\n' });
  const r = await mom.prologue({ id: '3.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n' });
  t.equal(r.code, 2);
  t.match(r.er, /\[jobfiles\] owner.*"job".*not job: the job owner must not control their VM's files/s);
});
