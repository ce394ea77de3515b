// cloud-init NoCloud seeds, one per VM: meta-data, user-data and
// network-config, written to the medium [seed] media names. The prologue
// calls these two functions once per VM, after the overlays exist:
//
//   renderSeed(input: SeedInput): Promise<RenderedSeed>
//     The three documents, as text. Looks the owner up with getent, reads
//     their SSH keys and #VM metadata= file as them, and runs [seed]
//     network_command for network = static (skipped when dryRun). Writes
//     nothing. Throws JobFault (exit 1) for what the job can fix (metadata
//     refused, a name that cannot live in a VM), NodeFault (exit 2) otherwise.
//
//   writeSeed(input: SeedInput): Promise<SeedResult>
//     renderSeed, then the medium: <dir>/seed.iso (iso), <dir>/seed.img
//     (vfat), or the files injected into <overlay> (inject). Owned by
//     input.owner (uid, gid, fileMode: the seed holds user data, keep it 0600),
//     written under a temporary name and renamed, so no half-made seed is ever
//     visible. Record SeedResult.path and .network (the NIC's MAC, and the
//     address for network = static) in manifest.json: the launcher must give
//     the VM's NIC that MAC, or the guest's network-config matches nothing.
//
// Pass one seedShared() object as input.shared to all VMs of a job: the
// owner's NSS entry, key files and metadata= file are then read once, not
// once per VM (each read as the user costs a process start).
//
// Each VM gets a fresh instance-id (job id, VM index, a random nonce), so a
// requeued job's VMs run cloud-init's first-boot modules again.
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import type { FileOwner } from '../cache/jobdir.js';
import { ownFile } from '../cache/jobdir.js';
import type { VmRequest } from '../request/resolve.js';
import type { BatchSystem } from '../core/engine.js';
import { NodeFault } from '../core/errors.js';
import { fsyncDir, fsyncFile, tmpNameFor } from '../tools/atomic.js';
import { withStaging, type SeedFiles } from './files.js';
import { injectSeed } from './media/inject.js';
import { makeIso } from './media/iso.js';
import { makeVfat } from './media/vfat.js';
import type { VmNic } from './network.js';
import { renderDocuments } from './render.js';

/** What the seed needs of the batch system (core/engine.ts): the job's variables in the guest, and its words for messages. */
export type SeedBatch = Pick<BatchSystem, 'guestVars' | 'terms'>;

export interface SeedInput {
  config: Config;
  batch: SeedBatch;
  job: { id: string; user: string; group: string; name: string; workdir?: string };
  /** This node's short host name; the guest is v<node>[-<index>]. */
  node: string;
  /** index on this node, VMs on this node, index unique across the whole job. */
  vm: { index: number; count: number; jobIndex: number };
  /**
   * Host names of every VM of the job, in job order (src/request/placement.ts
   * vms): the guest's node file and job variables (SeedBatch guestVars). Default: this node's VMs.
   */
  vmHostnames?: readonly string[];
  family: 'debian' | 'redhat' | 'osv';
  /** src/request/resolve.ts; distro goes into DISTRO, metadata= is read as the user. */
  request: VmRequest;
  /** src/cache/jobdir.ts: uid/gid/fileMode for the seed file. */
  owner: FileOwner;
  /** Root-owned per-VM directory the medium goes into. */
  dir: string;
  /** The VM's qcow2 overlay (media = inject writes into it). */
  overlay: string;
  signal?: AbortSignal;
  /** Part of the instance-id; default 8 random hex digits. Give one for reproducible output. */
  nonce?: string;
  /** check --render: do not run [seed] network_command; show a documentation address instead. */
  dryRun?: boolean;
  /** One per job (seedShared()), so what is the same for every VM is looked up once. */
  shared?: SeedShared;
}

/** Per-job memo of lookups that do not depend on the VM. */
export interface SeedShared {
  readonly memo: Map<string, Promise<unknown>>;
}

export { jobAccount } from './account.js';

export function seedShared(): SeedShared {
  return { memo: new Map() };
}

export interface RenderedSeed {
  metaData: string;
  userData: string;
  /** undefined for OSv, which reads no network-config. */
  networkConfig: string | undefined;
  instanceId: string;
  hostname: string;
  /** For the job output: things left out (GECOS, unreadable key files). */
  notes: string[];
  /** The MAC the launcher must give the VM's NIC (dhcp, static), and the address (static); none for network = none and OSv. */
  network?: VmNic;
}

export interface SeedResult {
  media: 'iso' | 'vfat' | 'inject';
  /** The medium, or for inject the overlay that now holds the seed. */
  path: string;
  instanceId: string;
  hostname: string;
  notes: string[];
  /** Record in manifest.json: the launcher must use this MAC for the VM's NIC. */
  network?: VmNic;
}

export function renderSeed(input: SeedInput): Promise<RenderedSeed> {
  return renderDocuments({ ...input, nonce: input.nonce ?? randomBytes(4).toString('hex') });
}

export async function writeSeed(input: SeedInput): Promise<SeedResult> {
  const r = await renderSeed(input);
  const files: SeedFiles = { 'meta-data': r.metaData, 'user-data': r.userData };
  if (r.networkConfig !== undefined) files['network-config'] = r.networkConfig;
  const media = input.config.seed.media;
  const base = { media, instanceId: r.instanceId, hostname: r.hostname, notes: r.notes, network: r.network };
  try {
    return await withStaging(input.dir, files, async (staging) => {
      if (media === 'inject') {
        await injectSeed(input.config, staging, files, input.overlay, input.signal);
        return { ...base, path: input.overlay };
      }
      const path = `${input.dir}/${media === 'iso' ? 'seed.iso' : 'seed.img'}`;
      const tmp = tmpNameFor(path);
      try {
        if (media === 'iso') await makeIso(input.config, staging, files, tmp, input.signal);
        else await makeVfat(input.config, staging, files, tmp, input.signal);
        ownFile(tmp, input.owner);
        fsyncFile(tmp);
        renameSync(tmp, path);
        fsyncDir(input.dir);
      } finally {
        rmSync(tmp, { force: true });
      }
      return { ...base, path };
    });
  } catch (e) {
    if (e instanceof Error && 'vtorqueFault' in e) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot write the cloud-init seed in ${input.dir} (${code})`, [
      { id: 'seed-write', where: input.dir, message: `cannot be written: ${code}`, fix: 'check [paths] job_dir: it must be writable by root, with free space' },
    ], { cause: e });
  }
}
