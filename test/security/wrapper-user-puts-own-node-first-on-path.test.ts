// install.sh writes into root's wrappers whichever node `command -v node`
// finds, and runs it as root to ask its version. A node another user can
// replace (theirs, or in a directory they can write) must be refused before
// it ever runs.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NOBODY, REPO } from '../harness/mom.js';

/** A "node" that leaves a marker when run, and says it is Node.js 20 so install.sh takes it. */
function fakeNode(dir: string): string {
  const p = join(dir, 'node');
  writeFileSync(p, `#!/bin/sh\necho "ran as uid $(id -u)" > ${dir}/marker\n[ "$1" = -p ] && echo 20\nexit 0\n`, { mode: 0o755 });
  return p;
}

function stage(pathDir: string) {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const r = spawnSync('bash', [join(REPO, 'install.sh'), '--root', root], { encoding: 'utf8', env: { ...process.env, PATH: `${pathDir}:${process.env.PATH}` } });
  return { root, r };
}

t.test("a node that the user owns, first on root's PATH, is refused by install.sh and never run", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-usernode-'));
  chmodSync(dir, 0o755);
  chownSync(dir, NOBODY.uid, NOBODY.gid);
  chownSync(fakeNode(dir), NOBODY.uid, NOBODY.gid);
  const { root, r } = stage(dir);
  t.equal(r.status, 2, r.stdout + r.stderr);
  t.match(r.stderr, new RegExp(`^install\\.sh: ${dir}/node, the node on PATH, .*owned by uid ${NOBODY.uid}, not root.*Fix: `, 'm'));
  t.notOk(existsSync(join(dir, 'marker')), 'it never ran as root');
  t.same(readdirSync(root), [], 'nothing was installed');
  rmSync(dir, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
});

t.test('a root-owned node in a directory every user can write is refused too', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-opennode-'));
  chmodSync(dir, 0o777);
  fakeNode(dir);
  const { root, r } = stage(dir);
  t.equal(r.status, 2, r.stdout + r.stderr);
  t.match(r.stderr, new RegExp(`^install\\.sh: .*${dir} has mode 0777, writable by group and others.*Fix: `, 'm'));
  t.notOk(existsSync(join(dir, 'marker')), 'it never ran as root');
  rmSync(dir, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
});
