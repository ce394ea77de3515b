// Slurm behind the batch-system seam (core/engine.ts): slurmd's SLURM_*
// environment for the job, `scontrol show job` for what the environment
// lacks, SLURM_NODELIST (expanded by scontrol) for its hosts. The fault
// policy follows what slurmd does with a Prolog's exit code: any non-zero
// exit drains the node and holds the job, so a job fault cancels the job with
// our reason in its comment and exits 0 (the node stays up), and a node fault
// drains the node with our reason and exits 1. Loaded with the heavy bundle.
import { hostname } from 'node:os';
import type { Config } from '../config/schema.js';
import { EXIT_NODE_FAULT, EXIT_RUN, JobFault, NodeFault } from '../core/errors.js';
import type { BatchSystem, BatchTerms, GuestJob, GuestVars, HookKind, JobArgs, JobRecord, LogNote, NodeName, OfflineReport, ReportTarget } from '../core/engine.js';
import { cpusOnNode, isSlurmJobId, slurmJobArgs, slurmNodeName, slurmTools, type SlurmJobEnv } from './contract.js';
import { cancelWithReason, drainNode, requeueWithReason, isForged, showJob, type parseShowLine, type SlurmCall } from './scontrol.js';

/** What the edge (slurm/hook.ts) learnt before the pipeline runs: the job's identity, its expanded host list. */
export interface SlurmJob {
  hook: HookKind;
  jobId: string;
  user: string;
  env: SlurmJobEnv;
  /** From the record: names the env does not give. */
  group?: string;
  jobName?: string;
  partition?: string;
  /** SLURM_NODELIST expanded, one host a line. */
  hosts?: string;
  exitCode?: number;
}

/** The engine-neutral record from scontrol's fields. */
export function recordOf(fields: ReturnType<typeof parseShowLine>, restartCount: number | undefined): JobRecord {
  const forged = ['StdErr', 'StdOut', 'Restarts'].filter((k) => isForged(fields, k));
  if (forged.length > 0) {
    // As Torque's sisters treat VTORQUE_REQUEST: the job's own words (its name, comment or paths) must not steer root.
    throw new JobFault("the job's record at slurmctld is ambiguous", [
      { id: 'slurm-record', where: 'scontrol show job', message: `${forged.join(', ')} appear${forged.length === 1 ? 's' : ''} more than once: the job's name, comment or paths imitate its fields`, fix: 'use a job name and paths without "KEY=" words in them' },
    ]);
  }
  // The environment's count is slurmd's; the record's Restarts says the same. Torque counts starts from 1.
  const restarts = restartCount ?? (/^[0-9]+$/.test(fields.Restarts ?? '') ? Number(fields.Restarts) : undefined);
  const path = (v: string | undefined) => (v && v.startsWith('/') ? v : undefined);
  return {
    startCount: restarts === undefined ? undefined : restarts + 1,
    // Slurm has no job variables we read: every node reads the #VM lines of the script itself.
    variables: {},
    oversizedVariables: [],
    ownNumbering: false,
    errorPath: path(fields.StdErr) ?? path(fields.StdOut),
  };
}

/** Slurm's words in the messages the pipeline, the seed and the cache write. */
export const SLURM_TERMS: BatchTerms = {
  name: 'Slurm',
  hostListVar: 'SLURM_NODELIST',
  workdirVar: 'SLURM_JOB_WORK_DIR',
  jobNameOption: 'sbatch -J NAME',
  guestNameFix: "name this node in slurm.conf (NodeName) with letters, digits and - only: the VMs' host names are v<NodeName>",
  hostListFix: "check this node's NodeName in slurm.conf: slurmd's SLURMD_NODENAME must be one of the job's SLURM_NODELIST; see doc/admin.md, node identity",
  serverCheck: 'slurmctld answers (scontrol ping)',
  deleteCommand: 'scancel',
};

/**
 * A Slurm job's variables in its VMs, as slurmd sets them for a batch job,
 * with the VMs for nodes: a job script that reads its node list or counts
 * reads the VMs. Tasks are left out: the VMs run one job script, not srun's
 * tasks. Slurm has no node file; VTORQUE_NODEFILE names the guest's.
 */
