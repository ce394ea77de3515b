// The VM path of the prologue: request -> (image, cache, seeds: later stages)
// -> manifest -> summary. Each stage takes a plain value and returns one.
import { mkdirSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import type { JobArgs, JobEnv } from '../torque/contract.js';
import type { ScanResult } from '../torque/directives.js';
import { EXIT_NODE_FAULT, EXIT_RUN, NodeFault, type ExitCode } from '../torque/exit.js';
import type { HookIO } from '../torque/hook.js';
import { resolveRequest, type VmRequest } from '../request/resolve.js';
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
    if (scan.problems.length > 0) {
      const { JobFault } = await import('../torque/exit.js');
      const rest = safeResolveProblems(scan, config, input.forcedByQueue);
      const all = [...scan.problems, ...rest].sort((a, b) => lineNo(a.where) - lineNo(b.where));
      throw new JobFault(`the #VM request has ${all.length} problem${all.length > 1 ? 's' : ''}`, all);
    }
    const request = resolveRequest({ directives: scan.directives, config, forcedByQueue: input.forcedByQueue });
    rlog.info({ request }, 'request resolved');

    const manifestPath = writeManifest(ctx, request);
    log.child({ stage: 'manifest' }).info({ path: manifestPath, ms: Math.round(performance.now() - t0) }, 'job prepared');
    for (const l of summary(args.jobId, request, manifestPath)) io.out(line(l) + '\n');
    return EXIT_RUN;
  } catch (e) {
    return await handleFailure(e, { kind: args.kind, args, env: input.env, config, io, log, source: input.scriptPath });
  } finally {
    deadline.stop();
  }
}

function lineNo(where: string | undefined): number {
  const m = /^line ([0-9]+)/.exec(where ?? '');
  return m ? Number(m[1]) : Infinity;
}

/** With syntax errors present, still report the key problems of the lines that did parse. */
function safeResolveProblems(scan: ScanResult, config: Config, forced: boolean) {
  try {
    resolveRequest({ directives: scan.directives, config, forcedByQueue: forced });
    return [];
  } catch (e) {
    return (e as { problems?: [] }).problems ?? [];
  }
}

function writeManifest(ctx: JobContext, request: VmRequest): string {
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

function summary(jobId: string, r: VmRequest, manifest: string): string[] {
  const distro = r.distro ?? 'distro from the image';
  return [
    `VM job ${jobId}: ${r.vms_per_node} VM${r.vms_per_node > 1 ? 's' : ''} of ${r.img} (${distro}, ${r.arch}), ${r.vcpus} vCPU${r.vcpus > 1 ? 's' : ''} and ${formatSize(r.ram)} RAM each, disks on ${r.fs_type}`,
    `manifest: ${manifest}`,
  ];
}
