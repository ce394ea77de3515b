// The VM request on a node that has no job script: a sister running
// prologue.parallel (pbs_mom gives sisters the job's attributes, not its .SC).
// Pure functions: the caller gets the job's record and host list from the
// batch system (core/engine.ts); nothing here touches the node.
//
// API for the prologue pipeline (not wired in here: the pipeline owns that):
//
//   requestFromVariables(variables, config, oversized?): VariablesRequest
//     `variables` is parseQstat(...).variables, `oversized` its
//     oversizedVariables (one of ours there is a JobFault). Takes VTORQUE_REQUEST
//     when it is there (decoded, re-checked against this node's [policy]); else the
//     VM_<KEY> variables given with `qsub -v VM_IMG=...,VM_VCPUS=...`; else
//     { source: 'none' }. Throws a JobFault (exit 1) when the chosen source is
//     invalid, with the same messages #VM lines get; it never falls through
//     from a bad VTORQUE_REQUEST to the VM_ variables.
//
//   vmVariableName(key: VmKey): string            'ram' -> 'VM_RAM'
//   directivesFromVmVariables(variables): Directive[]   the VM_<KEY> variables as directives
//
//   requestDisagreement(script: VmRequest, fromVariables: VmRequest): RequestDifference[]
//     The keys whose resolved values differ; [] when they agree.
//     The script wins on Mother Superior and both sides log this.
//   describeDisagreement(diffs: readonly RequestDifference[], other: string): string
//     One line for the log or the user: "vcpus: #VM 4, VTORQUE_REQUEST 2; ...".
//
//   nodePosition(nodefile: string, host: string, terms: BatchTerms): NodePosition
//     `nodefile` is the job's host list (one host per line, repeated per
//     slot, in the batch system's order), `host` this node's name (short or
//     FQDN), `terms` the batch system's words for the faults.
//     Returns { index, hosts }: this node's 0-based place among the distinct
//     hosts in first-occurrence order, so VM indices can be made unique across
//     the job (e.g. global = index * vms_per_node + i). Throws a NodeFault
//     when the node is not in the list or its short name is ambiguous.
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault } from '../core/errors.js';
import type { Directive } from './directives.js';
import { VM_KEY_NAMES, type VmKey } from './keys.js';
import { resolveRequest, type VmRequest } from './resolve.js';
import { REQUEST_VARIABLE, canonicalValue, relabel, requestFromEncoded } from './encoding.js';
import { VARIABLE_CAP, type BatchTerms } from '../core/engine.js';

export type VariablesRequest =
  | { source: 'none' }
  | { source: typeof REQUEST_VARIABLE; request: VmRequest; encoded: string }
  | { source: 'VM_variables'; request: VmRequest; names: string[] };

/** The qsub -v name of a #VM key, as vTorque's vsub named them: VM_ and the key in capitals. */
export function vmVariableName(key: VmKey): string {
  return `VM_${key.toUpperCase()}`;
}

const BY_NAME: ReadonlyMap<string, VmKey> = new Map(VM_KEY_NAMES.map((k) => [vmVariableName(k), k]));

/**
 * The VM_<KEY> variables as directives, `line` numbering them from 1 in table
 * order. Other VM_ names are left alone: with `qsub -V` the whole environment
 * becomes job variables, and VM_-prefixed names of other programs are not ours.
 */
export function directivesFromVmVariables(variables: Readonly<Record<string, string>>): Directive[] {
  const out: Directive[] = [];
  for (const [name, key] of BY_NAME) {
    if (!Object.prototype.hasOwnProperty.call(variables, name)) continue;
    out.push({ key, value: variables[name]!, line: out.length + 1 });
  }
  return out;
}

/**
 * `oversized` names variables the job's record held but were too long to keep
 * (core/engine.ts VARIABLE_CAP): one of ours among them is refused, never
 * skipped, so that a sister does not fall through to another source or to no VMs.
 */
