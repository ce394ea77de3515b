// The job starter's node side (bin/vtorque-starter execs it for a VM job): runs
// the batch script in VM 0 through the guest agent and stands in for the shell
// pbs_mom would have run, so the job's output, exit status and qdel behave as
// for any job. It runs as the job owner; everything it reaches (the agent
// socket, the job script) is the owner's already.
//
// Exit codes (doc/user.md): the script's status (0-255; 128+N when a signal N
// ended it); 143 when qdel's SIGTERM (130 for SIGINT) got no exit status back
// within 10 s; 69 the VM's agent could not be reached or the connection was
// lost before the exit status came; 70 the agent refused the script or spoke
// out of turn; 66 the script could not be read.
import { connect, type Socket } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { encodeFrame, FrameDecoder, parseExit } from './protocol.js';

export const EXIT_NOINPUT = 66;
export const EXIT_UNAVAILABLE = 69;
export const EXIT_PROTOCOL = 70;
/** How long a killed script gets to report its exit before the starter gives up. */
export const KILL_GRACE_MS = 10_000;
/** The agent's frames are capped at 16 MiB (protocol.ts); a bigger script could never be sent. */
const MAX_SCRIPT = 16 * 1024 * 1024 - 1;

const HELP = 'the job output above and the .ER file show what ran; ask your administrator with the job id (vtorque-prologue doctor on the node, and the VM console under the job directory)';

