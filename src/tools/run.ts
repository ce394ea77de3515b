// Every external program goes through here: absolute path, argv array (never a
// shell), a timeout, a clean environment, and a typed error with the command,
// exit code and the first lines of stderr when it fails.
//
// This is node:child_process, not execa. A warm VM job runs about a dozen
// short tools (getent, qemu-img create, genisoimage), and through execa each
// cost ~8 ms of main-thread work on top of ~40 ms to load it: about 115 ms of
// a ~360 ms prologue (bench/warm, measured under load). What execa gave here
// (no shell, collected output, typed failure) is these few lines; execa stays
// where it earns its keep, the long guestfish session (src/image/guestfs.ts).
//
// Every child dies when we die, whoever kills us. pbs_mom SIGKILLs the
// prologue's session at $prologalarm (src/resmom/prolog.c, pelogalm), slurmd
// kills its Prolog at PrologEpilogTimeout, an admin or the OOM killer may
// SIGKILL node alone: none of them gives us a chance to clean up. So each
// child runs as
//   setpriv --pdeathsig TERM -- timeout --kill-after=2 -- BOX PROGRAM ARG...
// setpriv sets PR_SET_PDEATHSIG: the kernel sends timeout SIGTERM the moment
// the thread that started it ends (node's spawn runs on the main thread,
// which ends only with the process; we start no worker threads). timeout
// passes a SIGTERM it gets on to its whole process group, the program's own
// children included (a shell's sleep, guestfish's appliance qemu), and
// SIGKILLs the group 2 s later. It is also the child's own time box: BOX
// after the start it does the same, whether or not node is still there to.
// The child stays in our session (timeout makes a process group of its own
// in it), so pbs_mom's session kill reaches the whole tree directly too.
import { accessSync, constants } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { NodeFault, stopReason } from '../core/errors.js';

/** The [tools] every child runs under (the schema's defaults until loadConfig sets the admin's). */
export interface Guards {
  setpriv: string;
  timeout: string;
}
let guards: Guards = { setpriv: '/usr/bin/setpriv', timeout: '/usr/bin/timeout' };

/** Sets [tools] setpriv and timeout for every child started from now on. */
export function useGuards(tools: Guards): void {
  guards = { setpriv: tools.setpriv, timeout: tools.timeout };
}

// timeout's grace between its SIGTERM and its SIGKILL, as runTool's own.
const KILL_AFTER_S = 2;

/**
 * The command line that runs a program under its guards: it dies with this
 * process (its process group with it), and on its own after boxMs.
 */
export function guardedArgv(program: string, args: readonly string[], boxMs: number): [string, string[]] {
  return [guards.setpriv, ['--pdeathsig', 'TERM', '--', guards.timeout, `--kill-after=${KILL_AFTER_S}`, '--', `${(boxMs / 1000).toFixed(3)}s`, program, ...args]];
}

/** Why a program cannot be started, checked before it is: the guards would otherwise report it as their own failure (exit 126/127). */
function unusable(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'ESPAWN';
  }
}

export interface RunOptions {
  /**
   * Milliseconds; the child's process group gets SIGTERM, then SIGKILL 2 s
   * later. Its own time box (timeout) does the same 2 s after that, should
   * this process be unable to.
   */
  timeout: number;
  /** [tools] key, named in errors so the admin knows what to change. */
  toolKey?: string;
  input?: string | Buffer;
  uid?: number;
  gid?: number;
  cwd?: string;
  env?: Record<string, string>;
  signal?: AbortSignal;
  /** Exit codes that are answers, not failures (qemu-img check uses 2 and 3). */
  okExitCodes?: readonly number[];
  /** Kill the child if its output passes this many bytes. */
  maxBuffer?: number;
  /** 'ignore' for tools told to be quiet: one pipe fewer to set up (~1 ms each on the warm path). */
  stdout?: 'pipe' | 'ignore';
  /**
   * Takes stdout chunk by chunk instead of collecting it: the result's stdout is
   * then empty and maxBuffer counts stderr only, so the caller bounds what it keeps.
   */
  onStdout?: (chunk: Buffer) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  ms: number;
}

