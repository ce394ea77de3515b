// Plays pbs_mom's part, per the contract in DESIGN.md: a TORQUE_HOME with
// mom_priv, the job script as <jobid>.SC owned by the user (0700), a root-owned
// 0500 wrapper in mom_priv, and the hook run with Torque's argv, exactly
// Torque's environment, cwd mom_priv, umask 0077, stdin /dev/null, its own
// session, stdout/stderr appended to spool/<jobid>.OU/.ER, and a
// $prologalarm-style SIGKILL of that session. Every end-to-end test and the demo go through it.
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, copyFileSync, linkSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ensureLaunchUser } from './launch-user.js';
import { extraFds, recording, replayArgv, replayEnv, type Recording } from './torque-recordings.js';

export const REPO = resolve(new URL('../../..', import.meta.url).pathname);
export const BIN = join(REPO, 'bin/vtorque-prologue');

export interface User {
  name: string;
  group: string;
  uid: number;
  gid: number;
}

export function lookupUser(name: string): User {
  const pw = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  const gid = Number(pw[3]);
  const group = execFileSync('getent', ['group', String(gid)], { encoding: 'utf8' }).trim().split(':')[0]!;
  return { name, group, uid: Number(pw[2]), gid };
}

let imagesDir: string | undefined;

/** The test images built by scripts/build-test-images (cached by a hash of the builder). */
export function testImages(): string {
  if (!imagesDir) {
    const out = execFileSync(join(REPO, 'scripts/build-test-images'), [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    imagesDir = out.trim().split('\n').pop()!;
  }
  return imagesDir;
}

/** Verdicts are keyed by image digest, so every test node can share them: one libguestfs launch per image per run. */
export const SHARED_CACHE = join(REPO, '.cache', 'test-node-cache');

/** The unprivileged job owner the tests use; exists on every Debian system. */
export const NOBODY = lookupUser('nobody');

export interface Job {
  id: string;
  name?: string;
  user?: User;
  queue?: string;
  account?: string;
  resources?: string;
  /** Script text or bytes; undefined: no .SC file at all (interactive job). */
  script?: string | Buffer;
  /** Attributes the qstat stand-in serves; undefined: qstat says "Unknown Job Id". */
  qstat?: Record<string, string>;
}

export interface RunOptions {
  /** Torque < 6: 7 arguments, no script path. */
  oldTorque?: boolean;
  /** Replace argv entirely (hostile argv tests). */
  argv?: string[];
  /** $prologalarm in seconds: then every process of the hook's session is SIGKILLed, as pbs_mom does. */
  alarm?: number;
  /** Called with the pid (also the process group) once the script runs, e.g. to kill it at a chosen moment. */
  onSpawn?: (pid: number) => void;
  env?: Record<string, string>;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  killedByAlarm: boolean;
  ou: string;
  er: string;
  ms: number;
}

export interface MomOptions {
  /** Extra ini text appended after the harness's own [paths] and [tools]. */
  ini?: string;
  /** Replace the whole ini. */
  iniText?: string;
  root?: string;
  /** Pool name -> test image file (scripts/images/cases.tsv); default: debian12.qcow2 -> debian-ok.qcow2. */
  pool?: Record<string, string>;
  /** Use a cache directory of this node's own instead of the shared one. */
  privateCache?: boolean;
}

/**
 * Mom.startJob: how pbs_mom starts the job's shell, replayed from what a real
 * Torque 6.1 pbs_mom passed (test/fixtures/torque-6.1, harness/torque-recordings.ts).
 */
export interface StartJobOptions {
  /** Through $job_starter (default: ours; or this program's path) or the shell directly, as pbs_mom does without one. */
  starter?: boolean | string;
  /** The job owner's shell; without a starter argv[0] is "-" + its name (a login shell, Torque's default). */
  shell?: string;
  /** Torque's default --enable-shell-pipe: stdin is a pipe carrying "<mom_priv>/jobs/<id>.SC [args]\n"; 'script': --disable-shell-pipe, stdin is the .SC file. */
  stdin?: 'pipe' | 'script';
  /** qsub -F arguments (pipe mode appends them to the line, as Torque does). */
  args?: string;
  /** The recorded start to replay: a batch job (default) or qsub -I / qsub -I -x (stdin a pipe here, a terminal on the real one). */
  kind?: 'batch' | 'interactive' | 'interactive-x';
  /** Extra or replaced job environment variables (qsub -v). */
  env?: Record<string, string>;
  /** SIGTERM to the job's session after this many ms, as qdel does. */
  termAfterMs?: number;
  /** SIGTERM to the job's session, as qdel does, once its .OU matches this (polled every 100 ms). */
  termOnOutput?: RegExp;
}

/** Mom.startTask: a TM task (pbsdsh, tm_spawn) on this node, replayed from a recording. */
export interface StartTaskOptions {
  kind?: 'task-pbsdsh' | 'task-pbsdsh-args' | 'task-pbsdsh-E';
  /** $job_starter: ours (default) or this program's path. */
  starter?: string;
  /** The task's program and arguments instead of the recorded ones. */
  argv?: string[];
  env?: Record<string, string>;
}

export interface StartJobResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  ou: string;
  er: string;
}

/**
 * pbs_mom's $prologalarm (src/resmom/prolog.c, pelogalm): SIGKILL to every
 * process, not a zombie, whose session is the hook's (the hook leads a
 * session of its own, so its pid is the session id). Returns the pids signalled.
 */
export function killSession(sid: number): number[] {
  const hit: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      // Fields after the command name, which may hold spaces and parentheses: state ppid pgrp session.
      const [state, , , session] = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
      if (Number(session) === sid && state !== 'Z') {
        process.kill(Number(p), 'SIGKILL');
        hit.push(Number(p));
      }
    } catch {
      /* gone */
    }
  }
  return hit;
}

