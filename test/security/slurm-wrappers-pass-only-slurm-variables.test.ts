// The Prolog and Epilog wrappers install.sh --slurm writes run node as root
// for every Slurm job. slurmd hands them its environment, and part of it is
// the job's (SLURM_JOB_WORK_DIR, the comment): node must get only LANG, a
// fixed PATH and the SLURM_* variables the program reads, each as one word.
// A NODE_OPTIONS in slurmd's environment would otherwise load code into the
// root Prolog, and a job's "$(...)" in a value must never run.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../harness/mom.js';

const root = mkdtempSync(join(tmpdir(), 'vt-slurm-wrap-'));
chmodSync(root, 0o755);
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const etc = join(root, 'etc');
mkdirSync(etc, { mode: 0o755 });
mkdirSync(join(root, 'slurm'), { mode: 0o755 });
writeFileSync(join(etc, 'prologue.ini'), `[paths]\nimage_pool = ${join(root, 'pool')}\ncache_dir = ${join(root, 'cache')}\njob_dir = ${join(root, 'jobs')}\nramdisk_dir = ${join(root, 'shm')}\nlog_file =\n`);
const inst = spawnSync('bash', [join(REPO, 'install.sh'), '--slurm', '--slurm-conf', join(root, 'slurm', 'slurm.conf'), '--prefix', join(root, 'opt'), '--config', etc,
  '--logrotate', join(root, 'logrotate.d'), '--bin-dir', join(root, 'usr-bin'), '--no-doctor'], { encoding: 'utf8' });

t.test('install.sh --slurm wrote the wrappers', async (t) => {
  t.equal(inst.status, 0, inst.stderr);
});

t.test("slurmd's NODE_OPTIONS never reaches node; the SLURM_* variables do, as data", async (t) => {
  const pwned = join(root, 'pwned');
  const evil = join(root, 'evil.cjs');
  writeFileSync(evil, `require('fs').writeFileSync(${JSON.stringify(pwned)}, 'node loaded it')\n`);
  for (const sub of ['prolog', 'epilog']) {
    const r = spawnSync(join(root, 'opt', 'bin', `vtorque-slurm-${sub}`), [], {
      encoding: 'utf8', cwd: '/',
      env: {
        NODE_OPTIONS: `--require=${evil}`,
        // The job's own text: it must stay a value, never a command.
        SLURM_JOB_WORK_DIR: `$(touch ${pwned})`,
        SLURM_JOB_ID: 'not-a-job`touch ' + pwned + '`',
      },
    });
    t.equal(r.status, 2, `${sub}: a node fault: no Slurm job (${r.stderr})`);
    // The program quotes at most 40 characters of it.
    t.ok(r.stderr.startsWith(`vtorque: slurm-${sub} run without a Slurm job: SLURM_JOB_ID "not-a-job\`touch /`), `${sub}: SLURM_JOB_ID reached the program as it was: ${r.stderr}`);
    t.notOk(existsSync(pwned), `${sub}: neither NODE_OPTIONS nor a job's text ran anything`);
  }
});
