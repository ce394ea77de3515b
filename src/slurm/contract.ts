// What slurmd hands a Prolog or Epilog: no argv, no PATH, no HOME, its own
// working directory, and SLURM_* variables (doc/admin.md, Slurm). Light: the
// non-VM path of every Slurm job goes through here, so nothing heavy is imported.
import { hostname } from 'node:os';
import { NodeFault } from '../core/errors.js';
import type { HookKind, JobArgs as CoreJobArgs, JobEnv as CoreJobEnv } from '../core/engine.js';
import { iniValue, readIniLenient } from '../config/ini.js';
import { absPathType, intType } from '../config/values.js';
import { queueListType } from '../config/peek.js';
import type { Config } from '../config/schema.js';

export const SLURM_HOOKS = ['slurm-prolog', 'slurm-epilog'] as const;
export type SlurmHook = (typeof SLURM_HOOKS)[number];

/** Slurm runs one Prolog per node, the same on each: every node reads the job script itself, so each is a 'prologue'. */
export const kindOf = (hook: SlurmHook): HookKind => (hook === 'slurm-prolog' ? 'prologue' : 'epilogue');

export interface SlurmJobEnv extends CoreJobEnv {
  uid: number;
  gid: number;
  /** SLURM_JOB_RESTART_COUNT: 0 at the first start. */
  restartCount?: number;
  /** SLURM_NODELIST as Slurm writes it (compressed, e.g. "n[01-04]"); expanded by scontrol show hostnames. */
  nodeList?: string;
  /** SLURMD_NODENAME: this node's name in slurm.conf. */
  nodeName?: string;
  /** SLURM_CONF: which cluster the Slurm tools we run must talk to (a site's, or a test's private one). */
  slurmConf?: string;
  /** SLURM_JOB_CPUS_PER_NODE as slurmd gives it to the Prolog ("4,2(x2)": per node, in SLURM_NODELIST's order). */
  cpusPerNode?: string;
}

const CPUS_PER_NODE = /^[0-9]{1,6}(?:\(x[0-9]{1,6}\))?(?:,[0-9]{1,6}(?:\(x[0-9]{1,6}\))?){0,1023}$/;

/**
 * This node's CPUs from SLURM_JOB_CPUS_PER_NODE: one count for every node, or
 * the count at this node's place among the job's distinct hosts. undefined
 * where it does not say.
 */
export function cpusOnNode(spec: string | undefined, hosts: readonly string[], node: string | undefined): number | undefined {
  if (!spec || !CPUS_PER_NODE.test(spec)) return undefined;
  const counts: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^([0-9]+)(?:\(x([0-9]+)\))?$/.exec(part)!;
    for (let i = 0; i < Number(m[2] ?? 1) && counts.length <= hosts.length + 1; i++) counts.push(Number(m[1]));
  }
  if (new Set(counts).size === 1) return counts[0]! > 0 ? counts[0] : undefined;
  const at = node ? hosts.indexOf(node) : -1;
  return at >= 0 && counts[at]! > 0 ? counts[at] : undefined;
}

// Slurm job ids are plain numbers (an array task has one of its own in SLURM_JOB_ID).
const JOB_ID = /^[0-9]{1,10}$/;
export const isSlurmJobId = (s: string): boolean => JOB_ID.test(s);
const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;
const NODE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

function envFault(hook: SlurmHook, message: string): NodeFault {
  return new NodeFault(`${hook} run without a Slurm job: ${message}`, [
    { id: 'slurm-env', message, fix: `slurmd runs it as Prolog/Epilog with SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_UID and SLURM_JOB_GID set; check slurm.conf's Prolog= and Epilog= lines` },
  ]);
}

const int = (v: string | undefined): number | undefined => (v !== undefined && /^[0-9]{1,10}$/.test(v) ? Number(v) : undefined);

