// The job starter (bin/vtorque-starter + src/launch/starter.ts) as pbs_mom runs
// it, replayed from a real Torque 6.1 (test/fixtures/torque-6.1): argv
// [starter, SHELL] for the job's shell, [starter, PROGRAM, ARG...] for a TM
// task, the job owner's uid, the job's environment, the script (or Torque's
// default: a line naming it) on stdin. A non-VM job
// must run exactly as without a starter; a VM job runs in VM 0 through the
// real guest agent (src/seed/agent.ts, host-test mode) behind a stand-in for
// qemu's agent chardev.
import t from 'tap';
import { chownSync, chmodSync, mkdirSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { Mom, NOBODY, type Job } from './harness/mom.js';
import { recording } from './harness/torque-recordings.js';
import { standInChardev, startHostAgent } from './harness/host-agent.js';

// What a job can see of how it was started; everything but the variables
// bash itself sets per process.
const PROBE = `#!/bin/bash
echo "0=$0 opts=$- login=$(shopt -q login_shell && echo y || echo n) pid-is-session=$([ "$(ps -o sid= -p $$ | tr -d ' ')" = "$(ps -o sid= -p $PPID | tr -d ' ')" ] && echo y || echo n)"
echo "args=$#:$*"
echo "id=$(id -u):$(id -g) cwd=$PWD"
env | LC_ALL=C sort | grep -v -e '^_=' -e '^SHLVL=' -e '^OLDPWD='
echo "stdin: $(readlink /proc/$$/fd/0 | sed 's/:.*//')"
exit 7
`;

const mom = new Mom();
t.teardown(() => rmSync(mom.root, { recursive: true, force: true }));

let n = 0;
const job = (script: string): Job => {
  const j = { id: `${++n}.head`, script };
  mom.submit(j);
  return j;
};

for (const stdin of ['pipe', 'script'] as const) {
  t.test(`a non-VM job through the starter runs as without it (stdin: ${stdin === 'pipe' ? "Torque's default pipe" : 'the script'})`, async (t) => {
    const a = job(PROBE);
    const withStarter = await mom.startJob(a, { stdin });
    const b = { ...a, id: `${++n}.head` };
    mom.submit(b);
    const without = await mom.startJob(b, { stdin, starter: false });
    t.equal(withStarter.code, 7, 'the exit status is the script\'s');
    t.equal(without.code, 7);
    t.equal(withStarter.er, without.er, 'stderr is the same');
    t.equal(withStarter.ou.replaceAll(a.id, 'ID'), without.ou.replaceAll(b.id, 'ID'), 'argv, options, login shell, uid, cwd, environment and stdin are the same');
    t.match(withStarter.ou, /id=65534:65534/);
    if (stdin === 'script') t.match(withStarter.ou, /^0=-bash opts=hBs login=y/, 'the shell got argv[0] "-bash": a login shell, no allexport');
  });
}

t.test('qsub -F arguments reach a non-VM script through the starter', async (t) => {
  const j = job('#!/bin/bash\necho "args=$#:$1|$2"\n');
  const r = await mom.startJob(j, { args: "'a b' c" });
  t.equal(r.code, 0);
  t.equal(r.ou, 'args=2:a b|c\n');
});

t.test('the job environment cannot make the starter run code or change the shell', async (t) => {
  const mark = join(mom.workdir, 'bash-env-ran');
  writeFileSync(join(mom.workdir, 'env.sh'), `echo x >> ${mark}\n`);
  chownSync(join(mom.workdir, 'env.sh'), NOBODY.uid, NOBODY.gid);
  const env = { BASH_ENV: join(mom.workdir, 'env.sh'), SHELLOPTS: 'braceexpand:hashall:interactive-comments', NODE_OPTIONS: '--require /nonexistent' };
  const runs: string[] = [];
  for (const starter of [false, true]) {
    rmSync(mark, { force: true });
    const r = await mom.startJob(job('#!/bin/bash\necho "opts=$- shellopts=$SHELLOPTS"\n'), { stdin: 'script', env, starter });
    t.equal(r.code, 0, r.er);
    runs.push(`${r.ou}ran BASH_ENV ${existsSync(mark) ? readFileSync(mark, 'utf8').length / 2 : 0} times`);
  }
  t.equal(runs[1], runs[0], 'BASH_ENV runs only in the job shell; an exported SHELLOPTS (bash defaults) is passed on as it was');
});

t.test("a job id naming another directory is a non-VM job: the starter connects to no socket outside the job's", async (t) => {
  const evil = join(mom.root, 'evil');
  mkdirSync(evil, { recursive: true });
  let connected = false;
  const srv = createServer(() => { connected = true; });
  await new Promise<void>((r) => srv.listen(join(evil, 'vm-0.agent'), r));
  chmodSync(join(evil, 'vm-0.agent'), 0o777);
  const j = job('#!/bin/bash\necho ran on host\n');
  const r = await mom.startJob(j, { env: { PBS_JOBID: '../evil' } });
  srv.close();
  t.equal(r.code, 0, r.er);
  t.equal(r.ou, 'ran on host\n');
  t.notOk(connected);
});

/** A job whose directory holds an agent socket, as this node's prologue leaves a VM job's; counts connections to it. */
async function vmJobDir(): Promise<{ id: string; connections: () => number; close: () => void }> {
  const id = `${++n}.head`;
  const dir = join(mom.jobDir, id);
  mkdirSync(dir, { recursive: true });
  let connections = 0;
  const srv = createServer((c) => { connections++; c.destroy(); });
  await new Promise<void>((r) => srv.listen(join(dir, 'vm-0.agent'), r));
  chmodSync(join(dir, 'vm-0.agent'), 0o777);
  return { id, connections: () => connections, close: () => srv.close() };
}

for (const kind of ['task-pbsdsh', 'task-pbsdsh-args', 'task-pbsdsh-E'] as const) {
  t.test(`a TM task (${kind} as recorded: [starter, PROGRAM, ARG...]) runs on the host as given, also in a VM job`, async (t) => {
    const vm = await vmJobDir();
    const j: Job = { id: vm.id };
    mom.submit({ ...j, script: '#!/bin/bash\n#VM img=debian12.qcow2\n' });
    const probe = ['/bin/bash', '-c', 'echo "task $PBS_TASKNUM: $0 $1 $2 login=$(shopt -q login_shell && echo y || echo n)"', 'zero', 'one', 'two words'];
    const r = await mom.startTask(j, { kind, argv: probe });
    vm.close();
    t.equal(r.code, 0, r.er);
    t.equal(r.ou, `task ${recording(kind).env.PBS_TASKNUM}: zero one two words login=n\n`, 'argv intact, argv[0] as given, not a login shell');
    t.equal(vm.connections(), 0, 'no connection to the VM');
  });
}

t.test('the job shell of a VM job goes to VM 0; with the same argv, a task started with pbsdsh -E does not', async (t) => {
  const vm = await vmJobDir();
  const j: Job = { id: vm.id, script: '#!/bin/bash\n#VM img=debian12.qcow2\necho in the VM\n' };
  mom.submit(j);
  const task = await mom.startTask(j, { kind: 'task-pbsdsh-E', argv: ['/bin/bash', '-c', 'echo on the host'] });
  t.equal(task.ou, 'on the host\n', 'pbsdsh -E: PBS_TASKNUM=1 and SHELL as the job shell has them, but stdin is /dev/null');
  t.equal(vm.connections(), 0);
  const shell = await mom.startJob(j);
  vm.close();
  t.equal(vm.connections(), 1, 'the job shell connected to VM 0\'s agent');
  t.not(shell.code, 0, 'the stand-in agent hung up');
  t.match(shell.er, /VM 0's agent closed the connection before it was ready/);
});

t.test('qsub -I -x runs its command in a login shell on the host, as without a starter; a VM job says where it runs', async (t) => {
  const j = job('#!/bin/bash\n');
  const runs: string[] = [];
  for (const starter of [false, true]) {
    const r = await mom.startJob(j, { kind: 'interactive-x', starter, env: { PBS_JOBID: `${j.id}` } });
    runs.push(`${r.code} ${r.er}`);
  }
  t.equal(runs[1], runs[0], 'the same (the recorded command is a script path that does not exist here)');
  const vm = await vmJobDir();
  const vj: Job = { id: vm.id, script: '#!/bin/bash\n#VM img=debian12.qcow2\n' };
  mom.submit(vj);
  const r = await mom.startJob(vj, { kind: 'interactive' });
  vm.close();
  t.equal(vm.connections(), 0, 'an interactive shell stays on the host');
  t.match(r.er, /^vtorque: this interactive job's shell runs on the host \S+, not in the job's VM/m);
});

t.test("pbs_mom's $source_login_batch false: the job's shell is not a login shell, as without a starter", async (t) => {
  const m = new Mom();
  t.teardown(() => rmSync(m.root, { recursive: true, force: true }));
  const starter = m.installStarter();
  writeFileSync(starter, readFileSync(starter, 'utf8').replace(/^LOGIN_BATCH=.*$/m, 'LOGIN_BATCH=false'));
  const j: Job = { id: '1.head', script: '#!/bin/bash\necho "0=$0 login=$(shopt -q login_shell && echo y || echo n)"\n' };
  m.submit(j);
  const r = await m.startJob(j, { stdin: 'script' });
  t.equal(r.code, 0, r.er);
  t.equal(r.ou, '0=bash login=n\n');
});

// vm_prologue= and vm_epilogue=: the starter sends VM 0 one script. Run here
// with bash as the job owner, as the agent runs it (bash -l SCRIPT), to pin the
// semantics doc/user.md gives.
t.test('vm_prologue and vm_epilogue are composed into the one script VM 0 runs', async (t) => {
  const { composeScript, vmScriptsOf } = await import('../src/launch/starter.js');
  const { spawnSync } = await import('node:child_process');
  const dir = join(mom.root, 'vmscripts');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'ok.sh'), '#!/bin/sh\necho "pro ran as $(id -u)"\n');
  writeFileSync(join(dir, 'fail.sh'), 'echo "pro fails"\nexit 3\n');
  writeFileSync(join(dir, 'sub', 'epi.sh'), '#!/bin/bash\necho "epi after $VTORQUE_JOB_STATUS"\n');
  const run = (script: string) => {
    const body = Buffer.from(script);
    const composed = composeScript(body, vmScriptsOf(body, dir));
    const f = join(dir, `composed-${++n}.sh`);
    writeFileSync(f, composed, { mode: 0o755 });
    return spawnSync('/bin/bash', ['-l', f], { encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: '/', env: { PATH: '/usr/bin:/bin', HOME: '/' } });
  };

  const plain = '#!/bin/bash\n#VM img=a.qcow2\necho hi\n';
  t.equal(composeScript(Buffer.from(plain), vmScriptsOf(Buffer.from(plain), dir)).toString(), plain, 'without the keys the script is sent as it is');

  let r = run('#!/bin/bash\n#VM img=a.qcow2,VM_PROLOGUE=ok.sh\n#VM vm_epilogue=sub/epi.sh\nset -- a "b c"\necho "job $# $2"\nexit 5\necho not-reached\n');
  t.equal(r.status, 5, "the job's status is the script's");
  t.equal(r.stdout, `pro ran as ${NOBODY.uid}\njob 2 b c\nepi after 5\n`, 'in order; the script keeps its arguments; vm_epilogue sees its status');

  r = run('#!/bin/bash\n#VM vm_prologue=fail.sh,vm_epilogue=sub/epi.sh\necho job-ran\n');
  t.equal(r.status, 3, "a failing vm_prologue stops the job with its status");
  t.equal(r.stdout, 'pro fails\n', 'neither the script nor vm_epilogue ran');
  t.match(r.stderr, /^vtorque: vm_prologue fail\.sh exited with status 3; the job script and vm_epilogue did not run\. Fix: /m);

  r = run("#!/bin/bash\n#VM vm_epilogue=sub/epi.sh\nkill -TERM $BASHPID\n");
  t.equal(r.stdout, 'epi after 143\n', 'vm_epilogue runs after a script a signal ended');
  t.equal(r.status, 143);

  t.throws(() => vmScriptsOf(Buffer.from('#VM vm_prologue=$(reboot)\n'), dir), { name: 'VmScriptError', message: /has characters outside/ }, 'shell characters are refused before any file is opened');
  t.throws(() => vmScriptsOf(Buffer.from('#VM vm_prologue=missing.sh\n'), dir), /vm_prologue=missing\.sh \(line 1\) cannot be read: .*missing\.sh: no such file/);
  t.same(vmScriptsOf(Buffer.from('#!/bin/sh\necho first command\n#VM vm_prologue=missing.sh\n'), dir), [], '#VM after the first command is not a directive, as for the prologue');
});

