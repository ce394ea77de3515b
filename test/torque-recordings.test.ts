// The harness replays what a real Torque 6.1 pbs_mom passed its $job_starter
// (test/fixtures/torque-6.1): the same recording starter, run by the harness
// in place of pbs_mom, must see what it saw under pbs_mom. The job shell's
// argv is [starter, SHELL] (pbs_mom overwrites the shell's "-bash"), a TM
// task's [starter, PROGRAM, ARG...]; a test that played another contract
// (DESIGN.md once said [starter, SHELL, -NAME]) would pass code that fails on
// a real node.
import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY, type Job } from './harness/mom.js';
import { RECORDINGS, recording, type Recording, type StartKind } from './harness/torque-recordings.js';

const mom = new Mom();
t.teardown(() => rmSync(mom.root, { recursive: true, force: true }));

const out = mkdtempSync(join(mom.root, 'rec-'));
chmodSync(out, 0o777);
const recorder = join(mom.root, 'bin', 'recording-starter');
writeFileSync(recorder, readFileSync(join(RECORDINGS, 'recording-starter'), 'utf8').replace(/^OUT = .*$/m, `OUT = ${JSON.stringify(out)}`), { mode: 0o755 });

let n = 0;
async function replay(kind: StartKind): Promise<{ job: Job; got: Recording }> {
  const job: Job = { id: `${++n}.head`, name: 'probe', script: '#!/bin/bash\necho replayed\n' };
  mom.submit(job);
  for (const f of readdirSync(out)) rmSync(join(out, f));
  if (kind.startsWith('task-')) await mom.startTask(job, { kind: kind as 'task-pbsdsh', starter: recorder });
  else {
    const shellKind = kind === 'batch-args' ? 'batch' : kind as 'batch' | 'interactive' | 'interactive-x';
    await mom.startJob(job, { kind: shellKind, args: kind === 'batch-args' ? 'a1 "b 2"' : undefined, starter: recorder });
  }
  const files = readdirSync(out);
  if (files.length !== 1) throw new Error(`the recording starter wrote ${files.length} files`);
  return { job, got: JSON.parse(readFileSync(join(out, files[0]!), 'utf8')) as Recording };
}

// tap's own process-info hook adds these to every child's environment; pbs_mom does not.
const names = (env: Record<string, string>): string[] => Object.keys(env).filter((k) => !k.startsWith('_TAPJS_')).sort();
const fdShape = (r: Recording, interactive: boolean) => Object.fromEntries(Object.entries(r.fds)
  // A terminal on the real qsub -I; a pipe here. The starter only asks whether stdin is /dev/null.
  .filter(([fd]) => !(interactive && Number(fd) <= 2))
  .map(([fd, d]) => [fd, d.error ? 'closed' : `${d.kind} ${d.flags}${d.kind === 'file' ? ` ${d.target!.replace(/^.*\.(OU|ER)$/, '$1')}` : ''}`]));

for (const kind of ['batch', 'batch-args', 'interactive', 'interactive-x', 'task-pbsdsh', 'task-pbsdsh-args', 'task-pbsdsh-E'] as const) {
  t.test(`the harness starts ${kind} as the real pbs_mom did`, async (t) => {
    const want = recording(kind);
    const { job, got } = await replay(kind);
    t.same(got.argv.slice(1), want.argv.slice(1), 'argv after the starter\'s path');
    t.same(names(got.env), names(want.env), 'exactly the variables pbs_mom set');
    for (const k of ['PBS_TASKNUM', 'PBS_NODENUM', 'PBS_ENVIRONMENT', 'SHELL', 'PBS_NP', 'PBS_NUM_NODES'] as const) t.equal(got.env[k], want.env[k], k);
    t.equal(got.env.PBS_JOBID, job.id);
    t.same(fdShape(got, kind.startsWith('interactive')), fdShape(want, kind.startsWith('interactive')), 'the same descriptors, kinds and directions');
    if (want.fds['9']) t.equal(got.fds['9']!.target, got.fds['0']!.target, 'fd 9 is stdin\'s pipe again');
    if (!kind.startsWith('interactive')) t.equal(got.stdin_data, want.stdin_data?.replace(/^\/var\/spool\/torque\/mom_priv\/jobs\/[^ \n]+\.SC/, mom.scriptPath(job)), 'stdin carries the line naming the script');
    t.equal(got.sid, got.pid, 'a session of its own');
    t.equal(got.pgid, got.pid);
    t.equal(got.umask, want.umask);
    t.equal((got as unknown as { uid: number }).uid, NOBODY.uid);
    t.equal(got.cwd, mom.workdir, 'the owner\'s home (PBS_O_INITDIR unset)');
  });
}

t.test('the recordings show how a job shell differs from a task', async (t) => {
  const shell = recording('batch');
  t.same(shell.argv.slice(1), ['/bin/bash'], 'the shell alone: its "-bash" is overwritten by the starter\'s path');
  t.equal(shell.env.PBS_TASKNUM, '1');
  t.equal(shell.env.SHELL, '/bin/bash');
  t.equal(shell.fds['0']!.kind, 'fifo');
  t.equal(recording('interactive-x').argv.slice(2)[0], '-c');
  const task = recording('task-pbsdsh');
  t.equal(task.env.PBS_TASKNUM, '2');
  t.notOk('SHELL' in task.env);
  const e = recording('task-pbsdsh-E');
  t.equal(e.env.PBS_TASKNUM, '1', 'pbsdsh -E passes the job shell\'s PBS_TASKNUM on');
  t.equal(e.env.SHELL, '/bin/bash');
  t.equal(e.fds['0']!.target, '/dev/null', 'but a task\'s stdin is /dev/null');
});