/** What install.sh's wrappers pass on from pbs_mom's environment. */
const PBS_VARS = ['PBS_MSHOST', 'PBS_NODEFILE', 'PBS_NODENUM', 'PBS_NP', 'PBS_NUM_NODES', 'PBS_NUM_PPN', 'PBS_O_WORKDIR', 'PBS_RESOURCE_NODES'];

// Mom.spawnAsPbsMom's feeder (python3 -I: it reads nothing of the job's environment).
const FEEDER = [
  'import json, os, sys',
  's = json.loads(sys.argv[1])',
  'if s["text"] is not None:',
  '    r, w = os.pipe()',
  '    os.write(w, s["text"].encode())',
  '    os.close(w)',
  '    os.dup2(r, 0)',
  '    os.close(r)',
  'keep = {0, 1, 2}',
  'for n, what in s["fds"].items():',
  '    fd = int(n)',
  '    if what == "stdin":',
  '        os.dup2(0, fd)',
  '    else:',
  '        r, w = os.pipe()',
  '        os.dup2(w if what == "w" else r, fd)',
  '        for e in (r, w):',
  '            if e != fd: os.close(e)',
  '    keep.add(fd)',
  'for n in os.listdir("/proc/self/fd"):',
  '    if int(n) not in keep:',
  '        try: os.close(int(n))',
  '        except OSError: pass',
  'os.execve(s["path"], [s["a0"]] + s["argv"], s["env"])',
].join('\n');

export class Mom {
  readonly root: string;
  readonly torqueHome: string;
  readonly momPriv: string;
  readonly configFile: string;
  readonly workdir: string;
  readonly jobDir: string;
  readonly logFile: string;
  readonly poolDir: string;
  readonly cacheDir: string;

  constructor(opts: MomOptions = {}) {
    // [jobfiles] owner and group default to the launch account: it must exist on every test node.
    ensureLaunchUser();
    this.root = opts.root ?? mkdtempSync(join(tmpdir(), 'vtorque-mom-'));
    chmodSync(this.root, 0o755);
    this.torqueHome = join(this.root, 'torque');
    this.momPriv = join(this.torqueHome, 'mom_priv');
    this.jobDir = join(this.root, 'jobs');
    this.logFile = join(this.root, 'log', 'prologue.log');
    this.poolDir = join(this.root, 'pool');
    this.cacheDir = opts.privateCache ? join(this.root, 'cache') : SHARED_CACHE;
    this.workdir = join(this.root, 'home');
    for (const d of [this.momPriv, join(this.momPriv, 'jobs'), join(this.torqueHome, 'spool'), join(this.root, 'bin'), join(this.root, 'qstat'), this.poolDir]) {
      mkdirSync(d, { recursive: true, mode: 0o755 });
    }
    mkdirSync(this.workdir, { mode: 0o755 });
    chownSync(this.workdir, NOBODY.uid, NOBODY.gid);
    this.configFile = join(this.root, 'prologue.ini');
    writeFileSync(this.configFile, opts.iniText ?? this.defaultIni() + (opts.ini ?? ''));
    this.installStandIns();
    for (const [name, file] of Object.entries(opts.pool ?? { 'debian12.qcow2': 'debian-ok.qcow2' })) this.addImage(name, file);
    for (const kind of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) this.installWrapper(kind);
  }

