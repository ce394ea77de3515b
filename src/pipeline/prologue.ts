// The VM path of the prologue: request (and where the job's VMs go) ->
// authorised image -> verified and cached base -> overlays -> cloud-init seeds
// -> manifest -> summary. Each stage takes a plain value and returns one.
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import type { JobArgs, JobEnv } from '../torque/contract.js';
import type { ScanResult } from '../torque/directives.js';
import { EXIT_NODE_FAULT, EXIT_RUN, NodeFault, type ExitCode } from '../torque/exit.js';
import type { HookIO } from '../torque/hook.js';
import type { VmRequest } from '../request/resolve.js';
import type { Placement, PlacedVm } from '../request/placement.js';
import { placement, requestFromAttributes, requestFromScript, type JobRequest } from './request.js';
import { authoriseImage } from '../image/authorise.js';
import { warnedRules, type ImageReport } from '../image/verify.js';
import { acquireImage, type Acquired, type CachedBase } from '../cache/acquire.js';
import { freshJobDirs, jobDirsOf, ownFile, removeJobDirs, resolveOwner, type FileOwner, type JobDirs } from '../cache/jobdir.js';
import { layoutOf } from '../cache/layout.js';
import { removeLease } from '../cache/leases.js';
import { backingFor, overlayMaker, type Overlay } from '../cache/overlays.js';
import { jobAccount, seedShared, writeSeed, type SeedResult } from '../seed/index.js';
import { line } from '../report/user.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { jobLogger, shortHostname, startDeadline, type JobContext } from './context.js';
import { handleFailure } from './failure.js';
import { VERSION } from '../version.js';

export interface PrologueInput {
  args: JobArgs;
  env: JobEnv;
  config: Config;
  configWarnings: string[];
  /** undefined on a sister, which has no job script: the request then comes from qstat. */
  scan: ScanResult | undefined;
  scriptPath: string;
  forcedByQueue: boolean;
  io: HookIO;
}

export interface Manifest {
  version: 1;
  vtorque: string;
  job: {
    id: string; user: string; group: string; name: string; queue: string;
    /** The job's hosts in Torque's order, and every VM of the job (on every host), for the VM launcher's node file. */
    hosts: string[];
    vms: PlacedVm[];
  };
  node: string;
  /** This node's position in job.hosts. */
  position: number;
  createdAt: string;
  request: VmRequest;
  requestSource: JobRequest['source'];
  image: {
    name: string;
    path: string;
    sha256: string;
    format: string;
    virtualSize: number;
    family?: string;
    inspected?: { distro: string; arch: string; product: string };
    verdictFromCache: boolean;
  };
  /** The cached base every overlay is backed by. */
  base: CachedBase & { ingested: boolean; ramdiskCopy?: string };
  vms: {
    index: number; jobIndex: number; hostname: string; dir: string; overlay: string; format: 'qcow2'; backing: string; baseDigest: string;
    /** The NoCloud seed: the medium to attach (iso, vfat), or the overlay itself (inject); the NIC's MAC the guest's network-config expects. */
    seed: { media: SeedResult['media']; path: string; instanceId: string; network?: SeedResult['network'] };
  }[];
}

