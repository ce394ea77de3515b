// The guest agent (src/seed/agent.ts), run for real with /usr/bin/python3 as
// root on this host in its host-test mode (test/harness/host-agent.ts): this
// test plays the host's side of the port, frame by frame. The VM user is
// nobody, a real unprivileged account.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { type Socket } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FrameDecoder, encodeFrame, parseExit, parseReady, type Frame, type FrameType } from '../src/launch/protocol.js';
import { NOBODY } from './harness/mom.js';
import { PYTHON, WAIT_MS, agentWork, startHostAgent, type HostAgent, type Tap } from './harness/host-agent.js';

const work = agentWork();
const agentPy = join(work, 'agent.py');

/** One connection from the agent: frames in, frames out. */
class Host {
  private readonly decoder = new FrameDecoder();
  private readonly queue: Frame[] = [];
  private waiter: (() => void) | undefined;
  closed = false;

  constructor(readonly sock: Socket) {
    sock.on('data', (b) => {
      this.queue.push(...this.decoder.push(b));
      this.waiter?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    sock.on('error', () => undefined);
  }

  send(type: FrameType, payload: string | Buffer = ''): void {
    this.sock.write(encodeFrame(type, payload));
  }

  async next(what = 'a frame'): Promise<Frame> {
    const deadline = Date.now() + WAIT_MS;
    while (this.queue.length === 0) {
      if (this.closed) throw new Error(`the agent hung up while the test waited for ${what}`);
      if (Date.now() > deadline) throw new Error(`no ${what} from the agent in ${WAIT_MS} ms`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 500);
      });
      this.waiter = undefined;
    }
    return this.queue.shift()!;
  }

  /** Every frame up to and including the first of type `type`. */
  async until(type: FrameType): Promise<Frame[]> {
    const got: Frame[] = [];
    for (;;) {
      const f = await this.next(`a ${type} frame (so far: ${got.map((g) => g.type).join('')})`);
      got.push(f);
      if (f.type === type) return got;
    }
  }

  async hello(): Promise<void> {
    this.send('H');
    const r = await this.next('R');
    if (r.type !== 'R') throw new Error(`expected R, got ${r.type} ${r.payload.toString()}`);
  }

  close(): void {
    this.sock.destroy();
  }
}

type Agent = Omit<HostAgent, 'accept'> & { accept: () => Promise<Host> };

/** A fresh agent (startHostAgent) whose connections this test drives frame by frame. */
async function startAgent(t: Tap, o: Parameters<typeof startHostAgent>[1] = {}): Promise<Agent> {
  const a = await startHostAgent(t, o);
  return { ...a, accept: async () => new Host(await a.accept()) };
}

const text = (fs: Frame[], type: FrameType) => fs.filter((f) => f.type === type).map((f) => f.payload.toString()).join('');

