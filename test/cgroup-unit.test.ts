// qemu joins the job's cgroup directory the engine names (core/engine.ts
// jobCgroup): Torque's torque/<jobid>, Slurm's slurm/uid_<uid>/job_<jobid>.
// Plain directories stand in for cgroup v1 mounts: cgroup.procs is then a
// file the pids are appended to, which is all joinJobCgroups writes.
import t from 'tap';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isJobCgroupPath, joinJobCgroups } from '../src/launch/cgroup.js';
import { torqueJobCgroup } from '../src/torque/engine.js';
import { slurmJobCgroup } from '../src/slurm/engine.js';

const work = mkdtempSync(join(tmpdir(), 'vt-cgroup-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** A fake hierarchy with the job's directory (and cgroup.procs) at `rel`. */
function hierarchy(name: string, rel: string): string {
  const mount = join(work, name);
  mkdirSync(join(mount, rel), { recursive: true });
  writeFileSync(join(mount, rel, 'cgroup.procs'), '');
  return mount;
}

t.test("each engine's directory: Torque's torque/<jobid>, Slurm's slurm/uid_<uid>/job_<jobid>", async (t) => {
  t.equal(torqueJobCgroup('12.head'), 'torque/12.head');
  t.equal(slurmJobCgroup('42', 1000), 'slurm/uid_1000/job_42');
  const tq = hierarchy('cpuacct-t', torqueJobCgroup('12.head'));
  const sl = hierarchy('memory-s', slurmJobCgroup('42', 1000));
  const a = joinJobCgroups(torqueJobCgroup('12.head'), [111, 222], [tq, sl]);
  t.same(a, { joined: [`${tq}/torque/12.head`], failed: [] }, "Torque's job joins where Torque made its directory, nowhere else");
  t.equal(readFileSync(`${tq}/torque/12.head/cgroup.procs`, 'utf8'), '111\n222\n', 'one pid per write');
  const b = joinJobCgroups(slurmJobCgroup('42', 1000), [333], [tq, sl]);
  t.same(b, { joined: [`${sl}/slurm/uid_1000/job_42`], failed: [] }, "Slurm's job joins its uid_/job_ directory");
  t.equal(readFileSync(`${sl}/slurm/uid_1000/job_42/cgroup.procs`, 'utf8'), '333\n');
});

t.test('a path that leaves the hierarchy, or a directory not root\'s or behind a link, is never joined', async (t) => {
  for (const bad of ['../x', 'torque/..', 'a//b', '/abs', '', 'torque/1 2', 'a/./b', 'torque/$(id)']) t.notOk(isJobCgroupPath(bad), JSON.stringify(bad));
  t.ok(isJobCgroupPath('torque/1[2].head'), 'an array job id');
  const outside = hierarchy('outside', 'job_7');
  const linked = join(work, 'linked');
  mkdirSync(join(linked, 'slurm'), { recursive: true });
  symlinkSync(outside, join(linked, 'slurm', 'uid_5'));
  t.same(joinJobCgroups('slurm/uid_5/job_7', [1], [linked]), { joined: [], failed: [] }, 'a link on the way is not followed');
  t.equal(readFileSync(join(outside, 'job_7', 'cgroup.procs'), 'utf8'), '', 'nothing written behind the link');
  const theirs = hierarchy('theirs', 'slurm/uid_9/job_8');
  chownSync(join(theirs, 'slurm/uid_9'), 65534, 65534);
  t.same(joinJobCgroups('slurm/uid_9/job_8', [1], [theirs]), { joined: [], failed: [] }, 'a directory on the way that is not root\'s is not used');
  t.same(joinJobCgroups('../outside/job_7', [1], [join(work, 'cpuacct-t')]), { joined: [], failed: [] }, '.. is refused before any look');
});
