import t from 'tap';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../src/config/load.js';
import { renderIni } from '../src/config/generate.js';
import { SCHEMA, SECTIONS } from '../src/config/schema.js';
import { NodeFault } from '../src/core/errors.js';
import { REPO } from './harness/mom.js';

const faultOf = (text: string) => {
  try {
    parseConfig(text, 'x.ini');
  } catch (e) {
    if (e instanceof NodeFault) return e;
    throw e;
  }
  throw new Error('expected a NodeFault');
};

t.test('conf/prologue.ini is exactly what the schema renders', async (t) => {
  t.equal(readFileSync(join(REPO, 'conf/prologue.ini'), 'utf8'), renderIni(), 'run: npm run build && npm run gen-config');
});

t.test('every key of the schema is documented in conf/prologue.ini and parses as its own default', async (t) => {
  const text = readFileSync(join(REPO, 'conf/prologue.ini'), 'utf8');
  for (const s of SECTIONS) {
    for (const [k, spec] of Object.entries(SCHEMA[s])) {
      t.match(text, new RegExp(`\\n; .+\\n; allowed: .+\\n${k} = `), `${s}.${k} documented`);
      t.ok(spec.type.parse(spec.default).ok, `${s}.${k} default is valid`);
    }
  }
  t.doesNotThrow(() => parseConfig(text, 'conf/prologue.ini'));
});

t.test('the empty ini gives the documented defaults', async (t) => {
  const c = parseConfig('', 'x').config;
  t.equal(c.paths.image_pool, '/var/lib/vtorque/images');
  t.equal(c.policy.allow_user_images, false);
  t.same(c.policy.formats, ['qcow2', 'raw']);
  t.equal(c.timeouts.total, 240);
});

t.test('an invalid value names file, section, key and what is allowed', async (t) => {
  const e = faultOf('[policy]\nmax_start_count = lots\n');
  t.equal(e.problems[0]!.where, 'x.ini [policy] max_start_count');
  t.match(e.problems[0]!.message, /"lots" is not a whole number/);
  t.match(e.problems[0]!.fix, /allowed: a whole number from 1 to 1000/);
});

t.test('every invalid value is reported at once', async (t) => {
  const e = faultOf('[paths]\nimage_pool = relative/path\n[timeouts]\ntotal = 0\n[defaults]\nram = 12X\n');
  t.equal(e.problems.length, 3);
});

t.test('tool must be below total', async (t) => {
  t.match(faultOf('[timeouts]\ntotal = 60\ntool = 60\n').problems[0]!.message, /not below total/);
});

t.test('unknown sections and keys are warnings with suggestions, not errors', async (t) => {
  const { warnings } = parseConfig('[polcy]\nx=1\n[policy]\nformat = qcow2\n', 'x.ini');
  t.match(warnings.join('\n'), /unknown section \[polcy\].*did you mean \[policy\]/);
  t.match(warnings.join('\n'), /unknown key \[policy\] format .*did you mean formats/);
});

t.test('tool paths must be absolute: pbs_mom gives us no useful PATH', async (t) => {
  t.match(faultOf('[tools]\nqemu_img = qemu-img\n').problems[0]!.message, /not an absolute path/);
});

t.test('a missing config file is a node fault that says how to fix it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-'));
  try {
    loadConfig(join(dir, 'nope.ini'));
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof NodeFault);
    t.match((e as NodeFault).problems[0]!.fix, /install\.sh|conf\/prologue\.ini/);
  }
  writeFileSync(join(dir, 'ok.ini'), '[logging]\nlevel = debug\n');
  t.equal(loadConfig(join(dir, 'ok.ini')).config.logging.level, 'debug');
});
