// Finding 1: [paths] ramdisk_dir used to default to /dev/shm/vtorque, which
// any user can create first. Root then made the job's directories inside the
// user's, where the user swapped them for symlinks: root's qemu-img wrote
// through them, and root's lstat-then-chown handed files over.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';
import { ensureLaunchUser } from '../harness/launch-user.js';

// [jobfiles] owner and group default to the launch account ([launch] user): never the job owner.
const LAUNCH = ensureLaunchUser();
import { asUser, startAsUser } from '../harness/attacker.js';
import { SCHEMA } from '../../src/config/schema.js';
import { squattable } from '../../src/tools/trust.js';
import { ownFile } from '../../src/cache/jobdir.js';

const SCRIPT = '#!/bin/sh\n#VM img=debian12.qcow2,fs_type=ramdisk\necho\n';

/** A node whose ramdisk_dir sits in a world-writable sticky directory, as /dev/shm/vtorque did. */
function shmMom(): { mom: Mom; ramdisk: string; target: string } {
  const mom = new Mom();
  const shm = join(mom.root, 'devshm');
  mkdirSync(shm);
  chmodSync(shm, 0o1777);
  const ramdisk = join(shm, 'vtorque');
  writeFileSync(mom.configFile, mom.defaultIni().replace(/^ramdisk_dir = .*$/m, `ramdisk_dir = ${ramdisk}`));
  // What the attacker wants to overwrite or own: a root-only file in a root-only directory.
  const secret = join(mom.root, 'secret');
  mkdirSync(secret, { mode: 0o700 });
  const target = join(secret, 'target');
  writeFileSync(target, 'precious\n', { mode: 0o600 });
  return { mom, ramdisk, target };
}

// The attacker's loop: whenever root has made the job directory or a VM
// directory inside the user's ramdisk_dir, move it aside and put the user's
// own in its place (linking root's base copy back in, so qemu-img finds it),
// with the overlay's temporary name pointing at the target.
const SWAPPER = `
const fs = require('fs');
const [ramdisk, job, target] = process.argv.slice(1);
const end = Date.now() + 90000;
let n = 0;
let jobSwapped = false;
let vmSwapped = false;
const rootMade = (p) => { try { return fs.lstatSync(p).uid === 0; } catch { return false; } };
const d = ramdisk + '/' + job;
while (Date.now() < end) {
  try {
    if (!jobSwapped && rootMade(d)) {
      jobSwapped = true;
      const aside = ramdisk + '/aside-' + n++;
      fs.renameSync(d, aside);
      fs.mkdirSync(d, { mode: 0o777 });
      fs.symlinkSync(aside + '/base.qcow2', d + '/base.qcow2');
    }
    const v = d + '/vm-0';
    if (!vmSwapped && rootMade(v)) {
      vmSwapped = true;
      fs.renameSync(v, d + '/aside-' + n++);
      fs.mkdirSync(v, { mode: 0o777 });
      fs.symlinkSync(target, v + '/.disk.qcow2.tmp');
      console.log('swapped');
    }
  } catch {}
}
`;

t.test('a user who makes ramdisk_dir first gets nothing written, chowned or removed through it', async (t) => {
  const { mom, ramdisk, target } = shmMom();
  t.equal(asUser(`require('fs').mkdirSync(process.argv[1], { mode: 0o777 })`, [ramdisk]).status, 0, 'the attacker creates ramdisk_dir first');
  const swapper = startAsUser(SWAPPER, [ramdisk, '1.srv', target]);
  const r = await mom.prologue({ id: '1.srv', script: SCRIPT });
  await swapper.stop();
  t.equal(readFileSync(target, 'utf8'), 'precious\n', 'the root-only file was not written through a symlink');
  t.equal(statSync(target).uid, 0, 'nor handed to the user');
  t.equal(r.code, 2, 'a ramdisk_dir that is not root\'s alone is the node\'s problem: the job is requeued');
  t.match(r.er, /vtorque: .*ramdisk_dir .*not safe to use as root: .*owned by uid 65534/);
  t.match(r.er, /doctor/);
  for (const n of readdirSync(ramdisk)) t.not(lstatSync(join(ramdisk, n)).uid, 0, `root made nothing in the user's directory (${n})`);
  t.notOk(existsSync(join(mom.jobDir, '1.srv')), 'no half-prepared job is left');
});

