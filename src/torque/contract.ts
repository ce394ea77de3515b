// What pbs_mom hands a prologue or epilogue: argv by position, and an
// environment of nothing but PBS_*, LANG and PATH=/bin:/usr/bin.
import { NodeFault } from './exit.js';

export const SCRIPT_KINDS = ['prologue', 'prologue-parallel', 'epilogue', 'epilogue-parallel'] as const;
export type ScriptKind = (typeof SCRIPT_KINDS)[number];

export interface JobArgs {
  kind: ScriptKind;
  jobId: string;
  user: string;
  group: string;
  jobName: string;
  /** Requested resources, e.g. "walltime=00:05:00,nodes=1:ppn=2". */
  resources: string;
  queue: string;
  account: string;
  /** TORQUE_HOME/mom_priv/jobs/<jobid>.SC; absent before Torque 6 and on sisters. */
  scriptPath?: string;
  /** Epilogue only. */
  sessionId?: string;
  usedResources?: string;
  jobExitCode?: number;
}

export interface JobEnv {
  workdir?: string;
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
