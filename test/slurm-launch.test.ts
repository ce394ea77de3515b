// A Slurm #VM job from sbatch to its end, under TCG, against real munged,
// slurmctld and slurmd (test/harness/slurm.ts), wired as install.sh --slurm
// wires a site: job_submit.lua checks the request and wraps the script; the
// Prolog verifies the image and boots the Debian boot guest
// (scripts/build-boot-guest); the batch step's vtorque-slurm-run sends the
// script as submitted to VM 0's agent, as the job owner; its output is the
// job's output, after the TaskProlog's summary; its exit status is the job's;
// the Epilog leaves no qemu and no file.
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENDED, Slurm } from './harness/slurm.js';
import { lookupUser } from './harness/mom.js';
import { bootGuestImage, bootingIni, ensureLaunchUser, qemusOf } from './harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';
import { nodePaths, slurmTestNode, startSlurmNode } from './harness/slurm-wiring.js';

t.setTimeout(1800_000);
ensureLaunchUser();
// A real account, as a cluster user is: cloud-init creates it in the guest with its home.
ensureSeedUser();
const OWNER = lookupUser(SEED_USER.name);
const guest = bootGuestImage();

const node = slurmTestNode('vt-slurm-launch-');
const { pool, jobDir, ini } = node;
writeFileSync(join(pool, 'boot-guest.qcow2'), readFileSync(guest), { mode: 0o644 });
writeFileSync(ini, [
  ...nodePaths(node),
  '[guestfs]', 'accel = tcg',
  bootingIni(),
].join('\n'));

const { s, wiring, logs: tail } = await startSlurmNode(t, node);
const logs = () => tail(20);

async function gone(jobId: string, seconds: number): Promise<boolean> {
  for (let i = 0; i < seconds * 2; i++) {
    if (qemusOf(jobId).length === 0) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

t.test('the job script runs in VM 0 as its owner; its output and exit status are the job\'s', async (t) => {
  const dir = s.userDir(OWNER, 'invm');
  const script = [
    '#!/bin/bash',
    '#SBATCH --job-name=invm',
    '#VM img=boot-guest.qcow2,ram=1G,vcpus=1',
    'echo "host=$(hostname)"',
    'echo "user=$(id -un) uid=$(id -u)"',
    '. /etc/os-release; echo "os=$ID $VERSION_ID"',
    'echo "jobid=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST"',
    'sudo -n true 2>/dev/null && echo "root=yes" || echo "root=no"',
    'echo "to stderr" >&2',
    'exit 3',
    '',
  ].join('\n');
  const r = await s.sbatch(OWNER, dir, ['-o', join(dir, '%j.out'), '-e', join(dir, '%j.err')], script);
  t.equal(r.code, 0, r.stderr);
  const jobId = r.jobId!;
  t.teardown(async () => {
    for (const p of qemusOf(jobId)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    await gone(jobId, 10);
  });
  const j = await s.waitJob(jobId, (x) => ENDED.has(x.state), 1500_000);
  const out = existsSync(join(dir, `${jobId}.out`)) ? readFileSync(join(dir, `${jobId}.out`), 'utf8') : '';
  const err = existsSync(join(dir, `${jobId}.err`)) ? readFileSync(join(dir, `${jobId}.err`), 'utf8') : '';
  t.comment(`job output:\n${out}\njob stderr:\n${err}`);
  t.equal(j.state, 'FAILED', 'the job ended with the script\'s non-zero status', j.state === 'FAILED' ? {} : { logs: logs() });
  const show = await s.run('scontrol', ['show', 'job', jobId]);
  t.match(show.stdout, /ExitCode=3:0/, 'its exit status is the script\'s');
  t.match(out, /^vtorque: VM v\S+ booted in [0-9.]+ s \(tcg\)$/m, "the TaskProlog printed the Prolog's lines first");
  t.match(out, /^host=v\S+$/m, 'hostname: inside the VM');
  t.notMatch(out, new RegExp(`^host=${s.node}$`, 'm'));
  t.match(out, new RegExp(`^user=${OWNER.name} uid=${OWNER.uid}$`, 'm'), 'as the job owner, with the node uid');
  t.match(out, /^os=debian 12$/m, "the guest's /etc/os-release");
  t.match(out, new RegExp(`^jobid=${jobId} nodes=v\\S+$`, 'm'), "the job's Slurm variables, naming the VMs");
  t.match(out, /^root=no$/m, "root is out of the script's reach");
  t.match(err, /^to stderr$/m, "stderr lands in the job's error file");
  // The Epilog runs after the job's end.
  t.ok(await gone(jobId, 300), 'the Epilog stopped the VM');
  const end = Date.now() + 120_000;
  while (existsSync(join(jobDir, jobId)) && Date.now() < end) await new Promise((res) => setTimeout(res, 500));
  t.notOk(existsSync(join(jobDir, jobId)), 'the Epilog removed the job directory');
  t.equal((await s.nodeState()).state, 'idle', 'the node is idle again');
});

t.test('without job_submit.lua the VM job would run on the host: the Prolog cancels it (slurm-wrap), the node stays up', async (t) => {
  const { jobSubmitLua: _none, ...noLua } = wiring.options;
  const bare = await Slurm.start({ ...noLua, prologFlags: ['Alloc'] });
  t.teardown(() => bare.stop());
  const dir = bare.userDir(OWNER, 'nolua');
  const r = await bare.sbatch(OWNER, dir, ['-o', join(dir, '%j.out')], '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho "host=$(hostname)"\n');
  t.equal(r.code, 0, r.stderr);
  const j = await bare.waitJob(r.jobId!, (x) => ENDED.has(x.state), 300_000);
  t.equal(j.state, 'CANCELLED', 'cancelled before it ran', j.state === 'CANCELLED' ? {} : { logs: `${bare.logs()}\n${logs()}` });
  const show = await bare.run('scontrol', ['show', 'job', r.jobId!]);
  t.match(show.stdout, /Comment=vtorque: job not started: job \d+ cannot run in its VM: its script was not wrapped at submission/);
  t.same(qemusOf(r.jobId!), [], 'no VM was booted');
  t.notMatch((await bare.nodeState()).state, /drain/, 'the node is not drained');
});
