// Finding 9 (suspected): a libguestfs session that hangs (a hung mount, an
// appliance that never answers) must not outlive the prologue. guestfish runs
// in a process group of its own, so Torque's kill of the prologue's session
// would not reach it; the prologue kills that group itself.
import t from 'tap';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom } from '../harness/mom.js';

// A killed process whose parent is gone may linger as a zombie until init reaps it: that is dead.
const alive = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '')[0] !== 'Z';
  } catch {
    return false;
  }
};
const gone = async (pid: number) => {
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((res) => setTimeout(res, 100));
  return !alive(pid);
};

t.test('a guestfish that never answers is gone, with what it started, when the prologue gives up', async (t) => {
  const mom = new Mom({ privateCache: true });
  const standIn = join(mom.root, 'bin', 'guestfish');
  const pids = join(mom.root, 'guestfish.pids');
  // Like an appliance that hangs: a child of its own that never ends, and no answer.
  writeFileSync(standIn, `#!/bin/sh\nsleep 1000 &\necho "$$ $!" > ${pids}\nwait\n`);
  chmodSync(standIn, 0o755);
  // defaultIni has a [tools] section already: the key goes there.
  writeFileSync(mom.configFile, mom.defaultIni().replace('[tools]\n', `[tools]\nguestfish = ${standIn}\n`) + '[timeouts]\ntotal = 15\ntool = 14\n');
  const r = await mom.prologue({ id: '1.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n' });
  t.equal(r.code, 2, 'the node could not inspect the image in time: requeued');
  t.ok(existsSync(pids), 'the stand-in guestfish ran');
  const [shell, sleeper] = readFileSync(pids, 'utf8').trim().split(' ').map(Number);
  t.ok(await gone(shell!), `guestfish (${shell}) is gone`);
  t.ok(await gone(sleeper!), `and what it started (${sleeper}) is gone`);
});
