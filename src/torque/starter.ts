// Torque's job starter (pbs_mom's $job_starter, bin/vtorque-starter execs
// this for a VM job, as the job owner): what pbs_mom put on the shell's stdin,
// PBS_JOBID and PBS_O_WORKDIR, handed to the VM side every batch system shares
// (launch/starter.ts runScriptInVm).
import { readFileSync, statSync } from 'node:fs';
import { EXIT_NOINPUT, EXIT_PROTOCOL, HELP, MAX_SCRIPT, runScriptInVm, say, type StarterIO } from '../launch/starter.js';

async function readAll(stream: NodeJS.ReadableStream, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    n += b.length;
    if (n > max) return undefined;
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/**
 * Torque built with its default --enable-shell-pipe writes not the script but
 * one command line on the shell's stdin: "[exec ]<mom_priv>/jobs/<prefix>.SC
 * [qsub -F arguments]\n" (start_exec.c, TMomFinalizeJob2). Returns the script
 * file and the arguments when stdin is such a line naming this job's script.
 */
export function pipedScriptLine(input: Buffer, jobId: string): { file: string; args: string } | undefined {
  if (input.length > 8192 || input[input.length - 1] !== 0x0a) return undefined;
  const line = input.subarray(0, input.length - 1).toString('utf8');
  if (line.includes('\n')) return undefined;
  const m = /^(?:exec )?(\/\S*\/jobs\/([^/\s]+)\.SC)(?: (.*))?$/.exec(line);
  if (!m || !m[2]!.startsWith(jobId)) return undefined;
  try {
    if (!statSync(m[1]!).isFile()) return undefined;
  } catch {
    return undefined;
  }
  return { file: m[1]!, args: m[3] ?? '' };
}

/** The job script as submitted (where #VM lines are read), and the script to run: the same, after qsub -F's "set --". */
export function scriptParts(input: Buffer, jobId: string): { body: Buffer; script: Buffer } {
  const piped = pipedScriptLine(input, jobId);
  if (!piped) return { body: input, script: input };
  const body = readFileSync(piped.file);
  // qsub -F's words reach the shell as shell text; "set --" gives the script the same positional parameters.
  return { body, script: piped.args === '' ? body : Buffer.concat([Buffer.from(`set -- ${piped.args}\n`), body]) };
}

/** The script to run in the VM, from what pbs_mom put on stdin. */
export function scriptFrom(input: Buffer, jobId: string): Buffer {
  return scriptParts(input, jobId).script;
}

/** Runs the script pbs_mom put on stdin in the VM behind the agent socket and returns the exit code for the job. */
export async function runInVm(socketPath: string, jobId: string, io: StarterIO, signals: NodeJS.EventEmitter = process, workdir: string = process.env.PBS_O_WORKDIR || process.cwd()): Promise<number> {
  const input = await readAll(io.stdin, MAX_SCRIPT);
  let parts: { body: Buffer; script: Buffer };
  try {
    if (!input) throw new Error(`it is larger than ${MAX_SCRIPT + 1} bytes`);
    parts = scriptParts(input, jobId);
  } catch (e) {
    say(io, `job ${jobId}: the job script could not be read: ${(e as Error).message}. Fix: keep the script under 16 MiB (put data in files), then resubmit`);
    return EXIT_NOINPUT;
  }
  return runScriptInVm(socketPath, jobId, parts, io, signals, workdir);
}

/** The bundle's entry: argv = [socket, SHELL, ARG...] (bin/vtorque-starter passes on what pbs_mom gave it after the socket; only the socket is read). */
export function starterMain(argv: readonly string[] = process.argv.slice(2)): void {
  const socketPath = argv[0] ?? '';
  const jobId = process.env.PBS_JOBID ?? '';
  runInVm(socketPath, jobId, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }).then(
    (code) => { process.exit(code); },
    (e: unknown) => {
      say({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, `job ${jobId}: the job starter failed: ${(e as Error)?.message ?? String(e)}. Fix: ${HELP}`);
      process.exit(EXIT_PROTOCOL);
    },
  );
}
