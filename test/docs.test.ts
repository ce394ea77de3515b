// The generated parts of doc/admin.md (config reference) and doc/user.md
// (#VM keys) must be what the code renders now, as conf/prologue.ini must.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BLOCKS, renderConfigReference, withBlock } from '../src/config/reference.js';
import { SCHEMA, SECTIONS } from '../src/config/schema.js';
import { VM_KEY_NAMES } from '../src/request/keys.js';
import { REPO } from './harness/mom.js';

for (const [name, { file }] of Object.entries(BLOCKS)) {
  t.test(`${file}: the ${name} is what the code renders`, async (t) => {
    const text = readFileSync(join(REPO, file), 'utf8');
    t.equal(withBlock(text, name), text, 'run: npm run build && npm run gen-docs');
  });
}

t.test('the config reference has every section and key with its default', async (t) => {
  const ref = renderConfigReference();
  for (const s of SECTIONS) {
    t.match(ref, `### [${s}]`);
    for (const [k, spec] of Object.entries(SCHEMA[s])) {
      t.match(ref, `| \`${k}\` | ${spec.default === '' ? '(empty)' : `\`${spec.default}\``} |`, `${s}.${k}`);
    }
  }
});

t.test('user.md lists every #VM key', async (t) => {
  const text = readFileSync(join(REPO, 'doc/user.md'), 'utf8');
  for (const k of VM_KEY_NAMES) t.match(text, `| \`${k}\` |`);
});

t.test('a doc without the markers is refused with how to add them', async (t) => {
  t.throws(() => withBlock('# nothing here\n', 'vm keys'), /markers of "vm keys" are missing: put <!-- BEGIN vm keys/);
});

t.test('the README links the admin, user and guest image docs', async (t) => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  for (const d of ['doc/admin.md', 'doc/user.md', 'doc/guest-images.md']) t.match(readme, `](${d})`);
});
