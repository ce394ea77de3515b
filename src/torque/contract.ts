// What pbs_mom hands a prologue or epilogue: argv by position, and an
// environment of nothing but PBS_*, LANG and PATH=/bin:/usr/bin.
import { hostname } from 'node:os';
import { NodeFault } from '../core/errors.js';
import { HOOK_KINDS, type HookKind, type JobArgs as CoreJobArgs, type JobEnv as CoreJobEnv } from '../core/engine.js';

// pbs_mom's four hooks are the engine-neutral ones.
export const SCRIPT_KINDS = HOOK_KINDS;
export type ScriptKind = HookKind;

/** scriptPath: TORQUE_HOME/mom_priv/jobs/<jobid>.SC; absent before Torque 6 and on sisters. */
export interface JobArgs extends CoreJobArgs {
  /** Requested resources, e.g. "walltime=00:05:00,nodes=1:ppn=2". */
  resources: string;
  account: string;
  /** Epilogue only. */
  sessionId?: string;
  usedResources?: string;
}

export interface JobEnv extends CoreJobEnv {
  nodefile?: string;
  msHost?: string;
  nodeNum?: number;
  np?: number;
  numNodes?: number;
  numPpn?: number;
  resourceNodes?: string;
}

// "9.server", "123[4].server", "9" (no server suffix, as some sites configure).
const JOB_ID = /^[0-9]{1,12}(\[[0-9]{0,9}\])?(\.[A-Za-z0-9][A-Za-z0-9.-]{0,252})?$/;
/** A Torque job id as parseJobArgs accepts it: only such a name goes to qstat's argv or into a path. */
export const isTorqueJobId = (s: string): boolean => JOB_ID.test(s);
const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

const USAGE: Record<ScriptKind, string> = {
  prologue: 'JOBID USER GROUP JOBNAME RESOURCES QUEUE ACCOUNT [SCRIPT]',
  'prologue-parallel': 'JOBID USER GROUP JOBNAME RESOURCES QUEUE ACCOUNT [SCRIPT]',
  epilogue: 'JOBID USER GROUP JOBNAME SESSION RESOURCES USED QUEUE ACCOUNT EXITCODE [SCRIPT]',
  'epilogue-parallel': 'JOBID USER GROUP JOBNAME SESSION RESOURCES USED QUEUE ACCOUNT EXITCODE [SCRIPT]',
};

export function usageOf(kind: ScriptKind): string {
  return `vtorque-prologue ${kind} ${USAGE[kind]}`;
}

function argvFault(kind: ScriptKind, message: string): NodeFault {
  return new NodeFault(`${kind} called with ${message}`, [
    { id: 'argv', message, fix: `pbs_mom calls it as: ${usageOf(kind)}; check the wrapper in mom_priv` },
  ]);
}

/** Parses argv as pbs_mom passes it. A wrong shape means pbs_mom or our wrapper is broken: a node fault. */
export function parseJobArgs(kind: ScriptKind, argv: readonly string[]): JobArgs {
  const isPro = kind.startsWith('prologue');
  const [min, max] = isPro ? [7, 8] : [10, 11];
  if (argv.length < min || argv.length > max) {
    throw argvFault(kind, `${argv.length} arguments; expected ${min === max - 1 ? `${min} or ${max}` : min}`);
  }
  const a = argv as string[];
  const jobId = a[0]!;
  if (!JOB_ID.test(jobId)) throw argvFault(kind, `job id ${JSON.stringify(jobId.slice(0, 60))} that is not a Torque job id`);
  if (!USER.test(a[1]!)) throw argvFault(kind, `user ${JSON.stringify(a[1]!.slice(0, 60))} that is not a user name`);
  if (!USER.test(a[2]!)) throw argvFault(kind, `group ${JSON.stringify(a[2]!.slice(0, 60))} that is not a group name`);
  const common = { kind, jobId, user: a[1]!, group: a[2]!, jobName: a[3]! };
  if (isPro) {
    return { ...common, resources: a[4]!, queue: a[5]!, account: a[6]!, scriptPath: a[7] || undefined };
  }
  const code = Number(a[9]);
  return {
    ...common, sessionId: a[4]!, resources: a[5]!, usedResources: a[6]!, queue: a[7]!, account: a[8]!,
    jobExitCode: Number.isInteger(code) ? code : undefined, scriptPath: a[10] || undefined,
  };
}

