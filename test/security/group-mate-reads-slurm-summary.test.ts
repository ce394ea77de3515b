// The Slurm Prolog's summary names the job's image (a user's private path
// included) and its VMs. On a site where every user shares one group (users),
// a file readable by the job's group is readable by everyone: only the job
// owner, whose TaskProlog prints it, may read it. The attacker here is another
// local user in the job's group, reading by the path they can guess.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { freshJobDirs, jobDirsOf, resolveOwner } from '../../src/cache/jobdir.js';
import { leaveSummary } from '../../src/slurm/hook.js';
import { NOBODY, REPO, type User } from '../harness/mom.js';
import { asUser } from '../harness/attacker.js';
import { ensureLaunchUser } from '../harness/launch-user.js';

ensureLaunchUser();
const root = mkdtempSync(join(tmpdir(), 'vt-summary-'));
chmodSync(root, 0o755);
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const jobDir = join(root, 'jobs');
const { config } = parseConfig(`[paths]\njob_dir = ${jobDir}\n`, 'summary-test.ini');
// daemon (uid 1) with the job owner's group: a group mate, neither root nor the owner.
const GROUP_MATE: User = { name: 'daemon', group: NOBODY.group, uid: 1, gid: NOBODY.gid };
const SECRET = '/home/nobody/private-builds/my-secret.qcow2';

t.test("only the job owner reads the summary: a user in the job's group does not, and the TaskProlog run as the owner prints it", async (t) => {
  const jobId = '4242';
  freshJobDirs(config, jobId, jobDirsOf(config, jobId, false), await resolveOwner(config));
  const errs: string[] = [];
  const io = { out: () => undefined, err: (s: string) => { errs.push(s); } };
  const said = [`vtorque: VM job ${jobId}: 1 VM of ${SECRET}\n`, 'a line that is not ours\n', 'vtorque: manifest: x\n'];
  await leaveSummary(config, jobId, { uid: NOBODY.uid, gid: NOBODY.gid }, said, io);
  t.same(errs, [], 'written');
  const path = join(jobDir, jobId, 'summary');
  const st = statSync(path);
  t.equal(st.uid, NOBODY.uid, "the job owner's");
  t.equal(st.mode & 0o7777, 0o400, `mode 0400 (is ${(st.mode & 0o7777).toString(8)})`);

  const read = asUser(`const fs = require('fs'); try { process.stdout.write(fs.readFileSync(process.argv[1], 'utf8')); } catch (e) { console.log(e.code); }`, [path], GROUP_MATE);
  t.equal(read.stdout.trim(), 'EACCES', 'a group mate cannot read it');
  t.notMatch(read.stdout, /secret/);
  const list = asUser(`const fs = require('fs'); try { console.log(fs.readdirSync(process.argv[1]).join(' ')); } catch (e) { console.log(e.code); }`, [join(jobDir, jobId)], GROUP_MATE);
  t.equal(list.stdout.trim(), 'EACCES', 'nor list the job directory');

  // The real TaskProlog, run as slurmd runs it: as the owner, for the batch step (no SLURM_STEP_ID).
  const taskProlog = join(root, 'vtorque-task-prolog');
  writeFileSync(taskProlog, readFileSync(join(REPO, 'conf/slurm/task-prolog'), 'utf8').replace(/^JOB_DIR=.*$/m, `JOB_DIR=${jobDir}`), { mode: 0o755 });
  chmodSync(taskProlog, 0o755);
  const run = (u: User) => spawnSync('/bin/sh', [taskProlog], { uid: u.uid, gid: u.gid, encoding: 'utf8', cwd: '/', timeout: 30_000, env: { PATH: '/usr/bin:/bin', SLURM_JOB_ID: jobId } });
  const owner = run(NOBODY);
  t.equal(owner.status, 0, owner.stderr);
  t.equal(owner.stdout, `print vtorque: VM job ${jobId}: 1 VM of ${SECRET}\nprint vtorque: manifest: x\n`, 'the owner\'s TaskProlog prints our lines, and only ours');
  const mate = run(GROUP_MATE);
  t.equal(mate.stdout, '', "a group mate's TaskProlog for that job id prints nothing");
});
