// Typed value parsers shared by the ini schema and the #VM directive keys, so
// that `[defaults] ram = 4G` and `#VM ram=4G` accept exactly the same text.

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string; fix: string };

export interface ValueType<T> {
  /** Human description of what is allowed, used in errors and in conf/prologue.ini. */
  readonly allowed: string;
  parse(raw: string): Parsed<T>;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(message: string, fix: string): Parsed<T> => ({ ok: false, message, fix });

// What JSON.stringify leaves raw but a YAML 1.1 reader (PyYAML, which
// cloud-init loads with), a terminal or a log reader takes as a line break or
// a control: C1 controls (U+0085 is a line break to PyYAML), U+2028/U+2029,
// and the non-characters U+FFFE/U+FFFF. JSON.stringify escapes C0 controls
// and lone surrogates itself.
const QUOTE_ESCAPE = /[\u007f-\u009f\u2028\u2029\ufffe\uffff]/g;

/** Printable, escaped form of untrusted text for messages: never lets a newline, line separator or escape through. */
export function quote(raw: string, max = 80): string {
  const cut = raw.length > max ? raw.slice(0, max) + '…' : raw;
  return JSON.stringify(cut).replace(QUOTE_ESCAPE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Everything a single line of text must not hold: C0 controls (\t \n \r
// included), DEL and C1 controls, the line and paragraph separators, lone
// surrogates and U+FFFE/U+FFFF. PyYAML treats \r \n U+0085 U+2028 U+2029
// as line breaks and refuses the rest as non-printable; the yaml package we
// write with does not break lines at U+0085/U+2028/U+2029, so one of those
// in a value would end a YAML line for cloud-init and start a key of the
// user's (a runcmd, run as root in the VM).
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const codePoint = (code: number) => `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * The one check for text that must stay a single printable line (names,
 * paths, values for YAML, argv, logs): what it holds that is not, in words
 * for a message ("a line separator (U+2028)"), or undefined.
 */
export function controlCharIn(raw: string): string | undefined {
  const m = UNSAFE.exec(raw);
  if (!m) return undefined;
  const code = m[0].charCodeAt(0);
  if (code === 0) return 'a NUL byte';
  if (code === 0x85) return `a next-line character (${codePoint(code)})`;
  if (code === 0x2028) return `a line separator (${codePoint(code)})`;
  if (code === 0x2029) return `a paragraph separator (${codePoint(code)})`;
  if (code >= 0xd800 && code <= 0xdfff) return `an unpaired surrogate (${codePoint(code)})`;
  if (code >= 0xfffe) return `a non-character (${codePoint(code)})`;
  return `a control character (\\x${code.toString(16).padStart(2, '0')})`;
}

export function intType(min: number, max: number): ValueType<number> {
  const allowed = `a whole number from ${min} to ${max}`;
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (!/^[0-9]{1,15}$/.test(s)) return bad(`${quote(raw)} is not a whole number`, `use ${allowed}`);
      const n = Number(s);
      if (n < min || n > max) return bad(`${n} is out of range`, `use ${allowed}`);
      return ok(n);
    },
  };
}

/** The size units the config and #VM lines take, largest first (binary: 1K = 1024). */
export const SIZE_UNITS = [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const;
const UNITS: Record<string, number> = { '': 1, ...Object.fromEntries(SIZE_UNITS) };

/** Sizes in bytes from "512M", "4G", "1T" (binary units, as qemu and vTorque read them). */
export function sizeType(min: number, max: number, bareUnit: '' | 'M' = ''): ValueType<number> {
  const allowed = `a size from ${formatSize(min)} to ${formatSize(max)}, written as a number with K, M, G or T (e.g. 4G)`;
  return {
    allowed,
    parse(raw) {
      const m = /^([0-9]{1,12})(?:\.([0-9]{1,3}))?\s*([KMGT]?)(?:i?B)?$/i.exec(raw.trim());
      if (!m) return bad(`${quote(raw)} is not a size`, `write a number with K, M, G or T, e.g. 4G`);
      const unit = (m[3] ?? '').toUpperCase() || bareUnit;
      const n = Math.round(Number(`${m[1]}.${m[2] ?? '0'}`) * (UNITS[unit] ?? 1));
      if (n < min || n > max) return bad(`${formatSize(n)} is out of range`, `use ${allowed}`);
      return ok(n);
    },
  };
}

/** A size as the config and #VM lines write it ("8G"): exact where a unit allows, else in bytes. */
export function formatSize(bytes: number): string {
  for (const [unit, f] of SIZE_UNITS) {
    if (bytes >= f && bytes % (f / 1024) === 0) {
      const v = bytes / f;
      return `${Number.isInteger(v) ? v : v.toFixed(1)}${unit}`;
    }
  }
  return `${bytes}B`;
}

/**
 * Any byte count, rounded for people: "1.3 GiB", or "1.3G" in the compact
 * style doctor's one-line results use.
 */
export function formatBytes(bytes: number, style: 'iec' | 'compact' = 'iec'): string {
  const units = style === 'iec' ? ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] : ['B', 'K', 'M', 'G', 'T', 'P'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 || v >= 100 ? Math.round(v) : v.toFixed(1)}${style === 'iec' ? ' ' : ''}${units[u]}`;
}

const TRUE = new Set(['true', 'yes', 'on', '1']);
const FALSE = new Set(['false', 'no', 'off', '0']);

export const boolType: ValueType<boolean> = {
  allowed: 'true or false',
  parse(raw) {
    const s = raw.trim().toLowerCase();
    if (TRUE.has(s)) return ok(true);
    if (FALSE.has(s)) return ok(false);
    return bad(`${quote(raw)} is not true or false`, 'write true or false');
  },
};

export function enumType<T extends string>(values: readonly T[]): ValueType<T> {
  const allowed = `one of ${values.join(', ')}`;
  return {
    allowed,
    parse(raw) {
      const s = raw.trim().toLowerCase();
      const hit = values.find((v) => v === s);
      if (hit === undefined) return bad(`${quote(raw)} is not allowed`, `use ${allowed}`);
      return ok(hit);
    },
  };
}

/** Comma-separated list of one item type; the empty string is the empty list. */
export function listType<T>(item: ValueType<T>, what: string): ValueType<T[]> {
  const allowed = `a comma-separated list of ${what} (may be empty)`;
  return {
    allowed,
    parse(raw) {
      const parts = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
      const out: T[] = [];
      for (const p of parts) {
        const r = item.parse(p);
        if (!r.ok) return bad(`list item ${r.message}`, r.fix);
        out.push(r.value);
      }
      return ok(out);
    },
  };
}

// Names that go into paths and command lines: a conservative, shell-inert alphabet.
const SAFE_SEGMENT = /^[A-Za-z0-9._+-]+$/;

function checkSegments(raw: string, what: string): string | undefined {
  for (const seg of raw.split('/')) {
    if (seg === '') continue;
    if (seg === '.' || seg === '..') return `${what} ${quote(raw)} contains '${seg}'`;
    if (!SAFE_SEGMENT.test(seg)) return `${what} ${quote(raw)} has characters outside A-Z a-z 0-9 . _ - + /`;
  }
  return undefined;
}

/** An absolute host path, as admins write them in the ini. */
export function absPathType(opts: { optional?: boolean } = {}): ValueType<string> {
  const allowed = opts.optional ? 'an absolute path, or empty for none' : 'an absolute path';
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (s === '' && opts.optional) return ok('');
      if (!s.startsWith('/')) return bad(`${quote(raw)} is not an absolute path`, `use ${allowed}`);
      const why = checkSegments(s, 'path');
      if (why) return bad(why, `use ${allowed} made of plain names`);
      return ok(s.length > 1 ? s.replace(/\/+$/, '') : s);
    },
  };
}

/** A name inside a directory we own (the image pool): relative, no '..', no odd characters. */
export function relNameType(what: string, opts: { optional?: boolean } = {}): ValueType<string> {
  const allowed = `${/^[aeiou]/.test(what) ? 'an' : 'a'} ${what} made of A-Z a-z 0-9 . _ - + (and / for subfolders), not starting with / or -`;
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (s === '' && opts.optional) return ok('');
      if (s === '') return bad(`${what} is empty`, `give ${allowed}`);
      if (s.length > 255) return bad(`${what} is longer than 255 characters`, `use a shorter ${what}`);
      if (s.startsWith('/')) return bad(`${what} ${quote(raw)} is an absolute path`, `give the ${what} as listed in the image pool, not a path`);
      if (s.startsWith('-')) return bad(`${what} ${quote(raw)} starts with '-'`, `rename it`);
      const why = checkSegments(s, what);
      if (why) return bad(why, `give ${allowed}`);
      return ok(s);
    },
  };
}

