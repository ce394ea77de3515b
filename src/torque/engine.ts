// Torque behind the batch-system seam (core/engine.ts): pbs_mom's argv and
// PBS_* variables, qstat -f for the job's record, PBS_NODEFILE or exec_host
// for its hosts, mom_priv for whether this node still has it, pbsnodes for a
// node fault. Loaded with the heavy bundle: the prologue's fast path
// (torque/hook.ts) reads argv with contract.ts alone and creates this only
// once a job wants VMs or something failed.
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Config } from '../config/schema.js';
import { EXIT_JOB_FAULT, EXIT_NODE_FAULT, NodeFault } from '../core/errors.js';
import type { BatchSystem, BatchTerms, GuestJob, GuestVars, HookKind, JobEnv as CoreJobEnv, JobRecord, LogNote, NodeName, OfflineReport, ReportTarget } from '../core/engine.js';
import { isFileName } from '../report/append-as-owner.js';
import { isTorqueJobId, jobSequence, parseJobArgs, readJobEnv, torqueNodeName, type JobArgs, type JobEnv } from './contract.js';
import { jobPresence, qstatJob, type JobAttributes } from './qstat.js';
import { offlineNode, pbsnodesSettings, pbsnodesSettingsFromFile, type JobPlace } from './pbsnodes.js';

/** Hosts from qstat's exec_host ("node01/0-1+node02/0+..."), for a sister that has no PBS_NODEFILE. */
export function hostsFromExecHost(execHost: string): string {
  return execHost.split('+').map((s) => s.split('/')[0]!.trim()).filter((h) => h !== '').join('\n');
}

// qsub -W job_radix=N; Torque prints the attribute only when the job has it.
const hasRadix = (attrs: JobAttributes) => attrs.raw.job_radix !== undefined && !/^0*$/.test(attrs.raw.job_radix.trim());

/** The engine-neutral record from qstat's attributes: Torque writes the user's stderr to Output_Path when Join_Path is "oe". */
export function recordOf(attrs: JobAttributes): JobRecord {
  return {
    startCount: attrs.startCount,
    variables: attrs.variables,
    oversizedVariables: attrs.oversizedVariables,
    hostList: attrs.raw.exec_host ? hostsFromExecHost(attrs.raw.exec_host) : undefined,
    ownNumbering: hasRadix(attrs),
    errorPath: attrs.joinPath === 'oe' ? attrs.outputPath : attrs.errorPath,
  };
}

/** Torque's words in the messages the pipeline, the seed and the cache write. */
export const TORQUE_TERMS: BatchTerms = {
  name: 'Torque',
  hostListVar: 'PBS_NODEFILE',
  workdirVar: 'PBS_O_WORKDIR',
  jobNameOption: 'qsub -N NAME',
  guestNameFix: 'set [torque] node_name to the short name Torque knows this node by',
  hostListFix: "set [torque] node_name to this node's name in Torque's nodes file (pbsnodes lists it); see doc/admin.md, node identity",
  serverCheck: 'pbs_server answers (qstat -B)',
  deleteCommand: 'qdel',
};

/**
 * A Torque job's variables in its VMs, as pbs_mom sets them for a job: the
 * guest's node file lists VMs (as in vTorque, whose vmPrologue made the VM
 * node file what the VMs see as PBS_NODEFILE); PBS_NP counts the VMs' vCPUs.
 */
export function torqueGuestVars(job: GuestJob): GuestVars {
  const vars: [string, string][] = [['PBS_JOBID', job.id], ['PBS_JOBNAME', job.name]];
  if (job.workdir !== undefined) vars.push(['PBS_O_WORKDIR', job.workdir]);
  return { vars, nodefile: ['PBS_NODEFILE', 'PBS_VM_NODEFILE'], script: [['PBS_ENVIRONMENT', 'PBS_BATCH']], np: ['PBS_NP'] };
}

/** Torque 6.1 (src/resmom/trq_cgroups.c) makes a job's cgroups as <mount>/torque/<jobid>/ in each v1 hierarchy it uses. */
export const torqueJobCgroup = (jobId: string): string => `torque/${jobId}`;

/** Torque's MOM keeps <jobid>.JB in mom_priv/jobs while this node has the job. */
export function jobKnownToTorque(config: Config, jobId: string): boolean {
  return existsSync(`${config.paths.torque_home}/mom_priv/jobs/${jobId}.JB`);
}

type JobOnNode = { kind: HookKind; env: CoreJobEnv; hosts?: readonly string[]; ownNumbering?: boolean };

/** pbs_mom's word for this node (contract.ts torqueNodeName) takes Torque's own variables, which hookJob read. */
const placeOf = (job: JobOnNode | undefined): JobPlace | undefined =>
  job ? { kind: job.kind, env: job.env as JobEnv, hosts: job.hosts, radix: job.ownNumbering } : undefined;

/**
 * Torque's engine. `env`: the process environment pbs_mom gave (PBS_*), read
 * once here; every JobEnv this engine hands out is Torque's JobEnv.
 */
