// check --image run by a user (doc/user.md suggests it): only root may look
// inside an image and keep its verdict, so a user gets the verdicts this node
// holds, found without hashing (the pool's SHA256SUMS), and otherwise one
// sentence on why not and what to do, never an internal error from the
// root-only stat memo.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { BIN, Mom, NOBODY, SHARED_CACHE, testImages } from './harness/mom.js';

// Through env -i: tap's child_process hooks put its NODE_OPTIONS back into any env given, and they write where nobody may not.
const check = (mom: Mom, args: string[], asUser = true) => spawnSync('/usr/bin/env', ['-i', 'PATH=/usr/bin:/bin', 'LANG=C.UTF-8', process.execPath, BIN, '--config', mom.configFile, 'check', '--image', ...args], {
  encoding: 'utf8', cwd: '/', timeout: 600_000, maxBuffer: 16 * 1024 * 1024, ...(asUser ? { uid: NOBODY.uid, gid: NOBODY.gid } : {}),
});

const mom = new Mom({ privateCache: true });
// The verdict is keyed by digest: reuse the shared one rather than spend a libguestfs launch when there is one.
mkdirSync(join(mom.cacheDir, 'verdicts'), { recursive: true });
for (const v of existsSync(join(SHARED_CACHE, 'verdicts')) ? readdirSync(join(SHARED_CACHE, 'verdicts')) : []) copyFileSync(join(SHARED_CACHE, 'verdicts', v), join(mom.cacheDir, 'verdicts', v));

t.test('a pool image this node holds no verdict for: what a user cannot check, why, and what to do instead; nothing written', async (t) => {
  const r = check(mom, ['debian12.qcow2']);
  t.equal(r.status, 2, 'not checked is no verdict: exit 2, as when the node cannot check');
  t.equal(r.stderr, '', 'no internal error, no stack trace');
  t.match(r.stdout, /^vtorque: check --image run as a user shows only the verdicts this node holds: looking inside an image \(hashing it, qemu-img, libguestfs\) and keeping its verdict need root$/m);
  t.match(r.stdout, /^vtorque: debian12\.qcow2: not checked: this node holds no verdict for it that you can find .*Fix: ask your admin to run vtorque-prologue check --image debian12\.qcow2 on a node; vtorque-prologue check --job SCRIPT .*; or submit the job/m);
  t.match(r.stdout, /0 of 1 image meet the requirements; 1 not checked/);
  t.notOk(existsSync(join(mom.cacheDir, 'statmemo')) && readdirSync(join(mom.cacheDir, 'statmemo')).length > 0, 'no stat memo was written');
  const j = check(mom, ['debian12.qcow2', '--json']);
  t.equal(j.status, 2);
  t.match(JSON.parse(j.stdout), [{ image: 'debian12.qcow2', ok: false, checked: false, notChecked: /no verdict/ }]);
});

t.test("a user's own image file is not looked inside either", async (t) => {
  const own = join(mom.workdir, 'mine.qcow2');
  copyFileSync(join(testImages(), 'debian-ok.qcow2'), own);
  chownSync(own, NOBODY.uid, NOBODY.gid);
  const r = check(mom, [own]);
  t.equal(r.status, 2, r.stderr);
  t.equal(r.stderr, '');
  t.match(r.stdout, /mine\.qcow2: not checked: it is a file of your own, outside the pool/);
});

t.test('once root has checked it and the pool lists it in SHA256SUMS, the user sees the verdict this node holds', async (t) => {
  const admin = check(mom, ['debian12.qcow2'], false);
  t.equal(admin.status, 0, admin.stderr);
  writeFileSync(join(mom.poolDir, 'SHA256SUMS'), execFileSync('sha256sum', ['debian12.qcow2'], { cwd: mom.poolDir, encoding: 'utf8' }));
  const r = check(mom, ['debian12.qcow2']);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.equal(r.stderr, '');
  t.match(r.stdout, /^vtorque: debian12\.qcow2: qcow2, .* \(verdict held by this node\)$/m);
  t.match(r.stdout, /ok {3}os-family/);
  t.match(r.stdout, /1 of 1 image meet the requirements$/m);
  t.notMatch(r.stdout, /check --image run as a user/, 'no note when every image was found');
});