/** An image: a name inside the pool, or (where the site allows user images) an absolute path. */
export function imageRefType(): ValueType<string> {
  const rel = relNameType('image name');
  return {
    allowed: `${rel.allowed}; or an absolute path where the site allows user images`,
    parse(raw) {
      const s = raw.trim();
      if (!s.startsWith('/')) return rel.parse(raw);
      if (s.length > 1024) return bad('image path is longer than 1024 characters', 'use a shorter path');
      const why = checkSegments(s, 'image path');
      if (why) return bad(why, 'give a plain path');
      return ok(s);
    },
  };
}

/** A path the user names (their own files): absolute or relative to the job's working directory. */
export function userPathType(what: string): ValueType<string> {
  const allowed = `a path made of A-Z a-z 0-9 . _ - + /, absolute or relative to the job's working directory`;
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (s === '') return bad(`${what} is empty`, `give ${allowed}`);
      if (s.length > 1024) return bad(`${what} is longer than 1024 characters`, 'use a shorter path');
      if (s.startsWith('-')) return bad(`${what} ${quote(raw)} starts with '-'`, 'use ./ in front of it');
      for (const seg of s.split('/')) {
        if (seg !== '' && seg !== '.' && seg !== '..' && !SAFE_SEGMENT.test(seg)) {
          return bad(`${what} ${quote(raw)} has characters outside A-Z a-z 0-9 . _ - + /`, `rename the file`);
        }
      }
      return ok(s);
    },
  };
}

