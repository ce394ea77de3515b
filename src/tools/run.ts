// Every external program goes through here: absolute path, argv array (never a
// shell), a timeout, a clean environment, and a typed error with the command,
// exit code and the first lines of stderr when it fails.
import type { Options } from 'execa';
import { loadExeca } from './execa.js';
import { NodeFault } from '../torque/exit.js';

export interface RunOptions {
  /** Milliseconds; the child gets SIGTERM, then SIGKILL 2 s later. */
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
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  ms: number;
}

export class ToolError extends NodeFault {
  constructor(
    readonly command: string,
    readonly toolExitCode: number | undefined,
    readonly stderrHead: string,
    summary: string,
    fix: string,
  ) {
    super(summary, [{ id: 'tool', where: command, message: summary, fix }]);
  }
}

const firstLines = (s: string, n = 5) => s.split('\n').filter((l) => l.trim() !== '').slice(0, n).join(' | ').slice(0, 500);

export async function runTool(path: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const cmd = [path, ...args].join(' ');
  const execaOpts: Options = {
    reject: false,
    // Its own process group, so a timeout kills the grandchildren too: a shell
    // wrapper's `sleep` or guestfish's qemu would otherwise hold our pipes open.
    detached: true,
    cleanup: true,
    input: opts.input,
    stdin: opts.input === undefined ? 'ignore' : undefined,
    env: { LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
    extendEnv: false,
    cwd: opts.cwd ?? '/',
    uid: opts.uid,
    gid: opts.gid,
    maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024,
    stripFinalNewline: false,
    encoding: 'utf8',
  };
  const { execa } = await loadExeca();
  const child = execa(path, args as string[], execaOpts);
  let timedOut = false;
  let canceled = false;
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, sig);
    } catch {
      /* already gone */
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), 2000).unref();
  }, opts.timeout);
  const onAbort = () => {
    canceled = true;
    killGroup('SIGKILL');
  };
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let r;
  try {
    r = await child;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
  const ms = performance.now() - t0;
  const stdout = String(r.stdout ?? '');
  const stderr = String(r.stderr ?? '');
  const key = opts.toolKey ? `[tools] ${opts.toolKey}` : 'the tool path';
  if (r.failed) {
    const code = (r as { code?: string }).code;
    if (code === 'ENOENT' || (r.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
      throw new ToolError(cmd, undefined, '', `${path} is not installed`, `install it, or set ${key} to where it is`);
    }
    if (code === 'EACCES' || (r.cause as NodeJS.ErrnoException | undefined)?.code === 'EACCES') {
      throw new ToolError(cmd, undefined, '', `${path} is not executable`, `fix its permissions, or set ${key}`);
    }
    if (timedOut) {
      throw new ToolError(cmd, undefined, firstLines(stderr), `${path} did not finish within ${Math.round(opts.timeout / 1000)} s`, 'check the node (load, hung filesystems) or raise [timeouts] tool');
    }
    if (canceled) {
      throw new ToolError(cmd, undefined, firstLines(stderr), `${path} was stopped at the prologue's deadline`, 'check the node or raise [timeouts] total');
    }
    const exit = r.exitCode;
    if (exit !== undefined && opts.okExitCodes?.includes(exit)) {
      return { stdout, stderr, exitCode: exit, ms };
    }
    if (r.isMaxBuffer) {
      throw new ToolError(cmd, exit, '', `${path} printed more output than expected`, 'check the tool and its input');
    }
    const why = exit !== undefined ? `exit code ${exit}` : `signal ${r.signal ?? 'unknown'}`;
    throw new ToolError(cmd, exit, firstLines(stderr), `${path} failed (${why})${stderr ? `: ${firstLines(stderr)}` : ''}`, `run the command by hand to see why: ${cmd}`);
  }
  return { stdout, stderr, exitCode: r.exitCode ?? 0, ms };
}
