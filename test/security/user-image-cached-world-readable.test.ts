// A user's private image (0600 in a 0700 directory) must stay private once the
// node caches it: the base is root's alone, and no cache file names the path
// the user keeps it under.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Mom, NOBODY, SHARED_CACHE } from '../harness/mom.js';
import { ensureLaunchUser } from '../harness/launch-user.js';
import { privateUserImage } from '../harness/attacker.js';
import { grantLaunchRead } from '../../src/launch/bootfiles.js';

/** Every regular file under dir, recursively. */
function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.isFile() ? [p] : [];
  });
}

/** Reads a file as uid/gid 1 (daemon) by default: neither root nor the job owner. */
function readAs(path: string, who = { uid: 1, gid: 1 }): { status: number | null; stderr: string } {
  const r = spawnSync('/bin/cat', [path], { ...who, encoding: 'utf8', maxBuffer: 1 << 30 });
  return { status: r.status, stderr: r.stderr };
}

t.test('another local user cannot read a user image once it is cached, and no cache file names its path', async (t) => {
  const mom = new Mom({ ini: '[policy]\nallow_user_images = true\n', privateCache: true });
  // The verdict is keyed by digest: reuse the shared one rather than spend a libguestfs launch.
  mkdirSync(join(mom.cacheDir, 'verdicts'), { recursive: true });
  for (const v of existsSync(join(SHARED_CACHE, 'verdicts')) ? readdirSync(join(SHARED_CACHE, 'verdicts')) : []) {
    copyFileSync(join(SHARED_CACHE, 'verdicts', v), join(mom.cacheDir, 'verdicts', v));
  }
  const img = privateUserImage(mom.workdir, 'debian-ok.qcow2', 'my-private-build.qcow2');
  const secretDir = dirname(img);
  t.not(readAs(img).status, 0, 'the source itself is private to its owner');

  const r = await mom.prologue({ id: '41.srv', script: `#!/bin/sh\n#VM img=${img}\nhostname\n` });
  t.equal(r.code, 0, r.er);

  const bases = readdirSync(join(mom.cacheDir, 'images')).filter((n) => /^[0-9a-f]{64}\.(qcow2|raw|vmdk)$/.test(n));
  t.equal(bases.length, 1, 'one cached base');
  const base = join(mom.cacheDir, 'images', bases[0]!);
  const st = statSync(base);
  t.equal(st.uid, 0, 'the base is root\'s');
  t.equal(st.mode & 0o077, 0, `the base is not readable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
  const read = readAs(base);
  t.not(read.status, 0, 'a third user cannot read the cached base');
  t.match(read.stderr, /Permission denied/);

  for (const f of walk(mom.cacheDir)) {
    const text = readFileSync(f, 'latin1');
    t.notOk(text.includes(secretDir), `${f.slice(mom.cacheDir.length + 1)} does not name the user's directory`);
  }

  // The launcher's grant: qemu, as the launch account, opens the base as its backing file; still nobody else.
  const launch = ensureLaunchUser();
  t.equal(grantLaunchRead(base, launch.gid), launch.gid, 'a private base is granted to the launch group');
  const granted = statSync(base);
  t.equal(granted.mode & 0o777, 0o440, 'root:launch 0440');
  t.equal(readAs(base, { uid: launch.uid, gid: launch.gid }).status, 0, 'the launch account can read it');
  t.not(readAs(base).status, 0, 'a third user still cannot');
  t.not(readAs(base, { uid: NOBODY.uid, gid: NOBODY.gid }).status, 0, 'nor can its owner read the cached copy through the cache');
});