/** Polls for fn() to hold, up to WAIT_MS: for effects of the script the agent cannot report. */
async function eventually(fn: () => boolean): Promise<boolean> {
  const deadline = Date.now() + WAIT_MS;
  while (!fn()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

t.test('the agent source is Python 3.6 syntax and compiles', async (t) => {
  const r = spawnSync(PYTHON, ['-c', 'import ast,sys,py_compile; src=open(sys.argv[1]).read(); ast.parse(src, feature_version=(3, 6)); py_compile.compile(sys.argv[1], cfile=sys.argv[1] + "c", doraise=True)', agentPy], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
});

t.test('H gets R; the script runs as nobody in its home with the PBS variables, stdin from I, O and E streamed in order, X with exit 3; a second S is refused', async (t) => {
  const a = await startAgent(t);
  const h = await a.accept();
  h.send('H');
  const r = await h.next('R');
  t.equal(r.type, 'R');
  t.same(parseReady(r.payload), { hostname: hostname(), agent: 1 }, 'R carries the host name and the agent version');

  // Each step waits for a file the test makes only after it saw the previous
  // line: the lines can only arrive in this order, and only if each was
  // relayed while the script still ran (not buffered until its end).
  const script = [
    '#!/bin/bash',
    'wait_for() { for i in $(seq 1 600); do [ -e "$HOME/$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; exit 9; }',
    'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd) home=$HOME user=$USER"',
    'echo "job=$PBS_JOBID name=$PBS_JOBNAME workdir=$PBS_O_WORKDIR np=$PBS_NP env=$PBS_ENVIRONMENT"',
    'echo "nodes=$(tr "\\n" , < "$PBS_VM_NODEFILE") nodefile=$([ "$PBS_NODEFILE" = "$PBS_VM_NODEFILE" ] && echo same)"',
    'read -r line; echo "stdin=$line"; read -r more || echo "stdin-eof"',
    'wait_for go1',
    'echo err1 >&2',
    'wait_for go2',
    'echo out2',
    'exit 3',
    '',
  ].join('\n');
  h.send('S', script);
  h.send('I', 'from the starter\n');
  h.send('I', '');

  const o1 = await h.next('the first lines');
  t.equal(o1.type, 'O');
  let out = o1.payload.toString();
  while (!out.includes('stdin-eof')) {
    const f = await h.next('more output');
    t.equal(f.type, 'O', `only stdout before go1 (${f.payload.toString()})`);
    out += f.payload.toString();
  }
  t.equal(out, [
    `uid=${NOBODY.uid} gid=${NOBODY.gid} groups=${spawnSync('id', ['-G', 'nobody'], { encoding: 'utf8' }).stdout.trim()} pwd=${a.home} home=${a.home} user=nobody`,
    "job=42.head name=it's $HOME `id` workdir=/home/nobody/run 1 np=4 env=PBS_BATCH",
    'nodes=vnode01,vnode02, nodefile=same',
    'stdin=from the starter',
    'stdin-eof',
    '',
  ].join('\n'), 'as nobody (65534) with its own groups (none of root\'s), in the configured home, with the PBS variables exactly, PBS_NP, PBS_VM_NODEFILE (PBS_NODEFILE the same file), and stdin from I frames');
  writeFileSync(join(a.home, 'go1'), '');
  const e1 = await h.next('err1');
  t.same([e1.type, e1.payload.toString()], ['E', 'err1\n'], 'stderr as E, relayed while the script waits');
  writeFileSync(join(a.home, 'go2'), '');
  const rest = await h.until('X');
  t.equal(text(rest, 'O'), 'out2\n');
  t.equal(text(rest, 'E'), '', 'nothing on stderr but err1');
  t.same(parseExit(rest[rest.length - 1]!.payload), { status: 3, signal: null }, 'X carries exit 3');

  h.send('S', 'echo again > "$HOME/again"\n');
  const again = await h.next('the refusal');
  t.same([again.type, again.payload.toString()], ['!', 'the job script already ran'], 'a second S is refused');
  h.send('K', 'TERM');
  t.same((await h.next('K refusal')).payload.toString(), 'no job script is running');
  t.notOk(existsSync(join(a.home, 'again')), 'and did not run');
  t.same(readFileSync(join(a.state, 'ran')).length > 0, true, 'the run is recorded in the state directory');
  t.same(spawnSync('ls', ['-A', a.state], { encoding: 'utf8' }).stdout, 'ran\n', 'the script and node file are removed after the run');

  // A restarted agent (same state directory) still refuses.
  a.proc.kill('SIGKILL');
  const b = await startAgent(t, { state: a.state });
  const hb = await b.accept();
  await hb.hello();
  hb.send('S', 'echo again > "$HOME/again"\n');
  t.same((await hb.next('refusal after restart')).payload.toString(), 'the job script already ran', 'a restarted agent refuses too: the marker is on disk');
});

t.test('K TERM stops a sleep 600 script and its children, and X follows', async (t) => {
  const a = await startAgent(t);
  const h = await a.accept();
  await h.hello();
  h.send('S', '#!/bin/bash\nsleep 600 &\necho "sleep=$!"\nwait\n');
  h.send('I', '');
  const first = await h.next('the sleep pid');
  const pid = /sleep=([0-9]+)/.exec(first.payload.toString())?.[1];
  t.ok(pid, `the script started a sleep: ${first.payload.toString()}`);
  h.send('K', 'TERM');
  const rest = await h.until('X');
  t.same(parseExit(rest[rest.length - 1]!.payload), { status: 143, signal: 'TERM' }, 'X: 128 + 15, signal TERM');
  t.equal(text(rest, 'E'), '', 'nothing on stderr: no line of the agent or of what started the script ("Session terminated, killing shell...")');
  const gone = () => {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return !st.includes('(sleep)') || / Z /.test(st);
    } catch {
      return true;
    }
  };
  t.ok(await eventually(gone), 'the background sleep is gone too (its process group was signalled)');
  h.send('K', 'NOPE');
  t.match((await h.next('bad signal')).payload.toString(), /cannot send signal 'NOPE'/);
});

/** A pid's process is gone (or a zombie nobody reaped yet). */
function dead(pid: string): boolean {
  try {
    return / Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/**
 * A job script as a user writes one to see qdel: a TERM trap, then a
 * background sleep it waits for. It prints the sleep's pid once the trap is set.
 */
const trapScript = (trap: string): string => `#!/bin/bash\n${trap}\nsleep 600 &\necho "ready $!"\nwait\necho not-reached\n`;

// qdel reaches the script as one K TERM (the starter's). A real Torque 6.1 run
// showed the shell got TERM twice under runuser (the agent's killpg, then
// runuser's watching parent passing it on): bash ran the trap again inside
// itself and broke off its $(...) ("trap: line 2: unexpected EOF while looking
// for matching `)'"), runuser wrote "Session terminated, killing shell..." into
// the job's stderr and SIGKILLed the shell 2 s later, and the exit status was
// runuser's own TERM, not the trap's.
for (const [what, trap, said, status] of [
  ['a trap with $(...) that exits 143', `trap 'echo "caught TERM in $(hostname)"; exit 143' TERM`, `caught TERM in ${hostname()}\n`, 143],
  ['a trap over two lines with two $(...)', `trap 'echo "caught TERM in $(hostname) as $(id -un)"\nexit 143' TERM`, `caught TERM in ${hostname()} as nobody\n`, 143],
  ['a plain trap that exits 3', "trap 'echo caught TERM; exit 3' TERM", 'caught TERM\n', 3],
  ['a trap that cleans up for 3 s', `trap 'echo "caught TERM in $(hostname)"; sleep 3; echo "cleaned up as $(id -un)"; exit 143' TERM`, `caught TERM in ${hostname()}\ncleaned up as nobody\n`, 143],
] as const) {
  t.test(`K TERM reaches the script once: ${what} runs once, to its end, and its exit status is the job's; nothing else is written`, async (t) => {
    const a = await startAgent(t);
    const h = await a.accept();
    await h.hello();
    h.send('S', trapScript(trap));
    h.send('I', '');
    const first = await h.next('ready');
    const pid = /^ready ([0-9]+)\n$/.exec(first.payload.toString())?.[1];
    t.ok(pid, `the trap is set and the sleep runs: ${first.payload.toString()}`);
    h.send('K', 'TERM');
    const rest = await h.until('X');
    t.equal(text(rest, 'O'), said, "stdout after ready: the trap's lines, once each");
    t.equal(text(rest, 'E'), '', 'stderr: nothing (no "Session terminated", no bash parse error)');
    t.same(parseExit(rest[rest.length - 1]!.payload), { status, signal: null }, `X: the trap's exit ${status}`);
    t.ok(await eventually(() => dead(pid!)), 'the background sleep is gone with the script');
  });
}

t.test('K TERM, then the host hangs up (the batch system KILLed the starter): the trap still gets one TERM and runs to its end', async (t) => {
  const a = await startAgent(t);
  const h = await a.accept();
  await h.hello();
  h.send('S', trapScript(`trap 'echo term >> "$HOME/trap"; echo caught; sleep 2; echo "done $(id -un)" >> "$HOME/trap"; exit 143' TERM`));
  h.send('I', '');
  t.match((await h.next('ready')).payload.toString(), /^ready [0-9]+\n$/);
  h.send('K', 'TERM');
  t.equal((await h.next('caught')).payload.toString(), 'caught\n', 'the trap runs');
  h.close();
  t.ok(await eventually(() => existsSync(join(a.home, 'trap')) && readFileSync(join(a.home, 'trap'), 'utf8').includes('done')), 'the trap finished');
  t.equal(readFileSync(join(a.home, 'trap'), 'utf8'), 'term\ndone nobody\n', 'once, and to its end: the hangup sent no second TERM');
});

t.test('a host that hangs up mid-run and reconnects does not start the script again; the orphaned script gets TERM', async (t) => {
  const a = await startAgent(t);
  const h = await a.accept();
  await h.hello();
  h.send('S', [
    '#!/bin/bash',
    'trap \'echo term > "$HOME/trapped"; exit 143\' TERM',
    'echo run >> "$HOME/runs"',
    'echo started',
    'sleep 600 &',
    'wait',
    '',
  ].join('\n'));
  h.send('I', '');
  t.equal((await h.next('started')).payload.toString(), 'started\n');
  h.close();
  const h2 = await a.accept();
  await h2.hello();
  h2.send('S', 'echo run >> "$HOME/runs"\n');
  const f = await h2.next('the refusal');
  t.same([f.type, f.payload.toString()], ['!', 'the job script already ran'], 'the reconnected host cannot start it again');
  t.ok(await eventually(() => existsSync(join(a.home, 'trapped'))), 'the script whose host went away got TERM');
  t.equal(readFileSync(join(a.home, 'runs'), 'utf8'), 'run\n', 'the script ran exactly once');
});

t.test('frames out of order or malformed get a ! frame, never a run', async (t) => {
  const a = await startAgent(t);
  const h = await a.accept();
  h.send('S', 'echo x > "$HOME/x"\n');
  t.same((await h.next()).payload.toString(), 'send H first', 'S before H is refused');
  await h.hello();
  h.send('O', 'x');
  t.same((await h.next()).payload.toString(), 'a O frame is not for the VM');
  h.sock.write(Buffer.from([0x5a, 0, 0, 0, 0]));
  t.match((await h.next()).payload.toString(), /protocol error: unknown frame type 0x5a/);
  h.send('S', 'echo x > "$HOME/x"\n');
  h.close();
  const h2 = await a.accept();
  await h2.hello();
  t.notOk(existsSync(join(a.home, 'x')), 'after a protocol error the rest of that connection is ignored');
  t.notOk(existsSync(join(a.state, 'ran')), 'nothing ran');
});

t.test("the batch system's names come from agent.json: under Slurm's the script gets its run's node file in VTORQUE_NODEFILE and no PBS_ variable", async (t) => {
  const home = join(work, 'slurm-home');
  mkdirSync(home, { mode: 0o700 });
  chownSync(home, NOBODY.uid, NOBODY.gid);
  const a = await startAgent(t, {
    home,
    config: {
      user: 'nobody', uid: NOBODY.uid, home, vms: ['vnode01', 'vnode02'], np: 4,
      env: { SLURM_JOB_ID: '42', SLURM_JOB_NODELIST: 'vnode01,vnode02', VTORQUE_NODEFILE: '/etc/vtorque/nodefile' },
      script_env: {}, nodefile_env: ['VTORQUE_NODEFILE'], np_env: [],
    },
  });
  const h = await a.accept();
  await h.hello();
  h.send('S', [
    '#!/bin/sh',
    'echo "job=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST"',
    'echo "nodefile=$(tr "\\n" , < "$VTORQUE_NODEFILE") own=$([ "$VTORQUE_NODEFILE" != /etc/vtorque/nodefile ] && echo yes)"',
    'echo "pbs=$(env | grep -c "^PBS_")"',
    '',
  ].join('\n'));
  h.send('I', '');
  const rest = await h.until('X');
  t.equal(text(rest, 'O'), 'job=42 nodes=vnode01,vnode02\nnodefile=vnode01,vnode02, own=yes\npbs=0\n', "Slurm's variables, the run's own node file, no PBS_ name");
  t.same(parseExit(rest[rest.length - 1]!.payload), { status: 0, signal: null });
});

t.test('agent.json names that are not variable names are refused', async (t) => {
  for (const [what, extra, says] of [
    ['nodefile_env', { nodefile_env: ['LD_PRELOAD=/x'] }, /nodefile_env must list variable names/],
    ['np_env', { np_env: 'PBS_NP' }, /np_env must list variable names/],
    ['script_env', { script_env: { 'A B': 'x' } }, /script_env must map variable names to strings/],
  ] as const) {
    const a = await startAgent(t, { config: { user: 'nobody', uid: NOBODY.uid, home: '/tmp', vms: [], np: 1, env: {}, ...extra } });
    const h = await a.accept();
    h.send('H');
    const f = await h.next();
    t.same(f.type, '!', `${what}: no R`);
    t.match(f.payload.toString(), says, `${what}: says why`);
  }
});

t.test('the agent refuses to run anything as root, or for a config root does not own', async (t) => {
  for (const [what, config] of [
    ['user root', { user: 'root', uid: 0, home: '/root', vms: [], np: 1, env: {} }],
    ['uid 0 under another name', { user: 'nobody', uid: 0, home: '/tmp', vms: [], np: 1, env: {} }],
  ] as const) {
    const a = await startAgent(t, { config });
    const h = await a.accept();
    h.send('H');
    const f = await h.next();
    t.same(f.type, '!', `${what}: no R`);
    t.match(f.payload.toString(), /refusing to run job scripts as root/, `${what}: says why`);
    h.send('S', 'id > /tmp/vtorque-agent-ran-as-root\n');
    t.match((await h.next()).payload.toString(), /refusing to run job scripts as root/, `${what}: S refused`);
    t.notOk(existsSync(join(a.state, 'ran')), `${what}: nothing ran`);
  }
  const a = await startAgent(t, { configOwner: NOBODY.uid });
  const h = await a.accept();
  h.send('H');
  t.match((await h.next()).payload.toString(), /must be a regular file of root/, 'a config file the user owns is refused');

  const m = await startAgent(t, { config: { user: 'nobody', uid: 1234, home: '/tmp', vms: [], np: 1, env: {} } });
  const hm = await m.accept();
  await hm.hello();
  hm.send('S', 'id\n');
  t.match((await hm.next()).payload.toString(), /the VM user nobody has uid 65534, the seed said 1234/, 'a uid that does not match the VM\'s account is refused');
});
