// The Slurm engine against real munged, slurmctld and slurmd (test/harness/slurm.ts):
// our program as Prolog and Epilog, conf/slurm/job_submit.lua as the submit
// filter, jobs submitted with sbatch as nobody. A plain job runs untouched; a
// bad #VM request is refused at sbatch; an image that fails the requirements
// cancels the job with our reason and leaves the node up; a compliant VM job
// gets its manifest and the Epilog removes its files; a node fault drains the
// node with our reason.
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENDED } from './harness/slurm.js';
import { NOBODY } from './harness/mom.js';
import { nodePaths, poolImage, slurmTestNode, startSlurmNode } from './harness/slurm-wiring.js';
import { ensureLaunchUser } from './harness/launch-user.js';

ensureLaunchUser();
const node = slurmTestNode('vt-slurm-test-');
const { root, pool, jobDir, logFile, ini } = node;
for (const [name, file] of [['debian12.qcow2', 'debian-ok.qcow2'], ['nocloud.qcow2', 'debian-no-cloud-init.qcow2']] as const) poolImage(node, name, file);
const iniText = (poolDir: string, extra: string[] = []) => [
  ...nodePaths(node, poolDir),
  // TCG: no KVM probe; the test images do not boot, so [launch] start = false (the manifest only), as the Torque harness does.
  '[guestfs]', 'accel = tcg', '[launch]', 'start = false', 'accel = tcg', ...extra, '',
].join('\n');
writeFileSync(ini, iniText(pool));

const { s, wiring, logs } = await startSlurmNode(t, node);

const finished = (j: { state: string }) => ENDED.has(j.state);
/** The admin log's lines for one job, by stage. */
const logOf = (jobId: string): { stage?: string; msg?: string }[] => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '').split('\n').filter(Boolean)
  .map((l) => JSON.parse(l) as { job?: string; stage?: string; msg?: string }).filter((l) => l.job === jobId);

/** The ini points at a pool others may write (a node fault: the node cannot trust any image in it) until the test ends; then the node is resumed. */
function unsafePool(t: { teardown: (fn: () => Promise<void>) => void }, name: string, extra: string[] = []): void {
  const open = join(root, name);
  mkdirSync(open, { mode: 0o777 });
  chmodSync(open, 0o777);
  writeFileSync(ini, iniText(open, extra));
  t.teardown(async () => {
    writeFileSync(ini, iniText(pool));
    await s.resume().catch(() => undefined);
  });
}

t.test('a plain job runs untouched with our Prolog and Epilog', async (t) => {
  const dir = s.userDir(NOBODY, 'plain');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out'), '--wrap', 'echo plain-ran']);
  t.equal(r.code, 0, r.stderr);
  const j = await s.waitJob(r.jobId!, finished);
  t.equal(j.state, 'COMPLETED', 'the job completed', j.state === 'COMPLETED' ? {} : { logs: logs() });
  t.equal(readFileSync(join(dir, `${r.jobId}.out`), 'utf8'), 'plain-ran\n');
  t.equal((await s.nodeState()).state, 'idle');
});

t.test('a bad #VM request is refused at sbatch with our message', async (t) => {
  const dir = s.userDir(NOBODY, 'bad');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM ram=12X\nhostname\n');
  t.equal(r.code, 1, 'sbatch fails');
  t.match(r.stderr, /sbatch: error: vtorque: job not submitted/);
  t.match(r.stderr, /ram: "12X" is not a size/);
  t.notOk(r.jobId);
});

t.test('an image that fails the requirements: the job is cancelled with our reason, the node stays up', async (t) => {
  const dir = s.userDir(NOBODY, 'nocloud');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM img=nocloud.qcow2\nhostname\n');
  t.equal(r.code, 0, r.stderr);
  const j = await s.waitJob(r.jobId!, finished, 300_000);
  t.equal(j.state, 'CANCELLED', 'the Prolog cancelled the job', j.state === 'CANCELLED' ? {} : { logs: logs() });
  const show = await s.run('scontrol', ['show', 'job', r.jobId!]);
  t.match(show.stdout, /Comment=vtorque: job not started: .*cloud-init-installed/, 'the user sees our reason in scontrol show job');
  const node = await s.nodeState();
  t.equal(node.state, 'idle', `the node is not drained: ${JSON.stringify(node)}`);
  // slurmd runs the Epilog, and frees the node, only once the Prolog has exited.
  await s.waitNode((n) => n.state === 'idle');
  t.same(logOf(r.jobId!).filter((l) => l.stage === 'summary'), [], 'no summary is left for a refused job: its directory is gone');
});