/**
 * How a tool failed: 'failed' is the only one where it ran to its end (a
 * non-zero exit); the others say it was not found or started, ran past its
 * timeout, was stopped by the run's signal, or was killed for its output.
 */
export type ToolFailure = 'missing' | 'not-executable' | 'not-started' | 'timeout' | 'stopped' | 'overflow' | 'failed';

export class ToolError extends NodeFault {
  constructor(
    readonly command: string,
    readonly toolExitCode: number | undefined,
    readonly stderrHead: string,
    summary: string,
    fix: string,
    readonly failure: ToolFailure = 'failed',
  ) {
    super(summary, [{ id: 'tool', where: command, message: summary, fix }]);
  }
}

const firstLines = (s: string, n = 5) => s.split('\n').filter((l) => l.trim() !== '').slice(0, n).join(' | ').slice(0, 500);

export async function runTool(path: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const cmd = [path, ...args].join(' ');
  const r = await collect(path, args, opts);
  const ms = performance.now() - t0;
  const { stdout, stderr } = r;
  if (r.spawnError !== undefined || r.exitCode !== 0 || r.overflowed || r.timedOut || r.canceled) {
    // Which program could not be started: the tool, or one of the guards it runs under.
    const bad = r.unusable ?? { path, key: opts.toolKey };
    const key = bad.key ? `[tools] ${bad.key}` : 'the tool path';
    if (r.spawnError === 'ENOENT') {
      throw new ToolError(cmd, undefined, '', `${bad.path} is not installed`, `install it, or set ${key} to where it is`, 'missing');
    }
    if (r.spawnError === 'EACCES') {
      throw new ToolError(cmd, undefined, '', `${bad.path} is not executable`, `fix its permissions, or set ${key}`, 'not-executable');
    }
    if (r.timedOut) {
      throw new ToolError(cmd, undefined, firstLines(stderr), `${path} did not finish within ${opts.timeout < 1000 ? `${opts.timeout} ms` : `${Math.round(opts.timeout / 1000)} s`}`, 'check the node (load, hung filesystems) or raise [timeouts] tool', 'timeout');
    }
    if (r.canceled) {
      // The deadline or the job's deletion (qdel): the signal's reason says which.
      const stop = stopReason(opts.signal);
      throw new ToolError(cmd, undefined, firstLines(stderr), `${path} was stopped: ${stop.why}`, stop.fix, 'stopped');
    }
    const exit = r.exitCode ?? undefined;
    if (exit !== undefined && opts.okExitCodes?.includes(exit)) {
      return { stdout, stderr, exitCode: exit, ms };
    }
    if (r.overflowed) {
      throw new ToolError(cmd, exit, '', `${path} printed more output than expected`, 'check the tool and its input', 'overflow');
    }
    if (r.spawnError !== undefined) {
      // EPERM on a uid/gid change, EMFILE, ENOMEM: the node, not the tool.
      throw new ToolError(cmd, undefined, '', `${path} could not be started (${r.spawnError})`, 'check the node (process and file limits, memory) and the user it runs as', 'not-started');
    }
    const why = exit !== undefined ? `exit code ${exit}` : `signal ${r.signal ?? 'unknown'}`;
    throw new ToolError(cmd, exit, firstLines(stderr), `${path} failed (${why})${stderr ? `: ${firstLines(stderr)}` : ''}`, `run the command by hand to see why: ${cmd}`);
  }
  return { stdout, stderr, exitCode: 0, ms };
}

interface Outcome {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** errno code when the program could not be started (ENOENT, EACCES). */
  spawnError?: string;
  /** The program that could not be started, when it was the tool's guard. */
  unusable?: { path: string; key?: string };
  overflowed: boolean;
  timedOut: boolean;
  canceled: boolean;
}

// What is still running when we exit normally (a deadline's process.exit
// included) is killed at once, rather than by its guard's SIGTERM.
const running = new Set<number>();
let exitHook = false;
/**
 * Signals a guarded child's whole process group: timeout makes it, with the
 * child's pid as its id, first thing after it starts. A signal sent before
 * that finds no group, and the child's own time box ends it instead. Never
 * the pid alone: once the child is reaped, its pid may be another process's.
 */
