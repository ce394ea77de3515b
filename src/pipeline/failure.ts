// One place decides what a failure means for the job: what the user reads,
// what the admin logs, which exit code pbs_mom gets, and whether the report
// must be delivered by hand because the batch system will not deliver it.
import type { Config } from '../config/schema.js';
import type { BatchSystem, HookKind, JobArgs, JobEnv, JobRecord } from '../core/engine.js';
import { EXIT_JOB_FAULT, JobFault, NodeBusy, NodeFault, exitCodeOf, isJobFault, isNodeBusy, isNodeFault, isVtorqueError, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import { CHECK_HINT, YOU, forAdmin, jobFaultReport, nodeBusyReport, nodeFaultReport, line } from '../report/user.js';
import type { Logger } from '../report/log.js';
import { jobLogger, shortHostname } from './context.js';
import type { VmRequest } from '../request/resolve.js';

/** The job as the batch system places it on this node: how the node learns its name there. */
interface JobPlace {
  kind: HookKind;
  env: JobEnv;
  hosts?: readonly string[];
  ownNumbering?: boolean;
}

export interface FailureContext {
  kind: HookKind;
  /** The batch system: the job's record, the node's name, and what a fault becomes. */
  engine: BatchSystem;
  args?: JobArgs;
  env: JobEnv;
  config?: Config;
  /** The ini file, for a config that did not load: offlining still needs its batch system and [tools] keys. */
  configFile?: string;
  io: HookIO;
  log?: Logger;
  /** The job script (the batch system's spool copy): read again for the request when an image is refused; never named to the user. */
  source?: string;
}

export async function handleFailure(e: unknown, ctx: FailureContext): Promise<ExitCode> {
  const jobId = ctx.args?.jobId ?? 'unknown';
  const base = ctx.log ?? (ctx.config ? jobLogger(ctx.config, ctx.kind, jobId, ctx.io) : undefined);
  const log = base?.child({ stage: 'report' });
  let err: JobFault | NodeFault | NodeBusy = isVtorqueError(e)
    ? e
    : new NodeFault(`internal error: ${(e as Error)?.message ?? String(e)}`, [
      { id: 'internal', message: String((e as Error)?.stack ?? e).split('\n').slice(0, 3).join(' | '), fix: 'report this to the vtorque-prologue maintainers with the admin log' },
    ]);
  log?.error({ err: { name: err.name, message: err.message, problems: err.problems }, exit: err.exitCode, cause: isVtorqueError(e) ? undefined : String((e as Error)?.stack ?? e) }, 'job failed');

  const isPrologue = ctx.kind === 'prologue' || ctx.kind === 'prologue-parallel';
  const canAsk = isPrologue && ctx.args !== undefined && ctx.config !== undefined;
  let attrs: JobRecord | undefined;
  if (canAsk) {
    try {
      attrs = await ctx.engine.jobRecord(ctx.config!, jobId);
    } catch (qe) {
      // A forged record (a JobFault) is no more use than none: its paths and start count may be the job's own words.
      log?.warn({ err: String((qe as Error).message) }, isJobFault(qe)
        ? `the job's ${ctx.engine.recordTool} record is forged by its variables: using the default error path and no start count`
        : `${ctx.engine.recordTool} unavailable: using the default error path and no start count`);
    }
  }

  // A requeued job is restarted at once (a node fault's exit code), so a
  // sick node would loop it forever. Past max_start_count, stop the loop.
  // A busy node requeues the job too (it fits, not now), so the same bound holds.
  let hints: string[] = [CHECK_HINT];
  if ((isNodeFault(err) || isNodeBusy(err)) && ctx.config && attrs?.startCount !== undefined && attrs.startCount >= ctx.config.policy.max_start_count) {
    log?.error({ startCount: attrs.startCount, max: ctx.config.policy.max_start_count }, 'start count reached: aborting instead of requeueing');
    // The node's problems stay the admin's, as in the requeue reports before; the user's one step says it is theirs.
    const each = isNodeBusy(err) ? 'each time its node had no room for it yet' : 'each time a node could not prepare it';
    err = new JobFault(`it was started ${attrs.startCount} times and ${each} (last: ${err.message})`, [
      ...(isNodeBusy(err) ? err.problems : err.problems.map(forAdmin)),
      { id: 'max-start-count', message: `aborted after ${attrs.startCount} starts so that it does not loop in the queue`, fix: `${YOU}resubmit later; if it keeps happening, give your admin the job id ${jobId}` },
    ], { cause: err });
    // The script is not at fault, so check --job would find nothing: no hint beyond the fix lines.
    hints = [];
  } else if (isJobFault(err) && ctx.config && ctx.args) {
    hints = await imageHints(err, ctx, attrs, log);
  }

  // A busy node puts the job back in the queue and stays up. A batch system
  // whose exit codes cannot say that (Slurm) requeues the job itself; if it
  // cannot, the job is refused with the reason rather than the node drained.
  let requeued: string | undefined;
  if (isNodeBusy(err) && isPrologue && ctx.engine.requeueOnBusy) {
    try {
      const r = await ctx.engine.requeueOnBusy({ config: ctx.config, jobId, reason: `node busy, job requeued: ${err.message}` });
      if (r.log.data) log?.[r.log.level](r.log.data, r.log.message);
      else log?.[r.log.level](r.log.message);
      requeued = r.said;
    } catch (re) {
      log?.error({ err: String((re as Error).message) }, 'the job could not be requeued for a busy node: refusing it instead');
      err = new JobFault(`${err.message}, and the job could not be put back in the queue`, [
        ...err.problems,
        { id: 'requeue', message: String((re as Error).message).split('\n')[0]!.slice(0, 300), fix: `${YOU}resubmit the job; submit it as requeueable if your site allows that` },
      ], { cause: re });
      hints = [];
    }
  }

  // A batch system that cannot refuse a job by exit code ends it here; failing that, the node's fault policy holds the job.
  let cancelled: string | undefined;
  if (isJobFault(err) && isPrologue && ctx.engine.cancelOnFault) {
    try {
      const r = await ctx.engine.cancelOnFault({ config: ctx.config, jobId, reason: `job not started: ${err.message}${err.problems[0] ? `: ${err.problems[0].where ? `${err.problems[0].where}: ` : ''}${err.problems[0].message}` : ''}` });
      if (r.log.data) log?.[r.log.level](r.log.data, r.log.message);
      else log?.[r.log.level](r.log.message);
      cancelled = r.said;
    } catch (ce) {
      log?.error({ err: String((ce as Error).message) }, 'the refused job could not be cancelled');
      err = isNodeFault(ce) ? ce : new NodeFault(String((ce as Error).message), [], { cause: ce });
    }
  }

  const place = ctx.args && isPrologue ? await jobPlace(ctx, attrs) : undefined;
  const offlined = isNodeFault(err) && isPrologue ? await offlineOnFault(err, ctx, jobId, log, place) : undefined;

  const lines = isJobFault(err)
    ? jobFaultReport(jobId, err.message, err.problems, { name: ctx.args?.jobName, workdir: ctx.env.workdir }, hints)
    : isNodeBusy(err)
      ? nodeBusyReport(jobId, await shownNodeName(ctx, place), err.message, err.problems)
      : nodeFaultReport(jobId, await shownNodeName(ctx, place), err.message, err.problems);
  // Said in the job's .ER too: with a broken ini there is no admin log to say it in.
  if (offlined) lines.push(line(`(admin) ${offlined}`));
  if (cancelled) lines.push(line(cancelled));
  if (requeued) lines.push(line(requeued));
  const text = lines.join('\n') + '\n';
  ctx.io.err(text);

  if (isJobFault(err) && canAsk) {
    try {
      const { deliverReport } = await import('../report/deliver.js');
      const path = await deliverReport({ config: ctx.config!, engine: ctx.engine, args: ctx.args!, env: ctx.env, attrs, text });
      log?.info({ path }, 'report delivered to the job owner');
      ctx.io.err(line(`this report was also written to ${path}`) + '\n');
    } catch (de) {
      log?.warn({ err: String((de as Error).message) }, 'report could not be delivered to the job owner');
    }
  }
  log?.flush?.();
  if (exitCodeOf(err) === EXIT_JOB_FAULT) return ctx.engine.exits.jobFault;
  return isNodeBusy(err) ? ctx.engine.exits.nodeBusy : ctx.engine.exits.nodeFault;
}

// A sick node takes itself out of scheduling (the engine decides how and
// whether); only the prologue: an epilogue failure requeues nothing. A job
// fault, or a node fault turned into a job fault at max_start_count, never gets here.
async function offlineOnFault(err: NodeFault, ctx: FailureContext, jobId: string, log: Logger | undefined, place: JobPlace | undefined): Promise<string | undefined> {
  const first = err.problems[0];
  const detail = first && !err.message.includes(first.message) ? `: ${first.where ? `${first.where}: ` : ''}${first.message}` : '';
  const r = await ctx.engine.offlineOnFault({ config: ctx.config, configFile: ctx.configFile, job: place, jobId, reason: `${err.message}${detail}` });
  if (r.log.data) log?.[r.log.level](r.log.data, r.log.message);
  else log?.[r.log.level](r.log.message);
  return r.said;
}

/** Where this job stands for the batch system (its kind, its variables, its hosts): how the node learns its name there. */
async function jobPlace(ctx: FailureContext, attrs: JobRecord | undefined): Promise<JobPlace> {
  const { distinctHosts } = await import('./request.js');
  const list = ctx.engine.hostList(ctx.env, attrs);
  return { kind: ctx.kind, env: ctx.env, hosts: list ? distinctHosts(list) : undefined, ownNumbering: attrs?.ownNumbering ?? false };
}

/** The node as the user's report names it: its batch-system name, the short host name when the batch system gave none. */
async function shownNodeName(ctx: FailureContext, place: JobPlace | undefined): Promise<string> {
  const id = ctx.engine.nodeName(ctx.config, place);
  return id.from === 'hostname' ? shortHostname() : id.name;
}

/**
 * A refused image gets the pool images that pass for the same request, from
 * held verdicts; every other job fault, the check --job hint. The request is
 * read again as the pipeline read it: the script on Mother Superior, the job's
 * variables on a sister.
 */
async function imageHints(err: JobFault, ctx: FailureContext, attrs: JobRecord | undefined, log: Logger | undefined): Promise<string[]> {
  const { isImageRejection, poolHint, poolImagesFor } = await import('../image/verdicts.js');
  if (!isImageRejection(err.problems)) return [CHECK_HINT];
  try {
    const request = await requestAgain(ctx, attrs);
    if (!request) return [];
    // The job's group too (rule guest-group), as the prologue judged it: else the image just refused for it could be named as one that passes.
    const { groupOf } = await import('../tools/nss.js');
    const group = ctx.args?.group ? await groupOf(ctx.config!, ctx.args.group).catch(() => undefined) : undefined;
    return poolHint(await poolImagesFor(ctx.config!, { distro: request.distro, arch: request.arch, vrdma: request.vrdma, group: group ? { name: group.group, gid: group.gid } : undefined }));
  } catch (e) {
    log?.warn({ err: String((e as Error).message) }, 'the pool images that pass could not be listed for the user');
    return [];
  }
}

async function requestAgain(ctx: FailureContext, attrs: JobRecord | undefined): Promise<VmRequest | undefined> {
  const config = ctx.config!;
  if (ctx.kind === 'prologue' && ctx.source) {
    const { readScriptHeader, scanDirectives } = await import('../request/directives.js');
    const { resolveScanned } = await import('../request/resolve.js');
    const header = readScriptHeader(ctx.source);
    if (!header) return undefined;
    const forced = ctx.args !== undefined && config.policy.vm_queues.includes(ctx.args.queue);
    return resolveScanned(scanDirectives(header.text, header.truncated), config, forced);
  }
  if (!attrs) return undefined;
  const { requestFromVariables } = await import('../request/sister.js');
  const r = requestFromVariables(attrs.variables, config, attrs.oversizedVariables);
  return r.source === 'none' ? undefined : r.request;
}
