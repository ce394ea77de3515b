// install.sh into a staging root and into a harness node: files and modes,
// chaining of a site's own prologue, idempotence, uninstall.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mom, REPO } from './harness/mom.js';

const install = (...args: string[]) => spawnSync('bash', [join(REPO, 'install.sh'), ...args], { encoding: 'utf8' });

t.test('install into a staging root: modes, chaining, idempotence, uninstall', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const mom = join(root, 'var/spool/torque/mom_priv');
  spawnSync('mkdir', ['-p', mom]);
  writeFileSync(join(mom, 'prologue'), '#!/bin/sh\necho site\n', { mode: 0o500 });
  const first = install('--root', root);
  t.equal(first.status, 0, first.stderr);
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) {
    const st = statSync(join(mom, h));
    t.equal(st.mode & 0o777, 0o500, `${h} is 0500`);
    t.equal(st.uid, 0, `${h} is root's`);
  }
  t.ok(existsSync(join(mom, 'prologue.orig')), 'the site prologue is kept');
  t.match(readFileSync(join(mom, 'prologue'), 'utf8'), /prologue\.orig" "\$@" \|\| exit \$\?/);
  t.ok(existsSync(join(root, 'etc/vtorque/prologue.ini')));
  t.ok(existsSync(join(root, 'opt/vtorque-prologue/dist/vtorque-prologue.cjs')));
  const second = install('--root', root);
  t.equal(second.status, 0);
  t.notMatch(second.stdout, /wrote/, 'a second run changes nothing');
  writeFileSync(join(root, 'etc/vtorque/prologue.ini'), '[logging]\nlevel = debug\n');
  const third = install('--root', root);
  t.match(third.stdout, /kept your .*prologue\.ini; the shipped one is .*prologue\.ini\.new/);
  t.equal(readFileSync(join(root, 'etc/vtorque/prologue.ini'), 'utf8'), '[logging]\nlevel = debug\n');
  const dry = install('--root', root, '--uninstall', '--dry-run');
  t.match(dry.stdout, /would: rm -f/);
  t.ok(existsSync(join(mom, 'prologue.orig')));
  const un = install('--root', root, '--uninstall');
  t.equal(un.status, 0);
  t.equal(readFileSync(join(mom, 'prologue'), 'utf8'), '#!/bin/sh\necho site\n', 'the original is back');
  t.notOk(existsSync(join(mom, 'epilogue')));
  t.notOk(existsSync(join(root, 'opt/vtorque-prologue')));
  rmSync(root, { recursive: true, force: true });
});

t.test('the installed wrapper runs through the pbs_mom harness, after the site prologue', async (t) => {
  const node = new Mom();
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) rmSync(join(node.momPriv, h), { force: true });
  writeFileSync(join(node.momPriv, 'prologue'), '#!/bin/sh\necho "site prologue for $1"\n', { mode: 0o500 });
  const r = install('--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--config', join(node.root, 'etc'));
  t.equal(r.status, 0, r.stderr);
  copyFileSync(node.configFile, join(node.root, 'etc', 'prologue.ini'));
  const out = await node.prologue({ id: '50.srv', script: '#!/bin/sh\necho\n' });
  t.equal(out.code, 0, out.er);
  t.equal(out.ou, 'site prologue for 50.srv\nvtorque: not a VM job\n');
  writeFileSync(join(node.momPriv, 'prologue.orig'), '#!/bin/sh\nexit 3\n', { mode: 0o500 });
  const failed = await node.prologue({ id: '51.srv', script: '#!/bin/sh\necho\n' });
  t.equal(failed.code, 3, "the site prologue's failure wins");
});
