// `doctor` with [batch] system = slurm against a real munged, slurmctld and
// slurmd (test/harness/slurm.ts), wired with what install.sh --slurm writes:
// its Prolog, Epilog and TaskProlog wrappers and its job_submit.lua. The
// wired instance passes the slurm checks, and --clear resumes a node we
// drained but never an operator's; a second instance without PrologFlags=Alloc,
// without lua and with a short PrologEpilogTimeout fails those checks. No job
// runs here: doctor asks slurmctld and slurmd only.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Slurm } from './harness/slurm.js';
import { BIN, NOBODY, REPO } from './harness/mom.js';
import { ensureLaunchUser } from './harness/launch-user.js';

ensureLaunchUser();
const root = mkdtempSync(join(tmpdir(), 'vt-doctor-slurm-'));
chmodSync(root, 0o755);
const etc = join(root, 'etc');
const ini = join(etc, 'prologue.ini');
const prefix = join(root, 'opt');
mkdirSync(etc, { mode: 0o755 });
mkdirSync(join(root, 'pool'), { mode: 0o755 });
// Private paths only (test/hermetic.test.ts); install.sh keeps this ini and sets [batch] system = slurm in it.
writeFileSync(ini, [
  '[paths]', `image_pool = ${join(root, 'pool')}`, `cache_dir = ${join(root, 'cache')}`, `job_dir = ${join(root, 'jobs')}`,
  `ramdisk_dir = ${join(root, 'shm')}`, `log_file = ${join(root, 'log', 'prologue.log')}`,
  '[cache]', 'max_size = 1G', 'min_free = 1M', '',
].join('\n'));
const slurmEtc = join(root, 'slurm-etc');
mkdirSync(slurmEtc, { mode: 0o755 });
const inst = spawnSync('bash', [join(REPO, 'install.sh'), '--slurm', '--slurm-conf', join(slurmEtc, 'slurm.conf'), '--prefix', prefix, '--config', etc,
  '--logrotate', join(root, 'logrotate.d'), '--bin-dir', join(root, 'usr-bin'), '--no-doctor'], { encoding: 'utf8' });
if (inst.status !== 0) throw new Error(`install.sh --slurm: ${inst.stdout}\n${inst.stderr}`);
const lua = readFileSync(join(slurmEtc, 'job_submit.lua'), 'utf8');
const bin = (name: string) => join(prefix, 'bin', name);

const wired = await Slurm.start({
  prolog: { path: bin('vtorque-slurm-prolog') }, epilog: { path: bin('vtorque-slurm-epilog') }, taskProlog: { path: bin('vtorque-task-prolog') },
  prologFlags: ['Alloc'], jobSubmitLua: lua, extraConf: ['PrologEpilogTimeout=300'],
});
t.teardown(async () => {
  await wired.stop();
  rmSync(root, { recursive: true, force: true });
});

function doctor(s: Slurm, ...args: string[]) {
  // As an admin runs it on the node: SLURM_CONF names the cluster, nothing else of this process's environment.
  const r = spawnSync(process.execPath, [BIN, '--config', ini, 'doctor', '--skip', 'guestfs,kvm', ...args], {
    encoding: 'utf8', timeout: 300_000, env: { PATH: '/usr/bin:/bin', SLURM_CONF: s.conf },
  });
  const lines = r.stdout.split('\n');
  return { code: r.status, out: r.stdout + r.stderr, lines, slurm: lines.filter((l) => l.slice(6).startsWith('slurm ')) };
}

t.test('install.sh --slurm set [batch] system = slurm in the kept ini', async (t) => {
  t.match(readFileSync(ini, 'utf8'), /^\[batch\]\nsystem = slurm$/m);
  t.match(inst.stdout, /^Slurm: set \[batch\] system = slurm in /m);
});

t.test('a node wired as install.sh --slurm says passes the slurm checks, and no Torque check runs', async (t) => {
  const r = doctor(wired);
  t.equal(r.slurm.filter((l) => !l.startsWith('ok ')).length, 0, r.slurm.join('\n') + '\n' + r.out);
  for (const want of [
    /^ok {4}slurm {5}\/usr\/bin\/scontrol show config reaches slurmctld \(\d+ ms; SLURM_CONF \S+slurm\.conf, Slurm 22\./,
    new RegExp(`^ok {4}slurm {5}Prolog=${bin('vtorque-slurm-prolog')} runs vtorque-prologue slurm-prolog \\(root's, clean environment, mode 0755\\)$`),
    new RegExp(`^ok {4}slurm {5}Epilog=${bin('vtorque-slurm-epilog')} runs vtorque-prologue slurm-epilog `),
    new RegExp(`^ok {4}slurm {5}TaskProlog=${bin('vtorque-task-prolog')} prints each VM job's vtorque: lines from ${join(root, 'jobs')}$`),
    /^ok {4}slurm {5}PrologFlags=Alloc: the Prolog runs on every node at allocation$/,
    /^ok {4}slurm {5}JobSubmitPlugins=lua; \S+job_submit\.lua is ours and checks #VM requests with \S+prologue\.ini$/,
    /^ok {4}slurm {5}PrologEpilogTimeout=300 s covers a cold preparation \(270 s: \[timeouts\] total 240 s for a cold image preparation, plus 3 x \[timeouts\] qstat 10 s to report a failure\)$/,
    new RegExp(`^ok {4}slurm {5}node ${wired.node} is IDLE \\(scontrol show slurmd\\)$`),
  ]) t.ok(r.lines.some((l) => want.test(l)), `${want}\n${r.slurm.join('\n')}`);
  t.ok(r.lines.some((l) => /^ok {4}launch {4}VM jobs' scripts start through \S+vtorque-slurm-run \(root's; they run in VM 0\)$/.test(l)), r.out);
  t.notOk(r.lines.some((l) => /^\S+ +(mom_priv|torque) /.test(l)), 'no mom_priv or torque line');
  t.notOk(r.lines.some((l) => /\[tools\] (qstat|pbsnodes) /.test(l)), "Torque's tools are not a Slurm node's");
  t.ok(r.lines.some((l) => /^ok {4}tools {5}\[tools\] scontrol \/usr\/bin\/scontrol: /.test(l)), r.out);
  t.equal(r.code, 0, r.out);
});

