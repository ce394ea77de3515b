// check --job said different things to a user and to root for the same pool
// image: as the user "has not been checked on this node yet", as root "meets
// this site's guest image requirements (verdict held by this node)". The
// user could not find the image's digest (the stat memo was root's 0600 in a
// 0700 directory) nor read the verdict directory (0700 under pbs_mom's umask).
// A pool image's records are now world-readable; a user's private image's
// verdict stays 0600 and no record names the path its owner keeps it under.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BIN, Mom, NOBODY, lookupUser, type User } from '../harness/mom.js';
import { asUser, privateUserImage } from '../harness/attacker.js';

const USER_ENV = { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' };
// A third local user: neither root nor the owner of the private image.
const OTHER: User = lookupUser('daemon');
const sha256 = (f: string) => execFileSync('sha256sum', [f], { encoding: 'utf8' }).split(' ')[0]!;

/** check --job as a user (or root), from a directory both can read. */
function checkJob(mom: Mom, script: string, who: User | 'root', json = false): { status: number | null; stdout: string; stderr: string } {
  const ids = who === 'root' ? {} : { uid: who.uid, gid: who.gid };
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--job', script, ...(json ? ['--json'] : [])], { encoding: 'utf8', cwd: '/', env: USER_ENV, timeout: 120_000, ...ids });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under root the user can read, those that name `secret`, and what they may not read. */
function walkAs(root: string, secret: string, user: User): { read: string[]; named: string[]; denied: string[] } {
  const code = `
const fs = require('fs'); const [root, secret] = process.argv.slice(1); const out = { read: [], named: [], denied: [] };
const walk = (d) => {
  let es; try { es = fs.readdirSync(d, { withFileTypes: true }); } catch { out.denied.push(d); return; }
  for (const e of es) {
    const p = d + '/' + e.name;
    if (e.isDirectory()) walk(p);
    else if (e.isFile()) { try { const s = fs.readFileSync(p, 'latin1'); out.read.push(p); if (s.includes(secret)) out.named.push(p); } catch { out.denied.push(p); } }
  }
};
walk(root); console.log(JSON.stringify(out));`;
  const r = asUser(code, [root, secret], user);
  return JSON.parse(r.stdout) as { read: string[]; named: string[]; denied: string[] };
}

t.test("check --job as a user gives the node's answer for a pool image, the one root gets; another user's private image stays private", async (t) => {
  const mom = new Mom({ ini: '[policy]\nallow_user_images = true\n', privateCache: true });
  t.notOk(existsSync(join(mom.poolDir, 'SHA256SUMS')), 'no SHA256SUMS: the digest must come from the node');

  // A user's private image, in a directory only they can enter: the owner is nobody, as in the harness's jobs.
  const privateImg = privateUserImage(mom.workdir, 'debian-ok.raw', 'my-private-build.raw');
  const secretDir = dirname(privateImg);
  const u = await mom.prologue({ id: '51.srv', script: `#!/bin/sh\n#VM img=${privateImg}\nhostname\n` });
  t.equal(u.code, 0, u.er);
  t.equal((await mom.run('epilogue', { id: '51.srv' })).code, 0);

  // The pool image, as the prologue (root, pbs_mom's umask 0077) checks it.
  const pool = { id: '52.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2\nhostname\n' };
  const p = await mom.prologue(pool);
  t.equal(p.code, 0, p.er);
  t.equal((await mom.run('epilogue', pool)).code, 0);

  // A node an older version ran on: its stat memos are 0600 in a 0700 directory. The next prologue opens them.
  const memo = join(mom.cacheDir, 'statmemo');
  for (const f of readdirSync(memo)) chmodSync(join(memo, f), 0o600);
  chmodSync(memo, 0o700);
  const warm = { id: '53.srv', script: pool.script };
  const w = await mom.prologue(warm);
  t.equal(w.code, 0, w.er);
  t.equal((await mom.run('epilogue', warm)).code, 0);

  const script = join(mom.root, 'check.pbs');
  writeFileSync(script, pool.script, { mode: 0o644 });
  const asRoot = checkJob(mom, script, 'root');
  t.equal(asRoot.status, 0, 'root: check --job exits 0');
  t.match(asRoot.stdout, /image debian12\.qcow2 meets this site's guest image requirements \(verdict held by this node\)/);
  for (const who of [NOBODY, OTHER]) {
    const r = checkJob(mom, script, who);
    t.equal(r.status, 0, `${who.name}: check --job exits 0`);
    t.equal(r.stdout, asRoot.stdout, `${who.name} gets exactly root's answer`);
    t.notMatch(r.stdout, /not been checked/);
    t.same(JSON.parse(checkJob(mom, script, who, true).stdout).image, JSON.parse(checkJob(mom, script, 'root', true).stdout).image, `${who.name}: the same --json image verdict`);
  }

  // What another user can read in the cache: the pool image's records, nothing that names the private image's path, not its verdict.
  const seen = walkAs(mom.cacheDir, secretDir, OTHER);
  t.same(seen.named, [], 'no file another user can read names the private image\'s directory');
  const poolDigest = sha256(join(mom.poolDir, 'debian12.qcow2'));
  const privDigest = sha256(privateImg);
  t.ok(seen.read.some((f) => f.includes(`/verdicts/${poolDigest}-`)), 'the pool image\'s verdict is readable');
  t.ok(seen.read.some((f) => f.includes('/statmemo/')), 'and its stat memo');
  const privVerdicts = readdirSync(join(mom.cacheDir, 'verdicts')).filter((n) => n.startsWith(privDigest));
  t.equal(privVerdicts.length, 1, 'the private image has a verdict on the node');
  t.ok(seen.denied.some((f) => f.endsWith(`/verdicts/${privVerdicts[0]}`)), 'which another user cannot read');
  t.notOk(seen.read.some((f) => f.includes(privDigest)), 'nor any other record of the private image');
  for (const who of [NOBODY, OTHER]) t.notMatch(checkJob(mom, script, who, true).stdout, secretDir);
});
