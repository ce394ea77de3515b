// qemu in the job's cgroups, so Torque's limits and accounting reach the VMs.
//
// Torque 6.1 (src/resmom/trq_cgroups.c) makes a job's cgroups as
// <mount>/torque/<jobid>/ in each cgroup v1 hierarchy it uses (cpuset, cpuacct,
// memory, devices; it finds the mounts in /proc/mounts). On Mother Superior
// the prologue already runs inside them: TMomFinalizeChild
// (src/resmom/start_exec.c) adds itself to the job's cgroups before
// setup_batch_job runs the prologue, and run_pelog's fork inherits them. On a
// sister, prologue.parallel runs from pbs_mom's main process
// (src/resmom/mom_comm.c), outside them. So qemu is put there explicitly, in
// every v1 hierarchy that has the job's directory; where Torque has none (no
// cgroups configured, or cgroup v2 only), nothing is done.
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

/**
 * Moves each pid into <mount>/torque/<jobId>/cgroup.procs of every v1
 * hierarchy where Torque made that directory (root-owned, a directory, not a
 * link: cgroupfs is root's, but the check costs nothing). Returns the
 * hierarchies joined. A write that fails (a cpuset with no cpus yet, say) is
 * reported, not fatal: the job still runs, and its teardown does not depend
 * on cgroups.
 */
export function joinJobCgroups(jobId: string, pids: readonly number[], mounts = cgroupV1Mounts()): { joined: string[]; failed: { dir: string; error: string }[] } {
  const joined: string[] = [];
  const failed: { dir: string; error: string }[] = [];
  if (!/^[A-Za-z0-9._\[\]-]+$/.test(jobId)) return { joined, failed };
  for (const mount of mounts) {
    const dir = `${mount}/torque/${jobId}`;
    try {
      const st = lstatSync(dir);
      if (!st.isDirectory() || st.uid !== 0) continue;
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
