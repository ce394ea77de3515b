// The submit filter's VM path: check the request as the prologue will, check
// what of the image can be checked cheaply from the submit host, and add one
// `#PBS -v ...,VTORQUE_REQUEST=...` line so the sister nodes get the request.
//
// It runs as the submitting user, on a login node, inside an interactive qsub:
// - The admin's ini may be unreadable there. Then only the form of the request
//   is checked (types, key names), never the site's limits or pool: a guess at
//   those could refuse a job the nodes would run.
// - The pool may be absent or unreadable there. authoriseImage's "the pool is
//   broken" (a node fault) then becomes a note, not a refusal; its "this image
//   is not allowed" (a job fault) refuses the job, as it would on the node.
// - Nothing is hashed: a multi-GiB image would stall qsub. A known verdict is
//   found through the digest the pool's SHA256SUMS lists for the image. The
//   node's stat memo is root-only and node-local, so it is not used.
// - Torque 6's qsub keeps only the LAST -v list (script lines first, the
//   command line last). So the added line repeats the variables of the
//   script's last `#PBS -v` line, and a command-line -v, which would drop
//   the added line, is refused for multi-node jobs and warned about otherwise.
import { accessSync, constants } from 'node:fs';
import { DEFAULT_CONFIG_FILE, loadConfig, parseConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { ScanResult } from '../request/directives.js';
import {
  EXIT_JOB_FAULT, EXIT_NODE_FAULT, JobFault, isJobFault, isNodeFault, isVtorqueError, type ExitCode, type Problem,
} from '../core/errors.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { REQUEST_VARIABLE, encodeRequest } from '../request/encoding.js';
import { directivesFromVmVariables, requestDisagreement, requestFromVariables, vmVariableName } from '../request/sister.js';
import type { VmKey } from '../request/keys.js';
import { authoriseImage, type AuthorisedImage } from '../image/authorise.js';
import { checkHeader } from '../image/format.js';
import { readHeader } from '../image/header.js';
import { complianceFault, heldVerdict, isImageRejection, judge } from '../image/verdicts.js';
import { CHECK_HINT, MAX_PROBLEM_LINES, line, problemLine } from '../report/user.js';
import type { FilterContext } from './filter.js';
import { directiveOptions, parseVariableList, qsubHeader, type PbsDirective, type ScriptLine } from './qsub.js';

export interface FilterResult {
  /** The script's head with the added (or refreshed) line; the rest of stdin follows it unchanged. */
  head: Buffer;
}

// Without the admin's ini the limits are unknown: allow what the types allow,
// so that only a malformed request is refused here.
const FORM_ONLY = '[policy]\nallow_user_images = true\nmax_vcpus = 1024\nmax_ram = 16T\nmax_vms_per_node = 64\n';

/** The admin's ini, or (only when the default one is unreadable here) a config that checks the form alone. */
export function filterConfig(file: string, explicit: boolean, notes: string[]): { config: Config; site: boolean } {
  if (!explicit && file === DEFAULT_CONFIG_FILE) {
    try {
      accessSync(file, constants.R_OK);
    } catch {
      notes.push(`${file} is not readable here, so only the form of the VM request was checked; the node checks the site's limits and the image when the job starts`);
      return { config: parseConfig(FORM_ONLY, '(no site config: form only)').config, site: false };
    }
  }
  // A present but broken ini is the admin's problem and refuses the job: guessing could pass a bad one.
  return { config: loadConfig(file).config, site: true };
}

interface VSource {
  directive: PbsDirective;
  list: string;
}

/** The job variables as pbs_server will hold them: script -v lines, then qsub -v, then (with -V) the environment. */
function jobVariables(c: FilterContext, vLines: readonly VSource[]): Record<string, string> {
  const vars: Record<string, string> = {};
  const add = (list: string) => {
    for (const it of parseVariableList(list)) vars[it.name] = it.value ?? c.env[it.name] ?? '';
  };
  for (const v of vLines) add(v.list);
  for (const l of c.qsub.vLists) add(l);
  if (c.exportEnv) {
    for (const [k, v] of Object.entries(c.env)) if (v !== undefined && (k === REQUEST_VARIABLE || k.startsWith('VM_'))) vars[k] = v;
  }
  return vars;
}

const hasRequestVar = (list: string) => parseVariableList(list).some((it) => it.name === REQUEST_VARIABLE);
const lineOf = (d: PbsDirective) => `line ${d.first.index + 1}`;

/** Nodes the job asks for, when its -l says so plainly: nodes=3, nodes=2:ppn=4+1, nodes=n1+n2. */
export function nodeCount(resourceLists: readonly string[]): number | undefined {
  let spec: string | undefined;
  for (const l of resourceLists) {
    const m = /(?:^|,)nodes=([^,]*)/.exec(l);
    if (m) spec = m[1];
  }
  if (spec === undefined) return undefined;
  let n = 0;
  for (const part of spec.split('+')) {
    const m = /^([0-9]+)/.exec(part);
    n += m ? Number(m[1]) : 1;
  }
  return n;
}

/** The VM_ form of a request, for users who must pass variables with qsub -v. */
function asVmVariables(request: VmRequest): string {
  const enc = encodeRequest(request).split(':').slice(1);
  return enc.map((kv) => {
    const eq = kv.indexOf('=');
    return `${vmVariableName(kv.slice(0, eq) as VmKey)}=${kv.slice(eq + 1)}`;
  }).join(',');
}

// The words of the added line go through qsub's make_argv again: escape what it
// would split (C-locale isspace) or unquote; other bytes, UTF-8 included, pass as they are.
const escapeWord = (w: string) => w.replace(/[ \t\n\v\f\r\\"']/g, (ch) => `\\${ch}`);

/**
 * The VM path. Pushes what the user should read to `notes` as it goes, so the
 * caller prints them whether the job is refused (a thrown JobFault or
 * NodeFault) or passes (the returned head).
 */
export async function filterVmJob(c: FilterContext, scan: ScanResult, notes: string[]): Promise<FilterResult> {
  notes.push(...scan.notes);
  const latin1 = c.head.toString('latin1');
  const header = qsubHeader(latin1, c.prefix);
  const vLines: VSource[] = [];
  for (const d of header.directives) for (const list of directiveOptions(d).vLists) vLines.push({ directive: d, list });
  const { config, site } = filterConfig(c.configFile, c.configExplicit, notes);

  // VTORQUE_REQUEST is ours to write. In the script it may only be the line an
  // earlier run of this filter added (a resubmitted .SC): then it is refreshed.
  const problems: Problem[] = [];
  if (c.qsub.vLists.some(hasRequestVar)) {
    problems.push({ id: 'vtorque-request', where: 'qsub -v', message: `sets ${REQUEST_VARIABLE}, which the submit filter writes itself`, fix: `remove ${REQUEST_VARIABLE} from qsub -v and give the request as #VM lines` });
  }
  const withVar = vLines.filter((v) => hasRequestVar(v.list));
  const last = vLines.at(-1);
  let refresh: VSource | undefined;
  for (const v of withVar) {
    const items = parseVariableList(v.list);
    const ownLine = v === last && items.at(-1)?.name === REQUEST_VARIABLE && items.filter((it) => it.name === REQUEST_VARIABLE).length === 1
      && v.directive.first === v.directive.last && v.directive.words.length <= 2;
    if (ownLine) refresh = v;
    else problems.push({ id: 'vtorque-request', where: lineOf(v.directive), message: `sets ${REQUEST_VARIABLE}, which the submit filter writes itself`, fix: `remove ${REQUEST_VARIABLE} from that line and give the request as #VM lines` });
  }
  if (problems.length > 0) throw new JobFault(`the job script sets ${REQUEST_VARIABLE}`, problems);

  // The request: #VM lines (or a VM queue), else the VM_<KEY> job variables.
  const vars = jobVariables(c, vLines);
  const vmOnly: Record<string, string> = {};
  for (const d of directivesFromVmVariables(vars)) vmOnly[vmVariableName(d.key as VmKey)] = d.value;
  const queue = c.queue?.split('@')[0];
  const forced = queue !== undefined && config.policy.vm_queues.includes(queue);
  let request: VmRequest | undefined;
  if (scan.vmLines > 0 || forced) {
    request = resolveScanned(scan, config, forced);
    if (Object.keys(vmOnly).length > 0) {
      const other = requestFromVariables(vmOnly, config);
      if (other.source !== 'none') {
        const diffs = requestDisagreement(request, other.request);
        if (diffs.length > 0) {
          throw new JobFault('the #VM lines and the VM_ job variables ask for different VMs', diffs.map((d) => ({
            id: d.key, where: vmVariableName(d.key), message: `#VM gives ${d.key}=${d.script} but ${vmVariableName(d.key)}=${d.other}`,
            fix: 'give the request one way: drop the VM_ variables from qsub -v / #PBS -v, or make them agree with the #VM lines',
          })));
        }
      }
    }
  } else if (Object.keys(vmOnly).length > 0) {
    const r = requestFromVariables(vmOnly, config);
    if (r.source !== 'none') request = r.request;
  }

  const envRequest = c.exportEnv ? c.env[REQUEST_VARIABLE] : undefined;
  if (!request) {
    if (envRequest !== undefined) throw staleEnv();
    if (refresh) {
      throw new JobFault(`the job script carries a ${REQUEST_VARIABLE} but no VM request`, [
        { id: 'vtorque-request', where: lineOf(refresh.directive), message: `is left from an earlier submission; the script has no #VM lines now`, fix: 'delete that line' },
      ]);
    }
    // Not a VM job after all: only what concerns #VM lines the prologue will ignore.
    const keep = notes.filter((n) => n.startsWith('line '));
    notes.splice(0, notes.length, ...keep);
    return { head: c.head };
  }

  if (site) await checkImage(request, config, notes);

  const encoded = encodeRequest(request);
  if (envRequest !== undefined && envRequest !== encoded) throw staleEnv();

  // When the added line cannot reach pbs_server, the sister nodes would not
  // know the job wants VMs: refused for a job that has sisters, a warning otherwise.
  const lost = (where: string, why: string, fix: string): void => {
    if (carriedByCommandLine(c, request!, config)) return;
    const nodes = nodeCount([...header.directives.flatMap((d) => directiveOptions(d).resources), ...c.qsub.resources]);
    const vmForm = asVmVariables(request!);
    const fixAll = `${fix}${vmForm ? `, or add the request to qsub -v: ${vmForm}` : ''}`;
    if (nodes !== undefined && nodes > 1) {
      throw new JobFault(`the VM request would not reach the other ${nodes - 1} node${nodes > 2 ? 's' : ''} of this job`, [{ id: 'qsub-v', where, message: why, fix: fixAll }]);
    }
    notes.push(`warning: ${why}; fine for a one-node job. Fix: ${fixAll}`);
  };
  // Only a '#' prefix without blanks makes a line that is a directive to qsub and a comment to the shell.
  if (!/^#[!-~]*$/.test(c.prefix)) {
    lost('qsub -C', `the directive prefix ${JSON.stringify(c.prefix)} cannot carry ${REQUEST_VARIABLE} safely, so it would not reach the job's other nodes`, 'submit with the default #PBS prefix');
    return { head: c.head };
  }
  // Torque 6: a command-line -v replaces the script's -v lines, the added one included.
  if (c.qsub.vLists.length > 0) {
    lost('qsub -v', `qsub -v replaces the script's #PBS -v lines (Torque keeps the last -v), so ${REQUEST_VARIABLE} would not reach the job's other nodes`, "pass your variables as '#PBS -v NAME=value' lines in the script instead");
  }

  return { head: withRequestLine(c, header.lines, header.directives, scan, refresh, encoded) };
}

/** Do the VM_ variables that survive a command-line -v (its own, and -V's environment) make the same request? */
function carriedByCommandLine(c: FilterContext, request: VmRequest, config: Config): boolean {
  const vars = jobVariables(c, []);
  const vm: Record<string, string> = {};
  for (const d of directivesFromVmVariables(vars)) vm[vmVariableName(d.key as VmKey)] = d.value;
  if (Object.keys(vm).length === 0) return false;
  const r = requestFromVariables(vm, config);
  return r.source !== 'none' && requestDisagreement(request, r.request).length === 0;
}

function staleEnv(): JobFault {
  return new JobFault(`your environment carries a ${REQUEST_VARIABLE} that qsub -V would pass on`, [{
    id: 'vtorque-request', where: 'environment',
    message: `${REQUEST_VARIABLE} is set (inherited from the VM job you submit from?) and does not match this job's request`,
    fix: `unset it for this qsub: env -u ${REQUEST_VARIABLE} qsub -V ...`,
  }]);
}

/** Splices the line into the original bytes: nothing else in the script changes, not even its line endings. */
function withRequestLine(c: FilterContext, lines: readonly ScriptLine[], directives: readonly PbsDirective[], scan: ScanResult, refresh: VSource | undefined, encoded: string): Buffer {
  const user = refresh
    ? parseVariableList(refresh.list).filter((it) => it.name !== REQUEST_VARIABLE).map((it) => (it.value === undefined ? it.name : `${it.name}=${it.value}`)).join(',')
    : (directives.flatMap((d) => directiveOptions(d).vLists).at(-1) ?? '').replace(/,+$/, '');
  const text = `${c.prefix} -v ${escapeWord(user === '' ? '' : `${user},`)}${REQUEST_VARIABLE}=${encoded}`;
  const bytes = (s: string) => Buffer.from(s, 'latin1');
  if (refresh) {
    const d = refresh.directive;
    return Buffer.concat([c.head.subarray(0, d.first.start), bytes(text), c.head.subarray(d.first.textEnd)]);
  }
  // After the last #PBS or #VM line (a '\' continuation included), else after the shebang, else first.
  let anchor: ScriptLine | undefined = directives.at(-1)?.last;
  const lastVm = scan.directives.at(-1)?.line;
  if (lastVm !== undefined && (!anchor || lastVm - 1 > anchor.index)) anchor = lines[lastVm - 1];
  if (!anchor && lines[0]?.text.startsWith('#!')) anchor = lines[0];
  const eol = anchor?.eol || lines.find((l) => l.eol !== '')?.eol || '\n';
  if (!anchor) return Buffer.concat([bytes(text + eol), c.head]);
  const insert = anchor.eol === '' ? eol + text : text + eol;
  return Buffer.concat([c.head.subarray(0, anchor.end), bytes(insert), c.head.subarray(anchor.end)]);
}

/** The image checks that cost no hashing: allowed, a safe disk image, and a verdict already held. `ownerUid`: the submitting user (Slurm's check runs as SlurmUser). */
export async function checkImage(request: VmRequest, config: Config, notes: string[], ownerUid: number | undefined = process.getuid?.()): Promise<void> {
  let img: AuthorisedImage;
  try {
    img = await authoriseImage({ img: request.img, config, ownerUid });
  } catch (e) {
    if (!isNodeFault(e)) throw e;
    notes.push(`image ${request.img} was not checked here (${e.message}); the node checks it when the job starts`);
    return;
  }
  let layer1: ReturnType<typeof checkHeader>;
  try {
    layer1 = checkHeader(img, readHeader(img.path), config);
  } catch (e) {
    notes.push(`image ${request.img} was not checked here (cannot read it: ${(e as NodeJS.ErrnoException).code ?? String(e)}); the node checks it when the job starts`);
    return;
  }
  if (layer1.problems.length > 0) throw new JobFault(`image ${img.name} is not a safe disk image`, layer1.problems);
  const held = heldVerdict(img, config);
  if (!held) return;
  const { failed, warned } = judge(held.verdict, { distro: request.distro, arch: request.arch, vrdma: request.vrdma }, config);
  for (const w of warned) notes.push(`warning: image ${img.name} fails ${w.id}: ${w.message}${w.fix ? `. Fix: ${w.fix}` : ''}`);
  const fault = complianceFault(img.name, failed);
  if (fault) throw fault;
}

/** What the user reads when the filter refuses the job. */
export function filterFailureReport(e: unknown): string[] {
  const cap = (ps: readonly Problem[], map: (p: Problem) => string) => [
    ...ps.slice(0, MAX_PROBLEM_LINES).map(map),
    ...(ps.length > MAX_PROBLEM_LINES ? [line(`  ... and ${ps.length - MAX_PROBLEM_LINES} more`)] : []),
  ];
  if (isJobFault(e)) {
    return [
      line(`job not submitted: ${e.message}`),
      ...cap(e.problems, (p) => problemLine(p)),
      line(isImageRejection(e.problems)
        ? 'choose another image: vtorque-prologue check --job SCRIPT lists the pool images known to meet the requirements for your request'
        : CHECK_HINT),
    ];
  }
  if (isVtorqueError(e)) {
    return [
      line(`job not submitted: ${e.message}. This is a problem of the cluster's setup, not of your job: tell your admin.`),
      ...cap(e.problems, (p) => problemLine({ ...p, fix: p.fix ? `(admin) ${p.fix}` : undefined })),
    ];
  }
  const stack = String((e as Error)?.stack ?? e).split('\n').slice(0, 3).join(' | ');
  return [
    line('job not submitted: the submit filter failed (internal error); it refuses jobs rather than pass them unchecked'),
    line(`  ${stack}. Fix: (admin) report this to the vtorque-prologue maintainers`),
  ];
}

export function filterExitCode(e: unknown): ExitCode {
  return isJobFault(e) ? EXIT_JOB_FAULT : EXIT_NODE_FAULT;
}
