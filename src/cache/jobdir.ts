// The per-job files on this node: <job_dir>/<jobid>/ (overlays, seeds,
// manifest.json) and, for fs_type=ramdisk, <ramdisk_dir>/<jobid>/ (a base copy
// and the overlays). They belong to root or to the account that will launch
// the VMs ([jobfiles]), never to the job owner: a user who could write their
// VM's seed, disk or manifest would be root in the VM, and root there is root
// against the cluster's NFS exports. (One file is the owner's: the Slurm
// Prolog's summary, which only their TaskProlog reads; slurm/hook.ts.) Every directory on the way is verified
// root's alone first (src/tools/safedir.ts), so nothing a user made or can
// swap is followed, chowned or removed.
import type { Config } from '../config/schema.js';
import { NodeFault, isVtorqueError } from '../core/errors.js';
import { groupOf, passwdOf } from '../tools/nss.js';
import { ensureRootDir, freshDir, ownDir as ownDirFd, ownFile as ownFileFd, removeIn } from '../tools/safedir.js';
import { untrustedPath } from '../tools/trust.js';
import { clearRunDir, stopJobVms, type LaunchAccount } from '../launch/qemu.js';

export interface FileOwner {
  uid: number;
  gid: number;
  fileMode: number;
  dirMode: number;
}

export interface JobDirs {
  /** <job_dir>/<jobid> */
  dir: string;
  /** <ramdisk_dir>/<jobid>, when the job's disks live in RAM. */
  ramdisk?: string;
}

export const jobDirsOf = (config: Config, jobId: string, ramdisk: boolean): JobDirs => ({
  dir: `${config.paths.job_dir}/${jobId}`,
  ramdisk: ramdisk ? `${config.paths.ramdisk_dir}/${jobId}` : undefined,
});

async function idOf(config: Config, db: 'passwd' | 'group', name: string, signal?: AbortSignal): Promise<number> {
  const id = db === 'passwd' ? (await passwdOf(config, name, signal))?.uid : (await groupOf(config, name, signal))?.gid;
  if (id === undefined) {
    throw new NodeFault(`${db === 'passwd' ? 'user' : 'group'} ${name} is not known on this node`, [
      { id: 'jobfiles-owner', where: `getent ${db} ${name}`, message: 'found nothing', fix: `check [jobfiles] ${db === 'passwd' ? 'owner' : 'group'} and the node's NSS (LDAP/SSSD)` },
    ]);
  }
  return id;
}

/** [jobfiles] owner and group as ids: root (no lookup), or the account named. */
export async function resolveOwner(config: Config, signal?: AbortSignal): Promise<FileOwner> {
  const { owner, group, file_mode: fileMode, dir_mode: dirMode } = config.jobfiles;
  const [uid, gid] = await Promise.all([
    owner === 'root' ? 0 : idOf(config, 'passwd', owner, signal),
    group === 'root' ? 0 : idOf(config, 'group', group, signal),
  ]);
  return { uid, gid, fileMode, dirMode };
}

const jobDirFault = (dir: string, e: unknown) => {
  if (isVtorqueError(e)) return e;
  const code = (e as NodeJS.ErrnoException).code ?? String(e);
  return new NodeFault(`cannot create the job directory ${dir} (${code})`, [
    { id: 'job-dir', where: dir, message: `cannot be created: ${code}`, fix: 'check [paths] job_dir and ramdisk_dir: they must be creatable by root, with free space' },
  ], { cause: e });
};

/** Makes sure [paths] job_dir is root's alone (made if missing), with the job-dir fault freshJobDirs gives. */
export function ensureJobDirRoot(config: Config): void {
  try {
    ensureRootDir(config.paths.job_dir, 0o755, '[paths] job_dir');
  } catch (e) {
    throw jobDirFault(config.paths.job_dir, e);
  }
}

/** Removes what an earlier start of this job left (a requeue), then makes the directories afresh. */
export function freshJobDirs(config: Config, jobId: string, d: JobDirs, o: FileOwner): void {
  const parents: [string, string | undefined, string][] = [
    [config.paths.job_dir, d.dir, '[paths] job_dir'],
    [config.paths.ramdisk_dir, d.ramdisk, '[paths] ramdisk_dir'],
  ];
  for (const [parent, dir, what] of parents) {
    if (!dir) continue;
    try {
      // 0755: the launch account must reach its job's directory; the job directory itself is dirMode.
      ensureRootDir(parent, 0o755, what);
      // <job_dir>/<jobid> also lets others traverse (never list): the job owner's starter connects to vm-<n>.agent there.
      freshDir(parent, jobId, { gid: o.gid, mode: dir === d.dir ? o.dirMode | 0o001 : o.dirMode });
    } catch (e) {
      throw jobDirFault(dir, e);
    }
  }
}

export function ownDir(dir: string, o: FileOwner): void {
  ownDirFd(dir, { gid: o.gid, mode: o.dirMode });
}

export function ownFile(path: string, o: FileOwner): void {
  ownFileFd(path, { uid: o.uid, gid: o.gid, mode: o.fileMode });
}

/**
 * Removes a job's files on this node; returns the directories that existed
 * and were removed, and those left alone because a directory above them is
 * not root's alone (doctor reports that).
 */
export function removeJobDirs(config: Config, jobId: string, keepJobDir = false): { removed: string[]; refused: string[] } {
  const removed: string[] = [];
  const refused: string[] = keepJobDir ? [`${config.paths.job_dir}/${jobId}`] : [];
  for (const parent of keepJobDir ? [config.paths.ramdisk_dir] : [config.paths.job_dir, config.paths.ramdisk_dir]) {
    const r = removeIn(parent, jobId);
    if (r === 'removed') removed.push(`${parent}/${jobId}`);
    if (r === 'untrusted') refused.push(`${parent}/${jobId}`);
  }
  return { removed, refused };
}

/**
 * Stops the job's VMs on this node (ACPI power-off, graceSeconds, then
 * SIGKILL) and empties run/ as the launch account, so that what is left is
 * root's alone and removeJobDirs may delete it. cleared false: run/ is still
 * there (or the job directory is not root's alone) and must not be removed
 * recursively as root.
 */
export async function stopJobRun(config: Config, jobId: string, account: LaunchAccount, graceSeconds: number, signal?: AbortSignal): Promise<{ cleared: boolean; powered: number; killed: number }> {
  const dir = `${config.paths.job_dir}/${jobId}`;
  let why: string | undefined;
  try {
    why = untrustedPath(dir);
  } catch {
    return { cleared: true, powered: 0, killed: 0 }; // no job directory: nothing runs from it
  }
  if (why) return { cleared: false, powered: 0, killed: 0 };
  const stopped = await stopJobVms(config, dir, account, graceSeconds);
  return { cleared: await clearRunDir(config, dir, account, signal), ...stopped };
}
