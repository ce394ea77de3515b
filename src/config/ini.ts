// The one reader of the admin's ini text. loadConfig checks the whole file
// against the schema; the paths that need a few keys before (or without) a
// valid config read them here, each key on its own, so a typo elsewhere in the
// file costs them nothing. Light on purpose: the non-VM prologue reads its two
// keys through this, and must not build the schema to do so.
import { readFileSync } from 'node:fs';
import ini from 'ini';
import type { ValueType } from './values.js';

/** Sections by name; a key written outside any section shows up as a top-level non-object. */
export type RawIni = Readonly<Record<string, unknown>>;

/** The ini package's reading of the text (it accepts almost anything: loadConfig checks the shape first). */
export const parseIni = (text: string): RawIni => ini.parse(text) as RawIni;

/** The file's sections, or none when it cannot be read: for paths that go on with the defaults. */
export function readIniLenient(file: string): RawIni {
  try {
    return parseIni(readFileSync(file, 'utf8'));
  } catch {
    return {};
  }
}

/** What the ini package made of one key, untyped; undefined when absent. */
export function rawValue(raw: RawIni, section: string, key: string): unknown {
  const s = raw[section];
  return typeof s === 'object' && s !== null && !Array.isArray(s) ? (s as Record<string, unknown>)[key] : undefined;
}

/**
 * One key read by its type, the way loadConfig reads it: the ini package turns
 * "false" into a boolean and leaves "12" as text, so the value is parsed as
 * text. Undefined when absent, a list (key[] syntax) or invalid.
 */
export function iniValue<T>(raw: RawIni, section: string, key: string, type: ValueType<T>): T | undefined {
  const v = rawValue(raw, section, key);
  if (v === undefined || v === null || typeof v === 'object') return undefined;
  const r = type.parse(String(v));
  return r.ok ? r.value : undefined;
}
