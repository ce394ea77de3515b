// The lines job_submit.lua puts before a Slurm VM job's script (src/slurm/wrap.ts),
// and the job runner (bin/vtorque-slurm-run) on a node where the job has no VM:
// the lua and the Prolog agree on the lines byte for byte; the runner reads the
// script as submitted back from slurmd's copy and runs it unchanged, as the job
// owner, with its arguments and exit status.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unwrapBytes, unwrapScript, wrapHead, WRAP_NOTE, WRAP_SHEBANG } from '../src/slurm/wrap.js';
import { NOBODY, REPO } from './harness/mom.js';
import { slurmWiring } from './harness/slurm-wiring.js';

const lua = readFileSync(join(REPO, 'conf/slurm/job_submit.lua'), 'utf8');

t.test("the lua's wrapper lines are wrap.ts's", async (t) => {
  const m = /^local WRAP_HEAD = "(.*)"$/m.exec(lua);
  t.ok(m, 'job_submit.lua has WRAP_HEAD');
  const luaHead = m![1]!.replace(/\\n/g, '\n').replace(/\\"/g, '"');
  t.equal(luaHead, WRAP_SHEBANG + WRAP_NOTE);
  // The lua's exec line: exec '<RUNNER>' "$0" "$@"
  t.match(lua, /return WRAP_HEAD \.\. "exec '" \.\. RUNNER \.\. "' \\"\$0\\" \\"\$@\\"\\n" \.\. script/);
});

t.test('one layer of our lines comes off; the rest is the script as submitted', async (t) => {
  const script = '#!/bin/bash\n#VM img=x.qcow2\necho é\n';
  const w = wrapHead('/opt/v/bin/vtorque-slurm-run') + script;
  t.same(unwrapScript(w), { script, wrapped: true, runner: '/opt/v/bin/vtorque-slurm-run' });
  t.same(unwrapScript(script), { script, wrapped: false });
  t.equal(unwrapBytes(Buffer.from(w)).script.toString('utf8'), script, 'on bytes too, with a non-ASCII script');
  // Twice wrapped (a user who wrote our lines themselves, without the lua to strip them): one layer only.
  t.equal(unwrapScript(wrapHead('/a') + w).script, w);
  // Look-alikes are not ours.
  t.equal(unwrapScript(WRAP_SHEBANG + WRAP_NOTE + 'exec /x "$0" "$@"\n' + script).wrapped, false, 'an exec line of another shape');
  t.equal(unwrapScript(WRAP_SHEBANG + WRAP_NOTE + "exec 'rel' \"$0\" \"$@\"\n" + script).wrapped, false, 'a relative runner');
  t.throws(() => wrapHead("/a'b"), /without quotes/);
});

t.test('without a VM the runner runs the script as submitted on the host, as the job owner', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-slurm-run-'));
  chmodSync(root, 0o755);
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const jobDir = join(root, 'jobs');
  mkdirSync(jobDir, { mode: 0o755 });
  const { runner } = slurmWiring(root, join(root, 'prologue.ini'), jobDir);
  // slurmd's copy of the batch script: the owner's, 0700, as slurmstepd writes it.
  const spool = join(root, 'spool');
  mkdirSync(spool, { mode: 0o755 });
  const script = join(spool, 'slurm_script');
  const body = '#!/bin/bash\necho "ran as $(id -u) with $# args: $1|$2"\necho "me=$(basename "$0")"\nexit 7\n';
  writeFileSync(script, wrapHead(runner) + body, { mode: 0o700 });
  chownSync(script, NOBODY.uid, NOBODY.gid);
  const run = (path: string, ...args: string[]) => spawnSync('/bin/sh', [path, ...args], {
    uid: NOBODY.uid, gid: NOBODY.gid, encoding: 'utf8', timeout: 30_000, cwd: root,
    env: { SLURM_JOB_ID: '1234', PATH: '/usr/bin:/bin', TMPDIR: '/tmp' },
  });
  const r = run(script, 'a b', "c'd");
  t.equal(r.status, 7, `the script's exit status: ${r.stderr}`);
  t.equal(r.stdout, `ran as ${NOBODY.uid} with 2 args: a b|c'd\nme=script\n`);
  t.equal(r.stderr, '');

  // slurmd's copy swapped for a symlink: the runner does not follow it.
  const link = join(spool, 'link');
  symlinkSync(script, link);
  const l = spawnSync(runner, [link], { uid: NOBODY.uid, gid: NOBODY.gid, encoding: 'utf8', timeout: 30_000, env: { SLURM_JOB_ID: '1234', PATH: '/usr/bin:/bin' } });
  t.equal(l.status, 66, 'a symlink is refused');
  t.match(l.stderr, /^vtorque: job 1234: the job script .* could not be read/m);
});
