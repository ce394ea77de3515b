// Everything we say to Torque's pbsnodes: read this node's state and note,
// take it out of scheduling with a "vtorque:" note, and bring it back. As LBNL
// NHC does, a note that is not ours is an operator's and is never replaced or
// cleared, and a node an operator took offline without a note is left alone.
//
// Torque's pbsnodes (src/cmds/pbsnodes.c):
//   pbsnodes -l -n all NODE   one line: name (cut to 20 chars), state, note
//                             ("%-20.20s %-26.26s %s"); no note: "name state"
//   pbsnodes -o -N NOTE NODE  sets the note, then adds the offline state
//   pbsnodes -c -N n NODE     clears offline; "-N n" clears the note
// It exits 1 when it cannot reach pbs_server or the node is unknown.
import { iniValue, readIniLenient } from '../config/ini.js';
import { SCHEMA, type Config, type KeySpec } from '../config/schema.js';
import { runTool } from '../tools/run.js';
import { torqueNodeName, type JobEnv, type ScriptKind } from './contract.js';

/** Every note we write starts with this; only such notes are ours to replace or clear. */
export const NOTE_LEADER = 'vtorque:';
// Torque's MAX_NOTE is 256; stay under it so pbs_server never refuses our note.
const MAX_NOTE = 200;

export interface NodeState {
  node: string;
  /** Torque's state list, e.g. "free", "offline", "job-exclusive,offline". */
  state: string;
  /** The note, or '' when the node has none. */
  note: string;
}

export interface PbsnodesSettings {
  pbsnodes: string;
  timeoutMs: number;
  node: string;
}

/** The job a hook runs for, when there is one: pbs_mom's word for this node's name (torque/contract.ts torqueNodeName). */
export interface JobPlace {
  kind: ScriptKind;
  env: JobEnv;
  /** The job's distinct hosts in exec_host order. */
  hosts?: readonly string[];
  radix?: boolean;
}

export function pbsnodesSettings(config: Config, job?: JobPlace): PbsnodesSettings {
  return {
    pbsnodes: config.tools.pbsnodes,
    // A Torque client call like qstat: the same deadline.
    timeoutMs: config.timeouts.qstat * 1000,
    node: torqueNodeName({ configured: config.torque.node_name, ...job }).name,
  };
}

/**
 * The settings from an ini that did not validate: a typo elsewhere in the file
 * is the likeliest node fault of all and must still stop the requeue loop, yet
 * an admin who set offline_on_fault = false is obeyed. Each key is read on its
 * own; an unreadable one takes its default. Undefined: do not offline.
 */
export function pbsnodesSettingsFromFile(file: string, job?: JobPlace): PbsnodesSettings | undefined {
  const raw = readIniLenient(file);
  // Each key on its own, as loadConfig reads it; an absent or invalid one is the schema's default.
  const pick = <T>(section: string, key: string, spec: KeySpec<T>): T => {
    const v = iniValue(raw, section, key, spec.type);
    if (v !== undefined) return v;
    const d = spec.type.parse(spec.default);
    if (!d.ok) throw new Error('schema default does not parse');
    return d.value;
  };
  if (!pick('torque', 'offline_on_fault', SCHEMA.torque.offline_on_fault)) return undefined;
  const name = pick('torque', 'node_name', SCHEMA.torque.node_name);
  return {
    pbsnodes: pick('tools', 'pbsnodes', SCHEMA.tools.pbsnodes),
    timeoutMs: pick('timeouts', 'qstat', SCHEMA.timeouts.qstat) * 1000,
    node: torqueNodeName({ configured: name, ...job }).name,
  };
}

export const isOffline = (s: NodeState) => s.state.split(',').includes('offline');
export const isOurNote = (note: string) => note.startsWith(NOTE_LEADER);

/** Parses `pbsnodes -l -n all NODE`: the line whose (possibly cut) name is this node's. */
export function parseNodeLine(text: string, node: string): NodeState | undefined {
  for (const l of text.split('\n')) {
    const m = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(l.trimEnd());
    if (!m) continue;
    const name = m[1]!;
    // Torque prints at most 20 characters of the name.
    if (name === node || (name.length === 20 && node.startsWith(name))) {
      return { node, state: m[2]!, note: (m[3] ?? '').trim() };
    }
  }
  return undefined;
}

export async function readNode(s: PbsnodesSettings): Promise<NodeState> {
  const r = await runTool(s.pbsnodes, ['-l', '-n', 'all', s.node], { timeout: s.timeoutMs, toolKey: 'pbsnodes', maxBuffer: 1024 * 1024 });
  const st = parseNodeLine(r.stdout, s.node);
  if (!st) {
    throw new Error(`pbsnodes does not list node ${s.node}; set [torque] node_name to this node's name in Torque's nodes file`);
  }
  return st;
}

/** One line, no control characters, short enough for pbs_server; the reason is cut, never the suffix. */
export function noteFor(reason: string, suffix = ''): string {
  // eslint-disable-next-line no-control-regex
  const flat = (x: string) => x.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').replace(/\s+/g, ' ').trim();
  const tail = suffix ? ` ${flat(suffix)}` : '';
  const room = MAX_NOTE - NOTE_LEADER.length - 1 - tail.length;
  const one = flat(reason);
  return `${NOTE_LEADER} ${one.length <= room ? one : `${one.slice(0, Math.max(0, room - 3))}...`}${tail}`;
}

export type OfflineOutcome =
  | { action: 'offlined'; node: string; note: string; replaced?: string }
  | { action: 'offlined-kept-note'; node: string; note: string }
  | { action: 'left-alone'; node: string; why: string };

/**
 * Takes the node out of scheduling with our note. An operator's note stays:
 * the node is still offlined (the job loop must stop) but keeps their words.
 * A node that is already offline without any note was taken out by hand, and
 * is not touched, so that its operator's intent stays readable.
 */
export async function offlineNode(s: PbsnodesSettings, reason: string, suffix = ''): Promise<OfflineOutcome> {
  const cur = await readNode(s);
  const run = (args: string[]) => runTool(s.pbsnodes, args, { timeout: s.timeoutMs, toolKey: 'pbsnodes' });
  if (cur.note !== '' && !isOurNote(cur.note)) {
    if (!isOffline(cur)) await run(['-o', s.node]);
    return { action: 'offlined-kept-note', node: s.node, note: cur.note };
  }
  if (cur.note === '' && isOffline(cur)) {
    return { action: 'left-alone', node: s.node, why: 'already offline without a note: an operator took it out' };
  }
  const note = noteFor(reason, suffix);
  await run(['-o', '-N', note, s.node]);
  return { action: 'offlined', node: s.node, note, replaced: cur.note || undefined };
}

export type OnlineOutcome =
  | { action: 'onlined'; node: string; note: string }
  | { action: 'left-alone'; node: string; why: string };

/** Brings the node back only when the note is ours: an operator's offline is theirs to end. */
export async function onlineNode(s: PbsnodesSettings): Promise<OnlineOutcome> {
  const cur = await readNode(s);
  if (!isOurNote(cur.note)) {
    return { action: 'left-alone', node: s.node, why: cur.note ? `its note is not ours: ${JSON.stringify(cur.note)}` : isOffline(cur) ? 'offline without a note: an operator took it out' : 'not offline' };
  }
  await runTool(s.pbsnodes, ['-c', '-N', 'n', s.node], { timeout: s.timeoutMs, toolKey: 'pbsnodes' });
  return { action: 'onlined', node: s.node, note: cur.note };
}