  /** Puts a test image (a name in the test images, or an absolute path) into the pool, as an admin would: root-owned, 0644. */
  addImage(name: string, file: string): string {
    const dst = join(this.poolDir, name);
    mkdirSync(join(dst, '..'), { recursive: true, mode: 0o755 });
    const src = file.startsWith('/') ? file : join(testImages(), file);
    try {
      linkSync(src, dst);
    } catch {
      copyFileSync(src, dst);
    }
    return dst;
  }

  defaultIni(): string {
    return [
      '[paths]',
      `image_pool = ${this.poolDir}`,
      `cache_dir = ${this.cacheDir}`,
      `job_dir = ${this.jobDir}`,
      `ramdisk_dir = ${join(this.root, 'shm')}`,
      `torque_home = ${this.torqueHome}`,
      `log_file = ${this.logFile}`,
      '[tools]',
      `qstat = ${join(this.root, 'bin', 'qstat')}`,
      `pbsnodes = ${join(this.root, 'bin', 'pbsnodes')}`,
      // The node name pbsnodes is asked about; the harness's PBS_MSHOST.
      '[torque]',
      'node_name = node01',
      // TCG, not auto: the tests must not spend KVM probes (20 s each) on a nested /dev/kvm.
      '[guestfs]',
      'accel = tcg',
      // Test images do not boot: tests of the prepared files start no VMs; test/launch-boot.test.ts sets start = true.
      '[launch]',
      'start = false',
      'accel = tcg',
      '',
    ].join('\n');
  }

  /** The wrapper install.sh writes: root-owned, 0500, absolute paths, node in a clean environment with the PBS_* variables only. */
  installWrapper(kind: string): void {
    const sub = kind.replace('.', '-');
    const path = join(this.momPriv, kind);
    const pass = PBS_VARS.map((v) => `\${${v}+"${v}=\$${v}"}`).join(' ');
    writeFileSync(path, `#!/bin/sh\n# vtorque-prologue wrapper (test harness, as install.sh writes it)\nexec /usr/bin/env -i LANG=C.UTF-8 PATH=/bin:/usr/bin \\\n ${pass} \\\n ${process.execPath} --no-global-search-paths --no-addons ${BIN} --config ${this.configFile} ${sub} "$@"\n`);
    chmodSync(path, 0o500);
  }

  /** Recording stand-ins for Torque's client tools, selected through [tools]. */
  private installStandIns(): void {
    const qstat = join(this.root, 'bin', 'qstat');
    writeFileSync(qstat, `#!/bin/sh
echo "$*" >> ${this.root}/qstat.calls
[ -f ${this.root}/qstat.sleep ] && sleep "$(cat ${this.root}/qstat.sleep)"
[ "$1" = --version ] && { echo "Version: 6.1.2 (test stand-in)"; exit 0; }
if [ "$1" = -B ]; then
  [ -f ${this.root}/qstat.fail ] && { cat ${this.root}/qstat.fail >&2; exit 1; }
  printf 'Server           Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\\n---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\\nhead                 0     0     0     0     0     0     0     0 Active\\n'
  exit 0
fi
f="${this.root}/qstat/$3"
if [ ! -f "$f" ]; then echo "qstat: Unknown Job Id $3" >&2; exit 153; fi
cat "$f"
`);
    chmodSync(qstat, 0o755);
    // pbsnodes keeps each node's state and note in pbsnodes/<node>/{state,note}
    // and answers as Torque's does (src/cmds/pbsnodes.c): -l -n prints
    // "%-20.20s %-26.26s %s", -o/-c add or clear offline, -N sets the note
    // ("-N n" clears it). pbsnodes.fail makes it fail as an unreachable server.
    const pbsnodes = join(this.root, 'bin', 'pbsnodes');
    writeFileSync(pbsnodes, `#!/bin/sh
echo "$*" >> ${this.root}/pbsnodes.calls
[ "$1" = --version ] && { echo "version: 6.1.2 (test stand-in)" >&2; exit 0; }
if [ -f ${this.root}/pbsnodes.fail ]; then cat ${this.root}/pbsnodes.fail >&2; exit 1; fi
mode=all setnote=0 note= node=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) mode=offline ;;
    -c|-r) mode=clear ;;
    -l) mode=list ;;
    -n|-q) ;;
    -N) setnote=1; note=$2; [ "$note" = n ] && note=; shift ;;
    all) [ "$mode" = list ] || node=$1 ;;
    *) node=$1 ;;
  esac
  shift
done
d=${this.root}/pbsnodes/$node
mkdir -p "$d"
[ -f "$d/state" ] || echo free > "$d/state"
[ -f "$d/note" ] || : > "$d/note"
[ "$setnote" = 1 ] && printf '%s' "$note" > "$d/note"
state=$(cat "$d/state")
case "$mode" in
  offline) case ",$state," in *,offline,*) ;; ,free,) echo offline > "$d/state" ;; *) echo "$state,offline" > "$d/state" ;; esac ;;
  clear) s=$(echo "$state" | tr , '\\n' | grep -v '^offline$' | paste -sd, -); echo "\${s:-free}" > "$d/state" ;;
  list) n=$(cat "$d/note"); if [ -n "$n" ]; then printf '%-20.20s %-26.26s %s\\n' "$node" "$state" "$n"; else printf '%-20.20s %s\\n' "$node" "$state"; fi ;;
  all) printf '%s\\n     state = %s\\n' "$node" "$state"; n=$(cat "$d/note"); [ -n "$n" ] && printf '     note = %s\\n' "$n"; echo ;;
esac
exit 0
`);
    chmodSync(pbsnodes, 0o755);
  }