export function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  try {
    if (pid !== undefined) process.kill(-pid, sig);
  } catch {
    /* already gone, or no group yet */
  }
}

/**
 * killGroup for a child of ours that may not have made its group yet (timeout
 * does so first thing): tried again shortly for as long as the child runs.
 */
function stopGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  const pid = child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    if (child.exitCode === null && child.signalCode === null) setTimeout(() => stopGroup(child, sig), 10).unref();
  }
}

function hookExit(): void {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => running.forEach((pid) => killGroup(pid, 'SIGKILL')));
  }
}

/**
 * For a guarded child started elsewhere (the guestfish session, through
 * execa): its process group is killed when this process exits, like every
 * runTool child, so a deadline's hard stop leaves no appliance behind.
 * Returns the function that forgets it once it has ended.
 */
export function killAtExit(pid: number | undefined): () => void {
  if (pid === undefined) return () => undefined;
  hookExit();
  running.add(pid);
  return () => running.delete(pid);
}

function collect(path: string, args: readonly string[], opts: RunOptions): Promise<Outcome> {
  hookExit();
  return new Promise((resolve) => {
    const r: Outcome = { stdout: '', stderr: '', exitCode: null, signal: null, overflowed: false, timedOut: false, canceled: false };
    if (opts.signal?.aborted) {
      resolve({ ...r, canceled: true });
      return;
    }
    for (const [p, key] of [[path, undefined], [guards.setpriv, 'setpriv'], [guards.timeout, 'timeout']] as const) {
      const why = unusable(p);
      if (why !== undefined) {
        resolve({ ...r, spawnError: why, unusable: p === path ? undefined : { path: p, key } });
        return;
      }
    }
    let child: ChildProcess;
    const t0 = performance.now();
    try {
      const [guard, argv] = guardedArgv(path, args, opts.timeout + KILL_AFTER_S * 1000);
      child = spawn(guard, argv, {
        // In our session; timeout gives it a process group of its own, so a
        // timeout kills the grandchildren too: a shell wrapper's `sleep` or
        // guestfish's qemu would otherwise hold our pipes open.
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', opts.stdout ?? 'pipe', 'pipe'],
        env: { LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
        cwd: opts.cwd ?? '/',
        uid: opts.uid,
        gid: opts.gid,
      });
    } catch (e) {
      // spawn throws synchronously for bad options (a uid it cannot set, say)
      resolve({ ...r, spawnError: (e as NodeJS.ErrnoException).code ?? 'ESPAWN' });
      return;
    }
    const pid = child.pid;
    if (pid !== undefined) running.add(pid);
    const max = opts.maxBuffer ?? 64 * 1024 * 1024;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const take = (into: Buffer[]) => (b: Buffer) => {
      size += b.length;
      if (size > max) {
        if (!r.overflowed) stopGroup(child, 'SIGKILL');
        r.overflowed = true;
        return;
      }
      into.push(b);
    };
    child.stdout?.on('data', opts.onStdout ?? take(out));
    child.stderr!.on('data', take(err));
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => { /* the child may exit without reading: its exit code says why */ });
      child.stdin!.end(opts.input);
    }
    const timer = setTimeout(() => {
      r.timedOut = true;
      stopGroup(child, 'SIGTERM');
      setTimeout(() => stopGroup(child, 'SIGKILL'), KILL_AFTER_S * 1000).unref();
    }, opts.timeout);
    const onAbort = () => {
      r.canceled = true;
      stopGroup(child, 'SIGKILL');
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e: NodeJS.ErrnoException) => {
      r.spawnError = e.code ?? 'ESPAWN';
    });
    // 'close', not 'exit': the pipes are drained by then.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (pid !== undefined) running.delete(pid);
      // 124: the child's own time box ended it (this process could not, in time): a timeout all the same.
      if (code === 124 && performance.now() - t0 >= opts.timeout) r.timedOut = true;
      r.exitCode = code;
      r.signal = signal;
      r.stdout = Buffer.concat(out).toString('utf8');
      r.stderr = Buffer.concat(err).toString('utf8');
      resolve(r);
    });
  });
}