export interface StarterIO {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Every line the starter itself writes: the job's output is otherwise the script's alone. */
function say(io: StarterIO, text: string): void {
  io.stderr.write(`vtorque: ${text.replace(/[\x00-\x1f\x7f\u2028\u2029]/g, ' ')}\n`);
}

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

/** The script to run in the VM, from what pbs_mom put on stdin. */
export function scriptFrom(input: Buffer, jobId: string): Buffer {
  const piped = pipedScriptLine(input, jobId);
  if (!piped) return input;
  const body = readFileSync(piped.file);
  // qsub -F's words reach the shell as shell text; "set --" gives the script the same positional parameters.
  return piped.args === '' ? body : Buffer.concat([Buffer.from(`set -- ${piped.args}\n`), body]);
}

function signalNumber(name: string | null | undefined): number | undefined {
  if (!name) return undefined;
  const n = (constants.signals as Record<string, number>)[name.startsWith('SIG') ? name : `SIG${name}`];
  return typeof n === 'number' ? n : undefined;
}

/** The shell's exit status for an 'X' payload: the status, or 128+N for a signal; undefined if unreadable. */
export function exitStatus(payload: Buffer): number | undefined {
  let x;
  try {
    x = parseExit(payload);
  } catch {
    return undefined;
  }
  const sig = signalNumber(x.signal);
  return sig !== undefined ? 128 + sig : x.status;
}

/** Connects to the agent socket; rejects with the reason. */
function open(path: string): Promise<Socket> {
  return new Promise((resolveOpen, reject) => {
    const s = connect(path);
    s.once('connect', () => { s.removeListener('error', reject); resolveOpen(s); });
    s.once('error', reject);
  });
}

/** Runs the script in the VM behind the agent socket and returns the exit code for the job. */
export async function runInVm(socketPath: string, jobId: string, io: StarterIO, signals: NodeJS.EventEmitter = process): Promise<number> {
  const input = await readAll(io.stdin, MAX_SCRIPT);
  let script: Buffer;
  try {
    if (!input) throw new Error(`it is larger than ${MAX_SCRIPT + 1} bytes`);
    script = scriptFrom(input, jobId);
    if (script.length > MAX_SCRIPT) throw new Error(`it is larger than ${MAX_SCRIPT + 1} bytes`);
  } catch (e) {
    say(io, `job ${jobId}: the job script could not be read: ${(e as Error).message}. Fix: keep the script under 16 MiB (put data in files), then resubmit`);
    return EXIT_NOINPUT;
  }
  let sock: Socket;
  try {
    sock = await open(socketPath);
  } catch (e) {
    say(io, `job ${jobId}: VM 0's agent could not be reached at ${socketPath}: ${(e as Error).message}; the script did not run. Fix: resubmit the job; if it happens again, ${HELP}`);
    return EXIT_UNAVAILABLE;
  }
  return new Promise<number>((resolveRun) => {
    const decoder = new FrameDecoder();
    let phase: 'hello' | 'running' | 'done' = 'hello';
    let killedBy: NodeJS.Signals | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (code: number): void => {
      if (phase === 'done') return;
      phase = 'done';
      if (killTimer) clearTimeout(killTimer);
      for (const s of ['SIGTERM', 'SIGINT'] as const) signals.removeListener(s, onSignal);
      sock.destroy();
      // Exit only once the output is out: the caller awaits both streams' callbacks.
      let pending = 2;
      const done = (): void => { if (--pending === 0) resolveRun(code); };
      io.stdout.write('', done);
      io.stderr.write('', done);
    };
    // Back-pressure: while the job's stdout or stderr cannot take more, read no more from the VM.
    let blocked = 0;
    const relay = (out: NodeJS.WritableStream, data: Buffer): void => {
      if (data.length === 0 || out.write(data)) return;
      blocked++;
      sock.pause();
      out.once('drain', () => { if (--blocked === 0 && phase !== 'done') sock.resume(); });
    };
    function onSignal(sig: NodeJS.Signals): void {
      if (phase === 'done') return;
      if (!killedBy) {
        killedBy = sig;
        if (phase === 'running') sock.write(encodeFrame('K', Buffer.from('TERM')));
        killTimer = setTimeout(() => {
          say(io, `job ${jobId}: the script in VM 0 did not report its exit within ${KILL_GRACE_MS / 1000} s of ${sig}; the epilogue stops the VM`);
          finish(128 + (signalNumber(sig) ?? 15));
        }, KILL_GRACE_MS);
      }
      if (phase === 'hello') finish(128 + (signalNumber(sig) ?? 15));
    }
    for (const s of ['SIGTERM', 'SIGINT'] as const) signals.on(s, onSignal);

    sock.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (e) {
        say(io, `job ${jobId}: VM 0's agent sent something this starter cannot read (${(e as Error).message}). Fix: ${HELP}`);
        finish(EXIT_PROTOCOL);
        return;
      }
      for (const f of frames) {
        if (phase === 'done') return;
        if (f.type === 'R' && phase === 'hello') {
          phase = 'running';
          sock.write(encodeFrame('S', script));
          sock.write(encodeFrame('I', Buffer.alloc(0)));
        } else if (f.type === 'O' && phase === 'running') relay(io.stdout, f.payload);
        else if (f.type === 'E' && phase === 'running') relay(io.stderr, f.payload);
        else if (f.type === 'X' && phase === 'running') {
          const code = exitStatus(f.payload);
          if (code === undefined) {
            say(io, `job ${jobId}: VM 0's agent sent an exit status this starter cannot read. Fix: ${HELP}`);
            finish(EXIT_PROTOCOL);
          } else finish(code);
        } else if (f.type === '!') {
          say(io, `job ${jobId}: VM 0's agent refused the script: ${f.payload.toString('utf8').slice(0, 500)}. Fix: resubmit the job (a VM runs one job script per boot); if it happens again, ${HELP}`);
          finish(EXIT_PROTOCOL);
        } else {
          say(io, `job ${jobId}: VM 0's agent sent an unexpected '${f.type}' frame. Fix: ${HELP}`);
          finish(EXIT_PROTOCOL);
        }
      }
    });
    const lost = (why: string): void => {
      if (phase === 'done') return;
      if (killedBy) { finish(128 + (signalNumber(killedBy) ?? 15)); return; }
      say(io, phase === 'hello'
        ? `job ${jobId}: VM 0's agent closed the connection before it was ready (${why}); the script did not run. Fix: resubmit the job; if it happens again, ${HELP}`
        : `job ${jobId}: the connection to VM 0 was lost while the script ran (${why}); its exit status is unknown. Fix: ${HELP}`);
      finish(EXIT_UNAVAILABLE);
    };
    sock.on('error', (e) => lost(e.message));
    sock.on('close', () => lost('the VM or its agent stopped'));
    sock.write(encodeFrame('H', Buffer.alloc(0)));
  });
}

/** The bundle's entry: argv = [socket, shell, name, ...] (bin/vtorque-starter). */
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