  /** Sets what the pbsnodes stand-in says of a node, as an operator's pbsnodes -o -N would. */
  setNode(node: string, state: string, note = ''): void {
    const d = join(this.root, 'pbsnodes', node);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'state'), state + '\n');
    writeFileSync(join(d, 'note'), note);
  }

  /** What the pbsnodes stand-in now holds for a node (free, no note, if never touched). */
  nodeState(node: string): { state: string; note: string } {
    const d = join(this.root, 'pbsnodes', node);
    const read = (f: string, dflt: string) => (existsSync(join(d, f)) ? readFileSync(join(d, f), 'utf8').trim() : dflt);
    return { state: read('state', 'free'), note: read('note', '') };
  }

  pbsnodesCalls(): string[] {
    const f = join(this.root, 'pbsnodes.calls');
    return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n') : [];
  }

  scriptPath(job: Job): string {
    return join(this.momPriv, 'jobs', `${job.id}.SC`);
  }

  /** What pbs_mom does when a job arrives: the .SC file, and the server's view of the job. */
  submit(job: Job): void {
    const user = job.user ?? NOBODY;
    if (job.script !== undefined) {
      const p = this.scriptPath(job);
      writeFileSync(p, job.script);
      chownSync(p, user.uid, user.gid);
      chmodSync(p, 0o700);
    }
    if (job.qstat) {
      const lines = [`Job Id: ${job.id}`, ...Object.entries(job.qstat).map(([k, v]) => `    ${k} = ${v}`)];
      writeFileSync(join(this.root, 'qstat', job.id), lines.join('\n') + '\n');
    }
  }

  argvFor(kind: string, job: Job, opts: RunOptions): string[] {
    const user = job.user ?? NOBODY;
    const name = job.name ?? 'job';
    const res = job.resources ?? 'walltime=00:05:00,nodes=1:ppn=2,neednodes=1:ppn=2';
    if (kind.startsWith('prologue')) {
      const a = [job.id, user.name, user.group, name, res, job.queue ?? 'batch', job.account ?? ''];
      if (!opts.oldTorque) a.push(this.scriptPath(job));
      return a;
    }
    const a = [job.id, user.name, user.group, name, '4242', res, 'cput=00:00:01,mem=1kb', job.queue ?? 'batch', job.account ?? '', '0'];
    if (!opts.oldTorque) a.push(this.scriptPath(job));
    return a;
  }

  envFor(job: Job): Record<string, string> {
    const nodefile = join(this.torqueHome, 'aux', job.id);
    mkdirSync(join(this.torqueHome, 'aux'), { recursive: true });
    if (!existsSync(nodefile)) writeFileSync(nodefile, 'node01\nnode01\n');
    return {
      LANG: 'C.UTF-8',
      PATH: '/bin:/usr/bin',
      PWD: this.momPriv,
      PBS_MSHOST: 'node01',
      PBS_NODEFILE: nodefile,
      PBS_NODENUM: '0',
      PBS_NP: '2',
      PBS_NUM_NODES: '1',
      PBS_NUM_PPN: '2',
      PBS_O_WORKDIR: this.workdir,
      PBS_RESOURCE_NODES: '1:ppn=2',
    };
  }

  /** Runs mom_priv/<kind> as pbs_mom does and returns what Torque would see. */
  run(kind: 'prologue' | 'prologue.parallel' | 'epilogue' | 'epilogue.parallel', job: Job, opts: RunOptions = {}): Promise<RunResult> {
    const ou = join(this.torqueHome, 'spool', `${job.id}.OU`);
    const er = join(this.torqueHome, 'spool', `${job.id}.ER`);
    const ouFd = openSync(ou, 'a', 0o600);
    const erFd = openSync(er, 'a', 0o600);
    const argv = opts.argv ?? this.argvFor(kind, job, opts);
    const env = { ...this.envFor(job), ...opts.env };
    const alarm = (opts.alarm ?? 300) * 1000;
    const t0 = performance.now();
    const old = process.umask(0o077);
    let child;
    try {
      child = spawn(join(this.momPriv, kind), argv, { cwd: this.momPriv, env, stdio: ['ignore', ouFd, erFd], detached: true });
    } finally {
      process.umask(old);
      closeSync(ouFd);
      closeSync(erFd);
    }
    opts.onSpawn?.(child.pid!);
    return new Promise((resolveRun, reject) => {
      let killedByAlarm = false;
      const timer = setTimeout(() => {
        killedByAlarm = true;
        killSession(child.pid!);
      }, alarm);
      child.on('error', (e) => { clearTimeout(timer); reject(e); });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolveRun({
          code, signal, killedByAlarm,
          ou: readFileSync(ou, 'utf8'),
          er: readFileSync(er, 'utf8'),
          ms: performance.now() - t0,
        });
      });
    });
  }

  /** Submit and run the prologue in one go. */
  async prologue(job: Job, opts: RunOptions = {}): Promise<RunResult> {
    this.submit(job);
    return this.run('prologue', job, opts);
  }

  /** Our starter, installed with this node's paths as install.sh writes it (Torque's defaults: login shells for batch and interactive jobs). */
  installStarter(): string {
    const starter = join(this.root, 'bin', 'vtorque-starter');
    if (!existsSync(starter)) {
      const text = readFileSync(join(REPO, 'bin/vtorque-starter'), 'utf8')
        .replace(/^JOB_DIR=.*$/m, `JOB_DIR=${this.jobDir}`)
        .replace(/^NODE=.*$/m, `NODE=${process.execPath}`)
        .replace(/^BUNDLE=.*$/m, `BUNDLE=${join(REPO, 'dist/vtorque-starter.cjs')}`);
      writeFileSync(starter, text, { mode: 0o755 });
    }
    return starter;
  }

  /**
   * Starts the job as pbs_mom does once the prologue succeeded, replaying a
   * recorded start: the job owner's uid/gid, a new session, umask 077, cwd the
   * owner's home (here the submit dir), exactly the recorded variables' names,
   * stdout/stderr appended to spool .OU/.ER, the descriptors pbs_mom leaks,
   * and with a $job_starter the recorded argv: [starter, SHELL, ARG...] (pbs_mom
   * overwrites the shell's argv[0], mom_jobstarter_execute_job).
   */
  startJob(job: Job, opts: StartJobOptions = {}): Promise<StartJobResult> {
    const user = job.user ?? NOBODY;
    const shell = opts.shell ?? '/bin/bash';
    const kind = opts.kind ?? 'batch';
    const rec = recording(kind === 'batch' && opts.args ? 'batch-args' : kind);
    const env: Record<string, string> = { ...this.jobEnv(rec, job, user, shell), ...opts.env };
    const pipeMode = (opts.stdin ?? 'pipe') === 'pipe';
    let argv: string[];
    let argv0: string | undefined;
    if (opts.starter === false) {
      // Without a starter pbs_mom execs the shell itself, as a login shell (source_login_batch, default true).
      argv = [shell, ...rec.argv.slice(2)];
      argv0 = `-${shell.slice(shell.lastIndexOf('/') + 1)}`;
    } else argv = replayArgv(rec, typeof opts.starter === 'string' ? opts.starter : this.installStarter(), shell);
    const stdinText = kind === 'batch' ? `${this.scriptPath(job)}${opts.args ? ` ${opts.args}` : ''}\n` : '';
    return this.spawnAsPbsMom(job, user, argv, argv0, env, rec, pipeMode ? { text: stdinText } : { file: this.scriptPath(job) }, opts);
  }

  /** A TM task as pbs_mom starts one through $job_starter: [starter, PROGRAM, ARG...], stdin /dev/null, the task's variables. */
  startTask(job: Job, opts: StartTaskOptions = {}): Promise<StartJobResult> {
    const user = job.user ?? NOBODY;
    const rec = recording(opts.kind ?? 'task-pbsdsh');
    const env = { ...this.jobEnv(rec, job, user, '/bin/bash'), ...opts.env };
    const starter = opts.starter ?? this.installStarter();
    const argv = opts.argv ? [starter, ...opts.argv] : replayArgv(rec, starter, '/bin/bash');
    return this.spawnAsPbsMom(job, user, argv, undefined, env, rec, { file: '/dev/null' });
  }

  /** The recorded job variables for this job; PBS_NODEFILE names this node's file. */
  private jobEnv(rec: Recording, job: Job, user: User, shell: string): Record<string, string> {
    const env = replayEnv(rec, { id: job.id, name: job.name ?? 'job', user: user.name, home: this.workdir, torqueHome: this.torqueHome, shell, host: 'head' });
    env.PBS_NODEFILE = this.envFor(job).PBS_NODEFILE!;
    return env;
  }

  /**
   * The process pbs_mom forks for the job's shell or a task, as the recording
   * shows it: a session of its own, umask 077, the owner's uid and gid, stdin
   * a pipe(2) carrying `stdin.text` (node's stdio 'pipe' would be a socket
   * pair) or the named file, exactly the descriptors above 2 the recording
   * had open, and exactly `env`. A small python feeder sets these up and
   * execs the command, so the child leads its session with node as its
   * parent, as under pbs_mom; the feeder's own environment (where tap adds
   * NODE_OPTIONS and its _TAPJS_ variables) does not reach the child.
   */
  private spawnAsPbsMom(job: Job, user: User, argv: string[], argv0: string | undefined, env: Record<string, string>, rec: Recording, stdin: { text: string } | { file: string }, qdelWhen: Pick<StartJobOptions, 'termAfterMs' | 'termOnOutput'> = {}): Promise<StartJobResult> {
    const ou = join(this.torqueHome, 'spool', `${job.id}.OU`);
    const er = join(this.torqueHome, 'spool', `${job.id}.ER`);
    const ouFd = openSync(ou, 'a', 0o600);
    const erFd = openSync(er, 'a', 0o600);
    chownSync(ou, user.uid, user.gid);
    chownSync(er, user.uid, user.gid);
    const text = 'text' in stdin ? stdin.text : null;
    // The line goes into the pipe before the command runs, so it must fit the pipe (64 KiB).
    if (text !== null && text.length > 4096) throw new Error('the harness feeds at most 4096 bytes on the job shell\'s stdin');
    const inFd = text !== null ? 'ignore' : openSync((stdin as { file: string }).file, 'r');
    const spec = JSON.stringify({ path: argv[0], a0: argv0 ?? argv[0], argv: argv.slice(1), env, text, fds: extraFds(rec) });
    let child;
    const old = process.umask(0o077);
    try {
      child = spawn('/usr/bin/python3', ['-I', '-c', FEEDER, spec], {
        cwd: this.workdir, uid: user.uid, gid: user.gid, detached: true,
        stdio: [inFd, ouFd, erFd],
      });
    } finally {
      process.umask(old);
      closeSync(ouFd);
      closeSync(erFd);
      if (typeof inFd === 'number') closeSync(inFd);
    }
    const qdel = (): void => {
      try { process.kill(-child.pid!, 'SIGTERM'); } catch { /* already gone */ }
    };
    const term = qdelWhen.termAfterMs === undefined ? undefined : setTimeout(qdel, qdelWhen.termAfterMs);
    const watch = qdelWhen.termOnOutput === undefined ? undefined : setInterval(() => {
      if (!qdelWhen.termOnOutput!.test(readFileSync(ou, 'utf8'))) return;
      clearInterval(watch);
      qdel();
    }, 100);
    return new Promise((resolveRun, reject) => {
      child.on('error', (e) => { clearTimeout(term); clearInterval(watch); reject(e); });
      child.on('exit', (code, signal) => {
        clearTimeout(term);
        clearInterval(watch);
        resolveRun({ code, signal, ou: readFileSync(ou, 'utf8'), er: readFileSync(er, 'utf8') });
      });
    });
  }

  logLines(): Record<string, unknown>[] {
    if (!existsSync(this.logFile)) return [];
    return readFileSync(this.logFile, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  qstatCalls(): string[] {
    const f = join(this.root, 'qstat.calls');
    return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n') : [];
  }
}
