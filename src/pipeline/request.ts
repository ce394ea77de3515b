// The job's VM request and where its VMs go. Mother Superior reads the #VM
// lines of the job script; a sister has no script and takes the request that
// the submit filter put into the job's Variable_List (VTORQUE_REQUEST), or the
// VM_<KEY> variables of `qsub -v`. Both sides derive their place in the job's
// host list, so every VM of the job gets a distinct index and hostname.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { ScanResult } from '../request/directives.js';
import { NodeFault, isJobFault } from '../core/errors.js';
import type { JobAttributes } from '../torque/qstat.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { describeDisagreement, requestDisagreement, requestFromVariables } from '../request/sister.js';
import { hostsFromExecHost, noHostList, placeVms, soloPlacement, type Placement } from '../request/placement.js';
import { torqueNodeName, type JobEnv, type ScriptKind, type TorqueNodeName } from '../torque/contract.js';
import { line } from '../report/user.js';
import type { JobContext } from './context.js';

export interface JobRequest {
  request: VmRequest;
  /** Where the request came from, for the log and the manifest. */
  source: 'script' | 'queue' | 'VTORQUE_REQUEST' | 'VM_variables';
  attrs?: JobAttributes;
  /** Mother Superior's comparison with VTORQUE_REQUEST, running while the image is prepared; await before finishing. */
  crossCheck?: Promise<void>;
}

/** Mother Superior: the script decides; VTORQUE_REQUEST is only compared, and a disagreement logged. */
export async function requestFromScript(ctx: JobContext, scan: ScanResult, forcedByQueue: boolean): Promise<JobRequest> {
  const rlog = ctx.log.child({ stage: 'request' });
  for (const n of scan.notes) ctx.io.out(line(n) + '\n');
  rlog.info({ vmLines: scan.vmLines, forcedByQueue }, 'VM job');
  const request = resolveScanned(scan, ctx.config, forcedByQueue);
  const crossCheck = askTorque(ctx, false).then((attrs) => compareWithVariables(ctx, request, attrs));
  return { request, source: scan.vmLines > 0 ? 'script' : 'queue', crossCheck };
}

function compareWithVariables(ctx: JobContext, request: VmRequest, attrs: JobAttributes | undefined): void {
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
  const attrs = (await askTorque(ctx, true))!;
  const vr = requestFromVariables(attrs.variables, ctx.config, attrs.oversizedVariables);
  if (vr.source === 'none') {
    if (!forcedByQueue) return undefined;
    return { request: resolveScanned({ directives: [], problems: [] }, ctx.config, true), source: 'queue', attrs };
  }
  rlog.info({ source: vr.source }, 'VM job (request from the job\'s variables)');
  return { request: vr.request, source: vr.source, attrs };
}

/** qstat -f for this job. A sister cannot work without it; Mother Superior only loses a cross-check. */
async function askTorque(ctx: JobContext, required: boolean): Promise<JobAttributes | undefined> {
  const { qstatJob } = await import('../torque/qstat.js');
  try {
    return await qstatJob(ctx.config, ctx.args.jobId);
  } catch (e) {
    // A record the job's own variables forged: the job's fault on a sister, and
    // on Mother Superior, where the script decides, only a lost cross-check.
    if (isJobFault(e) && required) throw e;
    if (!required) {
      ctx.log.child({ stage: 'request' }).info({ err: (e as Error).message }, 'qstat unavailable: the script\'s request is not compared with VTORQUE_REQUEST');
      return undefined;
    }
    throw new NodeFault(`cannot get job ${ctx.args.jobId}'s VM request from Torque on this sister node`, [
      {
        id: 'sister-request',
        where: `qstat -f -1 ${ctx.args.jobId}`,
        message: (e as Error).message.split('\n')[0]!.slice(0, 300),
        fix: "a sister has no job script and learns the VM request from qstat: check [tools] qstat and that this node can reach pbs_server",
      },
    ]);
  }
}

/** The job's hosts, one per slot: PBS_NODEFILE, else qstat's exec_host (a sister has no node file). */
export function jobHostList(env: JobEnv, attrs: JobAttributes | undefined): string | undefined {
  let list: string | undefined;
  try {
    if (env.nodefile) list = readFileSync(env.nodefile, 'utf8');
  } catch {
    /* sisters may not have it */
  }
  if (!list?.trim() && attrs?.raw.exec_host) list = hostsFromExecHost(attrs.raw.exec_host);
  return list?.trim() ? list : undefined;
}

/** Distinct hosts in first-occurrence order: exec_host's entries, which pbs_mom numbers from 0 (start_exec.c job_nodes). */
export function distinctHosts(list: string): string[] {
  const out: string[] = [];
  for (const raw of list.split('\n')) {
    const h = raw.trim();
    if (h !== '' && !out.includes(h)) out.push(h);
  }
  return out;
}

// qsub -W job_radix=N; Torque prints the attribute only when the job has it.
export const hasRadix = (attrs: JobAttributes | undefined) => attrs?.raw.job_radix !== undefined && !/^0*$/.test(attrs.raw.job_radix.trim());

/** This node's Torque name for this job (torque/contract.ts torqueNodeName), from the job's host list and pbs_mom's variables. */
export function jobNodeName(o: { configured: string; kind: ScriptKind; env: JobEnv; attrs?: JobAttributes; list?: string }): TorqueNodeName {
  const list = o.list ?? jobHostList(o.env, o.attrs);
  return torqueNodeName({ configured: o.configured, kind: o.kind, env: o.env, hosts: list ? distinctHosts(list) : undefined, radix: hasRadix(o.attrs) });
}

/** The job's hosts from PBS_NODEFILE, else qstat's exec_host; Mother Superior alone may fall back to itself. */
export function placement(ctx: JobContext, r: JobRequest): Placement {
  const list = jobHostList(ctx.env, r.attrs);
  const id = jobNodeName({ configured: ctx.config.torque.node_name, kind: ctx.args.kind, env: ctx.env, attrs: r.attrs, list });
  sayWhereTheNameDiffers(ctx, id);
  if (!list) {
    if (ctx.args.kind === 'prologue') return soloPlacement(id.name, r.request.vms_per_node);
    throw noHostList('PBS_NODEFILE is missing or empty and qstat shows no exec_host');
  }
  return placeVms(list, id.name, r.request.vms_per_node);
}

/**
 * Placement follows the name it was given; the admin learns when the other
 * sources disagree: a node_name pbs_mom contradicts, or a Torque name that
 * doctor (which has no job, so node_name or the host name) would not find.
 */
function sayWhereTheNameDiffers(ctx: JobContext, id: TorqueNodeName): void {
  const log = ctx.log.child({ stage: 'request' });
  const doctorName = ctx.config.torque.node_name || hostname();
  if (id.torque !== undefined && id.torque !== id.name) {
    log.warn({ node: id }, `[torque] node_name = ${id.name}, but pbs_mom calls this node ${id.torque} for this job; placement follows node_name. Fix: set [torque] node_name = ${id.torque}, or leave it empty`);
  } else if (id.name !== doctorName) {
    log.warn({ node: id }, `Torque calls this node ${id.name} (${id.from}), not ${doctorName}: set [torque] node_name = ${id.name} so that doctor and doctor --clear find this node`);
  } else {
    log.debug({ node: id }, "this node's Torque name");
  }
}
