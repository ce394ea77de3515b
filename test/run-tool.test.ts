// runTool, the one way external programs run: each failure is a ToolError
// that names the command and what to change, and no child outlives its
// timeout, its abort, or the prologue itself.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool, ToolError, useGuards } from '../src/tools/run.js';
import { isNodeFault } from '../src/core/errors.js';
import { JobEnded } from '../src/pipeline/ended.js';

const dir = () => mkdtempSync(join(tmpdir(), 'vtorque-run-'));
// A zombie is dead too: an orphan waits for its reaper, which on some
// machines (a container's init) takes its time.
const alive = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
};
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits until none of pids is alive, or gives up after `ms`: true when all are gone. */
const gone = async (pids: number[], ms = 15_000) => {
  for (const t0 = Date.now(); Date.now() - t0 < ms && pids.some(alive);) await settle(100);
  return !pids.some(alive);
};
const runJs = new URL('../src/tools/run.js', import.meta.url).pathname;

/**
 * A node process that runs a tool through runTool: a shell that starts a
 * sleep of its own and writes "SHELL SLEEP" to pidFile. Resolves once the
 * pids are there.
 */
async function toolRunner(pidFile: string, timeoutMs: number): Promise<{ node: number; shell: number; sleeper: number }> {
  const script = `import { runTool } from ${JSON.stringify(runJs)};
runTool('/bin/sh', ['-c', 'sleep 60 & echo "$$ $!" > ${pidFile}; wait'], { timeout: ${timeoutMs} }).catch(() => {});
setInterval(() => {}, 1000);`;
  const node = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
  while (!existsSync(pidFile) || !readFileSync(pidFile, 'utf8').endsWith('\n')) await settle(50);
  const [shell, sleeper] = readFileSync(pidFile, 'utf8').trim().split(' ').map(Number);
  return { node: node.pid!, shell: shell!, sleeper: sleeper! };
}

async function failure(p: Promise<unknown>): Promise<ToolError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ToolError) return e;
    throw e;
  }
  throw new Error('expected a ToolError');
}

t.test('output, input, exit codes that are answers, and a clean environment', async (t) => {
  const r = await runTool('/bin/cat', [], { timeout: 5000, input: 'a: "quoted" line\n' });
  t.equal(r.stdout, 'a: "quoted" line\n', 'input reaches stdin, the output comes back whole');
  t.equal(r.exitCode, 0);
  const env = await runTool('/usr/bin/env', ['-0'], { timeout: 5000, env: { EXTRA: '1' } });
  // tap wraps child_process to add its own NODE_OPTIONS and _TAPJS_ variables to every child.
  const vars = env.stdout.split('\0').filter((l) => l !== '' && !/^(NODE_OPTIONS|_TAPJS_[A-Z_]*)=/.test(l)).sort();
  t.same(vars, ['EXTRA=1', 'LANG=C.UTF-8', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin'], 'nothing of our own environment leaks in');
  const three = await runTool('/bin/sh', ['-c', 'echo why >&2; exit 3'], { timeout: 5000, okExitCodes: [3] });
  t.same([three.exitCode, three.stderr], [3, 'why\n'], 'an allowed exit code is returned, not thrown');
  const quiet = await runTool('/bin/sh', ['-c', 'echo ignored; echo kept >&2'], { timeout: 5000, stdout: 'ignore' });
  t.same([quiet.stdout, quiet.stderr], ['', 'kept\n'], "stdout: 'ignore' drops stdout only");
  const id = await runTool('/usr/bin/id', ['-u'], { timeout: 5000, uid: 65534, gid: 65534 });
  t.equal(id.stdout, '65534\n', 'uid and gid are applied');
  const argv = await runTool('/usr/bin/printf', ['%s|', '$(id)', '; rm -rf /', '*'], { timeout: 5000 });
  t.equal(argv.stdout, '$(id)|; rm -rf /|*|', 'arguments reach the program as they are, no shell in between');
});

t.test('onStdout takes the output as it comes: nothing is collected, and maxBuffer counts stderr only', async (t) => {
  let got = 0;
  const r = await runTool('/bin/sh', ['-c', 'head -c 3000000 /dev/zero; echo err >&2'], { timeout: 10_000, maxBuffer: 1024, onStdout: (c) => { got += c.length; } });
  t.equal(got, 3_000_000, 'every byte reached the callback');
  t.same([r.stdout, r.stderr, r.exitCode], ['', 'err\n', 0]);
});

t.test('each failure names the command and says what to do', async (t) => {
  const d = dir();
  const missing = await failure(runTool(join(d, 'nope'), [], { timeout: 5000, toolKey: 'qemu_img' }));
  t.match(missing.message, /is not installed/);
  t.match(missing.problems[0]!.fix, /\[tools\] qemu_img/);
  t.ok(isNodeFault(missing), 'a missing tool is a fault of the node');
  const notExec = join(d, 'plain');
  writeFileSync(notExec, 'x');
  chmodSync(notExec, 0o644);
  t.match((await failure(runTool(notExec, [], { timeout: 5000 }))).message, /is not executable/);
  // A working directory that is a file: the start itself fails (ENOTDIR).
  const noStart = await failure(runTool('/bin/true', [], { timeout: 5000, cwd: notExec }));
  t.match(noStart.message, /\/bin\/true could not be started \(ENOTDIR\)/, 'a start that fails says so, not "signal"');
  t.match(noStart.problems[0]!.fix, /check the node/);
  const failed = await failure(runTool('/bin/sh', ['-c', 'echo first >&2; echo second >&2; exit 4'], { timeout: 5000 }));
  t.equal(failed.toolExitCode, 4);
  t.match(failed.message, /failed \(exit code 4\): first \| second/);
  t.match(failed.problems[0]!.fix, /run the command by hand.*\/bin\/sh -c/);
  const signalled = await failure(runTool('/bin/sh', ['-c', 'kill -9 $$'], { timeout: 5000 }));
  t.match(signalled.message, /failed \(signal SIGKILL\)/);
  const chatty = await failure(runTool('/bin/sh', ['-c', 'yes | head -c 1000000'], { timeout: 5000, maxBuffer: 1000 }));
  t.match(chatty.message, /printed more output than expected/);
});

t.test('a timeout ends the whole process group, grandchildren included', async (t) => {
  const d = dir();
  const pidFile = join(d, 'pid');
  const t0 = performance.now();
  const e = await failure(runTool('/bin/sh', ['-c', `sleep 60 & echo $! > ${pidFile}; wait`], { timeout: 300 }));
  t.match(e.message, /did not finish within 300 ms/);
  t.equal(e.failure, 'timeout');
  t.ok(performance.now() - t0 < 10_000, 'it returned instead of waiting for the sleep');
  const grandchild = Number(readFileSync(pidFile, 'utf8'));
  await settle(200);
  t.notOk(alive(grandchild), 'the background sleep is gone too');
});

t.test('an abort stops the tool at once, and says what its reason says: the deadline, or the job\'s deletion', async (t) => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error("the prologue's deadline of 240 s ([timeouts] total) passed")), 100);
  const e = await failure(runTool('/bin/sleep', ['60'], { timeout: 60_000, signal: ac.signal }));
  t.match(e.message, /^\/bin\/sleep was stopped: the prologue's deadline of 240 s \(\[timeouts\] total\) passed$/);
  t.match(e.problems[0]?.fix, /raise \[timeouts\] total/);
  const pre = new AbortController();
  pre.abort(new JobEnded('7.srv', 'working'));
  const q = await failure(runTool('/bin/sleep', ['60'], { timeout: 60_000, signal: pre.signal }));
  t.match(q.message, /was stopped: job 7\.srv was deleted \(its epilogue ran\) while the prologue was working/, 'an already aborted signal stops it too; a qdel is no deadline');
  t.notMatch(q.message, /deadline/);
  t.equal(q.problems[0]?.fix, 'nothing to fix: the job was deleted');
  t.equal(q.failure, 'stopped', 'typed as a stop, not as a failure of the tool');
  const bare = new AbortController();
  bare.abort();
  t.match((await failure(runTool('/bin/sleep', ['60'], { timeout: 60_000, signal: bare.signal }))).message, /was stopped: the run was stopped$/, 'no reason given: none claimed');
});

