// The only place that knows what pbs_mom does with our exit code.
// 0: the job runs. 1: the job's fault; Torque aborts it (and does not deliver
// its .o/.e files, so we deliver the report ourselves). 2: the node's fault;
// Torque requeues the job and restarts it at once.

export const EXIT_RUN = 0;
export const EXIT_JOB_FAULT = 1;
export const EXIT_NODE_FAULT = 2;

export type ExitCode = typeof EXIT_RUN | typeof EXIT_JOB_FAULT | typeof EXIT_NODE_FAULT;

/** One actionable finding: what is wrong, where, and how to fix it. */
export interface Problem {
  /** Stable id an admin can grep for: a rule id, a directive key, a config key. */
  id: string;
  /** Where: "line 4", "[policy] formats", an image path. */
  where?: string;
  /** What is wrong, in one sentence, without a trailing period. */
  message: string;
  /** How to fix it, in one sentence. */
  fix?: string;
}

abstract class VtorqueError extends Error {
  abstract readonly exitCode: ExitCode;
  /** A brand, not instanceof: the fast path and the rest are separate bundles with separate classes. */
  readonly vtorqueFault = true;
  readonly problems: readonly Problem[];
  /** options.cause: the error this one wraps, kept for the admin log instead of being flattened into the message. */
  constructor(summary: string, problems: readonly Problem[] = [], options?: { cause?: unknown }) {
    super(summary, options);
    this.problems = problems;
  }
}

/** The job asked for something it may not have, or its image is not fit. Exit 1. */
export class JobFault extends VtorqueError {
  override readonly name = 'JobFault';
  readonly exitCode = EXIT_JOB_FAULT;
}

/** The node cannot serve the job right now: config, tools, disk, locks, deadline. Exit 2. */
export class NodeFault extends VtorqueError {
  override readonly name = 'NodeFault';
  readonly exitCode = EXIT_NODE_FAULT;
}

/**
 * The job fits this node, but not now: other jobs hold the memory, vCPUs or
 * ramdisk it needs (launch/admission.ts). Requeued as a node fault is (Torque:
 * exit 2; Slurm: the engine's requeueOnBusy), but the node is never taken out
 * of scheduling: nothing is wrong with it. max_start_count still ends the loop.
 */
export class NodeBusy extends VtorqueError {
  override readonly name = 'NodeBusy';
  readonly exitCode = EXIT_NODE_FAULT;
  /** A brand, as vtorqueFault: the bundles have separate classes. */
  readonly nodeBusy = true;
}

export function isVtorqueError(e: unknown): e is JobFault | NodeFault | NodeBusy {
  return typeof e === 'object' && e !== null && (e as { vtorqueFault?: unknown }).vtorqueFault === true;
}

export function isJobFault(e: unknown): e is JobFault {
  return isVtorqueError(e) && e.exitCode === EXIT_JOB_FAULT;
}

/** A node fault proper: the node is unfit (a busy node is not: isNodeBusy). */
export function isNodeFault(e: unknown): e is NodeFault {
  return isVtorqueError(e) && e.exitCode === EXIT_NODE_FAULT && !isNodeBusy(e);
}

export function isNodeBusy(e: unknown): e is NodeBusy {
  return isVtorqueError(e) && (e as { nodeBusy?: unknown }).nodeBusy === true;
}

/**
 * Why a run's AbortSignal stopped it, for messages: its reason's own words
 * (the prologue's deadline, or the job's deletion: pipeline/ended.ts JobEnded)
 * and its fix, never a guess at which of the two it was.
 */
export function stopReason(signal: AbortSignal | undefined): { why: string; fix: string } {
  const r: unknown = signal?.reason;
  // abort() without a reason gives a DOMException AbortError: nothing said, so nothing claimed.
  const why = r instanceof Error && r.name !== 'AbortError' && r.message ? r.message : 'the run was stopped';
  const fix = typeof (r as { fix?: unknown })?.fix === 'string' ? (r as { fix: string }).fix : 'check the node or raise [timeouts] total';
  return { why, fix };
}

/** Anything we did not anticipate is the node's fault: requeue rather than blame the user. */
export function exitCodeOf(e: unknown): ExitCode {
  return isVtorqueError(e) ? e.exitCode : EXIT_NODE_FAULT;
}
