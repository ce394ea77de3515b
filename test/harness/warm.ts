// Run by scripts/test before the suite: verifies the images most tests use,
// once, into the shared cache, so parallel test files do not all launch
// libguestfs for the same image at the same time. Tests pass without it.
import { spawnSync } from 'node:child_process';
import { Mom, BIN } from './mom.js';

const mom = new Mom({ pool: { 'debian12.qcow2': 'debian-ok.qcow2' } });
const t0 = Date.now();
const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'debian12.qcow2'], { encoding: 'utf8' });
process.stdout.write(`warm: check --image debian12.qcow2 exit ${r.status} in ${Date.now() - t0} ms\n`);
if (r.status !== 0) process.stdout.write(r.stdout + r.stderr);
