// Reads and validates the admin's ini. Invalid config is a node fault: the
// node cannot run VM jobs correctly, and the job deserves another node.
import { readFileSync } from 'node:fs';
import { NodeFault, type Problem } from '../core/errors.js';
import { parseIni } from './ini.js';
import { SCHEMA, SECTIONS, specsOf, type Config, type SectionName } from './schema.js';
import { closest, controlCharIn, quote } from './values.js';
import { useGuards } from '../tools/run.js';

export { DEFAULT_CONFIG_FILE, peekConfig } from './peek.js';
const MAX_CONFIG_BYTES = 1024 * 1024;

export interface LoadedConfig {
  config: Config;
  /** Unknown sections and keys: logged, never fatal, so a newer ini works with an older prologue. */
  warnings: string[];
}

export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    const buf = readFileSync(file);
    if (buf.length > MAX_CONFIG_BYTES) {
      throw new NodeFault(`config ${file} is larger than 1 MiB`, [
        { id: 'config', where: file, message: `is ${buf.length} bytes, more than 1 MiB`, fix: 'start again from conf/prologue.ini' },
      ]);
    }
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof NodeFault) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const what = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable' : `cannot be read (${code ?? String(e)})`;
    throw new NodeFault(`config ${file} ${what}`, [
      { id: 'config', where: file, message: what, fix: `install it with install.sh or copy conf/prologue.ini there, or pass --config FILE` },
    ]);
  }
  const loaded = parseConfig(text, file);
  // The config a run uses names the programs every tool of the run runs under.
  useGuards(loaded.config.tools);
  return loaded;
}

// The ini package accepts almost anything (a bare word becomes "word = true"),
// so lines are checked for shape first: a typo must not silently become a default.
const SHAPE = /^\s*(?:$|[;#]|\[[^\]]+\]\s*(?:[;#].*)?$|[^=\s][^=]*=)/;

function syntaxProblems(text: string, file: string): Problem[] {
  const out: Problem[] = [];
  text.split('\n').forEach((l, i) => {
    const ctl = controlCharIn(l.replace(/\r$/, '').replace(/\t/g, ' '));
    if (ctl) out.push({ id: 'config', where: `${file} line ${i + 1}`, message: `contains ${ctl}`, fix: 'the file must be plain text; start again from conf/prologue.ini' });
    else if (!SHAPE.test(l)) out.push({ id: 'config', where: `${file} line ${i + 1}`, message: `${quote(l, 60)} is not '[section]', 'key = value' or a comment`, fix: 'write key = value, or comment it out with ;' });
  });
  return out.slice(0, 20);
}

/**
 * The whole config from the ini's text, every key checked against the schema.
 * Unknown sections and keys are warnings; a line that is not ini, a value its
 * type refuses, or timeouts that contradict each other throw one NodeFault
 * listing the problems found, so the admin fixes them in one pass.
 */
export function parseConfig(text: string, file: string): LoadedConfig {
  const warnings: string[] = [];
  const problems: Problem[] = syntaxProblems(text, file);
  if (problems.length > 0) throw new NodeFault(`config ${file} is not a valid ini file`, problems);
  const raw = parseIni(text);
  const out: Record<string, Record<string, unknown>> = {};

  for (const [name, body] of Object.entries(raw)) {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      warnings.push(`${file}: key ${quote(name)} is outside any [section] and is ignored`);
    } else if (!(SECTIONS as string[]).includes(name)) {
      const hint = closest(name, SECTIONS);
      warnings.push(`${file}: unknown section [${name}] is ignored${hint ? `; did you mean [${hint}]?` : ''}`);
    }
  }

  for (const section of SECTIONS) {
    const given = (raw[section] ?? {}) as Record<string, unknown>;
    const known = Object.keys(SCHEMA[section]);
    for (const k of Object.keys(given)) {
      if (!known.includes(k)) {
        const hint = closest(k, known);
        warnings.push(`${file}: unknown key [${section}] ${k} is ignored${hint ? `; did you mean ${hint}?` : ''}`);
      }
    }
    const values: Record<string, unknown> = {};
    for (const [k, spec] of specsOf(section)) {
      const where = `${file} [${section}] ${k}`;
      const v = Object.prototype.hasOwnProperty.call(given, k) ? given[k] : spec.default;
      if (typeof v === 'object' && v !== null) {
        problems.push({ id: 'config', where, message: 'is given as a list (key[] syntax)', fix: `write ${k} = <${spec.type.allowed}>` });
        continue;
      }
      const text = String(v);
      const ctl = controlCharIn(text);
      if (ctl) {
        problems.push({ id: 'config', where, message: `contains ${ctl}`, fix: `allowed: ${spec.type.allowed}` });
        continue;
      }
      const r = spec.type.parse(text);
      if (r.ok) values[k] = r.value;
      else problems.push({ id: 'config', where, message: r.message, fix: `allowed: ${spec.type.allowed}` });
    }
    out[section] = values;
  }

  const t = out.timeouts as { total?: number; tool?: number } | undefined;
  if (t?.total !== undefined && t.tool !== undefined && t.tool >= t.total) {
    problems.push({ id: 'config', where: `${file} [timeouts] tool`, message: `${t.tool} s is not below total (${t.total} s)`, fix: 'make tool smaller than total' });
  }

  if (problems.length > 0) {
    throw new NodeFault(`config ${file} is invalid (${problems.length} problem${problems.length > 1 ? 's' : ''})`, problems);
  }
  const config = Object.freeze({ ...(out as Record<SectionName, Record<string, unknown>>), file }) as unknown as Config;
  for (const s of SECTIONS) Object.freeze(config[s]);
  return { config, warnings };
}
