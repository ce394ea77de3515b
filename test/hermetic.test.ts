// The tests never read this machine's installed vtorque: every run of the
// program names the test's own ini with --config (without it the program
// reads /etc/vtorque/prologue.ini, and from there the real pool, cache and
// Torque), or hides /etc/vtorque (harness/no-site-config.ts); and install.sh
// runs into a staging --root or a test --bin-dir, never the machine's
// /usr/local/bin. Read from the test sources, so a new test that forgets is
// caught on any machine, with or without an installed vtorque.
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO } from './harness/mom.js';

/** The commands that read the config; anything else (help, --version, a typo) reads none. */
const READS_CONFIG = new Set(['prologue', 'prologue-parallel', 'epilogue', 'epilogue-parallel', 'check', 'doctor', 'submit-filter', 'cache']);
/** Whether an argument list (its text) runs the program without naming its ini: a command that reads it, or one not known here. */
const readsDefaultIni = (args: string) => {
  if (args.includes("'--config'") || /'(--help|-h)'/.test(args)) return false;
  const first = /^[[(](?:BIN,)?\s*'([^']*)'/.exec(args)?.[1];
  return first === undefined || READS_CONFIG.has(first);
};

function testSources(dir = join(REPO, 'test')): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? testSources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []);
}

/** The text from open (an index of "[" or "(") to its matching close, strings skipped. */
function balanced(text: string, open: number): string {
  const pairs: Record<string, string> = { '[': ']', '(': ')', '{': '}' };
  const stack: string[] = [];
  for (let i = open; i < text.length; i++) {
    const c = text[i]!;
    if (c === "'" || c === '"' || c === '`') {
      for (i++; i < text.length && text[i] !== c; i++) if (text[i] === '\\') i++;
    } else if (pairs[c]) stack.push(pairs[c]!);
    else if (c === stack[stack.length - 1]) {
      stack.pop();
      if (stack.length === 0) return text.slice(open, i + 1);
    }
  }
  return text.slice(open);
}

/** Every place a test runs the program without naming its ini: "file:line: text". */
export function cliRunsWithoutConfig(file: string, text: string): string[] {
  const bad: string[] = [];
  const where = (i: number, what: string) => `${relative(REPO, file)}:${text.slice(0, i).split('\n').length}: ${what.replace(/\s+/g, ' ').slice(0, 160)}`;
  // BIN in an argv array: first ([BIN, ...]) or after a launcher (['-u', 'NODE_OPTIONS', node, BIN, ...]).
  for (const m of text.matchAll(/[[,]\s*BIN\b(?=\s*[,\]])/g)) {
    const full = balanced(text, m[0].startsWith('[') ? m.index! : text.lastIndexOf('[', m.index!));
    const argv = `[${full.slice(full.indexOf('BIN'))}`;
    const line = text.slice(text.lastIndexOf('\n', m.index!) + 1, text.indexOf('\n', m.index!));
    if (line.includes('withoutSiteConfig(') || argv.includes("'--config'") || (!/\.\.\./.test(argv) && !readsDefaultIni(argv))) continue;
    // A helper: (...args) => spawnSync(..., [BIN, ...args]); each of its calls must name the ini or read none.
    const helper = /const (\w+) = \(\.\.\.(\w+)(?:: string\[\])?\) =>\s*\w+\([^[]*$/.exec(text.slice(text.lastIndexOf('\n', m.index!) + 1, m.index!));
    if (helper && argv === `[BIN, ...${helper[2]}]`) {
      for (const c of text.matchAll(new RegExp(`\\b${helper[1]}\\(`, 'g'))) {
        if (text.slice(c.index! - 6, c.index!) === 'const ') continue;
        const args = balanced(text, c.index! + helper[1]!.length);
        if (readsDefaultIni(args)) bad.push(where(c.index!, `${helper[1]}${args}`));
      }
      continue;
    }
    // A spread of a list that is either --config FILE, or empty where the run hides /etc/vtorque.
    if (/\.\.\.(\w+)/.test(argv) && text.includes("['--config'") && text.includes('withoutSiteConfig(')) continue;
    bad.push(where(m.index!, argv));
  }
  return bad;
}

t.test('every test run of the program names its ini with --config, or hides /etc/vtorque', async (t) => {
  const bad = testSources().filter((f) => !f.endsWith('hermetic.test.ts')).flatMap((f) => cliRunsWithoutConfig(f, readFileSync(f, 'utf8')));
  t.same(bad, [], bad.join('\n'));
});

t.test('the check itself finds a run without --config, directly or through a helper', async (t) => {
  const f = join(REPO, 'test', 'example.test.ts');
  t.same(cliRunsWithoutConfig(f, "spawnSync(process.execPath, [BIN, 'submit-filter'], { input });\n").length, 1);
  t.same(cliRunsWithoutConfig(f, "spawnSync(process.execPath, [BIN, '--config', ini, 'submit-filter']);\nspawnSync(process.execPath, [BIN, 'help', 'check']);\n"), []);
  const helper = "const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });\n";
  t.same(cliRunsWithoutConfig(f, `${helper}run('--version');\nrun('--config', ini, 'check');\n`), []);
  t.match(cliRunsWithoutConfig(f, `${helper}run('--version');\nrun('check', '--image', x);\n`), [/example\.test\.ts:3: run\('check', '--image', x\)/]);
});

t.test('no test names the installed ini; install.sh runs only into a staging root or a test --bin-dir', async (t) => {
  for (const f of testSources()) {
    const text = readFileSync(f, 'utf8');
    if (f.endsWith('hermetic.test.ts')) continue;
    t.notMatch(text, /\/etc\/vtorque\/prologue\.ini/, `${relative(REPO, f)} does not read the machine's ini`);
    if (/install\.sh'\)/.test(text) && !f.includes('harness')) {
      t.ok(text.includes("'--bin-dir'") || !/spawnSync\('bash', \[join\(REPO, 'install\.sh'\)(?![^\]]*'--root')/.test(text),
        `${relative(REPO, f)}: install.sh gets --bin-dir (or --root), so it never links into this machine's /usr/local/bin`);
    }
  }
});
