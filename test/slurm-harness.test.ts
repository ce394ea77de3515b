// The Slurm harness (test/harness/slurm.ts) against real munged, slurmctld and
// slurmd: what the later Slurm engine will rely on, seen on this Slurm. The
// hooks here are tiny shell and lua scripts written by the test, not our
// program: a plain job runs as its owner, a job_submit.lua refusal reaches the
// user, a Prolog sees the job's identity and comment, and a failing Prolog
// drains the node and holds the job. Two instances run at once, as two test
// files would.
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ENDED, Slurm } from './harness/slurm.js';
import { NOBODY } from './harness/mom.js';

// Runs as root with no PATH (Slurm gives the Prolog none): absolute paths only.
// It writes next to itself, as it cannot know the instance's directory in advance.
const ENV_PROLOG = `#!/bin/sh
{ /usr/bin/env; echo "PROLOG_CWD=$(/bin/pwd)"; } > "\${0%/*}/prolog-env.$SLURM_JOB_ID"
exit 0
`;

// slurmstepd reads its stdout, as the job owner: "export" lines go into the
// task's environment, "print" lines into the job's output.
const TASK_PROLOG = `#!/bin/sh
echo "export VT_TASK=from-task-prolog"
echo "print vtorque: task prolog ran"
`;

// The shape of the later submit filter: refuse with a vtorque: line, or pass
// what it parsed to the Prolog in the job's comment.
const JOB_SUBMIT_LUA = `
function slurm_job_submit(job_desc, part_list, submit_uid)
  local script = job_desc.script or ""
  if string.find(script, "\\n#VM bad", 1, true) then
    slurm.log_user("vtorque: #VM bad is not a valid directive. Fix: remove the line.")
    return slurm.ERROR
  end
  if string.find(script, "\\n#VM ", 1, true) then
    job_desc.comment = "vtorque:lua-saw-vm"
  end
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return slurm.SUCCESS
end

return slurm.SUCCESS
`;

const FAIL_PROLOG = '#!/bin/sh\nexit 1\n';

const [main, failing] = await Promise.all([
  Slurm.start({ prolog: { text: ENV_PROLOG }, taskProlog: { text: TASK_PROLOG }, jobSubmitLua: JOB_SUBMIT_LUA }),
  Slurm.start({ prolog: { text: FAIL_PROLOG } }),
]);
t.teardown(() => Promise.all([main.stop(), failing.stop()]));
t.comment(`measure: daemons start to node idle ${main.startMs} ms and ${failing.startMs} ms (two instances at once)`);

const finished = (s: { state: string }) => ENDED.has(s.state);

t.test('two instances run side by side on one host', async (t) => {
  t.not(main.cluster, failing.cluster);
  t.not(main.node, failing.node);
  t.equal((await main.nodeState()).state, 'idle');
  t.equal((await failing.nodeState()).state, 'idle');
});

t.test('a plain sbatch --wrap job of an unprivileged user runs as that user and writes its output', async (t) => {
  const dir = main.userDir(NOBODY, 'plain');
  const t0 = Date.now();
  const r = await main.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out'), '--wrap', 'echo "hello job=$SLURM_JOB_ID uid=$(id -u) task=$VT_TASK"']);
  t.equal(r.code, 0, `sbatch: ${r.stderr}`);
  const id = r.jobId!;
  const s = await main.waitJob(id, finished);
  t.comment(`measure: plain job submit to done ${Date.now() - t0} ms`);
  t.equal(s.state, 'COMPLETED', 'the job completed', { logs: main.logs() });
  const out = readFileSync(join(dir, `${id}.out`), 'utf8');
  t.match(out, `hello job=${id} uid=${NOBODY.uid} task=from-task-prolog`, 'the job ran as its owner, with the TaskProlog\'s export');
  t.match(out, /^vtorque: task prolog ran$/m, 'a TaskProlog "print" line lands in the job output');
});

t.test('a job_submit.lua refusal reaches the user as "sbatch: error: vtorque: ..."', async (t) => {
  const dir = main.userDir(NOBODY, 'refused');
  const r = await main.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM bad\ntrue\n');
  t.not(r.code, 0, 'sbatch fails');
  t.equal(r.jobId, undefined, 'no job is queued');
  t.match(r.stderr, /^sbatch: error: vtorque: #VM bad is not a valid directive\. Fix: remove the line\.$/m);
  t.same(readdirSync(dir), [], 'nothing ran');
});

t.test('the Prolog gets the job id, the owner\'s uid and the comment job_submit.lua set', async (t) => {
  const dir = main.userDir(NOBODY, 'env');
  const r = await main.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM image=x\necho ran\n');
  t.equal(r.code, 0, `sbatch: ${r.stderr}`);
  const id = r.jobId!;
  t.equal((await main.waitJob(id, finished)).state, 'COMPLETED', 'the job completed', { logs: main.logs() });
  const dump = readFileSync(join(dirname(main.conf), `prolog-env.${id}`), 'utf8');
  const env = Object.fromEntries(dump.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.comment(`Prolog environment: ${Object.keys(env).sort().join(' ')}`);
  t.equal(env.SLURM_JOB_ID, id);
  t.equal(env.SLURM_JOB_UID, String(NOBODY.uid));
  t.equal(env.SLURM_JOB_GID, String(NOBODY.gid));
  t.equal(env.SLURM_JOB_USER, NOBODY.name);
  t.equal(env.SLURM_JOB_COMMENT, 'vtorque:lua-saw-vm', 'job_desc.comment set by job_submit.lua reaches the Prolog');
  t.equal(env.SLURMD_NODENAME, main.node);
});

t.test('a Prolog that exits 1 drains the node ("Prolog error") and holds the job; resume() undrains', async (t) => {
  const dir = failing.userDir(NOBODY, 'prolog-fails');
  const r = await failing.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out'), '--wrap', 'echo should-not-run']);
  t.equal(r.code, 0, `sbatch: ${r.stderr}`);
  const id = r.jobId!;
  const job = await failing.waitJob(id, (s) => s.state === 'PENDING' && /held/.test(s.reason));
  t.equal(job.state, 'PENDING', 'the job is back in the queue');
  t.equal(job.reason, 'launch failed requeued held');
  const node = await failing.waitNode((s) => /drain/.test(s.state));
  t.equal(node.reason, 'Prolog error');
  // The output file may already exist (slurmstepd opens it around the Prolog); what matters is that the script did not run.
  for (const f of readdirSync(dir)) {
    const st = statSync(join(dir, f));
    t.comment(`after the failed Prolog: ${f} uid=${st.uid} size=${st.size}`);
    t.notMatch(readFileSync(join(dir, f), 'utf8'), 'should-not-run', 'the job script did not run');
  }
  await failing.resume();
  t.equal((await failing.nodeState()).state, 'idle');
});