t.test('a node vtorque drained fails until doctor --clear resumes it; an operator-drained one is left alone', async (t) => {
  const drain = async (reason: string) => {
    const d = await wired.run('scontrol', ['update', `nodename=${wired.node}`, 'state=drain', `reason=${reason}`]);
    t.equal(d.code, 0, d.stderr);
  };
  await drain('vtorque: cannot create the job directory (job 7)');
  const before = doctor(wired);
  t.equal(before.code, 1);
  t.ok(before.slurm.some((l) => l.startsWith(`FAIL  slurm     node ${wired.node} is IDLE+DRAIN, drained by vtorque: vtorque: cannot create the job directory (job 7). Fix: fix the cause, then run: vtorque-prologue doctor --clear`)), before.slurm.join('\n'));
  const cleared = doctor(wired, '--clear');
  t.match(cleared.out, new RegExp(`^ok {4}clear {5}node ${wired.node} is resumed; our reason "vtorque: cannot create the job directory \\(job 7\\)" is cleared$`, 'm'));
  t.equal(cleared.code, 0, cleared.out);
  // "idle*" for a moment: slurmctld pings the resumed node before it calls it idle.
  const after = await wired.waitNode((n) => n.state === 'idle' || /drain/.test(n.state), 60_000);
  t.equal(after.state, 'idle', 'resumed');

  await drain('alice: firmware update');
  const op = doctor(wired, '--clear');
  t.ok(op.slurm.some((l) => l.startsWith(`WARN  slurm     node ${wired.node} is IDLE+DRAIN, with an operator's reason: alice: firmware update. Fix: an operator's drain is theirs to end`)), op.slurm.join('\n'));
  t.match(op.out, new RegExp(`^ok {4}clear {5}node ${wired.node} left as it is: its reason is not ours: "alice: firmware update"$`, 'm'));
  const still = await wired.nodeState();
  t.match(still.state, /drain/, 'still drained');
  t.equal(still.reason, 'alice: firmware update');
  await wired.resume();
});

t.test('missing PrologFlags=Alloc, no lua plugin and a short PrologEpilogTimeout fail, each with its fix', async (t) => {
  const bare = await Slurm.start({
    prolog: { path: bin('vtorque-slurm-prolog') }, epilog: { path: bin('vtorque-slurm-epilog') }, taskProlog: { path: bin('vtorque-task-prolog') },
    extraConf: ['PrologEpilogTimeout=60'],
  });
  t.teardown(() => bare.stop());
  const r = doctor(bare);
  t.equal(r.code, 1);
  const has = (re: RegExp) => t.ok(r.slurm.some((l) => re.test(l)), `${re}\n${r.slurm.join('\n')}`);
  has(/^FAIL {2}slurm {5}PrologFlags=\(unset\) lacks Alloc: a multi-node VM job's Prolog would run on its other nodes only at their first step.*\. Fix: add Alloc to PrologFlags in slurm\.conf/);
  has(/^FAIL {2}slurm {5}JobSubmitPlugins is unset, without lua: bad #VM requests are not refused at sbatch.*\. Fix: run install\.sh --slurm on the slurmctld host/);
  has(/^FAIL {2}slurm {5}PrologEpilogTimeout=60 s is below 270 s \(.*\): slurmd would kill a cold preparation and drain the node as "Prolog error"\. Fix: set PrologEpilogTimeout=270 in slurm\.conf/);
  has(/^ok {4}slurm {5}Prolog=/);
});

t.test('cache gc on a [batch] system = slurm node asks slurmctld which leased jobs it still has', async (t) => {
  const cache = (...args: string[]) => spawnSync(process.execPath, [BIN, '--config', ini, 'cache', ...args], {
    encoding: 'utf8', timeout: 120_000, env: { PATH: '/usr/bin:/bin', SLURM_CONF: wired.conf },
  });
  t.equal(cache('list').status, 0);
  const leases = join(root, 'cache', 'leases');
  const lease = (job: string) => writeFileSync(join(leases, `${job}.json`), JSON.stringify({ job, node: wired.node, digests: ['e'.repeat(64)], createdAt: new Date().toISOString() }) + '\n');
  // A job slurmctld holds (pending: --hold, so no Prolog runs), and one it never had.
  const dir = wired.userDir(NOBODY, 'gc');
  const held = await wired.sbatch(NOBODY, dir, ['--hold', '-o', join(dir, '%j.out'), '--wrap', 'true']);
  t.ok(held.jobId, held.stderr);
  lease(held.jobId!);
  lease('987654');
  const gc = cache('gc', '--json');
  t.equal(gc.status, 0, gc.stderr);
  const r = JSON.parse(gc.stdout);
  t.same(r.jobsGone, ['987654'], 'the job slurmctld does not know has ended');
  t.equal(r.qstatUnavailable, null, 'slurmctld answered');
  t.ok(existsSync(join(leases, `${held.jobId}.json`)), 'a job slurmctld still has keeps its lease');
  t.match(cache('gc').stdout, /^swept 0 stale leases$/m);
  lease('987655');
  t.match(cache('gc').stdout, /^swept 1 stale lease: 987655 \(ended according to scontrol: 987655\)$/m, 'said as scontrol, not qstat');
});
