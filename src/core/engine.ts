// What the pipeline needs from a batch system, and nothing more: the job a
// hook runs for, the job's record, where this node stands in the job, whether
// the job is still alive, what a fault becomes, the job's variables in its
// VMs, its cgroup, and the words its messages use. Torque implements it in
// src/torque/engine.ts, Slurm in src/slurm/engine.ts; the pipeline, the seed,
// the report and the cache only see this interface, handed to them by the
// edge that created it (torque/hook.ts, slurm/hook.ts, cli.ts, heavy.ts).
// Types only, so that the prologue's fast path pays nothing for it.
import type { Config } from '../config/schema.js';
import type { ExitCode, NodeFault } from './errors.js';

export const HOOK_KINDS = ['prologue', 'prologue-parallel', 'epilogue', 'epilogue-parallel'] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

/** Per kept job variable: far above a real VTORQUE_REQUEST (at most 8192) or path. */
export const VARIABLE_CAP = 64 * 1024;

/** The job a hook runs for, as every batch system can name it. An engine's own fields may come on top. */
export interface JobArgs {
  kind: HookKind;
  jobId: string;
  user: string;
  group: string;
  jobName: string;
  queue: string;
  /** Where the job script is on this node, when the batch system said. */
  scriptPath?: string;
  /** Epilogue only. */
  jobExitCode?: number;
}

/** What the pipeline reads of the job's environment. An engine's own fields may come on top. */
export interface JobEnv {
  /** The directory the job was submitted from. */
  workdir?: string;
}

/** The job's record at the batch system's server: read only when needed (a sister's request, a failure). */
export interface JobRecord {
  /** How often the job was started; undefined when the record does not say. */
  startCount?: number;
  /** The job variables we use (VTORQUE_*, VM_*, PBS_O_*); the others are never kept. */
  variables: Record<string, string>;
  /** Variables of ours longer than VARIABLE_CAP: left out of `variables`, named here so a request is never silently lost. */
  oversizedVariables: string[];
  /** The job's hosts as the record lists them, one a line: for a node that was handed no host list. */
  hostList?: string;
  /** The job numbers its nodes along a tree of its own (Torque's job_radix): a node's number is not its place in the host list. */
  ownNumbering: boolean;
  /** Where the user's stderr lands: the report about a refused job goes there. */
  errorPath?: string;
}

export interface NodeName {
  /** This node's name in the batch system: what the job's host list uses. */
  name: string;
  /** Where the name came from, for the log: a config key, a variable, or 'hostname'. */
  from: string;
  /** What the batch system itself says for this job, when it says anything: compared with a configured name. */
  batch?: string;
}

/** A line for the admin log, decided by the engine and written by the caller. */
export interface LogNote {
  level: 'debug' | 'info' | 'warn' | 'error';
  data?: Record<string, unknown>;
  message: string;
}

/** What taking the node out of scheduling did: `said` goes to the job's report and the log. */
export interface OfflineReport {
  said?: string;
  log: LogNote;
}

export type JobPresence = 'active' | 'completed' | 'gone';

/** Where a failure's report goes when the batch system will not deliver it: a path, and the name to use inside it if it is a directory. */
export interface ReportTarget {
  path: string;
  nameInDir?: string;
}

/** What the guest's job variables are made from: the job as its VMs know it. */
export interface GuestJob {
  id: string;
  name: string;
  /** The directory the job was submitted from, when the batch system said. */
  workdir?: string;
  /** Every VM of the job, in job order (request/placement.ts). */
  vms: readonly string[];
  /** vCPUs of each VM. */
  vcpus: number;
}

/**
 * The job's variables in its VMs, in the batch system's own names, so that a
 * job script reads in its VM what it would read on the host. Values only:
 * seed/profile.ts and the guest agent quote and validate them.
 */
export interface GuestVars {
  /** For every shell in the VM (profile.d) and the job script, in this order. */
  vars: [string, string][];
  /**
   * Variables that name the guest's node file (one VM a line, job order):
   * profile.ts GUEST_NODEFILE for login shells, the guest agent's own copy
   * per run for the job script.
   */
  nodefile: string[];
  /** For the job script only: what a batch job sees that a login shell in the VM does not. */
  script: [string, string][];
  /** For the job script only: variables the agent sets to the job's vCPUs (VMs x vcpus). */
  np: string[];
}

/**
 * The batch system's own words, for messages that name it: a message outside
 * src/torque/ and src/slurm/ takes them from here, so it reads right under
 * either.
 */
export interface BatchTerms {
  /** As its admins call it: "Torque". */
  name: string;
  /** The variable that hands a node the job's hosts: "PBS_NODEFILE". */
  hostListVar: string;
  /** The variable with the directory the job was submitted from: "PBS_O_WORKDIR". */
  workdirVar: string;
  /** How a user names a job at submission: "qsub -N NAME". */
  jobNameOption: string;
  /** The fix for a node name no guest host name can be made from. */
  guestNameFix: string;
  /** The fix for a node name the job's host list does not hold (once, or at all). */
  hostListFix: string;
  /** How the admin checks that the batch system's server answers: "pbs_server answers (qstat -B)". */
  serverCheck: string;
  /** The command that deletes a job, as the admin log names a deletion: "qdel". */
  deleteCommand: string;
}

