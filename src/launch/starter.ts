// The job starter's VM side, for every batch system (Torque's front:
// torque/starter.ts; Slurm's: slurm/run.ts): runs the batch script in VM 0
// through the guest agent and stands in for the shell the batch system would
// have run, so the job's output, exit status and its deletion (qdel, scancel)
// behave as for any job. It runs as the job owner; everything it reaches (the
// agent socket, the job script) is the owner's already.
//
// Exit codes (doc/user.md): the script's status (0-255; 128+N when a signal N
// ended it); 143 (130 for SIGINT) when qdel's SIGTERM came before the script
// started; 69 the VM's agent could not be reached or the connection was lost
// before the exit status came; 70 the agent refused the script or spoke out of
// turn; 66 the script, its vm_prologue or its vm_epilogue could not be read.
//
// After qdel's SIGTERM the starter waits for the script's exit with no limit
// of its own, as pbs_mom's job shell would: the batch system's SIGKILL
// (Torque's kill_delay, 2 s by default; Slurm's KillWait) is the limit, and a
// killed starter leaves the VM to the epilogue, which stops it.
//
// vm_prologue= and vm_epilogue= (#VM keys) are read here and nowhere else: the
// starter is the job owner, so the kernel judges the paths with the owner's
// rights, and root (prologue, epilogue) never opens a file a user named.
import { connect, type Socket } from 'node:net';
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import { constants } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { VM_KEYS } from '../request/keys.js';
import { shQuote } from '../seed/names.js';
import { HEADER_CAP, scanDirectives } from '../request/directives.js';
import { encodeFrame, FrameDecoder, parseExit } from './protocol.js';

export const EXIT_NOINPUT = 66;
export const EXIT_UNAVAILABLE = 69;
export const EXIT_PROTOCOL = 70;
/** The agent's frames are capped at 16 MiB (protocol.ts); a bigger script could never be sent. */
export const MAX_SCRIPT = 16 * 1024 * 1024 - 1;

export const HELP = "the job's output above and its error file (.ER under Torque) show what ran; ask your administrator with the job id (vtorque-prologue doctor on the node, and the VM console under the job directory)";

