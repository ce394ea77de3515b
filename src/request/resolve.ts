// Turns #VM directives plus [defaults] into one frozen, typed request, and
// records where each value came from. Every problem is collected, so the user
// fixes the whole header in one go.
import type { Config } from '../config/schema.js';
import { closest, controlCharIn, formatSize, quote } from '../config/values.js';
import { JobFault, type Problem } from '../core/errors.js';
import type { Directive, ScanResult } from './directives.js';
import {
  DEFAULTABLE, FAMILY_OF, VM_KEYS, VM_KEY_NAMES, isVmKey, type Distro, type Family, type VmKey, type VmValues,
} from './keys.js';

/** job: a #VM line; default: [defaults]; image: left for image inspection to decide. */
export type Source = 'job' | 'default' | 'image';

type Required = Pick<VmValues, 'img' | 'arch' | 'vcpus' | 'ram' | 'vms_per_node' | 'fs_type' | 'vcpu_pinning'>;
type Optional = Partial<Omit<VmValues, keyof Required | 'distro'>>;

/**
 * Keys that name the user's own files and that nothing reads as the user yet.
 * They are refused rather than written, unchecked, into the root-owned
 * manifest, where a launcher could take /dev/sda or ../../etc/shadow as
 * vetted. vm_prologue= and vm_epilogue= are not here: the job starter reads
 * them as the job owner (src/launch/starter.ts) and root never opens them.
 */
export const NOT_YET: readonly VmKey[] = ['disk'];

export type VmRequest = Readonly<Required & Optional & {
  /** null until image inspection names it (the job gave none and uses a non-default image). */
  distro: Distro | null;
  family: Family | null;
  sources: Readonly<Partial<Record<VmKey, Source>>>;
  /** The job had no #VM lines; its queue is listed in [policy] vm_queues. */
  forcedByQueue: boolean;
}>;

export interface ResolveInput {
  directives: readonly Directive[];
  config: Config;
  forcedByQueue?: boolean;
}

export function resolveRequest(input: ResolveInput): VmRequest {
  const { directives, config } = input;
  const problems: Problem[] = [];
  const given: Partial<Record<VmKey, unknown>> = {};
  const firstLine: Partial<Record<VmKey, number>> = {};

  for (const d of directives) {
    const where = `line ${d.line}`;
    const key = d.key.toLowerCase();
    if (!isVmKey(key)) {
      const hint = closest(key, VM_KEY_NAMES);
      problems.push({
        id: 'unknown-key', where,
        message: `unknown key ${quote(d.key, 40)}`,
        fix: hint ? `did you mean ${hint}?` : `use one of: ${VM_KEY_NAMES.join(', ')}`,
      });
      continue;
    }
    if (firstLine[key] !== undefined) {
      problems.push({ id: key, where, message: `${key} is given twice (first on line ${firstLine[key]})`, fix: `keep one ${key}=` });
      continue;
    }
    firstLine[key] = d.line;
    if (NOT_YET.includes(key)) {
      problems.push({
        id: key, where,
        message: `${key}= is not supported yet on this site: nothing here attaches it to the VMs`,
        fix: `remove ${key}= from the request`,
      });
      continue;
    }
    const ctl = controlCharIn(d.value);
    if (ctl) {
      problems.push({ id: key, where, message: `${key} value contains ${ctl}`, fix: `retype the line in a plain text editor, e.g. #VM ${VM_KEYS[key].example}` });
      continue;
    }
    const r = VM_KEYS[key].type.parse(d.value);
    if (r.ok) given[key] = r.value;
    else problems.push({ id: key, where, message: `${key}: ${r.message}`, fix: `${r.fix} (example: #VM ${VM_KEYS[key].example})` });
  }

  const values: Record<string, unknown> = {};
  const sources: Partial<Record<VmKey, Source>> = {};
  for (const k of VM_KEY_NAMES) {
    if (given[k] !== undefined) {
      values[k] = given[k];
      sources[k] = 'job';
    } else if ((DEFAULTABLE as readonly string[]).includes(k) && k !== 'distro') {
      values[k] = config.defaults[k as Exclude<(typeof DEFAULTABLE)[number], 'distro'>];
      sources[k] = 'default';
    }
  }

  // The distro: the job's word; else the default distro, but only for the
  // default image (it describes that image); else the image decides.
  if (given.distro === undefined) {
    if (values.img === config.defaults.img) {
      values.distro = config.defaults.distro;
      sources.distro = 'default';
    } else {
      values.distro = null;
      sources.distro = 'image';
    }
  }
  values.family = values.distro === null ? null : FAMILY_OF[values.distro as Distro];

  checkPolicy(values as Required & Optional, config, firstLine, problems);

  if (problems.length > 0) {
    throw new JobFault(`the #VM request has ${problems.length} problem${problems.length > 1 ? 's' : ''}`, problems);
  }
  return Object.freeze({
    ...(values as Required & Optional & { distro: Distro | null; family: Family | null }),
    sources: Object.freeze(sources),
    forcedByQueue: input.forcedByQueue ?? false,
  });
}

function checkPolicy(v: Required & Optional, config: Config, line: Partial<Record<VmKey, number>>, problems: Problem[]): void {
  const p = config.policy;
  const at = (k: VmKey) => (line[k] ? `line ${line[k]}` : `[defaults] ${k}`);
  const over = (k: VmKey, shown: string, limit: string, cfg: string) => problems.push({
    id: k, where: at(k), message: `${k}=${shown} is more than this site allows (${limit})`,
    fix: `ask for at most ${limit}, or ask your admin to raise [policy] ${cfg}`,
  });
  if (v.vcpus > p.max_vcpus) over('vcpus', String(v.vcpus), String(p.max_vcpus), 'max_vcpus');
  if (v.ram > p.max_ram) over('ram', formatSize(v.ram), formatSize(p.max_ram), 'max_ram');
  if (v.vms_per_node > p.max_vms_per_node) over('vms_per_node', String(v.vms_per_node), String(p.max_vms_per_node), 'max_vms_per_node');
  if (v.iocm_min_cores !== undefined && v.iocm_max_cores !== undefined && v.iocm_min_cores > v.iocm_max_cores) {
    problems.push({
      id: 'iocm_min_cores', where: at('iocm_min_cores'),
      message: `iocm_min_cores=${v.iocm_min_cores} is more than iocm_max_cores=${v.iocm_max_cores}`,
      fix: 'make iocm_min_cores at most iocm_max_cores',
    });
  }
}

function lineNo(where: string | undefined): number {
  const m = /^line ([0-9]+)/.exec(where ?? '');
  return m ? Number(m[1]) : Infinity;
}

/**
 * The whole header at once: the scanner's syntax problems and the resolver's
 * key problems together, in line order, so the user fixes everything in one go.
 */
export function resolveScanned(scan: Pick<ScanResult, 'directives' | 'problems'>, config: Config, forcedByQueue = false): VmRequest {
  let request: VmRequest | undefined;
  let problems: Problem[] = [...scan.problems];
  try {
    request = resolveRequest({ directives: scan.directives, config, forcedByQueue });
  } catch (e) {
    if (!(e instanceof JobFault)) throw e;
    problems = [...problems, ...e.problems];
  }
  if (problems.length > 0 || !request) {
    problems.sort((a, b) => lineNo(a.where) - lineNo(b.where));
    throw new JobFault(`the #VM request has ${problems.length} problem${problems.length > 1 ? 's' : ''}`, problems);
  }
  return request;
}