function int(v: string | undefined): number | undefined {
  if (v === undefined || !/^[0-9]{1,9}$/.test(v)) return undefined;
  return Number(v);
}

export function readJobEnv(env: NodeJS.ProcessEnv): JobEnv {
  return {
    workdir: env.PBS_O_WORKDIR || undefined,
    nodefile: env.PBS_NODEFILE || undefined,
    msHost: env.PBS_MSHOST || undefined,
    nodeNum: int(env.PBS_NODENUM),
    np: int(env.PBS_NP),
    numNodes: int(env.PBS_NUM_NODES),
    numPpn: int(env.PBS_NUM_PPN),
    resourceNodes: env.PBS_RESOURCE_NODES || undefined,
  };
}

/** The sequence part Torque uses in default output names: "123.srv" -> "123", "7[3].srv" -> "7-3". */
export function jobSequence(jobId: string): string {
  const head = jobId.split('.')[0]!;
  return head.replace(/\[([0-9]*)\]$/, (_m, i: string) => (i ? `-${i}` : ''));
}

/** Where pbs_mom keeps the script when it does not pass the path (Torque < 6). */
export function defaultScriptPath(torqueHome: string, jobId: string): string {
  return `${torqueHome}/mom_priv/jobs/${jobId}.SC`;
}

export type NodeNameSource = '[torque] node_name' | 'PBS_MSHOST' | 'PBS_NODENUM' | 'hostname';

export interface TorqueNodeName {
  /** This node's name in Torque's server_priv/nodes: what exec_host, PBS_NODEFILE and pbsnodes use. */
  name: string;
  from: NodeNameSource;
  /** What pbs_mom's own variables say, when they say anything: compared with a configured node_name. */
  torque?: string;
}

const isSisterKind = (kind: ScriptKind) => kind.endsWith('-parallel');

/**
 * Torque's word for this node, from what pbs_mom passes (Torque 6.1):
 * - Only Mother Superior runs `prologue`/`epilogue`, and prolog.c
 *   setup_pelog_environment sets PBS_MSHOST to ji_vnods[0].vn_host->hn_host:
 *   the first exec_host entry, that is this node's name.
 * - A sister's PBS_NODENUM is ji_nodeid, which Mother Superior sends in
 *   IM_JOIN_JOB as the host's index in ji_hosts (start_exec.c
 *   send_join_job_to_a_sister, node_id = i over exec_host's entries, job_nodes);
 *   im_join_job_as_sister sets it before run_prologue_scripts runs
 *   prologue.parallel. With job_radix, an intermediate mom numbers its own
 *   sisters within its radix list (mom_comm.c contact_sisters,
 *   open_tcp_stream_to_sisters), so the index is not the exec_host position.
 *   Node 0 is Mother Superior, never a sister.
 */
function torqueSays(kind: ScriptKind | undefined, env: JobEnv | undefined, hosts: readonly string[] | undefined, radix: boolean): { name: string; from: NodeNameSource } | undefined {
  if (!kind || !env) return undefined;
  if (!isSisterKind(kind)) return env.msHost ? { name: env.msHost, from: 'PBS_MSHOST' } : undefined;
  const n = env.nodeNum;
  if (radix || n === undefined || n < 1 || !hosts || n >= hosts.length) return undefined;
  return { name: hosts[n]!, from: 'PBS_NODENUM' };
}

/**
 * This node's Torque name: the one answer placement, pbsnodes and the log
 * use. [torque] node_name is the admin's word and wins; else what pbs_mom
 * says in the job's environment (torqueSays); else the host name, which
 * placement matches by its short form. `hosts`: the job's distinct hosts in
 * exec_host order; `radix`: the job has job_radix set. Without a job (doctor),
 * node_name or the host name.
 */
export function torqueNodeName(o: { configured: string; kind?: ScriptKind; env?: JobEnv; hosts?: readonly string[]; radix?: boolean }): TorqueNodeName {
  const said = torqueSays(o.kind, o.env, o.hosts, o.radix ?? false);
  if (o.configured) return { name: o.configured, from: '[torque] node_name', torque: said?.name };
  if (said) return { ...said, torque: said.name };
  return { name: hostname(), from: 'hostname' };
}