// qdel of a VM job: pbs_mom TERMs the starter's session, the starter passes
// one K TERM to VM 0's agent (here the real agent on this host, behind a
// stand-in for qemu's chardev). The job's status and output are the script's
// alone, however long its trap takes: the batch system's KILL (Torque's
// kill_delay, Slurm's KillWait) is the only limit, as for a job on the host.
const TRAP = `trap 'echo "caught TERM in $(hostname)"; exit 143' TERM`;
for (const [what, keys, trap, said, status] of [
  ['a script without a trap ends as TERM ends it', '', '', '', 143],
  ['a TERM trap with $(...) runs once and its exit is the job\'s', '', TRAP, `caught TERM in ${hostname()}\n`, 143],
  ['a TERM trap that takes 12 s (past the starter\'s old 10 s) runs to its end and its exit 5 is the job\'s', '',
    `trap 'echo "caught TERM as $(id -un)"; sleep 12; echo "cleaned up"; exit 5' TERM`, 'caught TERM as nobody\ncleaned up\n', 5],
  // The job script then runs in a subshell of the composed script (composeScript):
  // that shell must wait for it, not die of the TERM and have the agent KILL the trap.
  ['with vm_prologue and vm_epilogue, the job script\'s TERM trap runs to its end, its exit 7 is the job\'s, and vm_epilogue does not run',
    '#VM vm_prologue=qdel-pre.sh,vm_epilogue=qdel-epi.sh\n', `trap 'echo "caught TERM in $(hostname)"; sleep 1; echo "cleaned up"; exit 7' TERM`,
    `caught TERM in ${hostname()}\ncleaned up\n`, 7],
] as const) {
  t.test(`qdel of a VM job: ${what}; nothing else is written`, async (t) => {
    for (const [f, text] of [['qdel-pre.sh', '#!/bin/sh\necho pre\n'], ['qdel-epi.sh', '#!/bin/sh\necho epi\n']] as const) {
      writeFileSync(join(mom.workdir, f), text);
      chownSync(join(mom.workdir, f), NOBODY.uid, NOBODY.gid);
    }
    const j = job(`#!/bin/bash\n#VM img=a.qcow2\n${keys}${trap}\necho started\nsleep 600 &\nwait\necho not-reached\n`);
    mkdirSync(join(mom.jobDir, j.id), { recursive: true });
    await standInChardev(t, await startHostAgent(t), join(mom.jobDir, j.id, 'vm-0.agent'));
    const r = await mom.startJob(j, { termOnOutput: /^started$/m });
    t.equal(r.code, status, `the job's status: ${status}`);
    t.equal(r.ou, `${keys ? 'pre\n' : ''}started\n${said}`, 'its .OU: the script\'s lines, the trap\'s once each');
    t.equal(r.er, '', 'its .ER: nothing (no "Session terminated", no bash parse error, no vtorque: line)');
  });
}
