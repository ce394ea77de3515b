// Every command teaches itself: what it does, its usage, an example, its exit
// codes, from `help COMMAND` and from `COMMAND --help` alike.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { BIN } from './harness/mom.js';

const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

const main = run('--help');
const commands = main.stdout.split('Commands:\n')[1]!.split('\n\n')[0]!.split('\n')
  .map((l) => l.trim().split(/\s+/)[0]!).filter((c) => c !== '' && c !== 'help');

t.test('the main help lists the commands, an example and the exit codes', async (t) => {
  t.equal(main.status, 0);
  t.ok(commands.length >= 6, commands.join(' '));
  t.match(main.stdout, /^Usage: vtorque-prologue /m);
  t.match(main.stdout, /^Examples?:/m);
  t.match(main.stdout, /^Exit codes:/m);
});

for (const cmd of commands) {
  t.test(`help ${cmd} teaches: usage, what, example, exit codes`, async (t) => {
    const h = run('help', cmd);
    t.equal(h.status, 0, h.stderr);
    t.match(h.stdout, new RegExp(`^vtorque-prologue .*${cmd}`), 'starts with its usage');
    t.ok(h.stdout.split('\n').length >= 8, 'says what it does in more than a line');
    t.match(h.stdout, /^Examples?( \(.*\))?:\n {2}\S/m, 'an example');
    t.match(h.stdout, /Exit codes:/, 'its exit codes');
    const self = run(cmd, '--help');
    t.equal(self.status, 0);
    t.equal(self.stdout, h.stdout, `${cmd} --help says the same`);
  });
}

t.test('help for an unknown command says how to find the right one (exit 2)', async (t) => {
  const h = run('help', 'frobnicate');
  t.equal(h.status, 2);
  t.match(h.stderr, /no help for "frobnicate".*\nRun 'vtorque-prologue --help'/);
});