export interface StarterIO {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Every line the starter itself writes: the job's output is otherwise the script's alone. */
export function say(io: StarterIO, text: string): void {
  io.stderr.write(`vtorque: ${text.replace(/[\x00-\x1f\x7f\u2028\u2029]/g, ' ')}\n`);
}

export type VmScriptKey = 'vm_prologue' | 'vm_epilogue';

/** A vm_prologue or vm_epilogue of the job: where it was asked for and what it holds. */
export interface VmScript {
  key: VmScriptKey;
  /** As the #VM line gave it (shown to the user). */
  value: string;
  line: number;
  body: Buffer;
}

/** Each of vm_prologue and vm_epilogue is a script, not data: 1 MiB is plenty, and keeps the composed script far below a frame. */
export const MAX_VM_SCRIPT = 1024 * 1024;

/** A user's vm_prologue/vm_epilogue that cannot be used; the message says what and where. */
export class VmScriptError extends Error {
  override name = 'VmScriptError';
}

/** The vm_prologue= and vm_epilogue= items of the script's #VM header (the first of each; the prologue refuses repeats). */
export function vmScriptRefs(body: Buffer): { key: VmScriptKey; value: string; line: number }[] {
  const head = body.subarray(0, HEADER_CAP);
  const scan = scanDirectives(head.toString('utf8'), body.length > HEADER_CAP);
  const out: { key: VmScriptKey; value: string; line: number }[] = [];
  for (const d of scan.directives) {
    const key = d.key.toLowerCase();
    if ((key !== 'vm_prologue' && key !== 'vm_epilogue') || out.some((r) => r.key === key)) continue;
    const r = VM_KEYS[key].type.parse(d.value);
    if (!r.ok) throw new VmScriptError(`${key} on line ${d.line}: ${r.message} (${r.fix})`);
    out.push({ key, value: r.value, line: d.line });
  }
  return out;
}

/**
 * Reads one of the user's scripts as the user (a vm_prologue, vm_epilogue,
 * or Slurm's copy of the batch script): the last component must not be a
 * symlink (O_NOFOLLOW) and must be a regular file (a FIFO or device would
 * hang or never end: O_NONBLOCK, then fstat on the descriptor), at most `max`
 * bytes, even if it grows while it is read.
 */
export function readOwnScript(path: string, max: number = MAX_VM_SCRIPT): Buffer {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ELOOP' ? 'it is a symbolic link'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied (you cannot read it)'
        : code === 'ENOENT' ? 'no such file'
          : code === 'ENOTDIR' ? 'a part of the path is not a directory'
            : (e as Error).message;
    throw new VmScriptError(`${path}: ${why}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new VmScriptError(`${path}: it is not a regular file`);
    if (st.size > max) throw new VmScriptError(`${path}: it is larger than ${max} bytes`);
    // Only the bytes read are returned: the rest need not be zeroed (up to 16 MiB for a batch script).
    const buf = Buffer.allocUnsafe(max + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n > max) throw new VmScriptError(`${path}: it is larger than ${max} bytes`);
    }
    return buf.subarray(0, n);
  } catch (e) {
    if (e instanceof VmScriptError) throw e;
    throw new VmScriptError(`${path}: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

/** The job's vm_prologue and vm_epilogue, read as the user; paths are relative to the submit directory. */
export function vmScriptsOf(body: Buffer, workdir: string): VmScript[] {
  return vmScriptRefs(body).map((r) => {
    try {
      return { ...r, body: readOwnScript(resolvePath(workdir, r.value)) };
    } catch (e) {
      throw new VmScriptError(`${r.key}=${r.value} (line ${r.line}) cannot be read: ${(e as Error).message}`, { cause: e });
    }
  });
}

/** A here-document whose delimiter cannot occur in base64 ('_' is not in its alphabet), decoded into a file of the run's directory. */
function embed(name: string, data: Buffer): string {
  const b64 = data.toString('base64').replace(/.{1,76}/g, '$&\n');
  return `base64 -d > "$__vtorque_d"/${name} <<'__VTORQUE_B64__' || exit 1\n${b64}__VTORQUE_B64__\n`;
}

/**
 * The one script VM 0 runs when the job has a vm_prologue or vm_epilogue; the
 * job script alone otherwise. Semantics (doc/user.md): vm_prologue runs first,
 * as its own program (its #! line is honoured); if it fails, the job script
 * and vm_epilogue do not run and the job's status is vm_prologue's. The job
 * script runs as bash runs it without these keys, in a subshell of the same
 * login shell, so its `exit` ends only itself. vm_epilogue runs after it
 * whatever its status, with VTORQUE_JOB_STATUS set; the job's status stays the
 * script's, and a failing vm_epilogue is said on stderr. qdel's TERM reaches
 * the part that runs (the agent signals the whole process group); this shell
 * waits for that part, then runs nothing after it and exits with its status.
 * The shell must not die of the TERM itself: the agent KILLs what is left
 * when it ends, which would cut the job script's trap short. (bash runs the
 * flag's trap only once the foreground part has ended; a subshell starts with
 * TERM at its default, so the job script's own trap works as without these keys.)
 */
export function composeScript(script: Buffer, vmScripts: readonly VmScript[]): Buffer {
  const pro = vmScripts.find((s) => s.key === 'vm_prologue');
  const epi = vmScripts.find((s) => s.key === 'vm_epilogue');
  if (!pro && !epi) return script;
  const parts: string[] = [
    '# vtorque: vm_prologue, the job script and vm_epilogue, put together by the job starter\n',
    "trap '__vtorque_t=1' TERM\n",
    '__vtorque_d=$(mktemp -d "${TMPDIR:-/tmp}/vtorque-job.XXXXXXXX") || { echo "vtorque: cannot make a temporary directory in the VM for vm_prologue/vm_epilogue. Fix: free space in ${TMPDIR:-/tmp} of the image" >&2; exit 1; }\n',
    "trap 'rm -rf -- \"$__vtorque_d\"' EXIT\n",
    embed('job', script),
  ];
  if (pro) {
    const said = shQuote(`vtorque: vm_prologue ${pro.value} exited with status`);
    parts.push(embed('vm_prologue', pro.body),
      'chmod 700 "$__vtorque_d"/vm_prologue || exit 1\n',
      '"$__vtorque_d"/vm_prologue\n',
      '__vtorque_s=$?\n',
      '[ -z "$__vtorque_t" ] || exit "$__vtorque_s"\n',
      `if [ "$__vtorque_s" -ne 0 ]; then echo ${said} "$__vtorque_s; the job script and vm_epilogue did not run. Fix: see its output above; it must exit 0 for the job to run" >&2; exit "$__vtorque_s"; fi\n`);
  }
  parts.push('[ -z "$__vtorque_t" ] || exit 143\n', '( . "$__vtorque_d"/job )\n', '__vtorque_s=$?\n', '[ -z "$__vtorque_t" ] || exit "$__vtorque_s"\n');
  if (epi) {
    const said = shQuote(`vtorque: vm_epilogue ${epi.value} exited with status`);
    parts.push(embed('vm_epilogue', epi.body),
      'chmod 700 "$__vtorque_d"/vm_epilogue || exit "$__vtorque_s"\n',
      'VTORQUE_JOB_STATUS=$__vtorque_s "$__vtorque_d"/vm_epilogue\n',
      '__vtorque_e=$?\n',
      `[ "$__vtorque_e" -eq 0 ] || echo ${said} "$__vtorque_e; the job's status stays $__vtorque_s. Fix: see its output above" >&2\n`);
  }
  parts.push('exit "$__vtorque_s"\n');
  return Buffer.from(parts.join(''));
}

export function signalNumber(name: string | null | undefined): number | undefined {
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

/**
 * Runs a job script in the VM behind the agent socket: `body` is the script as
 * submitted (its #VM lines name vm_prologue/vm_epilogue), `script` what runs
 * (the same, after any "set --" of the job's arguments). Any batch system's
 * starter comes here once it has both.
 */
export async function runScriptInVm(socketPath: string, jobId: string, parts: { body: Buffer; script: Buffer }, io: StarterIO, signals: NodeJS.EventEmitter, workdir: string): Promise<number> {
  let script: Buffer;
  try {
    script = composeScript(parts.script, vmScriptsOf(parts.body, workdir));
  } catch (e) {
    if (!(e instanceof VmScriptError)) throw e;
    say(io, `job ${jobId}: ${e.message}; nothing ran. Fix: name a regular file you can read, by its own path (no symbolic link), relative to the directory you submitted from or absolute, at most ${MAX_VM_SCRIPT} bytes; then resubmit`);
    return EXIT_NOINPUT;
  }
  if (script.length > MAX_SCRIPT) {
    say(io, `job ${jobId}: the job script could not be read: with vm_prologue and vm_epilogue it is larger than ${MAX_SCRIPT + 1} bytes. Fix: keep the script under 16 MiB (put data in files), then resubmit`);
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
    const finish = (code: number): void => {
      if (phase === 'done') return;
      phase = 'done';
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
    // Each signal is passed on once, as it came (qsig can send more than one).
    // No timer: a trap may take as long as the batch system allows, and no
    // longer, since its SIGKILL ends this process (doc/user.md, qdel).
    function onSignal(sig: NodeJS.Signals): void {
      if (phase === 'done') return;
      killedBy ??= sig;
      if (phase === 'running') sock.write(encodeFrame('K', Buffer.from('TERM')));
      else finish(128 + (signalNumber(sig) ?? 15));
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
