// doctor must not call a node healthy whose hooks run, as root, a node
// binary, program files or an ini that another user can change.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, NOBODY, REPO } from '../harness/mom.js';

const HOOKS = ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel'];

/** A harness node set up by install.sh: program under <root>/opt, ini <root>/prologue.ini, wrappers in mom_priv. */
function installedNode(): Mom {
  const node = new Mom({ privateCache: true });
  for (const h of HOOKS) rmSync(join(node.momPriv, h), { force: true });
  const r = spawnSync('bash', [join(REPO, 'install.sh'), '--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome,
    '--config', node.root, '--logrotate', join(node.root, 'logrotate.d'), '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`install.sh: ${r.stderr}`);
  return node;
}

function doctor(node: Mom) {
  const r = spawnSync(process.execPath, [BIN, '--config', node.configFile, 'doctor', '--skip', 'guestfs,kvm,torque'], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

t.test('a node binary that the user owns fails doctor, for every hook that runs it', async (t) => {
  const node = installedNode();
  const mine = join(node.root, 'usernode');
  mkdirSync(mine, { mode: 0o755 });
  copyFileSync(process.execPath, join(mine, 'node'));
  chownSync(join(mine, 'node'), NOBODY.uid, NOBODY.gid);
  chmodSync(join(mine, 'node'), 0o755);
  for (const h of HOOKS) {
    const p = join(node.momPriv, h);
    chmodSync(p, 0o700);
    writeFileSync(p, readFileSync(p, 'utf8').replaceAll(` ${process.execPath} `, ` ${join(mine, 'node')} `));
    chmodSync(p, 0o500);
  }
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, new RegExp(`^FAIL {2}mom_priv {2}.*node ${mine}/node, which the hooks run as root: ${mine}/node is owned by uid ${NOBODY.uid}, not root\\. Fix: `, 'm'));
  rmSync(join(mine, 'node'));
});

t.test('a program file that the user owns fails doctor', async (t) => {
  const node = installedNode();
  const heavy = join(node.root, 'opt', 'dist', 'vtorque-heavy.cjs');
  chownSync(heavy, NOBODY.uid, NOBODY.gid);
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, new RegExp(`^FAIL {2}mom_priv {2}.*${heavy} is owned by uid ${NOBODY.uid}, not root\\. Fix: `, 'm'));
});

t.test("a program directory others may write fails doctor (they could swap the program's files)", async (t) => {
  const node = installedNode();
  chmodSync(join(node.root, 'opt', 'bin'), 0o777);
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, /^FAIL {2}mom_priv {2}.*opt\/bin has mode 0777, writable by group and others\. Fix: /m);
});

t.test('an ini that every user may write, or that the user owns, fails doctor', async (t) => {
  const node = installedNode();
  chmodSync(node.configFile, 0o666);
  const r = doctor(node);
  t.equal(r.code, 1, r.out);
  t.match(r.out, /^FAIL {2}config {4}.*prologue\.ini has mode 0666, writable by group and others.*Fix: /m);
  chmodSync(node.configFile, 0o644);
  chownSync(node.configFile, NOBODY.uid, NOBODY.gid);
  t.match(doctor(node).out, new RegExp(`^FAIL {2}config {4}.*prologue\\.ini is owned by uid ${NOBODY.uid}, not root.*Fix: `, 'm'));
});