export function torqueEngine(processEnv: NodeJS.ProcessEnv): BatchSystem {
  const env = readJobEnv(processEnv);
  return {
    terms: TORQUE_TERMS,
    guestVars: torqueGuestVars,
    jobCgroup: torqueJobCgroup,
    hookJob(kind, argv) {
      const args: JobArgs = parseJobArgs(kind, argv);
      return { args, env };
    },
    isJobId: isTorqueJobId,

    async jobRecord(config, jobId) {
      return recordOf(await qstatJob(config, jobId));
    },
    recordTool: 'qstat',
    recordFault(jobId, cause) {
      return new NodeFault(`cannot get job ${jobId}'s VM request from Torque on this sister node`, [
        {
          id: 'sister-request',
          where: `qstat -f -1 ${jobId}`,
          message: String((cause as Error)?.message ?? cause).split('\n')[0]!.slice(0, 300),
          fix: 'a sister has no job script and learns the VM request from qstat: check [tools] qstat and that this node can reach pbs_server',
        },
      ], { cause });
    },

    // PBS_NODEFILE, else qstat's exec_host: a sister has no node file.
    hostList(jobEnv, record) {
      const nodefile = (jobEnv as JobEnv).nodefile;
      let list: string | undefined;
      try {
        if (nodefile) list = readFileSync(nodefile, 'utf8');
      } catch {
        /* sisters may not have it */
      }
      if (!list?.trim() && record?.hostList) list = record.hostList;
      return list?.trim() ? list : undefined;
    },

    nodeName(config, job): NodeName {
      const id = torqueNodeName({ configured: config?.torque.node_name ?? '', ...placeOf(job) });
      return { name: id.name, from: id.from, batch: id.torque };
    },

    /**
     * Placement follows the name it was given; the admin learns when the other
     * sources disagree: a node_name pbs_mom contradicts, or a Torque name that
     * doctor (which has no job, so node_name or the host name) would not find.
     */
    nodeNameNote(config, id): LogNote {
      const node = { name: id.name, from: id.from, torque: id.batch };
      const doctorName = config.torque.node_name || hostname();
      if (id.batch !== undefined && id.batch !== id.name) {
        return { level: 'warn', data: { node }, message: `[torque] node_name = ${id.name}, but pbs_mom calls this node ${id.batch} for this job; placement follows node_name. Fix: set [torque] node_name = ${id.batch}, or leave it empty` };
      }
      if (id.name !== doctorName) {
        return { level: 'warn', data: { node }, message: `Torque calls this node ${id.name} (${id.from}), not ${doctorName}: set [torque] node_name = ${id.name} so that doctor and doctor --clear find this node` };
      }
      return { level: 'debug', data: { node }, message: "this node's Torque name" };
    },

    noHostList() {
      const why = 'PBS_NODEFILE is missing or empty and qstat shows no exec_host';
      return new NodeFault(`cannot tell where this node stands in the job's node list (${why})`, [
        { id: 'nodefile', where: 'PBS_NODEFILE', message: why, fix: 'pbs_mom passes PBS_NODEFILE, and qstat -f shows exec_host; check both reach this node' },
      ]);
    },

    jobPresence,
    runsHere: jobKnownToTorque,

    // pbs_mom (start_exec.c handle_prologs): 1 is JOB_EXEC_FAIL2, abort, which
    // also keeps the starter child of a job deleted meanwhile from starting its
    // shell; 2 is a requeue, for a busy node too (the node is not offlined then).
    exits: { jobFault: EXIT_JOB_FAULT, nodeFault: EXIT_NODE_FAULT, nodeBusy: EXIT_NODE_FAULT, jobGone: EXIT_JOB_FAULT },

    // Torque restarts a requeued job at once, about four times a second, so a
    // node that cannot prepare VM jobs takes itself out of scheduling, as LBNL
    // NHC does. A config that did not load is read key by key for this.
    async offlineOnFault(o): Promise<OfflineReport> {
      const place = placeOf(o.job);
      const settings = o.config
        ? (o.config.torque.offline_on_fault ? pbsnodesSettings(o.config, place) : undefined)
        : o.configFile !== undefined ? pbsnodesSettingsFromFile(o.configFile, place) : undefined;
      if (!settings) return { log: { level: 'info', message: 'node not offlined: [torque] offline_on_fault is off' } };
      const when = `(job ${o.jobId}, ${new Date().toISOString().slice(0, 16)}Z; vtorque-prologue doctor --clear once fixed)`;
      try {
        const r = await offlineNode(settings, o.reason, when);
        const said = r.action === 'offlined'
          ? `node ${r.node} was taken offline with the note "${r.note}"`
          : r.action === 'offlined-kept-note'
            ? `node ${r.node} was taken offline; the operator's note "${r.note}" was kept`
            : `node ${r.node} was not offlined: ${r.why}`;
        return { said, log: { level: 'warn', data: { pbsnodes: r }, message: said } };
      } catch (e) {
        const said = `node ${settings.node} could not be taken offline (${(e as Error).message}); Torque may restart this job here at once. Fix: check [tools] pbsnodes, and that this host may run pbsnodes -o (Torque operator or manager)`;
        return { said, log: { level: 'error', data: { err: String((e as Error).message) }, message: said } };
      }
    },

    /**
     * Torque does not deliver the .o/.e files of a job whose prologue exits 1:
     * the report goes where Torque would have put the job's stderr, under the
     * name Torque would have used when that is a directory.
     */
    reportTarget(args, jobEnv, record): ReportTarget | undefined {
      const name = `${args.jobName}.e${jobSequence(args.jobId)}`;
      const p = record?.errorPath;
      if (p) return { path: p, nameInDir: isFileName(name) ? name : undefined };
      return jobEnv.workdir ? { path: `${jobEnv.workdir}/${name}` } : undefined;
    },
    noReportTarget: 'no error path: qstat gave none and PBS_O_WORKDIR is unset',
  };
}