t.test('a user who puts a file where ramdisk_dir goes is refused the same way, without an exception', async (t) => {
  const { mom, ramdisk } = shmMom();
  t.equal(asUser(`require('fs').writeFileSync(process.argv[1], '')`, [ramdisk]).status, 0);
  const r = await mom.prologue({ id: '2.srv', script: SCRIPT });
  t.equal(r.code, 2);
  t.match(r.er, /ramdisk_dir .*not safe to use as root: it is not a directory/);
  t.notMatch(r.er, /internal error/);
});

t.test('the default ramdisk_dir is one no user can create first', async (t) => {
  const dflt = SCHEMA.paths.ramdisk_dir.default;
  t.notMatch(dflt, /^\/(dev\/shm|tmp|var\/tmp)(\/|$)/, dflt);
  t.equal(squattable(dflt), undefined, `${dflt}: every directory above it is root's alone on this machine`);
});

t.test('a missing ramdisk_dir is made root-owned, and the job\'s RAM disks in it are the launch account\'s', async (t) => {
  const mom = new Mom();
  const r = await mom.prologue({ id: '3.srv', script: SCRIPT });
  t.equal(r.code, 0, r.er);
  const ramdisk = join(mom.root, 'shm');
  const st = statSync(ramdisk);
  t.equal(st.uid, 0);
  t.equal(st.mode & 0o7777, 0o755);
  const m = JSON.parse(readFileSync(join(mom.jobDir, '3.srv', 'manifest.json'), 'utf8'));
  for (const p of [m.base.ramdiskCopy, m.vms[0].overlay, m.vms[0].seed.path]) t.equal(statSync(p).uid, LAUNCH.uid, `${p}: the launch account's, never the job owner's`);
  const e = await mom.run('epilogue', { id: '3.srv' });
  t.equal(e.code, 0, e.er);
  t.notOk(existsSync(join(ramdisk, '3.srv')));
});

t.test('the epilogue removes nothing through a ramdisk_dir a user controls', async (t) => {
  const { mom, ramdisk, target } = shmMom();
  asUser(`const fs = require('fs'); fs.mkdirSync(process.argv[1], { mode: 0o777 }); fs.symlinkSync(require('path').dirname(process.argv[2]), process.argv[1] + '/4.srv')`, [ramdisk, target]);
  const e = await mom.run('epilogue', { id: '4.srv' });
  t.equal(e.code, 0, e.er);
  t.ok(existsSync(target), 'the directory the symlink names is untouched');
  t.ok(lstatSync(join(ramdisk, '4.srv')).isSymbolicLink(), 'and the link itself is left for the admin');
  t.ok(mom.logLines().some((l) => /not root's alone/.test(String(l.msg))), 'the admin log says why');
});

// ownFile used to lstat the path and then chown it by name. In a directory the
// user can write, renameat2(RENAME_EXCHANGE) swaps a regular file and a
// symlink between the two calls. By descriptor there is no second lookup.
t.test('ownFile cannot be raced into chowning a root file through an exchanged symlink', async (t) => {
  const { mom, target } = shmMom();
  const dir = join(mom.root, 'race');
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  asUser(`const fs = require('fs'); fs.writeFileSync(process.argv[1] + '/f', 'x'); fs.symlinkSync(process.argv[2], process.argv[1] + '/l')`, [dir, target]);
  // python's ctypes reaches renameat2, which Node does not offer.
  const swapper = execFileSync('/usr/bin/python3', ['-c', 'import sys; print(sys.version_info[0])'], { encoding: 'utf8' });
  t.equal(swapper.trim(), '3');
  const py = `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
end = time.time() + 30
a, b = (d + '/f').encode(), (d + '/l').encode()
while time.time() < end:
    libc.renameat2(-100, a, -100, b, 2)
`;
  const { spawn } = await import('node:child_process');
  const child = spawn('/usr/bin/python3', ['-c', py, dir], { uid: NOBODY.uid, gid: NOBODY.gid, stdio: 'ignore' });
  let refused = 0;
  let owned = 0;
  for (let i = 0; i < 3000; i++) {
    try {
      ownFile(join(dir, 'f'), { uid: NOBODY.uid, gid: NOBODY.gid, fileMode: 0o644, dirMode: 0o755 });
      owned++;
    } catch {
      refused++;
    }
    if (statSync(target).uid !== 0) break;
  }
  child.kill('SIGKILL');
  t.equal(statSync(target).uid, 0, `the root file stayed root's (${owned} handed over, ${refused} refused)`);
  t.equal(statSync(target).mode & 0o777, 0o600);
  t.ok(owned > 0 && refused > 0, 'the race really ran both ways');
});