export function stringType(pattern: RegExp, allowed: string): ValueType<string> {
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (!pattern.test(s)) return bad(`${quote(raw)} is not ${allowed}`, `use ${allowed}`);
      return ok(s);
    },
  };
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Durations in seconds from "90", "30s", "15m", "12h", "14d". */
export function durationType(min: number, max: number): ValueType<number> {
  const show = (n: number) => (n % 86400 === 0 ? `${n / 86400}d` : n % 3600 === 0 ? `${n / 3600}h` : n % 60 === 0 ? `${n / 60}m` : `${n}s`);
  const allowed = `a duration from ${show(min)} to ${show(max)}: a number with s, m, h or d (e.g. 14d)`;
  return {
    allowed,
    parse(raw) {
      const m = /^([0-9]{1,9})\s*([smhd]?)$/i.exec(raw.trim());
      if (!m) return bad(`${quote(raw)} is not a duration`, `write a number with s, m, h or d, e.g. 14d`);
      const n = Number(m[1]) * (DURATION_UNITS[(m[2] || 's').toLowerCase()] ?? 1);
      if (n < min || n > max) return bad(`${show(n)} is out of range`, `use ${allowed}`);
      return ok(n);
    },
  };
}

/** A file mode written in octal, as chmod takes it ("0640"). Never set-id or sticky bits. */
export function modeType(): ValueType<number> {
  const allowed = 'an octal file mode from 0000 to 0777 (e.g. 0640)';
  return {
    allowed,
    parse(raw) {
      const s = raw.trim();
      if (!/^0?[0-7]{3}$/.test(s)) return bad(`${quote(raw)} is not an octal mode`, `use ${allowed}`);
      return ok(parseInt(s, 8));
    },
  };
}

/** Edit distance, for "did you mean" on misspelt keys. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word.toLowerCase(), c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
