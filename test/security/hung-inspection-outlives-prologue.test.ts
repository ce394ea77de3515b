// Finding 9, and issue 21 item 8: a libguestfs session that hangs (a hung
// mount, an appliance that never answers) must not outlive the prologue,
// whoever ends the prologue: its own
// deadline, pbs_mom's $prologalarm (SIGKILL to every process of the
// prologue's session, src/resmom/prolog.c pelogalm), or a SIGKILL of node
// alone (an admin, the OOM killer), which gives it no chance to clean up.
import t from 'tap';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom } from '../harness/mom.js';
import { describe, killMidway, treeOf } from '../harness/procs.js';

// A killed process whose parent is gone may linger as a zombie until init reaps it: that is dead.
const alive = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
};
const gone = async (pid: number) => {
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((res) => setTimeout(res, 100));
  return !alive(pid);
};

/** A node whose guestfish is a stand-in that hangs like a stuck appliance: a child of its own that never ends, and no answer. */
function hungGuestfish(timeouts = ''): { mom: Mom; pids: string } {
  const mom = new Mom({ privateCache: true });
  const standIn = join(mom.root, 'bin', 'guestfish');
  const pids = join(mom.root, 'guestfish.pids');
  writeFileSync(standIn, `#!/bin/sh\nsleep 1000 &\necho "$$ $!" > ${pids}\nwait\n`);
  chmodSync(standIn, 0o755);
  // defaultIni has a [tools] section already: the key goes there.
  writeFileSync(mom.configFile, mom.defaultIni().replace('[tools]\n', `[tools]\nguestfish = ${standIn}\n`) + timeouts);
  return { mom, pids };
}

const job = (id: string) => ({ id, script: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n' });

t.test('a guestfish that never answers is gone, with what it started, when the prologue gives up', async (t) => {
  const { mom, pids } = hungGuestfish('[timeouts]\ntotal = 15\ntool = 14\n');
  const r = await mom.prologue(job('1.srv'));
  t.equal(r.code, 2, 'the node could not inspect the image in time: requeued');
  t.ok(existsSync(pids), 'the stand-in guestfish ran');
  const [shell, sleeper] = readFileSync(pids, 'utf8').trim().split(' ').map(Number);
  t.ok(await gone(shell!), `guestfish (${shell}) is gone`);
  t.ok(await gone(sleeper!), `and what it started (${sleeper}) is gone`);
});

for (const how of ['session', 'node'] as const) {
  const killer = how === 'session' ? "pbs_mom's $prologalarm kills the prologue's session" : 'node alone is SIGKILLed';

  t.test(`a guestfish session that hangs is gone, with what it started, when ${killer}`, async (t) => {
    const { mom, pids } = hungGuestfish();
    const k = await killMidway(mom, job(`2${how === 'session' ? 1 : 2}.srv`), how, () => existsSync(pids) && readFileSync(pids, 'utf8').endsWith('\n'), [mom.root]);
    t.ok(k.seen, 'the stand-in guestfish was running when the prologue was killed');
    t.equal(k.r.signal, 'SIGKILL', 'the prologue died of SIGKILL: nothing of ours could clean up');
    t.ok(k.before.some((p) => p.cmdline.includes(join(mom.root, 'bin', 'guestfish'))), `guestfish was among the prologue's processes: ${describe(k.before)}`);
    t.same(k.left.map((p) => p.cmdline.join(' ')), [], 'nothing of the prologue is left: guestfish, its sleep, their guards');
    t.comment(`left ${k.ms} ms after the kill: ${k.left.length} processes`);
  });
}

t.test('a real guestfish session, its appliance still starting, is gone with the appliance when node alone is SIGKILLed', async (t) => {
  // A cache of its own: the image's verdict is not known, so the prologue inspects it.
  const mom = new Mom({ privateCache: true });
  const appliance = (pid: number) => treeOf(pid).some((p) => /qemu-system/.test(p.cmdline[0] ?? ''));
  const k = await killMidway(mom, job('4.srv'), 'node', appliance, [mom.root]);
  t.ok(k.seen, "libguestfs's appliance (qemu) was running when the prologue was killed");
  t.equal(k.r.signal, 'SIGKILL');
  t.ok(k.before.some((p) => /guestfish$/.test(p.cmdline[0] ?? '')), `guestfish was among the prologue's processes: ${describe(k.before)}`);
  t.same(k.left.map((p) => p.cmdline.join(' ').slice(0, 200)), [], "nothing of the prologue is left: guestfish, libguestfs's recovery process, the appliance's qemu");
  t.comment(`left ${k.ms} ms after the kill: ${k.left.length} processes`);
});
