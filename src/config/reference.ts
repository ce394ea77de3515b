// Renders the generated parts of the docs from the tables the code runs on:
// the config reference in doc/admin.md from the schema, and the #VM key table
// in doc/user.md from VM_KEYS. Each lives between BEGIN/END markers, so the
// prose around it stays hand-written. `npm run gen-docs` rewrites them; a
// test fails when a committed doc is behind the code.
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { SECTIONS, SECTION_DOCS, specsOf } from './schema.js';
import { DEFAULTABLE, VM_KEYS, VM_KEY_NAMES } from '../request/keys.js';

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s: string) => (s === '' ? '(empty)' : `\`${s}\``);

export function renderConfigReference(): string {
  const out: string[] = [];
  for (const section of SECTIONS) {
    out.push(`### [${section}]`, '', SECTION_DOCS[section]!, '', '| key | default | allowed | what it does |', '|---|---|---|---|');
    for (const [k, spec] of specsOf(section)) {
      out.push(`| \`${k}\` | ${code(spec.default)} | ${cell(spec.type.allowed)} | ${cell(spec.doc)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

export function renderVmKeys(): string {
  const out = ['| key | allowed | example | what it asks for |', '|---|---|---|---|'];
  for (const k of VM_KEY_NAMES) {
    const d = VM_KEYS[k];
    const dflt = (DEFAULTABLE as readonly string[]).includes(k) ? ' (site default in `[defaults]`)' : '';
    out.push(`| \`${k}\` | ${cell(d.type.allowed)} | \`${d.example}\` | ${cell(d.doc)}${dflt} |`);
  }
  return out.join('\n') + '\n';
}

export const BLOCKS: Record<string, { file: string; render: () => string }> = {
  'config reference': { file: 'doc/admin.md', render: renderConfigReference },
  'vm keys': { file: 'doc/user.md', render: renderVmKeys },
};

const begin = (name: string) => `<!-- BEGIN ${name} (generated from the code by npm run gen-docs; edit the code, not this) -->`;
const end = (name: string) => `<!-- END ${name} -->`;

/** The text with the named block rendered afresh; throws when the markers are missing. */
export function withBlock(text: string, name: string): string {
  const b = text.indexOf(begin(name));
  const e = text.indexOf(end(name));
  if (b < 0 || e < b) throw new Error(`the markers of "${name}" are missing: put ${begin(name)} and ${end(name)} on lines of their own`);
  return `${text.slice(0, b)}${begin(name)}\n\n${BLOCKS[name]!.render()}\n${text.slice(e)}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const root = process.argv[2] ?? '.';
  for (const [name, { file }] of Object.entries(BLOCKS)) {
    const path = `${root}/${file}`;
    const before = readFileSync(path, 'utf8');
    const after = withBlock(before, name);
    if (after !== before) {
      writeFileSync(path, after);
      process.stdout.write(`updated ${file} (${name})\n`);
    }
  }
}
