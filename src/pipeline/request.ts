// The job's VM request and where its VMs go. Mother Superior reads the #VM
// lines of the job script; a sister has no script and takes the request that
// the submit filter put into the job's variables (VTORQUE_REQUEST), or the
// VM_<KEY> variables of `qsub -v`, from the job's record (ctx.engine). Both
// sides derive their place in the job's host list, so every VM of the job
// gets a distinct index and hostname.
import type { ScanResult } from '../request/directives.js';
import { isJobFault } from '../core/errors.js';
import type { BatchSystem, JobEnv, JobRecord, NodeName } from '../core/engine.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { describeDisagreement, requestDisagreement, requestFromVariables } from '../request/sister.js';
import { placeVms, soloPlacement, type Placement } from '../request/placement.js';
import type { Config } from '../config/schema.js';
import { line } from '../report/user.js';
import type { JobContext } from './context.js';

export interface JobRequest {
  request: VmRequest;
  /** Where the request came from, for the log and the manifest. */
  source: 'script' | 'queue' | 'VTORQUE_REQUEST' | 'VM_variables';
  attrs?: JobRecord;
  /** Mother Superior's comparison with VTORQUE_REQUEST, running while the image is prepared; await before finishing. */
  crossCheck?: Promise<void>;
}

/** Mother Superior: the script decides; VTORQUE_REQUEST is only compared, and a disagreement logged. */
export async function requestFromScript(ctx: JobContext, scan: ScanResult, forcedByQueue: boolean): Promise<JobRequest> {
  const rlog = ctx.log.child({ stage: 'request' });
  for (const n of scan.notes) ctx.io.out(line(n) + '\n');
  rlog.info({ vmLines: scan.vmLines, forcedByQueue }, 'VM job');
  const request = resolveScanned(scan, ctx.config, forcedByQueue);
  const crossCheck = askRecord(ctx, false).then((attrs) => compareWithVariables(ctx, request, attrs));
  return { request, source: scan.vmLines > 0 ? 'script' : 'queue', crossCheck };
}

function compareWithVariables(ctx: JobContext, request: VmRequest, attrs: JobRecord | undefined): void {
  const rlog = ctx.log.child({ stage: 'request' });
  if (attrs) {
    try {
      const other = requestFromVariables(attrs.variables, ctx.config, attrs.oversizedVariables);
      const diffs = other.source === 'none' ? [] : requestDisagreement(request, other.request);
      if (diffs.length > 0) {
        rlog.warn({ differences: diffs, other: other.source }, `the job script and ${other.source} disagree; the script wins here, sisters follow ${other.source}`);
        ctx.io.out(line(`warning: your #VM lines and ${other.source} differ (${describeDisagreement(diffs, other.source)}); this node follows the #VM lines, the job's other nodes follow ${other.source}. Fix: resubmit the script through qsub unchanged`) + '\n');
      }
    } catch (e) {
      rlog.warn({ err: (e as Error).message }, 'the job carries a VM request in its variables that does not resolve here; the script wins');
    }
  }
}

/** A sister: the request from the job's variables; undefined when the job asked for no VMs. */
export async function requestFromAttributes(ctx: JobContext, forcedByQueue: boolean): Promise<JobRequest | undefined> {
  const rlog = ctx.log.child({ stage: 'request' });
  const attrs = (await askRecord(ctx, true))!;
  const vr = requestFromVariables(attrs.variables, ctx.config, attrs.oversizedVariables);
  if (vr.source === 'none') {
    if (!forcedByQueue) return undefined;
    return { request: resolveScanned({ directives: [], problems: [] }, ctx.config, true), source: 'queue', attrs };
  }
  rlog.info({ source: vr.source }, 'VM job (request from the job\'s variables)');
  return { request: vr.request, source: vr.source, attrs };
}

/** The job's record. A sister cannot work without it; Mother Superior only loses a cross-check. */
async function askRecord(ctx: JobContext, required: boolean): Promise<JobRecord | undefined> {
  try {
    return await ctx.engine.jobRecord(ctx.config, ctx.args.jobId);
  } catch (e) {
    // A record the job's own variables forged: the job's fault on a sister, and
    // on Mother Superior, where the script decides, only a lost cross-check.
    if (isJobFault(e) && required) throw e;
    if (!required) {
      ctx.log.child({ stage: 'request' }).info({ err: (e as Error).message }, `${ctx.engine.recordTool} unavailable: the script's request is not compared with VTORQUE_REQUEST`);
      return undefined;
    }
    throw ctx.engine.recordFault(ctx.args.jobId, e);
  }
}

/** Distinct hosts in first-occurrence order: the order in which the batch system numbers the job's nodes from 0. */
export function distinctHosts(list: string): string[] {
  const out: string[] = [];
  for (const raw of list.split('\n')) {
    const h = raw.trim();
    if (h !== '' && !out.includes(h)) out.push(h);
  }
  return out;
}

/** This node's name for this job (the engine's nodeName), from the job's host list and what the batch system says. */
export function jobNodeName(o: { engine: BatchSystem; config: Config | undefined; kind: JobContext['args']['kind']; env: JobEnv; attrs?: JobRecord; list?: string }): NodeName {
  const list = o.list ?? o.engine.hostList(o.env, o.attrs);
  return o.engine.nodeName(o.config, { kind: o.kind, env: o.env, hosts: list ? distinctHosts(list) : undefined, ownNumbering: o.attrs?.ownNumbering ?? false });
}

/** The job's hosts from the batch system; Mother Superior alone may fall back to itself. */
export function placement(ctx: JobContext, r: JobRequest): Placement {
  const list = ctx.engine.hostList(ctx.env, r.attrs);
  const id = jobNodeName({ engine: ctx.engine, config: ctx.config, kind: ctx.args.kind, env: ctx.env, attrs: r.attrs, list });
  const note = ctx.engine.nodeNameNote(ctx.config, id);
  ctx.log.child({ stage: 'request' })[note.level](note.data ?? {}, note.message);
  if (!list) {
    if (ctx.args.kind === 'prologue') return soloPlacement(id.name, r.request.vms_per_node, ctx.engine.terms);
    throw ctx.engine.noHostList();
  }
  return placeVms(list, id.name, r.request.vms_per_node, ctx.engine.terms);
}
