// pbs_mom hands its hooks its own environment, and the wrapper install.sh
// writes runs node as root with it: a NODE_OPTIONS=--require there loads any
// file into the root prologue. The wrapper must start node with nothing but
// LANG, PATH and the PBS_* variables the prologue reads.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mom, NOBODY, REPO } from '../harness/mom.js';

const HOOKS = ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel'];

/** A harness node whose wrappers, program and directories come from install.sh. */
function installedNode(path = process.env.PATH!): { node: Mom; install: ReturnType<typeof spawnSync> } {
  const node = new Mom({ privateCache: true });
  for (const h of HOOKS) rmSync(join(node.momPriv, h), { force: true });
  mkdirSync(join(node.root, 'etc'));
  copyFileSync(node.configFile, join(node.root, 'etc', 'prologue.ini'));
  const install = spawnSync('bash', [join(REPO, 'install.sh'), '--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome,
    '--config', join(node.root, 'etc'), '--logrotate', join(node.root, 'logrotate.d'), '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor'], { encoding: 'utf8', env: { ...process.env, PATH: path } });
  return { node, install };
}

/** A directory only nobody can write, holding what the attacker prepared. */
function attackerDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'vt-evil-'));
  chownSync(d, NOBODY.uid, NOBODY.gid);
  chmodSync(d, 0o755);
  return d;
}

t.test("a --require in pbs_mom's NODE_OPTIONS does not load the user's file into the root prologue", async (t) => {
  const { node, install } = installedNode();
  t.equal(install.status, 0, String(install.stderr));
  const evil = attackerDir();
  const js = join(evil, 'evil.js');
  writeFileSync(js, `require('fs').writeFileSync(${JSON.stringify(join(evil, 'marker'))}, 'ran as uid ' + process.getuid());\n`);
  chownSync(js, NOBODY.uid, NOBODY.gid);
  // A request the prologue refuses: its message shows that the prologue itself ran (a plain job would print nothing).
  const r = await node.prologue({ id: '60.srv', script: '#!/bin/sh\n#VM vcpus=0\necho\n' }, { env: { NODE_OPTIONS: `--require ${js}` } });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /^vtorque: .*vcpus: 0 is out of range/m, 'the prologue itself ran');
  t.notOk(existsSync(join(evil, 'marker')), "the user's file was not loaded");
  const epi = await node.run('epilogue', { id: '60.srv' }, { env: { NODE_OPTIONS: `--require ${js}` } });
  t.equal(epi.code, 0, epi.er);
  t.notOk(existsSync(join(evil, 'marker')), 'nor by the epilogue');
  rmSync(evil, { recursive: true, force: true });
});

t.test('the wrapper hands node LANG, PATH and the PBS_* variables of the Torque contract, nothing else', async (t) => {
  // A stand-in for node, root's in a root-owned directory, that records what it was given.
  const fake = mkdtempSync(join(tmpdir(), 'vt-fakenode-'));
  chmodSync(fake, 0o755);
  writeFileSync(join(fake, 'node'), `#!/bin/sh
case "$1" in -p) echo 20; exit 0 ;; --version) echo v20.0.0; exit 0 ;; esac
env > ${fake}/env.out
printf '%s\\n' "$@" > ${fake}/argv.out
`, { mode: 0o755 });
  const { node, install } = installedNode(`${fake}:${process.env.PATH}`);
  t.equal(install.status, 0, String(install.stderr));
  const job = { id: '61.srv', script: '#!/bin/sh\necho\n' };
  node.submit(job);
  const r = await node.run('prologue', job, {
    env: { NODE_OPTIONS: '--require /nonexistent/evil.js', NODE_PATH: '/tmp', LD_PRELOAD: '/tmp/evil.so', FOO: 'bar', PBS_NUM_PPN: '', PBS_NP: undefined as unknown as string },
  });
  t.equal(r.code, 0, r.er);
  const env = Object.fromEntries(readFileSync(join(fake, 'env.out'), 'utf8').split('\n').filter((l) => l !== '').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  delete env.PWD; // the shell node stands in for adds it
  t.same(env, {
    LANG: 'C.UTF-8',
    PATH: '/bin:/usr/bin',
    PBS_MSHOST: 'node01',
    PBS_NODEFILE: join(node.torqueHome, 'aux', job.id),
    PBS_NODENUM: '0',
    PBS_NUM_NODES: '1',
    PBS_NUM_PPN: '',
    PBS_O_WORKDIR: node.workdir,
    PBS_RESOURCE_NODES: '1:ppn=2',
  }, 'a set variable passes even when empty; an unset one stays unset; nothing else passes');
  const argv = readFileSync(join(fake, 'argv.out'), 'utf8').split('\n');
  const at = argv.indexOf(join(node.root, 'opt', 'bin', 'vtorque-prologue'));
  t.ok(at >= 0, 'node runs the installed program');
  t.same(argv.slice(at + 1, at + 5), ['--config', join(node.root, 'etc', 'prologue.ini'), 'prologue', job.id], "the hook's arguments follow unchanged");
  rmSync(fake, { recursive: true, force: true });
});