/** The job as slurmd names it in the environment. A wrong shape means slurmd or our wiring is broken: a node fault. */
export function readSlurmEnv(hook: SlurmHook, argv: readonly string[], env: NodeJS.ProcessEnv): { jobId: string; user: string; env: SlurmJobEnv } {
  if (argv.length > 0) throw envFault(hook, `${argv.length} arguments given; slurmd passes none`);
  const jobId = env.SLURM_JOB_ID ?? '';
  if (!isSlurmJobId(jobId)) throw envFault(hook, `SLURM_JOB_ID ${JSON.stringify(jobId.slice(0, 40))} is not a Slurm job id`);
  const user = env.SLURM_JOB_USER ?? '';
  if (!USER.test(user)) throw envFault(hook, `SLURM_JOB_USER ${JSON.stringify(user.slice(0, 40))} is not a user name`);
  const uid = int(env.SLURM_JOB_UID);
  const gid = int(env.SLURM_JOB_GID);
  if (uid === undefined || gid === undefined) throw envFault(hook, 'SLURM_JOB_UID or SLURM_JOB_GID is missing');
  const nodeName = env.SLURMD_NODENAME && NODE.test(env.SLURMD_NODENAME) ? env.SLURMD_NODENAME : undefined;
  return {
    jobId,
    user,
    env: {
      // User-chosen: never followed as root (as PBS_O_WORKDIR).
      workdir: env.SLURM_JOB_WORK_DIR || undefined,
      uid,
      gid,
      restartCount: int(env.SLURM_JOB_RESTART_COUNT),
      nodeList: env.SLURM_NODELIST || undefined,
      nodeName,
      slurmConf: env.SLURM_CONF?.startsWith('/') ? env.SLURM_CONF : undefined,
      cpusPerNode: env.SLURM_JOB_CPUS_PER_NODE || undefined,
    },
  };
}

/** The job's identity once the record has named its group, job name and partition. */
export function slurmJobArgs(kind: HookKind, jobId: string, user: string, rec: { group?: string; jobName?: string; partition?: string }, exitCode?: number): CoreJobArgs {
  return {
    kind, jobId, user,
    // Named by the record; the gid alone would do for NSS, but the seed and the log name groups.
    group: rec.group && USER.test(rec.group) ? rec.group : user,
    jobName: rec.jobName ?? '',
    queue: rec.partition ?? '',
    jobExitCode: exitCode,
  };
}

/** This node's Slurm name: slurmd's word, else the host name (doctor, which has no job). */
export function slurmNodeName(env: SlurmJobEnv | undefined): { name: string; from: string } {
  if (env?.nodeName) return { name: env.nodeName, from: 'SLURMD_NODENAME' };
  return { name: hostname().split('.')[0] ?? 'localhost', from: 'hostname' };
}

export interface SlurmTools {
  scontrol: string;
  scancel: string;
  /** Milliseconds for one scontrol or scancel call. */
  timeoutMs: number;
}

export const DEFAULT_SLURM_TOOLS: SlurmTools = { scontrol: '/usr/bin/scontrol', scancel: '/usr/bin/scancel', timeoutMs: 10_000 };

/** [tools] scontrol and scancel of a loaded config; the defaults without one. */
export function slurmTools(config: Config | undefined): SlurmTools {
  return config ? { scontrol: config.tools.scontrol, scancel: config.tools.scancel, timeoutMs: config.timeouts.qstat * 1000 } : DEFAULT_SLURM_TOOLS;
}

/**
 * [tools] scontrol and scancel and [timeouts] qstat (the batch system's
 * query deadline), read without the schema: the non-VM path needs scontrol
 * for the job script, and a broken ini must not stop every job.
 */
export function peekSlurm(file: string): SlurmTools & { vmQueues: string[] } {
  const raw = readIniLenient(file);
  return {
    scontrol: iniValue(raw, 'tools', 'scontrol', absPathType()) ?? DEFAULT_SLURM_TOOLS.scontrol,
    scancel: iniValue(raw, 'tools', 'scancel', absPathType()) ?? DEFAULT_SLURM_TOOLS.scancel,
    timeoutMs: (iniValue(raw, 'timeouts', 'qstat', intType(1, 300)) ?? 10) * 1000,
    vmQueues: iniValue(raw, 'policy', 'vm_queues', queueListType) ?? [],
  };
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g;
/** Slurm keeps a node reason or job comment on one line; ours are far shorter than its limits. */
export const MAX_SLURM_TEXT = 250;

/**
 * The one way our words reach scontrol (a job comment, a node reason): one
 * line, no control characters, no double quotes (scontrol's own parser of
 * `key=value` treats them specially), "vtorque: " first, cut to MAX_SLURM_TEXT.
 * The words may hold a job's own text (an image name), so nothing passes raw.
 */
export function slurmText(text: string): string {
  const flat = text.replace(CONTROL, ' ').replace(/"/g, "'").replace(/\s+/g, ' ').trim();
  const body = flat.startsWith('vtorque:') ? flat : `vtorque: ${flat}`;
  return body.length <= MAX_SLURM_TEXT ? body : `${body.slice(0, MAX_SLURM_TEXT - 3)}...`;
}
