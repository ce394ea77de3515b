// The VM path of the prologue: request -> authorised, verified image ->
// (cache, seeds: later stages) -> manifest -> summary. Each stage takes a plain value and returns one.
import { mkdirSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import type { JobArgs, JobEnv } from '../torque/contract.js';
import type { ScanResult } from '../torque/directives.js';
import { EXIT_NODE_FAULT, EXIT_RUN, JobFault, NodeFault, type ExitCode } from '../torque/exit.js';
import type { HookIO } from '../torque/hook.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { authoriseImage } from '../image/authorise.js';
import { failedRules, verifyImages, warnedRules, type ImageReport } from '../image/verify.js';
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
  scan: ScanResult | undefined;
  scriptPath: string;
  forcedByQueue: boolean;
  io: HookIO;
}

export interface Manifest {
  version: 1;
  vtorque: string;
  job: { id: string; user: string; group: string; name: string; queue: string };
  node: string;
  createdAt: string;
  request: VmRequest;
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
  vms: { index: number }[];
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
    const scan = input.scan ?? { directives: [], problems: [], notes: [], vmLines: 0 };
    for (const n of scan.notes) io.out(line(n) + '\n');
    rlog.info({ vmLines: scan.vmLines, forcedByQueue: input.forcedByQueue }, 'VM job');
    const resolved = resolveScanned(scan, config, input.forcedByQueue);
    rlog.info({ request: resolved }, 'request resolved');

    const report = await checkImage(ctx, resolved);
    // A job that named no distro for a non-default image gets the one the image holds.
    const request: VmRequest = resolved.distro === null && report.family
      ? Object.freeze({ ...resolved, family: report.family, sources: Object.freeze({ ...resolved.sources, distro: 'image' as const }) })
      : resolved;

    const manifestPath = writeManifest(ctx, request, report);
    log.child({ stage: 'manifest' }).info({ path: manifestPath, ms: Math.round(performance.now() - t0) }, 'job prepared');
    for (const l of summary(args.jobId, request, manifestPath, report)) io.out(line(l) + '\n');
    return EXIT_RUN;
  } catch (e) {
    return await handleFailure(e, { kind: args.kind, args, env: input.env, config, io, log, source: input.scriptPath });
  } finally {
    deadline.stop();
  }
}

async function checkImage(ctx: JobContext, request: VmRequest): Promise<ImageReport> {
  const ilog = ctx.log.child({ stage: 'image' });
  let ownerUid: number | undefined;
  if (request.img.startsWith('/') && ctx.config.policy.allow_user_images) {
    const { lookupOwner } = await import('../report/deliver.js');
    ownerUid = (await lookupOwner(ctx.config, ctx.args.user, ctx.args.group)).uid;
  }
  const img = authoriseImage({ img: request.img, config: ctx.config, ownerUid });
  const t0 = performance.now();
  const [report] = await verifyImages([img], { config: ctx.config, want: { distro: request.distro, arch: request.arch }, signal: ctx.signal, log: ilog });
  const r = report!;
  ilog.info({ image: img.path, sha256: r.digest, fromCache: r.fromCache, hashed: r.hashed, ms: Math.round(performance.now() - t0), rules: r.rules.filter((x) => !x.ok).map((x) => x.id) }, 'image checked');
  for (const w of warnedRules(r)) ctx.io.out(line(`warning: image ${img.name} fails ${w.id}: ${w.message}${w.fix ? `. Fix: ${w.fix}` : ''}`) + '\n');
  const failed = failedRules(r);
  if (failed.length > 0) {
    throw new JobFault(`image ${img.name} does not meet this site's guest image requirements (${failed.length} rule${failed.length > 1 ? 's' : ''})`, failed);
  }
  return r;
}

function writeManifest(ctx: JobContext, request: VmRequest, report: ImageReport): string {
  const dir = `${ctx.config.paths.job_dir}/${ctx.args.jobId}`;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const m: Manifest = {
      version: 1,
      vtorque: VERSION,
      job: { id: ctx.args.jobId, user: ctx.args.user, group: ctx.args.group, name: ctx.args.jobName, queue: ctx.args.queue },
      node: ctx.node,
      createdAt: new Date().toISOString(),
      request,
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
      vms: Array.from({ length: request.vms_per_node }, (_, i) => ({ index: i })),
    };
    writeFileAtomic(`${dir}/manifest.json`, JSON.stringify(m, null, 2) + '\n', 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot write the job manifest in ${dir} (${code})`, [
      { id: 'job-dir', where: dir, message: `cannot be written: ${code}`, fix: 'check [paths] job_dir: it must exist or be creatable by root, with free space' },
    ]);
  }
  return `${dir}/manifest.json`;
}

function summary(jobId: string, r: VmRequest, manifest: string, img: ImageReport): string[] {
  const distro = r.distro ?? r.family ?? 'distro from the image';
  const os = img.verdict.facts.os ? `${img.verdict.facts.os.distro} ${img.verdict.facts.os.major}` : img.family ?? 'unknown OS';
  return [
    `image ${img.image.name}: ${img.verdict.format.format}, ${os}, sha256 ${img.digest.slice(0, 12)}; meets the guest image requirements${img.fromCache ? ' (verdict cached)' : ''}`,
    `VM job ${jobId}: ${r.vms_per_node} VM${r.vms_per_node > 1 ? 's' : ''} of ${r.img} (${distro}, ${r.arch}), ${r.vcpus} vCPU${r.vcpus > 1 ? 's' : ''} and ${formatSize(r.ram)} RAM each, disks on ${r.fs_type}`,
    `manifest: ${manifest}`,
  ];
}
