// Renders conf/prologue.ini from the schema; a test keeps the shipped file in step.
import { SECTIONS, SECTION_DOCS, specsOf } from './schema.js';
import { pathToFileURL } from 'node:url';

export function renderIni(): string {
  const lines: string[] = [
    '; vtorque-prologue configuration. Install as /etc/vtorque/prologue.ini (root-owned, mode 0644).',
    '; Generated from src/config/schema.ts: every key, its default and what it may be.',
    '; A key left out takes the default shown. Unknown keys are logged and ignored.',
    '; Invalid values make the prologue requeue every VM job (exit 2) until fixed:',
    ';   run `vtorque-prologue --config FILE doctor` after editing.',
  ];
  for (const section of SECTIONS) {
    lines.push('', `[${section}]`, `; ${SECTION_DOCS[section]}`);
    for (const [k, spec] of specsOf(section)) {
      lines.push('', `; ${spec.doc}.`, `; allowed: ${spec.type.allowed}`, `${k} = ${spec.default}`);
    }
  }
  return lines.join('\n') + '\n';
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.stdout.write(renderIni());