export function slurmGuestVars(job: GuestJob): GuestVars {
  const count = String(job.vms.length);
  const vars: [string, string][] = [['SLURM_JOB_ID', job.id], ['SLURM_JOBID', job.id], ['SLURM_JOB_NAME', job.name]];
  if (job.workdir !== undefined) vars.push(['SLURM_SUBMIT_DIR', job.workdir]);
  vars.push(['SLURM_JOB_NODELIST', job.vms.join(',')], ['SLURM_JOB_NUM_NODES', count], ['SLURM_NNODES', count], ['SLURM_CPUS_ON_NODE', String(job.vcpus)]);
  return { vars, nodefile: ['VTORQUE_NODEFILE'], script: [], np: [] };
}

/**
 * Slurm's cgroup v1 layout (proctrack/cgroup, task/cgroup): a job's cgroups
 * are <mount>/slurm/uid_<uid>/job_<jobid>/ in each hierarchy it uses; slurmd
 * makes them for the job's first step (the extern step with PrologFlags=Contain).
 */
export const slurmJobCgroup = (jobId: string, uid: number): string => `slurm/uid_${uid}/job_${jobId}`;

const ENDED_STATES = new Set(['COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT', 'NODE_FAIL', 'PREEMPTED', 'BOOT_FAIL', 'DEADLINE', 'OUT_OF_MEMORY']);