export async function prepareVmJob(input: PrologueInput): Promise<ExitCode> {
  const { args, config, io } = input;
  const log = jobLogger(config, args.kind, args.jobId, io);
  const t0 = performance.now();
  const deadline = startDeadline(config.timeouts.total, () => {
    log.child({ stage: 'deadline' }).fatal({ seconds: config.timeouts.total }, 'deadline passed and the run did not stop: exiting');
    io.err(line(`node ${shortHostname()} did not prepare job ${args.jobId} within ${config.timeouts.total} s; the job goes back to the queue`) + '\n');
    process.exit(EXIT_NODE_FAULT);
  });
  const ctx: JobContext = { args, env: input.env, config, node: shortHostname(), log, io, signal: deadline.signal };
  try {
    const clog = log.child({ stage: 'config' });
    for (const w of input.configWarnings) clog.warn(w);
    const rlog = log.child({ stage: 'request' });
    const jr = input.scan ? await requestFromScript(ctx, input.scan, input.forcedByQueue) : await requestFromAttributes(ctx, input.forcedByQueue);
    if (!jr) {
      io.out('vtorque: not a VM job (no job script on this sister; the job\'s variables ask for no VMs)\n');
      return EXIT_RUN;
    }
    const resolved = jr.request;
    const place = placement(ctx, jr);
    rlog.info({ request: resolved, source: jr.source, position: place.position, hosts: place.hosts.length }, 'request resolved');

    // Independent of the image: run them while it is prepared.
    const shared = seedShared();
    const ownerP = resolveOwner(config, ctx.signal);
    ownerP.catch(() => undefined);
    jobAccount(shared, config, args.user, args.group, ctx.signal).catch(() => undefined);
    jr.crossCheck?.catch(() => undefined);
    const acquired = await checkImage(ctx, resolved);
    const report = acquired.report;
    // A job that named no distro for a non-default image gets the one the image holds.
    const request: VmRequest = resolved.distro === null && report.family
      ? Object.freeze({ ...resolved, family: report.family, sources: Object.freeze({ ...resolved.sources, distro: 'image' as const }) })
      : resolved;

    // Per VM: its overlay, then its seed; the VMs side by side, so one VM's
    // qemu-img runs while another's seed medium is made.
    const vlog = log.child({ stage: 'vms' });
    const owner = await ownerP;
    const dirs = jobDirsOf(config, args.jobId, request.fs_type === 'ramdisk');
    freshJobDirs(config, args.jobId, dirs, owner);
    const v0 = performance.now();
    const makeOverlay = overlayMaker({ config, base: acquired.base, dirs, owner, signal: ctx.signal }, backingFor({ base: acquired.base, dirs, owner }));
    const mine = place.vms.filter((v) => v.host === place.hosts[place.position]);
    const made = await Promise.all(mine.map(async (vm) => {
      const overlay = await makeOverlay(vm.index);
      const seed = await writeSeed({
        config, node: place.hosts[place.position]!, request, owner, shared, signal: ctx.signal,
        job: { id: args.jobId, user: args.user, group: args.group, name: args.jobName, workdir: input.env.workdir, nodefile: input.env.nodefile },
        vm: { index: vm.index, count: mine.length, jobIndex: vm.jobIndex },
        family: request.family ?? report.family ?? 'debian',
        dir: overlay.path.slice(0, overlay.path.lastIndexOf('/')),
        overlay: overlay.path,
      });
      return { overlay, seed };
    }));
    const overlays = made.map((m) => m.overlay);
    const seeds = made.map((m) => m.seed);
    vlog.info({ count: made.length, base: acquired.base.path, ramdisk: dirs.ramdisk, media: config.seed.media, instanceIds: seeds.map((x) => x.instanceId), ms: Math.round(performance.now() - v0) }, 'overlays and seeds made');
    for (const n of new Set(seeds.flatMap((x) => x.notes))) io.out(line(`note: ${n}`) + '\n');

    await jr.crossCheck;
    const manifestPath = writeManifest(ctx, { ...jr, request }, place, acquired, dirs, overlays, seeds, owner);
    log.child({ stage: 'manifest' }).info({ path: manifestPath, ms: Math.round(performance.now() - t0) }, 'job prepared');
    for (const l of summary(args.jobId, request, manifestPath, acquired, seeds)) io.out(line(l) + '\n');
    return EXIT_RUN;
  } catch (e) {
    // A job that does not start holds no image and leaves no half-made VM files;
    // a requeued one gets everything afresh at its next start.
    try {
      removeJobDirs(config, args.jobId);
      removeLease(layoutOf(config), args.jobId);
    } catch (ce) {
      log.child({ stage: 'cleanup' }).warn({ err: String((ce as Error).message) }, 'could not remove the job files after the failure');
    }
    return await handleFailure(e, { kind: args.kind, args, env: input.env, config, io, log, source: input.scriptPath });
  } finally {
    deadline.stop();
  }
}

async function checkImage(ctx: JobContext, request: VmRequest): Promise<Acquired> {
  const ilog = ctx.log.child({ stage: 'image' });
  let ownerUid: number | undefined;
  if (request.img.startsWith('/') && ctx.config.policy.allow_user_images) {
    const { lookupOwner } = await import('../report/deliver.js');
    ownerUid = (await lookupOwner(ctx.config, ctx.args.user, ctx.args.group)).uid;
  }
  const img = await authoriseImage({ img: request.img, config: ctx.config, ownerUid });
  const t0 = performance.now();
  const a = await acquireImage({ config: ctx.config, img, want: { distro: request.distro, arch: request.arch }, job: ctx.args.jobId, node: ctx.node, signal: ctx.signal, log: ilog });
  const r = a.report;
  ilog.info({ image: img.path, sha256: r.digest, base: a.base.path, ingested: a.ingested, verified: a.verified, fromCache: !a.verified, hashed: a.hashed, ms: Math.round(performance.now() - t0), rules: r.rules.filter((x) => !x.ok).map((x) => x.id) }, 'image ready');
  for (const w of warnedRules(r)) ctx.io.out(line(`warning: image ${img.name} fails ${w.id}: ${w.message}${w.fix ? `. Fix: ${w.fix}` : ''}`) + '\n');
  return a;
}

