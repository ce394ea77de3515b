import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, REPO } from './harness/mom.js';
import { withoutSiteConfig } from './harness/no-site-config.js';
import { VERSION } from '../src/version.js';

const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

t.test('--version matches package.json', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  t.equal(VERSION, pkg.version);
  t.equal(run('--version').stdout.trim(), `vtorque-prologue ${pkg.version}`);
});

t.test('--help teaches: commands, an example #VM line, exit codes', async (t) => {
  const r = run('--help');
  t.equal(r.status, 0);
  for (const w of ['prologue-parallel', 'epilogue', 'check', '#VM img=', 'Exit codes', '--config FILE']) t.match(r.stdout, w);
});

t.test('every command has help with usage and exit codes', async (t) => {
  for (const c of ['prologue', 'prologue-parallel', 'epilogue', 'epilogue-parallel', 'check']) {
    const r = run('help', c);
    t.equal(r.status, 0, c);
    t.match(r.stdout, `vtorque-prologue [--config FILE] ${c}`);
    t.match(r.stdout, /Exit codes/i);
    t.equal(run(c, '--help').stdout, r.stdout);
  }
});

t.test('an unknown command exits 2 and points at --help', async (t) => {
  const r = run('prologu');
  t.equal(r.status, 2);
  t.match(r.stderr, /unknown command "prologu".*\n.*--help/);
});

t.test('check --job prints the resolved request with sources, or every problem', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-check-'));
  const ini = join(dir, 'p.ini');
  // Pool and cache of the test's own, never the machine's.
  writeFileSync(ini, `[defaults]\nvcpus = 2\n[paths]\nimage_pool = ${dir}/pool\ncache_dir = ${dir}/cache\n`);
  writeFileSync(join(dir, 'good.sh'), '#!/bin/sh\n#VM img=debian12.qcow2,ram=8G\necho\n');
  writeFileSync(join(dir, 'bad.sh'), '#!/bin/sh\n#VM ram=8X,vcpu=2\necho\n');
  writeFileSync(join(dir, 'plain.sh'), '#!/bin/sh\necho\n');
  const good = run('--config', ini, 'check', '--job', join(dir, 'good.sh'));
  t.equal(good.status, 0);
  t.match(good.stdout, /vcpus\s+2\s+\[defaults\]/);
  t.match(good.stdout, /ram\s+8G\s+#VM/);
  const bad = run('--config', ini, 'check', '--job', join(dir, 'bad.sh'));
  t.equal(bad.status, 1);
  t.match(bad.stdout, /2 problems/);
  t.match(bad.stdout, /did you mean vcpus\?/);
  const json = JSON.parse(run('--config', ini, 'check', '--job', join(dir, 'bad.sh'), '--json').stdout);
  t.equal(json.ok, false);
  t.equal(json.problems.length, 2);
  t.match(run('--config', ini, 'check', '--job', join(dir, 'plain.sh')).stdout, /not a VM job/);
  const missing = run('--config', ini, 'check', '--job', join(dir, 'nope.sh'));
  t.equal(missing.status, 1);
  t.match(missing.stderr, /nope\.sh: cannot be read \(ENOENT\)/);
});

t.test('check works for users on a node without the admin ini, and says so', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-check-'));
  writeFileSync(join(dir, 'j.sh'), '#VM vcpus=1\n');
  // No --config: the default path, with /etc/vtorque hidden whatever this machine has installed.
  const r = spawnSync(...withoutSiteConfig(process.execPath, [BIN, 'check', '--job', join(dir, 'j.sh')]), { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /\/etc\/vtorque\/prologue\.ini is not readable here; using the built-in defaults/);
});

t.test('the built bundle is what bin/ runs', async (t) => {
  t.match(readFileSync(BIN, 'utf8'), /dist\/vtorque-prologue\.cjs/);
  t.doesNotThrow(() => execFileSync(process.execPath, [BIN, '--version']));
});

t.test('check --image on a path that does not exist says so, as the image\'s fault', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-check-'));
  writeFileSync(join(dir, 'p.ini'), `[paths]\nimage_pool = ${dir}/pool\ncache_dir = ${dir}/cache\n`);
  const r = run('--config', join(dir, 'p.ini'), 'check', '--image', '/nonexistent/x.qcow2');
  t.equal(r.status, 1);
  t.match(r.stdout, /FAIL not-found\s+cannot be found \(ENOENT\)/);
});
