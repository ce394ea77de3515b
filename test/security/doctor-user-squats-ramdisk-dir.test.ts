// A ramdisk_dir (or job_dir, cache_dir) under a world-writable directory such
// as /dev/shm can be created by any user first, e.g. after a reboot empties
// that tmpfs; the prologue would then work in the user's directory as root.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Mom, NOBODY } from '../harness/mom.js';

function doctor(node: Mom) {
  const r = spawnSync(process.execPath, [BIN, '--config', node.configFile, 'doctor', '--skip', 'guestfs,kvm,torque,mom_priv'], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** A node whose ramdisk_dir is <a world-writable sticky dir>/vtorque, as /dev/shm/vtorque was. */
function nodeWithShm(): { node: Mom; shm: string; ramdisk: string } {
  const node = new Mom({ privateCache: true });
  for (const d of [node.jobDir, node.cacheDir, join(node.root, 'log')]) mkdirSync(d, { recursive: true, mode: 0o755 });
  const shm = join(node.root, 'devshm');
  mkdirSync(shm);
  chmodSync(shm, 0o1777);
  const ramdisk = join(shm, 'vtorque');
  writeFileSync(node.configFile, node.defaultIni().replace(/^ramdisk_dir = .*$/m, `ramdisk_dir = ${ramdisk}`));
  return { node, shm, ramdisk };
}

t.test('a missing ramdisk_dir under a world-writable directory fails: any user could create it first', async (t) => {
  const { node, shm, ramdisk } = nodeWithShm();
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, new RegExp(`^FAIL {2}dirs {6}\\[paths\\] ramdisk_dir ${ramdisk} does not exist, and ${shm} is writable by every user \\(mode 1777\\).*Fix: `, 'm'));
});

t.test('a ramdisk_dir that the user created first fails', async (t) => {
  const { node, ramdisk } = nodeWithShm();
  spawnSync('mkdir', [ramdisk], { uid: NOBODY.uid, gid: NOBODY.gid });
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, new RegExp(`^FAIL {2}dirs {6}\\[paths\\] ramdisk_dir ${ramdisk}: ${ramdisk} is owned by uid ${NOBODY.uid}, not root.*Fix: `, 'm'));
});

t.test("root's ramdisk_dir under a world-writable directory is a warning: a reboot that empties it lets users in", async (t) => {
  const { node, ramdisk } = nodeWithShm();
  mkdirSync(ramdisk, { mode: 0o755 });
  const r = doctor(node);
  t.match(r.out, new RegExp(`^WARN {2}dirs {6}\\[paths\\] ramdisk_dir ${ramdisk} is root's now, but .*devshm is writable by every user.*Fix: `, 'm'));
  t.notMatch(r.out, /^FAIL {2}dirs {6}\[paths\] ramdisk_dir/m);
});

t.test('a missing job_dir or cache_dir under a world-writable directory fails', async (t) => {
  const up = mkdtempSync(join(tmpdir(), 'vt-open-'));
  chmodSync(up, 0o777);
  const node = new Mom({ privateCache: true });
  writeFileSync(node.configFile, node.defaultIni()
    .replace(/^job_dir = .*$/m, `job_dir = ${join(up, 'jobs')}`)
    .replace(/^cache_dir = .*$/m, `cache_dir = ${join(up, 'cache')}`));
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, new RegExp(`^FAIL {2}dirs {6}\\[paths\\] job_dir ${up}/jobs does not exist, and ${up} is writable by every user`, 'm'));
  t.match(r.out, new RegExp(`^FAIL {2}dirs {6}\\[paths\\] cache_dir ${up}/cache does not exist, and ${up} is writable by every user`, 'm'));
  chownSync(up, NOBODY.uid, NOBODY.gid);
  rmSync(up, { recursive: true, force: true });
});