export function slurmEngine(job: SlurmJob | undefined, processEnv: NodeJS.ProcessEnv = process.env): BatchSystem {
  const slurmConf = job?.env.slurmConf ?? (processEnv.SLURM_CONF?.startsWith('/') ? processEnv.SLURM_CONF : undefined);
  const call = (config: Config | undefined): SlurmCall => ({ tools: slurmTools(config), slurmConf });
  const env = job?.env;
  return {
    terms: SLURM_TERMS,
    guestVars: slurmGuestVars,
    jobCgroup: slurmJobCgroup,
    hookJob(kind) {
      if (!job || !env) throw new NodeFault('no Slurm job to run for', [{ id: 'slurm-env', message: 'the Slurm engine was created without a job', fix: 'report this to the vtorque-prologue maintainers' }]);
      const args: JobArgs = slurmJobArgs(kind, job.jobId, job.user, job, job.exitCode);
      return { args, env };
    },
    isJobId: isSlurmJobId,

    async jobRecord(config, jobId) {
      const fields = await showJob(call(config), jobId);
      if (!fields) throw new Error(`slurmctld does not know job ${jobId}`);
      return recordOf(fields, jobId === job?.jobId ? env?.restartCount : undefined);
    },
    recordTool: 'scontrol',
    recordFault(jobId, cause) {
      return new NodeFault(`cannot read job ${jobId}'s record from slurmctld`, [
        { id: 'slurm-record', where: `scontrol show job ${jobId}`, message: String((cause as Error)?.message ?? cause).split('\n')[0]!.slice(0, 300), fix: 'check [tools] scontrol and that this node reaches slurmctld' },
      ], { cause });
    },

    hostList(jobEnv) {
      const hosts = (jobEnv as SlurmJobEnv) === env ? job?.hosts : undefined;
      return hosts?.trim() ? hosts : undefined;
    },

    nodeName(_config, j): NodeName {
      const id = slurmNodeName(j ? (j.env as SlurmJobEnv) : env);
      return { name: id.name, from: id.from, batch: (j?.env as SlurmJobEnv | undefined)?.nodeName };
    },
    nodeNameNote(_config, id): LogNote {
      return { level: 'debug', data: { node: { name: id.name, from: id.from } }, message: "this node's Slurm name" };
    },
    noHostList() {
      return new NodeFault("cannot tell where this node stands in the job's node list (SLURM_NODELIST is missing)", [
        { id: 'nodelist', where: 'SLURM_NODELIST', message: 'slurmd gave no node list', fix: 'check that the Prolog runs under slurmd (slurm.conf Prolog=)' },
      ]);
    },

    async jobPresence(config, jobId) {
      const fields = await showJob(call(config), jobId);
      if (!fields) return 'gone';
      // A job whose name imitates its state is still a job slurmctld has.
      if (isForged(fields, 'JobState')) return 'active';
      return ENDED_STATES.has(fields.JobState ?? '') ? 'completed' : 'active';
    },
    // slurmd keeps no per-job trace on every node of the job: a lease past its
    // age is judged by slurmctld (jobPresence), never by a local file.
    runsHere: () => false,

    // Any non-zero Prolog exit drains the node and holds the job (22.05): a job
    // fault has cancelled its job already (cancelOnFault) and must exit 0.
    // The Prolog gets the job's CPUs per node (22.05 gives it no memory
    // variable: a memory limit comes from the job's cgroup where slurmd made
    // one, launch/admission.ts).
    jobAllocation() {
      const hosts = [...new Set((job?.hosts ?? '').split('\n').map((h) => h.trim()).filter(Boolean))];
      const count = cpusOnNode(env?.cpusPerNode, hosts, env?.nodeName);
      return count ? { cpus: { count, from: 'SLURM_JOB_CPUS_PER_NODE' } } : {};
    },

    // A busy node has requeued its job already (requeueOnBusy) and must exit 0 too.
    exits: { jobFault: EXIT_RUN, nodeFault: EXIT_NODE_FAULT, nodeBusy: EXIT_RUN, jobGone: EXIT_RUN },

    async requeueOnBusy(o) {
      const comment = await requeueWithReason(call(o.config), o.jobId, o.reason);
      const said = `job ${o.jobId} was put back in the queue; its comment says "${comment}" (scontrol show job ${o.jobId})`;
      return { said, log: { level: 'info', data: { comment }, message: said } };
    },

    async cancelOnFault(o) {
      try {
        const comment = await cancelWithReason(call(o.config), o.jobId, o.reason);
        const said = `job ${o.jobId} was cancelled; its comment says "${comment}" (scontrol show job ${o.jobId})`;
        return { said, log: { level: 'info', data: { comment }, message: said } };
      } catch (e) {
        // Not cancelled: exiting 0 would let the job run without its VMs. A node fault's exit drains the node and holds the job instead.
        throw new NodeFault(`job ${o.jobId} could not be cancelled after it was refused (${(e as Error).message})`, [
          { id: 'slurm-cancel', where: 'scontrol update / scancel', message: String((e as Error).message).split('\n')[0]!.slice(0, 300), fix: 'check [tools] scontrol and scancel, and that this node may update jobs (SlurmdUser root)' },
        ], { cause: e });
      }
    },

    async offlineOnFault(o): Promise<OfflineReport> {
      const node = slurmNodeName((o.job?.env as SlurmJobEnv | undefined) ?? env).name;
      const when = `(job ${o.jobId}; scontrol update nodename=${node} state=resume once fixed)`;
      try {
        const r = await drainNode(call(o.config), node, `${o.reason} ${when}`);
        const said = r.action === 'drained'
          ? `node ${node} was drained with the reason "${r.reason}"`
          : `node ${node} was drained; the operator's reason "${r.reason}" was kept`;
        return { said, log: { level: 'warn', data: { drain: r }, message: said } };
      } catch (e) {
        // slurmd drains the node itself on our non-zero exit, with the reason "Prolog error".
        const said = `node ${node} could not be drained with our reason (${(e as Error).message}); slurmd drains it as "Prolog error". Fix: check [tools] scontrol`;
        return { said, log: { level: 'error', data: { err: String((e as Error).message) }, message: said } };
      }
    },

    // A cancelled job's output file is never opened by slurmd: the report goes
    // where the job's stderr would have gone (the record's StdErr, StdOut when joined).
    reportTarget(_args, _env, record): ReportTarget | undefined {
      return record?.errorPath ? { path: record.errorPath } : undefined;
    },
    noReportTarget: 'no error path: scontrol show job gave no StdErr',
  };
}

/** For doctor and the cache commands on a Slurm node: no job, the host's name. */
export const slurmNodeFallback = (): string => hostname().split('.')[0] ?? 'localhost';