function writeManifest(ctx: JobContext, jr: JobRequest, place: Placement, a: Acquired, dirs: JobDirs, overlays: Overlay[], seeds: SeedResult[], owner: FileOwner): string {
  const report: ImageReport = a.report;
  const request = jr.request;
  const mine = place.vms.filter((v) => v.host === place.hosts[place.position]);
  const path = `${dirs.dir}/manifest.json`;
  try {
    const m: Manifest = {
      version: 1,
      vtorque: VERSION,
      job: { id: ctx.args.jobId, user: ctx.args.user, group: ctx.args.group, name: ctx.args.jobName, queue: ctx.args.queue, hosts: place.hosts, vms: place.vms },
      node: ctx.node,
      position: place.position,
      createdAt: new Date().toISOString(),
      request,
      requestSource: jr.source,
      image: {
        name: report.image.name,
        path: report.image.path,
        sha256: report.digest,
        format: report.verdict.format.format,
        virtualSize: report.verdict.format.virtualSize,
        family: report.family,
        inspected: report.verdict.facts.os ? { distro: report.verdict.facts.os.distro, arch: report.verdict.facts.os.arch, product: report.verdict.facts.os.product } : undefined,
        verdictFromCache: report.fromCache,
      },
      base: { ...a.base, ingested: a.ingested, ramdiskCopy: dirs.ramdisk ? overlays[0]?.backing : undefined },
      vms: overlays.map((o) => ({
        index: o.index, jobIndex: mine[o.index]!.jobIndex, hostname: mine[o.index]!.hostname,
        dir: o.path.slice(0, o.path.lastIndexOf('/')), overlay: o.path, format: 'qcow2' as const, backing: o.backing, baseDigest: a.base.digest,
        seed: { media: seeds[o.index]!.media, path: seeds[o.index]!.path, instanceId: seeds[o.index]!.instanceId, network: seeds[o.index]!.network },
      })),
    };
    // Written as root, then handed to [jobfiles] owner (root or the launch account; never the job owner).
    writeFileAtomic(path, JSON.stringify(m, null, 2) + '\n', 0o600);
    ownFile(path, owner);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot write the job manifest in ${dirs.dir} (${code})`, [
      { id: 'job-dir', where: dirs.dir, message: `cannot be written: ${code}`, fix: 'check [paths] job_dir: it must exist or be creatable by root, with free space' },
    ]);
  }
  return path;
}

function summary(jobId: string, r: VmRequest, manifest: string, a: Acquired, seeds: SeedResult[]): string[] {
  const img = a.report;
  const distro = r.distro ?? r.family ?? 'distro from the image';
  const os = img.verdict.facts.os ? `${img.verdict.facts.os.distro} ${img.verdict.facts.os.major}` : img.family ?? 'unknown OS';
  return [
    `image ${img.image.name}: ${img.verdict.format.format}, ${os}, sha256 ${img.digest.slice(0, 12)}; meets the guest image requirements${img.fromCache ? ' (verdict cached)' : ''}`,
    `VM job ${jobId}: ${r.vms_per_node} VM${r.vms_per_node > 1 ? 's' : ''} of ${r.img} (${distro}, ${r.arch}), ${r.vcpus} vCPU${r.vcpus > 1 ? 's' : ''} and ${formatSize(r.ram)} RAM each, disks on ${r.fs_type}`,
    `disks: ${r.vms_per_node} copy-on-write overlay${r.vms_per_node > 1 ? 's' : ''} on the node's cached copy (${a.ingested ? 'copied into the cache for this job' : 'already cached'})`,
    `cloud-init: ${seeds.map((x) => x.hostname).join(', ')} (NoCloud seed${seeds.length > 1 ? 's' : ''} on ${seeds[0]?.media === 'inject' ? 'their disks' : `${seeds[0]?.media} media`})`,
    `manifest: ${manifest}`,
  ];
}
