// Our program wired into a test Slurm (test/harness/slurm.ts) the way
// install.sh --slurm wires it into a site's: Prolog and Epilog wrappers,
// conf/slurm/task-prolog, conf/slurm/job_submit.lua, and bin/vtorque-slurm-run,
// each with its path lines pointing at this checkout and the test's ini.
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, REPO, SHARED_CACHE, testImages } from './mom.js';
import { Slurm, type SlurmOptions } from './slurm.js';

export interface Wiring {
  /** What Slurm.start takes: prolog, epilog, taskProlog, jobSubmitLua. */
  options: Pick<SlurmOptions, 'prolog' | 'epilog' | 'taskProlog' | 'jobSubmitLua'>;
  /** The job runner job_submit.lua's wrapper lines exec. */
  runner: string;
}

/**
 * `dir`: a root-owned directory others may read (the runner and TaskProlog
 * run as the job owner); `ini`: the test's own ini; `jobDir`: its [paths] job_dir.
 */
export function slurmWiring(dir: string, ini: string, jobDir: string): Wiring {
  // slurmd runs hooks as root with no PATH and no argv.
  const hook = (sub: string) => `#!/bin/sh\nexec ${process.execPath} --no-global-search-paths ${BIN} --config ${ini} ${sub}\n`;
  const runner = join(dir, 'vtorque-slurm-run');
  writeFileSync(runner, readFileSync(join(REPO, 'bin/vtorque-slurm-run'), 'utf8')
    .replace(/^JOB_DIR=.*$/m, `JOB_DIR=${jobDir}`)
    .replace(/^NODE=.*$/m, `NODE=${process.execPath}`)
    .replace(/^BUNDLE=.*$/m, `BUNDLE=${join(REPO, 'dist/vtorque-starter.cjs')}`), { mode: 0o755 });
  chmodSync(runner, 0o755);
  const taskProlog = readFileSync(join(REPO, 'conf/slurm/task-prolog'), 'utf8').replace(/^JOB_DIR=.*$/m, `JOB_DIR=${jobDir}`);
  const lua = readFileSync(join(REPO, 'conf/slurm/job_submit.lua'), 'utf8')
    .replace(/^local VTORQUE = .*$/m, `local VTORQUE = "${process.execPath} ${BIN}"`)
    .replace(/^local CONFIG = .*$/m, `local CONFIG = "${ini}"`)
    .replace(/^local RUNNER = .*$/m, `local RUNNER = "${runner}"`)
    .replace(/^local TIMEOUT = .*$/m, 'local TIMEOUT = "60"');
  return {
    options: { prolog: { text: hook('slurm-prolog') }, epilog: { text: hook('slurm-epilog') }, taskProlog: { text: taskProlog }, jobSubmitLua: lua },
    runner,
  };
}

/** A test node's own directories and ini path: root's, readable by the job owners (the runner and TaskProlog are theirs). */
export interface SlurmTestNode {
  root: string;
  pool: string;
  jobDir: string;
  logFile: string;
  ini: string;
}

export function slurmTestNode(prefix: string): SlurmTestNode {
  const root = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(root, 0o755);
  const pool = join(root, 'pool');
  mkdirSync(pool, { mode: 0o755 });
  return { root, pool, jobDir: join(root, 'jobs'), logFile: join(root, 'log', 'prologue.log'), ini: join(root, 'prologue.ini') };
}

/** A test image (a name in the test images) in the node's pool, as an admin puts it there: a link, else a copy. */
export function poolImage(n: SlurmTestNode, name: string, file: string): void {
  const src = join(testImages(), file);
  try {
    linkSync(src, join(n.pool, name));
  } catch {
    copyFileSync(src, join(n.pool, name));
  }
}

/** The [paths] section of the node's ini: its pool (or another), job_dir, ramdisk and log, and the test run's shared verdict cache. */
export function nodePaths(n: SlurmTestNode, pool = n.pool): string[] {
  return ['[paths]', `image_pool = ${pool}`, `cache_dir = ${SHARED_CACHE}`, `job_dir = ${n.jobDir}`, `ramdisk_dir = ${join(n.root, 'shm')}`, `log_file = ${n.logFile}`];
}

/**
 * slurmctld and slurmd with the node's ini wired in (PrologFlags=Alloc), stopped
 * and the node's directories removed at the test's end. logs(lines): Slurm's
 * logs and the last lines of the prologue's log, for a failing assertion.
 */
export async function startSlurmNode(t: { teardown: (fn: () => Promise<void>) => void }, n: SlurmTestNode): Promise<{ s: Slurm; wiring: Wiring; logs: (lines?: number) => string }> {
  const wiring = slurmWiring(n.root, n.ini, n.jobDir);
  const s = await Slurm.start({ ...wiring.options, prologFlags: ['Alloc'] });
  t.teardown(async () => {
    await s.stop();
    rmSync(n.root, { recursive: true, force: true });
  });
  const logs = (lines = 15) => `${s.logs()}\n--- prologue.log\n${existsSync(n.logFile) ? readFileSync(n.logFile, 'utf8').split('\n').slice(-lines).join('\n') : '(none)'}`;
  return { s, wiring, logs };
}
