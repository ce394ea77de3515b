// The README's first commands work as root (a root-only machine has no sudo)
// and as a user with sudo: they take no sudo prefix, and the scripts ask sudo
// for root themselves only when they are not root.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NOBODY, REPO } from './harness/mom.js';

const commands = () => /^```sh\n([\s\S]*?)```/m.exec(readFileSync(join(REPO, 'README.md'), 'utf8'))![1]!.split('\n').filter(Boolean).map((l) => l.replace(/\s+#.*$/, ''));

t.test("the README's two commands start with no sudo: they are what .ci/run runs as root", async (t) => {
  t.same(commands(), ['./scripts/demo', './scripts/test']);
  t.match(readFileSync(join(REPO, '.ci/run'), 'utf8'), /^exec \.\/scripts\/test$/m);
});

t.test('as a user, each command re-runs itself through sudo; without sudo it says to run it as root', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-readme-'));
  mkdirSync(join(dir, 'bin'), { mode: 0o755 });
  // A sudo that records what it was asked to run, as nobody, and runs nothing.
  writeFileSync(join(dir, 'sudo'), `#!/bin/sh\necho "$*" > ${dir}/sudo.args\n`, { mode: 0o755 });
  // PATH has only what the scripts run before they need root, so this machine's own sudo is never found.
  for (const tool of ['bash', 'id']) symlinkSync(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim(), join(dir, 'bin', tool));
  chmodSync(dir, 0o777);
  for (const cmd of commands()) {
    const as = (path: string) => spawnSync(cmd, ['--x'], { cwd: REPO, uid: NOBODY.uid, gid: NOBODY.gid, env: { PATH: path, HOME: '/nonexistent' }, encoding: 'utf8', timeout: 60_000 });
    const withSudo = as(`${dir}:${dir}/bin`);
    t.equal(withSudo.status, 0, `${cmd}: ${withSudo.stderr}`);
    t.equal(readFileSync(join(dir, 'sudo.args'), 'utf8'), `-- ${cmd} --x\n`, `${cmd} asks sudo to run itself, with its arguments`);
    const noSudo = as(`${dir}/bin`);
    t.equal(noSudo.status, 1, cmd);
    t.match(noSudo.stderr, new RegExp(`^scripts/${cmd.split('/').pop()}: needs root, and there is no sudo here: run it as root\\n$`));
  }
});