export interface BatchSystem {
  /** The batch system's words for messages outside its own directory. */
  readonly terms: BatchTerms;
  /** The job's variables in its VMs (seed/profile.ts, the guest agent). */
  guestVars(job: GuestJob): GuestVars;
  /**
   * The job's cgroup directory, relative to each cgroup v1 hierarchy's mount,
   * where the batch system makes one (launch/cgroup.ts): qemu joins it there.
   * `uid`: the job owner's.
   */
  jobCgroup(jobId: string, uid: number): string;

  /** The job from argv and the environment; a wrong shape is a NodeFault. */
  hookJob(kind: HookKind, argv: readonly string[]): { args: JobArgs; env: JobEnv };
  /** Whether a name is one of this batch system's job ids: only such a name goes to its tools' argv or into paths. */
  isJobId(s: string): boolean;

  /** The job's record. Throws when the server cannot say; a JobFault when the job forged it. */
  jobRecord(config: Config, jobId: string): Promise<JobRecord>;
  /** The tool that reads the record, as the admin log names it ("qstat"). */
  readonly recordTool: string;
  /** A sister that cannot read the record (the `cause`) cannot learn its VM request: a node fault. */
  recordFault(jobId: string, cause: unknown): NodeFault;
  /** The job's hosts, one per slot, in the batch system's order: the node's own list, else the record's. */
  hostList(env: JobEnv, record: JobRecord | undefined): string | undefined;
  /** This node's name for the job (or without a job, for doctor). `hosts`: the job's distinct hosts. */
  nodeName(config: Config | undefined, job?: { kind: HookKind; env: JobEnv; hosts?: readonly string[]; ownNumbering?: boolean }): NodeName;
  /** How the log says where the node name came from, and where the sources disagree. */
  nodeNameNote(config: Config, id: NodeName): LogNote;
  /** A node that must know its place and was given no host list. */
  noHostList(): NodeFault;

  /** Whether the batch system still has the job: 'gone' (unknown), 'completed', or 'active'. Throws when it cannot say. */
  jobPresence(config: Config, jobId: string): Promise<JobPresence>;
  /** Whether this node still holds the job (a local trace the batch system keeps). */
  runsHere(config: Config, jobId: string): boolean;

  /**
   * The fault policy: the exit code of a hook whose job failed, whose node
   * failed, whose node was busy (the job fits, not now: core/errors.ts
   * NodeBusy; the job goes back to the queue, the node stays up), or whose job
   * was deleted meanwhile.
   */
  readonly exits: { jobFault: ExitCode; nodeFault: ExitCode; nodeBusy: ExitCode; jobGone: ExitCode };
  /**
   * A prologue's NodeBusy, for a batch system whose hook cannot requeue a job
   * by its exit code without taking the node out (Slurm drains on any non-zero
   * Prolog exit): puts the job back in the queue itself. Throws when it could
   * not. Absent: exits.nodeBusy requeues the job (Torque).
   */
  requeueOnBusy?(o: { config?: Config; jobId: string; reason: string }): Promise<OfflineReport>;
  /**
   * Memory (bytes) and CPUs this job may use on this node where the batch
   * system's allocation says, beyond its cgroups (launch/admission.ts reads
   * those through jobCgroup): Slurm's SLURM_MEM_PER_NODE, SLURM_CPUS_ON_NODE.
   * Absent or empty: the cgroups alone.
   */
  jobAllocation?(): { memory?: { bytes: number; from: string }; cpus?: { count: number; from: string } };
  /** Takes the node out of scheduling after a node fault, when the config asks for it. `configFile`: for a config that did not load. */
  offlineOnFault(o: { config?: Config; configFile?: string; job?: { kind: HookKind; env: JobEnv; hosts?: readonly string[]; ownNumbering?: boolean }; jobId: string; reason: string }): Promise<OfflineReport>;
  /**
   * A prologue's job fault, for a batch system whose hook cannot refuse a job
   * by its exit code (Slurm: any non-zero Prolog exit drains the node): ends
   * the job with the reason where its owner sees it. Throws a NodeFault when
   * the job could not be ended. Absent: the exit code refuses the job (Torque).
   */
  cancelOnFault?(o: { config?: Config; jobId: string; reason: string }): Promise<OfflineReport>;
  /** Where the report of a refused job goes, or undefined when there is nowhere. */
  reportTarget(args: JobArgs, env: JobEnv, record: JobRecord | undefined): ReportTarget | undefined;
  /** Why there is no report target, for the log. */
  readonly noReportTarget: string;
}
