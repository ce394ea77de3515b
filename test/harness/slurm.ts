// A real one-node Slurm for tests: a private munged, slurmctld and slurmd,
// started as root without systemd, with a private slurm.conf in a private
// directory. Nothing reads or writes /etc/slurm, /etc/munge or the system's
// spool dirs, so test files can run side by side: each instance has its own
// munge key and socket, its own ports, ClusterName and NodeName. Every wait is
// time-boxed; stop() cancels the jobs, ends the daemons it started (by pid)
// and removes the directory.
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const MUNGED = '/usr/sbin/munged';
const MUNGEKEY = '/usr/sbin/mungekey';
const SLURMCTLD = '/usr/sbin/slurmctld';
const SLURMD = '/usr/sbin/slurmd';
const BIN = '/usr/bin';
const SETPRIV = '/usr/bin/setpriv';

export interface SlurmUser {
  uid: number;
  gid: number;
}

/** A hook script: a file somewhere (e.g. our program), or text the harness writes root-owned 0700 into its directory. */
export type Hook = { path: string } | { text: string };

export interface SlurmOptions {
  prolog?: Hook;
  epilog?: Hook;
  taskProlog?: Hook;
  /** PrologFlags, e.g. ['Alloc'] (Prolog at allocation, not at the first step). */
  prologFlags?: string[];
  /** job_submit.lua text: written next to slurm.conf, where slurmctld's lua plugin looks for it, and JobSubmitPlugins=lua set. */
  jobSubmitLua?: string;
  /** More slurm.conf lines, appended before the node and partition lines. */
  extraConf?: string[];
  /** Time box for daemons start to node idle (default 60 s: the machine is shared with libguestfs launches). */
  startTimeoutMs?: number;
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface JobState {
  /** squeue %T: PENDING, RUNNING, COMPLETED, CANCELLED, ... */
  state: string;
  /** squeue %r: e.g. "launch failed requeued held", "None". */
  reason: string;
}

export interface NodeState {
  /** sinfo %T: idle, drained, draining, down, allocated, ... */
  state: string;
  /** sinfo %E: the reason set by Slurm or scontrol, "none" if there is none. */
  reason: string;
}

/** squeue states after which a job does not change (short of a requeue by hand). */
export const ENDED = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE', 'PREEMPTED']);

class DaemonExited extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port free right now on every address (slurmctld and slurmd bind the wildcard address). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * The hardware as slurmd itself sees it (slurmd -C): a node line claiming more
 * CPUs, sockets or memory than that makes slurmctld drain the node ("Low
 * RealMemory", "Low socket*core*thread count") instead of making it idle.
 */
function hardware(): string {
  const out = execFileSync(SLURMD, ['-C'], { encoding: 'utf8', timeout: 20_000 });
  const keys = ['CPUs', 'Boards', 'SocketsPerBoard', 'CoresPerSocket', 'ThreadsPerCore', 'RealMemory'];
  const found = keys.map((k) => new RegExp(`\\b${k}=(\\d+)`).exec(out)?.[1]);
  if (found.some((v) => v === undefined)) throw new Error(`slurmd -C: no ${keys.join('/')} in: ${out}`);
  return keys.map((k, i) => `${k}=${found[i]}`).join(' ');
}

function hookPath(dir: string, name: string, hook: Hook): string {
  if ('path' in hook) return hook.path;
  const p = join(dir, name);
  writeFileSync(p, hook.text, { mode: 0o700 });
  chmodSync(p, 0o700);
  return p;
}

export class Slurm {
  readonly dir: string;
  readonly conf: string;
  readonly cluster: string;
  readonly node: string;
  readonly partition = 'vt';
  /** Milliseconds from spawning the daemons to the node reported idle. */
  startMs = 0;
  private daemons: { name: string; child: ChildProcess; log: string }[] = [];
  private stopped = false;

  private constructor(dir: string) {
    const tag = randomBytes(4).toString('hex');
    this.dir = dir;
    this.conf = join(dir, 'slurm.conf');
    this.cluster = `vt${tag}`;
    this.node = `vtn${tag}`;
  }

  /** Starts munged, slurmctld and slurmd and waits for the node to be idle; a port lost to a parallel instance is retried with new ones. */
  static async start(opts: SlurmOptions = {}): Promise<Slurm> {
    for (const p of [MUNGED, MUNGEKEY, SLURMCTLD, SLURMD, SETPRIV, join(BIN, 'sbatch')]) {
      try {
        accessSync(p, constants.X_OK);
      } catch (e) {
        throw new Error(`${p} is missing: install the Debian packages slurmctld slurmd slurm-client munge`, { cause: e });
      }
    }
    let last: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      // 0755 on the path down: sbatch, run as the job owner, reads slurm.conf and connects to the munge socket here.
      const dir = mkdtempSync(join(tmpdir(), 'vt-slurm-'));
      chmodSync(dir, 0o755);
      const s = new Slurm(dir);
      try {
        await s.boot(opts);
        return s;
      } catch (e) {
        last = e;
        await s.stop();
        // Only a daemon that died (e.g. its port taken between freePort() and bind) is worth another try; a time-out would only repeat.
        if (!(e instanceof DaemonExited)) break;
      }
    }
    throw last;
  }

  /** The environment every client command gets: the private conf, and nothing of the caller's. */
  get env(): Record<string, string> {
    return { PATH: `${BIN}:/bin:/usr/sbin:/sbin`, SLURM_CONF: this.conf, LANG: 'C' };
  }

  private async boot(opts: SlurmOptions): Promise<void> {
    const d = this.dir;
    for (const sub of ['state', 'spool', 'out']) mkdirSync(join(d, sub), { mode: 0o755 });
    const munge = join(d, 'munge');
    mkdirSync(munge, { mode: 0o755 });
    execFileSync(MUNGEKEY, ['--create', `--keyfile=${join(munge, 'munge.key')}`], { timeout: 20_000 });
    const [ctldPort, slurmdPort] = [await freePort(), await freePort()];
    const lines = [
      `ClusterName=${this.cluster}`,
      // slurmctld refuses to start unless this names the host it runs on (short hostname).
      `SlurmctldHost=${hostname().split('.')[0]}(127.0.0.1)`,
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${slurmdPort}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      'CredType=cred/munge',
      // Clients and daemons alike talk to this instance's munged, never to a system one.
      `AuthInfo=socket=${join(munge, 'munge.sock')}`,
      `StateSaveLocation=${join(d, 'state')}`,
      `SlurmdSpoolDir=${join(d, 'spool')}`,
      `SlurmctldPidFile=${join(d, 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(d, 'slurmd.pid')}`,
      `SlurmctldLogFile=${join(d, 'slurmctld.log')}`,
      `SlurmdLogFile=${join(d, 'slurmd.log')}`,
      'SlurmctldDebug=info',
      'SlurmdDebug=info',
      // No cgroups: no systemd here and the tests share the machine's cgroup tree.
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'MpiDefault=none',
      'SwitchType=switch/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/none',
      'MailProg=/bin/true',
      // A node that answered late on a loaded machine comes back by itself; a drain (e.g. "Prolog error") still needs resume().
      'ReturnToService=2',
      // Finished jobs stay visible to squeue long enough for a test to look at them.
      'MinJobAge=600',
      // Job ids of their own: instances share the machine's vtorque cache, whose leases and ended
      // markers are named by job id; two instances both at job 1 would see each other's.
      `FirstJobId=${1000 + randomBytes(2).readUInt16BE(0) * 100}`, // below MaxJobId (67043328)
    ];
    if (opts.prolog) lines.push(`Prolog=${hookPath(d, 'prolog', opts.prolog)}`);
    if (opts.epilog) lines.push(`Epilog=${hookPath(d, 'epilog', opts.epilog)}`);
    if (opts.taskProlog) {
      // TaskProlog runs as the job owner: it must be readable and executable by them.
      const p = hookPath(d, 'task-prolog', opts.taskProlog);
      if ('text' in opts.taskProlog) chmodSync(p, 0o755);
      lines.push(`TaskProlog=${p}`);
    }
    if (opts.prologFlags?.length) lines.push(`PrologFlags=${opts.prologFlags.join(',')}`);
    if (opts.jobSubmitLua !== undefined) {
      writeFileSync(join(d, 'job_submit.lua'), opts.jobSubmitLua, { mode: 0o644 });
      lines.push('JobSubmitPlugins=lua');
    }
    lines.push(...(opts.extraConf ?? []));
    lines.push(
      `NodeName=${this.node} NodeHostname=${hostname().split('.')[0]} NodeAddr=127.0.0.1 ${hardware()} State=UNKNOWN`,
      `PartitionName=${this.partition} Nodes=${this.node} Default=YES MaxTime=INFINITE State=UP`,
    );
    writeFileSync(this.conf, lines.join('\n') + '\n', { mode: 0o644 });

    const t0 = Date.now();
    this.daemon('munged', MUNGED, ['-F', `--socket=${join(munge, 'munge.sock')}`, `--key-file=${join(munge, 'munge.key')}`,
      `--pid-file=${join(munge, 'munged.pid')}`, `--seed-file=${join(munge, 'munged.seed')}`]);
    await this.until('munged socket', 20_000, () => spawnSync(join(BIN, 'munge'), ['-n', '-S', join(munge, 'munge.sock')], { timeout: 5_000 }).status === 0);
    this.daemon('slurmctld', SLURMCTLD, ['-D', '-c', '-f', this.conf]);
    // -N: the node name is per instance, not the host name, so instances on one host do not collide.
    this.daemon('slurmd', SLURMD, ['-D', '-N', this.node, '-f', this.conf]);
    await this.until('node idle', opts.startTimeoutMs ?? 60_000, async () => (await this.nodeState()).state === 'idle');
    this.startMs = Date.now() - t0;
  }

  private daemon(name: string, path: string, args: string[]): void {
    const log = join(this.dir, `${name}.stderr`);
    const fd = openSync(log, 'a', 0o644);
    // Parent-death signal: a test process that dies (tap timeout, crash) takes its daemons with it instead of leaving them on the ports.
    const child = spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', path, ...args], { cwd: this.dir, env: this.env, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    this.daemons.push({ name, child, log });
  }

  /** Polls check every 100 ms up to ms; fails at once, with the daemons' logs, if one of them has exited. */
  private async until(what: string | (() => string), ms: number, check: () => boolean | Promise<boolean>): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      const dead = this.daemons.find((d) => d.child.exitCode !== null || d.child.signalCode !== null);
      const name = () => (typeof what === 'string' ? what : what());
      if (dead) throw new DaemonExited(`slurm harness: ${dead.name} exited (${dead.child.exitCode ?? dead.child.signalCode}) while waiting for ${name()}\n${this.logs()}`);
      if (await check()) return;
      if (Date.now() > end) throw new Error(`slurm harness: no ${name()} after ${ms} ms\n${this.logs()}`);
      await sleep(100);
    }
  }

  /** The tail of every daemon log, for failure messages. */
  logs(): string {
    const tail = (p: string) => {
      try {
        return readFileSync(p, 'utf8').split('\n').slice(-25).join('\n');
      } catch {
        return '(none)';
      }
    };
    return ['slurmctld.log', 'slurmd.log', 'slurmctld.stderr', 'slurmd.stderr', 'munged.stderr']
      .map((f) => `--- ${f}\n${tail(join(this.dir, f))}`).join('\n');
  }

  /** Runs a Slurm client (sbatch, squeue, scontrol, ...) against this instance, as root or as user; time-boxed. */
  run(cmd: string, args: string[], o: { user?: SlurmUser; cwd?: string; input?: string; timeoutMs?: number } = {}): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(join(BIN, cmd), args, {
        cwd: o.cwd ?? this.dir,
        env: this.env,
        uid: o.user?.uid,
        gid: o.user?.gid,
        stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        timeout: o.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
      });
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      if (child.stdin) {
        // A client that exits before reading all of its input (e.g. sbatch refusing an option) must not crash the test with EPIPE.
        child.stdin.on('error', () => undefined);
        child.stdin.end(o.input);
      }
    });
  }

  /** A directory the user owns (0700) under this instance's dir, for a job's --chdir and --output. */
  userDir(user: SlurmUser, name: string): string {
    const p = join(this.dir, 'out', name);
    mkdirSync(p, { mode: 0o700 });
    chownSync(p, user.uid, user.gid);
    return p;
  }

  /** sbatch as user from cwd: the job id, or the refusal (code and stderr) as sbatch showed it. */
  async sbatch(user: SlurmUser, cwd: string, args: string[], script?: string): Promise<Run & { jobId?: string }> {
    const r = await this.run('sbatch', ['--parsable', ...args], { user, cwd, input: script });
    const id = /^(\d+)/.exec(r.stdout.trim())?.[1];
    return id && r.code === 0 ? { ...r, jobId: id } : r;
  }

  async jobState(jobId: string): Promise<JobState | undefined> {
    const r = await this.run('squeue', ['-h', '-t', 'all', '-j', jobId, '-o', '%T|%r']);
    const line = r.stdout.trim();
    if (r.code !== 0 || !line) return undefined;
    const [state = '', reason = ''] = line.split('|');
    return { state, reason };
  }

  async nodeState(): Promise<NodeState> {
    const r = await this.run('sinfo', ['-h', '-N', '-n', this.node, '-o', '%T|%E']);
    const [state = '', reason = ''] = r.stdout.trim().split('|');
    return { state, reason };
  }

  /**
   * Waits (time-boxed) until the job's state satisfies done, or the job has
   * ended (a job that ended the wrong way will not change any more: the caller's
   * assertion says what happened instead of a time-out), and returns it.
   */
  async waitJob(jobId: string, done: (s: JobState) => boolean, ms = 60_000): Promise<JobState> {
    let s: JobState | undefined;
    await this.until(() => `job ${jobId} in the awaited state (last: ${JSON.stringify(s)})`, ms, async () => {
      s = await this.jobState(jobId);
      return s !== undefined && (done(s) || ENDED.has(s.state));
    });
    return s!;
  }

  /** Waits (time-boxed) until the node's state satisfies done, and returns it. */
  async waitNode(done: (s: NodeState) => boolean, ms = 60_000): Promise<NodeState> {
    let s: NodeState | undefined;
    await this.until(() => `node ${this.node} in the awaited state (last: ${JSON.stringify(s)})`, ms, async () => {
      s = await this.nodeState();
      return done(s);
    });
    return s!;
  }

  /** Undrains the node (after e.g. a "Prolog error") and waits for it to be idle again. */
  async resume(): Promise<void> {
    const r = await this.run('scontrol', ['update', `nodename=${this.node}`, 'state=resume']);
    if (r.code !== 0) throw new Error(`scontrol resume: ${r.stderr}`);
    await this.waitNode((s) => s.state === 'idle');
  }

  /** Cancels every job, ends the daemons (SIGTERM, then SIGKILL after a time box) and removes the directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
    if (this.daemons.length === 3 && this.daemons.every((d) => alive(d.child))) {
      // Jobs' slurmstepd processes outlive slurmd; cancelling first lets slurmd end them.
      await this.run('scancel', ['-p', this.partition], { timeoutMs: 15_000 }).catch(() => undefined);
      const end = Date.now() + 20_000;
      while (Date.now() < end) {
        const r = await this.run('squeue', ['-h', '-o', '%i', '-t', 'PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED'], { timeoutMs: 10_000 }).catch(() => undefined);
        if (!r || r.code !== 0 || r.stdout.trim() === '') break;
        await sleep(200);
      }
    }
    // slurmd and slurmctld before munged: they authenticate their shutdown messages through it.
    for (const d of [...this.daemons].reverse()) {
      if (!alive(d.child)) continue;
      const exited = new Promise<void>((r) => d.child.once('exit', () => r()));
      d.child.kill('SIGTERM');
      const t = setTimeout(() => d.child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