t.test('children still running when the process exits are killed with it', async (t) => {
  const d = dir();
  const pidFile = join(d, 'pid');
  const runJs = new URL('../src/tools/run.js', import.meta.url).pathname;
  // A process that starts a long tool and exits without waiting, as the
  // prologue does at its hard deadline.
  const script = `import { runTool } from ${JSON.stringify(runJs)};
runTool('/bin/sh', ['-c', 'echo $$ > ${pidFile}; exec sleep 60'], { timeout: 60000 }).catch(() => {});
setTimeout(() => process.exit(0), 300);`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 0, r.stderr);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  await settle(200);
  t.notOk(alive(pid), 'the tool did not outlive the process that ran it');
});

t.test('a SIGKILL of the process that ran it ends the tool and what the tool started', async (t) => {
  const r = await toolRunner(join(dir(), 'pids'), 60_000);
  process.kill(r.node, 'SIGKILL');
  t.ok(await gone([r.shell, r.sleeper]), `the tool (${r.shell}) and its child (${r.sleeper}) are gone: nothing could clean up, the kernel's parent-death signal did`);
});

t.test("a tool's own time box holds while the process that ran it cannot act", async (t) => {
  const r = await toolRunner(join(dir(), 'pids'), 500);
  // Stopped, node's own timer cannot fire: only the tool's guard can end it.
  process.kill(r.node, 'SIGSTOP');
  t.teardown(() => { try { process.kill(r.node, 'SIGKILL'); } catch { /* gone */ } });
  t.ok(await gone([r.shell, r.sleeper]), 'the tool and its child are gone while node is stopped');
  t.ok(alive(r.node), 'and node was still there (stopped) all along');
});

t.test('a guard that is missing is named, with the [tools] key to set', async (t) => {
  useGuards({ setpriv: '/nonexistent/setpriv', timeout: '/usr/bin/timeout' });
  t.teardown(() => useGuards({ setpriv: '/usr/bin/setpriv', timeout: '/usr/bin/timeout' }));
  const e = await failure(runTool('/bin/true', [], { timeout: 5000, toolKey: 'qemu_img' }));
  t.match(e.message, /\/nonexistent\/setpriv is not installed/);
  t.match(e.problems[0]!.fix, /\[tools\] setpriv/);
  useGuards({ setpriv: '/usr/bin/setpriv', timeout: '/nonexistent/timeout' });
  t.match((await failure(runTool('/bin/true', [], { timeout: 5000 }))).problems[0]!.fix, /\[tools\] timeout/);
});