export function requestFromVariables(variables: Readonly<Record<string, string>>, config: Config, oversized: readonly string[] = []): VariablesRequest {
  const has = (n: string) => Object.prototype.hasOwnProperty.call(variables, n);
  const tooLong = (n: string, where: string) => new JobFault(`the job variable ${n} is too long`, [
    { id: 'variable-too-long', where, message: `${n} is longer than ${VARIABLE_CAP} characters`, fix: `do not set ${n} yourself: write #VM lines in the job script` },
  ]);
  if (oversized.includes(REQUEST_VARIABLE)) throw tooLong(REQUEST_VARIABLE, REQUEST_VARIABLE);
  if (has(REQUEST_VARIABLE)) {
    const encoded = variables[REQUEST_VARIABLE]!;
    return { source: REQUEST_VARIABLE, request: requestFromEncoded(encoded, config), encoded };
  }
  const long = oversized.find((n) => BY_NAME.has(n));
  if (long !== undefined) throw tooLong(long, `qsub -v ${long}`);
  const directives = directivesFromVmVariables(variables);
  if (directives.length === 0) return { source: 'none' };
  const names = directives.map((d) => vmVariableName(d.key as VmKey));
  try {
    return { source: 'VM_variables', request: resolveRequest({ directives, config }), names };
  } catch (e) {
    if (!(e instanceof JobFault)) throw e;
    throw new JobFault(`the VM_ job variables: ${e.message}`, relabel(e.problems, (n) => `qsub -v ${names[n - 1]}`));
  }
}

export interface RequestDifference {
  key: VmKey;
  /** Canonical text, "(none)" when unset, "(from the image)" for a distro left to inspection. */
  script: string;
  other: string;
}

function shown(key: VmKey, v: unknown): string {
  if (v === undefined) return '(none)';
  if (v === null) return '(from the image)';
  return canonicalValue(key, v);
}

/**
 * Compares resolved values, not the text: "#VM vcpus=2" and a request that
 * leaves vcpus to a [defaults] of 2 agree. Where each value came from is not compared.
 */
export function requestDisagreement(script: VmRequest, fromVariables: VmRequest): RequestDifference[] {
  const a = script as unknown as Record<string, unknown>;
  const b = fromVariables as unknown as Record<string, unknown>;
  const out: RequestDifference[] = [];
  for (const k of VM_KEY_NAMES) {
    const x = shown(k, a[k]);
    const y = shown(k, b[k]);
    if (x !== y) out.push({ key: k, script: x, other: y });
  }
  return out;
}

export function describeDisagreement(diffs: readonly RequestDifference[], other: string): string {
  return diffs.map((d) => `${d.key}: #VM ${d.script}, ${other} ${d.other}`).join('; ');
}

export interface NodePosition {
  /** 0-based place of this node among the job's distinct hosts. */
  index: number;
  /** The distinct hosts, short names, in the order the batch system listed them. */
  hosts: string[];
}

const short = (h: string) => h.trim().split('.')[0]!.toLowerCase();

export function nodePosition(nodefile: string, host: string, terms: Pick<BatchTerms, 'hostListVar' | 'hostListFix'>): NodePosition {
  const full: string[] = [];
  for (const raw of nodefile.split('\n')) {
    const h = raw.trim();
    if (h !== '' && !full.includes(h)) full.push(h);
  }
  const hosts: string[] = [];
  for (const h of full) if (!hosts.includes(short(h))) hosts.push(short(h));
  const me = short(host);
  const { hostListVar: where, hostListFix: fix } = terms;
  if (hosts.length === 0) {
    throw new NodeFault(`${where} lists no hosts`, [{ id: 'nodefile', where, message: 'lists no hosts', fix }]);
  }
  // Two FQDNs with one short name (node1.a, node1.b) cannot be told apart by short name.
  const clash = full.filter((h) => short(h) === me);
  if (clash.length > 1) {
    throw new NodeFault(`${where} has ${clash.length} hosts named ${me}`, [
      { id: 'nodefile', where, message: `${clash.join(' and ')} share the short name ${me}`, fix },
    ]);
  }
  const index = hosts.indexOf(me);
  if (index < 0) {
    throw new NodeFault(`this node (${me}) is not in the job's node list`, [
      { id: 'nodefile', where, message: `lists ${hosts.slice(0, 8).join(', ')}${hosts.length > 8 ? ', ...' : ''} but not ${me}`, fix },
    ]);
  }
  return { index, hosts };
}
