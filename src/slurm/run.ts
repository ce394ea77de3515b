// vtorque-slurm-run's node side (bin/vtorque-slurm-run, in the job starter's
// bundle): the batch step of a Slurm VM job that job_submit.lua wrapped
// (wrap.ts). It runs as the job owner, with slurmd's copy of the wrapped
// script as its first argument. When this node's Prolog booted the job's VMs,
// the script as submitted runs in VM 0, exactly as Torque's job starter runs
// it (launch/starter.ts): its output is the job's output, its exit status the
// job's, and scancel's SIGTERM reaches it. Without VM 0 (a site that prepares
// VMs but does not start them, [launch] start = false) it runs here, unchanged.
//
// Exit codes are the job starter's (doc/user.md): the script's status; 66 the
// script could not be read; 69/70 VM 0's agent could not be reached or spoke
// out of turn.
import { spawn } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { shQuote } from '../seed/names.js';
import { EXIT_NOINPUT, EXIT_PROTOCOL, HELP, MAX_SCRIPT, readOwnScript, runScriptInVm, say, signalNumber, type StarterIO } from '../launch/starter.js';
import { unwrapBytes } from './wrap.js';

const isSocket = (path: string): boolean => {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
};

const FORWARDED = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGCONT'] as const;

/**
 * The script as submitted, run on this host as Slurm would have run it: a
 * private copy (its own #! line decides the interpreter), the job's
 * arguments, the step's signals passed on; the copy is removed at its end.
 */
function runOnHost(script: Buffer, args: readonly string[], env: NodeJS.ProcessEnv, io: StarterIO, signals: NodeJS.EventEmitter): Promise<number> {
  const dir = mkdtempSync(join(env.TMPDIR?.startsWith('/') ? env.TMPDIR : '/tmp', 'vtorque-job-'));
  const file = join(dir, 'script');
  writeFileSync(file, script, { mode: 0o700, flag: 'wx' });
  return new Promise((resolveRun) => {
    const child = spawn(file, [...args], { stdio: 'inherit', env });
    const pass = (sig: NodeJS.Signals) => () => { child.kill(sig); };
    const handlers = FORWARDED.map((s) => [s, pass(s)] as const);
    for (const [s, h] of handlers) signals.on(s, h);
    const done = (code: number): void => {
      for (const [s, h] of handlers) signals.removeListener(s, h);
      rmSync(dir, { recursive: true, force: true });
      resolveRun(code);
    };
    child.on('error', (e) => { say(io, `the job script could not be started on this host: ${e.message}. Fix: its first line must name an interpreter (#!/bin/bash), as sbatch requires`); done(EXIT_NOINPUT); });
    child.on('exit', (code, sig) => done(sig ? 128 + (signalNumber(sig) ?? 15) : code ?? EXIT_PROTOCOL));
  });
}

const ioOf = (): StarterIO => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });

/** argv: [JOB_DIR, SCRIPT, ARG...] from bin/vtorque-slurm-run. */
export async function slurmRun(argv: readonly string[], env: NodeJS.ProcessEnv, io: StarterIO, signals: NodeJS.EventEmitter): Promise<number> {
  const [jobDir, scriptPath, ...args] = argv;
  const jobId = env.SLURM_JOB_ID ?? '';
  if (!jobDir?.startsWith('/') || !scriptPath) {
    say(io, `vtorque-slurm-run: usage: vtorque-slurm-run SCRIPT [ARG...] (from a job script job_submit.lua wrapped). Fix: ${HELP}`);
    return EXIT_PROTOCOL;
  }
  let body: Buffer;
  try {
    // slurmd's copy of the batch script, read as the job owner, never through a symlink.
    body = unwrapBytes(readOwnScript(scriptPath, MAX_SCRIPT)).script;
  } catch (e) {
    say(io, `job ${jobId}: the job script slurmd wrote could not be read: ${(e as Error).message}; nothing ran. Fix: keep the script under 16 MiB, then resubmit; if it happens again, ${HELP}`);
    return EXIT_NOINPUT;
  }
  // A Slurm job id is digits: it cannot name another directory.
  const socket = /^[0-9]{1,10}$/.test(jobId) ? join(jobDir, jobId, 'vm-0.agent') : undefined;
  if (socket === undefined || !isSocket(socket)) return runOnHost(body, args, env, io, signals);
  // sbatch's script arguments reach the script as its positional parameters, as they would on the host.
  const script = args.length > 0 ? Buffer.concat([Buffer.from(`set -- ${args.map(shQuote).join(' ')}\n`), body]) : body;
  return runScriptInVm(socket, jobId, { body, script }, io, signals, env.SLURM_SUBMIT_DIR || process.cwd());
}

/** The bundle's entry for `--slurm`. */
export function slurmRunMain(argv: readonly string[]): void {
  const io = ioOf();
  slurmRun(argv, process.env, io, process).then(
    (code) => { process.exit(code); },
    (e: unknown) => {
      say(io, `job ${process.env.SLURM_JOB_ID ?? ''}: the job runner failed: ${(e as Error)?.message ?? String(e)}. Fix: ${HELP}`);
      process.exit(EXIT_PROTOCOL);
    },
  );
}
