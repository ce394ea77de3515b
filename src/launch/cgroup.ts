// qemu in the job's cgroups, so the batch system's limits and accounting
// reach the VMs.
//
// A batch system with cgroup v1 support makes a job's cgroups in a directory
// of its own in each hierarchy it uses (the engine's jobCgroup, core/engine.ts):
// Torque 6.1 (src/resmom/trq_cgroups.c) <mount>/torque/<jobid>/ in cpuset,
// cpuacct, memory and devices, found in /proc/mounts; Slurm's cgroup/v1
// plugin <mount>/slurm/uid_<uid>/job_<jobid>/. On Torque's Mother Superior
// the prologue already runs inside them: TMomFinalizeChild
// (src/resmom/start_exec.c) adds itself to the job's cgroups before
// setup_batch_job runs the prologue, and run_pelog's fork inherits them. On a
// sister, prologue.parallel runs from pbs_mom's main process
// (src/resmom/mom_comm.c), outside them; slurmd runs its Prolog outside the
// job's cgroups everywhere. So qemu is put there explicitly, in every v1
// hierarchy that has the job's directory; where there is none (no cgroups
// configured, or cgroup v2 only), nothing is done.
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, writeSync } from 'node:fs';

/** Mount points of the cgroup v1 hierarchies, from /proc/self/mountinfo (fstype after the " - "). */
export function cgroupV1Mounts(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const out: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right || right.split(' ')[0] !== 'cgroup') continue;
    // Octal escapes (\040 for a blank) as the kernel writes them.
    const mount = left.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mount?.startsWith('/')) out.push(mount);
  }
  return out;
}

/** A relative cgroup path of plain names (no '.', '..', empty or odd component): what may be joined to a mount point. */
const COMPONENT = /^[A-Za-z0-9._\[\]-]+$/;
export function isJobCgroupPath(rel: string): boolean {
  const parts = rel.split('/');
  return parts.length <= 8 && parts.every((p) => COMPONENT.test(p) && p !== '.' && p !== '..');
}

/** Every directory from the mount down to the job's: each a directory of root's, none a link. */
function rootDirs(mount: string, rel: string): boolean {
  let dir = mount;
  for (const p of rel.split('/')) {
    dir = `${dir}/${p}`;
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (!st || !st.isDirectory() || st.uid !== 0) return false;
  }
  return true;
}

/**
 * Moves each pid into <mount>/<jobCgroup>/cgroup.procs of every v1 hierarchy
 * where the batch system made that directory (`jobCgroup`: the engine's
 * relative path; root-owned, directories, no link on the way: cgroupfs is
 * root's, but the check costs nothing). Returns the
 * hierarchies joined. A write that fails (a cpuset with no cpus yet, say) is
 * reported, not fatal: the job still runs, and its teardown does not depend
 * on cgroups.
 */
export function joinJobCgroups(jobCgroup: string, pids: readonly number[], mounts = cgroupV1Mounts()): { joined: string[]; failed: { dir: string; error: string }[] } {
  const joined: string[] = [];
  const failed: { dir: string; error: string }[] = [];
  if (!isJobCgroupPath(jobCgroup)) return { joined, failed };
  for (const mount of mounts) {
    const dir = `${mount}/${jobCgroup}`;
    try {
      if (!rootDirs(mount, jobCgroup)) continue;
    } catch {
      continue;
    }
    try {
      const fd = openSync(`${dir}/cgroup.procs`, constants.O_WRONLY | constants.O_NOFOLLOW);
      try {
        if (fstatSync(fd).uid !== 0) throw new Error('cgroup.procs is not root\'s');
        // One pid per write(2): that is how cgroupfs takes them.
        for (const pid of pids) writeSync(fd, `${pid}\n`);
      } finally {
        closeSync(fd);
      }
      joined.push(dir);
    } catch (e) {
      failed.push({ dir, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message });
    }
  }
  return { joined, failed };
}

/**
 * The first line of <mount>/<jobCgroup>/<file> in the first v1 hierarchy that
 * has it (memory.limit_in_bytes in the memory hierarchy, cpuset.cpus in the
 * cpuset one), with the directory it came from; undefined where the batch
 * system made no such cgroup. The same checks as joinJobCgroups: plain names,
 * root's directories, no link.
 */
export function readJobCgroup(jobCgroup: string, file: string, mounts = cgroupV1Mounts()): { value: string; dir: string } | undefined {
  if (!isJobCgroupPath(jobCgroup) || !COMPONENT.test(file)) return undefined;
  for (const mount of mounts) {
    const dir = `${mount}/${jobCgroup}`;
    try {
      if (!rootDirs(mount, jobCgroup)) continue;
      const fd = openSync(`${dir}/${file}`, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        return { value: readFileSync(fd, 'utf8').split('\n')[0]!.trim(), dir };
      } finally {
        closeSync(fd);
      }
    } catch {
      continue;
    }
  }
  return undefined;
}
