// The per-job files on this node: <job_dir>/<jobid>/ (overlays, seeds,
// manifest.json) and, for fs_type=ramdisk, <ramdisk_dir>/<jobid>/ (a base copy
// and the overlays). Directories stay root-owned, so a job owner who may write
// the files still cannot swap a directory for a symlink under our feet; files
// get [jobfiles] owner, group and mode, so the VM launcher can open them.
import { chmodSync, chownSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { NodeFault } from '../torque/exit.js';
import { runTool } from '../tools/run.js';

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

async function getentId(config: Config, db: 'passwd' | 'group', name: string): Promise<number> {
  const r = await runTool(config.tools.getent, [db, '--', name], { timeout: 10_000, toolKey: 'getent', okExitCodes: [2] });
  const f = r.stdout.trim().split('\n')[0]?.split(':') ?? [];
  if (r.exitCode !== 0 || !/^[0-9]+$/.test(f[2] ?? '')) {
    throw new NodeFault(`${db === 'passwd' ? 'user' : 'group'} ${name} is not known on this node`, [
      { id: 'jobfiles-owner', where: `getent ${db} ${name}`, message: 'found nothing', fix: `check [jobfiles] ${db === 'passwd' ? 'owner' : 'group'} and the node's NSS (LDAP/SSSD)` },
    ]);
  }
  return Number(f[2]);
}

/**
 * [jobfiles] owner and group as ids: root, job (the job's user and group from
 * Torque), or a name. jobIds, when given, answers for "job" (the prologue has
 * the owner's NSS entry already, for the seeds), saving two getent runs.
 */
export async function resolveOwner(config: Config, user: string, group: string, jobIds?: () => Promise<{ uid: number; gid: number }>): Promise<FileOwner> {
  const { owner, group: grp, file_mode: fileMode, dir_mode: dirMode } = config.jobfiles;
  const job = jobIds && (owner === 'job' || grp === 'job') ? await jobIds() : undefined;
  const uid = owner === 'root' ? 0 : owner === 'job' && job ? job.uid : await getentId(config, 'passwd', owner === 'job' ? user : owner);
  const gid = grp === 'root' ? 0 : grp === 'job' && job ? job.gid : await getentId(config, 'group', grp === 'job' ? group : grp);
  return { uid, gid, fileMode, dirMode };
}

/** Removes what an earlier start of this job left (a requeue), then makes the directories afresh. */
export function freshJobDirs(d: JobDirs, o: FileOwner): void {
  for (const dir of [d.dir, d.ramdisk]) {
    if (!dir) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      ownDir(dir, o);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      throw new NodeFault(`cannot create the job directory ${dir} (${code})`, [
        { id: 'job-dir', where: dir, message: `cannot be created: ${code}`, fix: 'check [paths] job_dir and ramdisk_dir: they must be creatable by root, with free space' },
      ]);
    }
  }
}

export function ownDir(dir: string, o: FileOwner): void {
  chownSync(dir, 0, o.gid);
  chmodSync(dir, o.dirMode);
}

export function ownFile(path: string, o: FileOwner): void {
  // lchown/chmod on a path root just created inside a root-owned directory: nothing to follow.
  if (!lstatSync(path).isFile()) throw new Error(`${path} is not a regular file`);
  chownSync(path, o.uid, o.gid);
  chmodSync(path, o.fileMode);
}

/** Removes a job's files on this node; returns the directories that existed. */
export function removeJobDirs(config: Config, jobId: string): string[] {
  const removed: string[] = [];
  for (const dir of [`${config.paths.job_dir}/${jobId}`, `${config.paths.ramdisk_dir}/${jobId}`]) {
    try {
      lstatSync(dir);
    } catch {
      continue;
    }
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
