// The VM request as one job variable, VTORQUE_REQUEST, so that sister nodes
// (which never see the job script) learn what its #VM lines asked for. The
// submit filter writes it with a `#PBS -v` line; pbs_server keeps it in the
// job's Variable_List, where `qstat -f` shows it to every node.
//
// It carries the keys the job gave and nothing else: not the [defaults], not
// the limits. The filter may run where the admin's ini is unreadable, and each
// node resolves defaults and checks [policy] itself, exactly as it does for
// #VM lines. So "v1:vcpus=4" means the same as the line "#VM vcpus=4".
//
// Format: "v1", then ":key=value" for each key the job gave, in VM_KEY_NAMES
// order, each value in the canonical text of its type:
//   v1:img=debian12.qcow2:vcpus=4:ram=8G
// Every value type is limited to A-Z a-z 0-9 . _ + - / (see config/values.ts),
// so the whole string stays inside that alphabet plus ':' and '='. None of
// those is special to qsub -v (which splits on ',' and whitespace), to
// Torque's Variable_List ("\," escapes) or to the job's environment.
//
// A user can write the variable by hand, so decoding trusts nothing: the
// syntax is checked here and every value goes through resolveRequest, the same
// code that checks #VM lines, with the same messages.
import type { Config } from '../config/schema.js';
import { SIZE_UNITS, controlCharIn, quote } from '../config/values.js';
import { JobFault, type Problem } from '../core/errors.js';
import type { Directive } from './directives.js';
import { VM_KEYS, VM_KEY_NAMES, type VmKey } from './keys.js';
import { resolveRequest, type VmRequest } from './resolve.js';

export const REQUEST_VARIABLE = 'VTORQUE_REQUEST';
export const ENCODING_VERSION = 'v1';
/** Far above any real request (all 18 keys with long paths stay under 6 KB); stops a hostile megabyte early. */
export const MAX_ENCODED_LENGTH = 8192;

/** The canonical text of one value: what its type parses back to the very same value. */
export function canonicalValue(key: VmKey, value: unknown): string {
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    // Sizes read best with a unit ("8G"), counts without; try the unit form and
    // keep it only if this key's type reads it back exactly (vcpus=1024 is not "1K").
    for (const [u, f] of SIZE_UNITS) {
      if (value >= f && value % f === 0) {
        const text = `${value / f}${u}`;
        const back = VM_KEYS[key].type.parse(text);
        if (back.ok && back.value === value) return text;
        break;
      }
    }
    return String(value);
  }
  return String(value);
}

/** VTORQUE_REQUEST for a resolved request: the keys the job gave (#VM lines), canonical and in table order. */
export function encodeRequest(request: VmRequest): string {
  const items: string[] = [ENCODING_VERSION];
  for (const k of VM_KEY_NAMES) {
    if (request.sources[k] !== 'job') continue;
    const v = (request as unknown as Record<string, unknown>)[k];
    if (v === undefined || v === null) continue;
    items.push(`${k}=${canonicalValue(k, v)}`);
  }
  return items.join(':');
}

const where = (item: number) => `${REQUEST_VARIABLE} item ${item}`;
const FIX = `do not set ${REQUEST_VARIABLE} yourself: write #VM lines in the job script and the submit filter sets it`;

function bad(message: string, item?: number): JobFault {
  return new JobFault(`${REQUEST_VARIABLE} is not a valid VM request`, [
    { id: 'vtorque-request', where: item === undefined ? REQUEST_VARIABLE : where(item), message, fix: FIX },
  ]);
}

/**
 * VTORQUE_REQUEST back into directives, one per item, with `line` set to the
 * item's number (1 = the first key). Checks the syntax only; values are left
 * to resolveRequest. Throws a JobFault for anything malformed.
 */
export function decodeRequest(text: string): Directive[] {
  if (text.length > MAX_ENCODED_LENGTH) throw bad(`is ${text.length} characters long, more than ${MAX_ENCODED_LENGTH}`);
  const ctl = controlCharIn(text);
  if (ctl) throw bad(`contains ${ctl}`);
  const parts = text.split(':');
  const version = parts[0]!;
  if (version !== ENCODING_VERSION) {
    if (/^v[0-9]{1,4}$/.test(version)) {
      throw bad(`is in format ${version}; this vtorque-prologue reads ${ENCODING_VERSION} (is the submit host newer than this node?)`);
    }
    throw bad(`${quote(text, 40)} does not start with "${ENCODING_VERSION}"`);
  }
  const out: Directive[] = [];
  const seen = new Map<string, number>();
  for (let i = 1; i < parts.length; i++) {
    const m = /^([A-Za-z_]{1,40})=(.*)$/s.exec(parts[i]!);
    if (!m) throw bad(`${quote(parts[i]!, 40)} is not key=value`, i);
    const key = m[1]!.toLowerCase();
    const first = seen.get(key);
    if (first !== undefined) throw bad(`${key} is given twice (first as item ${first})`, i);
    seen.set(key, i);
    out.push({ key: m[1]!, value: m[2]!, line: i });
  }
  return out;
}

/** Rewrites resolveRequest's "line N" to a caller's label ("VTORQUE_REQUEST item 2", "qsub -v VM_RAM"). */
export function relabel(problems: readonly Problem[], label: (line: number) => string): Problem[] {
  return problems.map((p) => {
    const m = /^line ([0-9]+)$/.exec(p.where ?? '');
    return m ? { ...p, where: label(Number(m[1])) } : p;
  });
}

/**
 * Decodes VTORQUE_REQUEST and resolves it against this node's [defaults] and
 * [policy], as the prologue resolves #VM lines. An empty request ("v1") is a
 * VM job with all defaults: what a job in one of [policy] vm_queues gets.
 * Throws a JobFault naming every problem.
 */
export function requestFromEncoded(text: string, config: Config): VmRequest {
  const directives = decodeRequest(text);
  try {
    return resolveRequest({ directives, config, forcedByQueue: directives.length === 0 });
  } catch (e) {
    if (!(e instanceof JobFault)) throw e;
    throw new JobFault(`${REQUEST_VARIABLE}: ${e.message}`, relabel(e.problems, where));
  }
}