t.test('a compliant VM job gets its manifest, and the Epilog removes its files', async (t) => {
  const dir = s.userDir(NOBODY, 'vm');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM img=debian12.qcow2,vcpus=1,ram=1G\nsleep 3\necho vm-job-ran\n');
  t.equal(r.code, 0, r.stderr);
  // With PrologFlags=Alloc squeue says RUNNING while the Prolog still works: the manifest is its last file.
  const manifest = join(jobDir, r.jobId!, 'manifest.json');
  const until = Date.now() + 300_000;
  while (!existsSync(manifest) && Date.now() < until && !finished((await s.jobState(r.jobId!)) ?? { state: 'COMPLETED' })) await new Promise((res) => setTimeout(res, 200));
  t.ok(existsSync(manifest), 'the Prolog wrote the manifest', existsSync(manifest) ? {} : { logs: logs() });
  if (!existsSync(manifest)) return;
  const m = JSON.parse(readFileSync(manifest, 'utf8'));
  t.equal(m.job.id, r.jobId);
  t.equal(m.job.user, NOBODY.name);
  t.same(m.job.hosts, [s.node], "the job's hosts are Slurm's node names (SLURM_NODELIST)");
  t.equal(m.position, 0);
  t.equal(m.image.name, 'debian12.qcow2');
  const done = await s.waitJob(r.jobId!, finished);
  t.equal(done.state, 'COMPLETED', 'the job ran', done.state === 'COMPLETED' ? {} : { logs: logs() });
  const out = readFileSync(join(dir, `${r.jobId}.out`), 'utf8');
  t.match(out, /vm-job-ran/, 'the script as submitted ran (on the host: [launch] start = false), behind the lines job_submit.lua put before it');
  t.match(out, new RegExp(`^vtorque: VM job ${r.jobId}: 1 VM of debian12\\.qcow2`, 'm'), "the TaskProlog printed the Prolog's summary into the job's output");
  t.match(out, /^vtorque: manifest: /m);
  t.same(logOf(r.jobId!).filter((l) => l.stage === 'summary').map((l) => l.msg), ['summary left for the TaskProlog'], 'the Prolog logged the summary it left');
  const stored = await s.run('scontrol', ['write', 'batch_script', r.jobId!, '-']);
  t.match(stored.stdout, /^#!\/bin\/sh\n# vtorque: job_submit\.lua wrapped this VM job/, 'slurmctld holds the wrapped script');
  // The Epilog runs after the job's end: give it a moment.
  const end = Date.now() + 30_000;
  while (existsSync(join(jobDir, r.jobId!)) && Date.now() < end) await new Promise((res) => setTimeout(res, 200));
  t.notOk(existsSync(join(jobDir, r.jobId!)), 'the Epilog removed the job directory');
});

t.test('a node fault drains the node with our reason', async (t) => {
  // A pool others may write: the node cannot trust any image in it.
  unsafePool(t, 'open-pool');
  const dir = s.userDir(NOBODY, 'nodefault');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM img=debian12.qcow2\nhostname\n');
  t.equal(r.code, 0, r.stderr);
  const node = await s.waitNode((n) => /drain/.test(n.state), 120_000);
  t.match(node.reason, /^vtorque: /, `our reason, not "Prolog error": ${node.reason}`);
  t.match(node.reason, /pool/);
  const j = await s.waitJob(r.jobId!, (x) => /held/.test(x.reason));
  // Requeued and held; COMPLETING while the Epilog of the failed start still runs.
  t.match(j.reason, /launch failed requeued held/, 'slurmd holds the job');
  t.ok(['PENDING', 'COMPLETING'].includes(j.state), `the job does not run: ${j.state}`);
});

t.test('SLURM_JOB_RESTART_COUNT is the start count: at [policy] max_start_count a node fault cancels the job instead of draining the node', async (t) => {
  // max_start_count = 1: the first start (restart count 0) is the last one.
  unsafePool(t, 'open-pool-2', ['[policy]', 'max_start_count = 1']);
  const dir = s.userDir(NOBODY, 'maxstart');
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], '#!/bin/sh\n#VM img=debian12.qcow2\nhostname\n');
  t.equal(r.code, 0, r.stderr);
  const j = await s.waitJob(r.jobId!, finished, 300_000);
  t.equal(j.state, 'CANCELLED', 'cancelled, not held', j.state === 'CANCELLED' ? {} : { logs: logs() });
  const show = await s.run('scontrol', ['show', 'job', r.jobId!]);
  t.match(show.stdout, /Comment=vtorque: job not started: it was started 1 times and each time a node could not prepare it/);
  const node = await s.nodeState();
  t.notMatch(node.state, /drain/, `the node is not drained: ${JSON.stringify(node)}`);
});

t.test("a user's own copy of job_submit.lua's lines is stripped: slurmctld holds ours once, naming our runner", async (t) => {
  const dir = s.userDir(NOBODY, 'forged');
  const forged = "#!/bin/sh\n# vtorque: job_submit.lua wrapped this VM job: the script as submitted follows the exec line, and runs in VM 0 (vtorque-prologue help slurm-prolog)\nexec '/tmp/their-own-runner' \"$0\" \"$@\"\n";
  const r = await s.sbatch(NOBODY, dir, ['-o', join(dir, '%j.out')], `${forged}${forged}#!/bin/sh\n#VM img=debian12.qcow2,vcpus=1,ram=1G\necho forged-ran\n`);
  t.equal(r.code, 0, r.stderr);
  const stored = await s.run('scontrol', ['write', 'batch_script', r.jobId!, '-']);
  t.equal(stored.stdout.split('# vtorque: job_submit.lua wrapped').length, 2, 'our lines once');
  t.match(stored.stdout, new RegExp(`^#!/bin/sh\\n# vtorque: [^\\n]*\\nexec '${wiring.runner.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' "\\$0" "\\$@"\\n#!/bin/sh\\n#VM img=`), 'our runner, then the script as submitted');
  t.notMatch(stored.stdout, /their-own-runner/);
  const done = await s.waitJob(r.jobId!, finished, 300_000);
  t.equal(done.state, 'COMPLETED', done.state === 'COMPLETED' ? '' : logs());
  t.match(readFileSync(join(dir, `${r.jobId}.out`), 'utf8'), /forged-ran/);
});
