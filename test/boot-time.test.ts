// Issue 21 item 3: the boot gets its own time. A cold job (the image new to
// the node: its check, copy and boot files) whose image work leaves less than
// [launch] boot of the prologue's deadline starts no VM, and is never reported
// as a VM that "did not answer" (the image's fault, exit 1): the node's
// deadlines do not hold a new image's work and a boot, which is the node's
// state. Here [timeouts] total leaves [launch] boot no room at all after the
// image work, whatever that takes: before this, the VM booted, got the
// deadline's remainder and the job failed as vm-boot.
import t from 'tap';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { Mom } from './harness/mom.js';
import { qemusOf } from './harness/launch-user.js';

t.setTimeout(1800_000);

const script = '#!/bin/bash\n#VM img=debian12.qcow2,ram=1G,vcpus=1\necho hello\n';

t.test('a cold job whose image work leaves less than [launch] boot of the deadline boots no VM, and is not blamed on its image', async (t) => {
  // A cache of this node's own: the image is new to it, and checked (libguestfs, TCG) in this prologue.
  const mom = new Mom({ privateCache: true, ini: '[launch]\nstart = true\naccel = tcg\nboot = 300\nconsole_silence = 0\n[timeouts]\ntotal = 300\n[seed]\nssh_keys_from =\n' });
  const job = { id: `${process.pid}1.head`, script };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const r = await mom.prologue(job);
  const said = r.ou + r.er;
  t.notMatch(said, /did not answer/, `no VM is said not to have answered: ${said}`);
  t.notMatch(said, /vm-boot/);
  t.equal(r.code, 2, `the node's state, not the image's: ${said}`);
  t.match(said, /preparing the job took [0-9]+ s of \[timeouts\] total 300 s, which leaves [0-9]+ s to boot its VMs, less than \[launch\] boot 300 s \(tcg\): no VM was started/);
  t.match(said, /its image was new to this node \(checked and cached for it\)/);
  t.match(said, /raise \[timeouts\] total to [0-9]+ s or more, with Torque's \$prologalarm/);
  const logs = mom.logLines();
  const failed = logs.find((l) => l.msg === 'job failed') as { err?: { problems?: { id: string }[] } } | undefined;
  t.equal(failed?.err?.problems?.[0]?.id, 'boot-time', 'the admin log names the problem id');
  t.notOk(logs.some((l) => l.msg === 'VM did not come up' || l.msg === 'VM booted'), 'no VM was waited for');
  t.ok(logs.some((l) => l.msg === 'image ready' && l.verified === true), 'the image was checked in this prologue (cold)');
  t.same(qemusOf(job.id), [], 'no qemu of the job runs');
});

t.test('a cold job whose slow image check ate the boot\'s time is requeued, and the node stays online: the next start finds the image cached', async (t) => {
  // total 400 holds a 300 s boot of a cached image; a check slowed by 100 s (a guestfish that sleeps first) leaves less than that.
  const mom = new Mom({ privateCache: true, ini: '[launch]\nstart = true\naccel = tcg\nboot = 300\nconsole_silence = 0\n[timeouts]\ntotal = 400\ntool = 300\n[seed]\nssh_keys_from =\n' });
  const slow = `${mom.root}/bin/slow-guestfish`;
  writeFileSync(slow, '#!/bin/sh\nsleep 100\nexec /usr/bin/guestfish "$@"\n');
  chmodSync(slow, 0o755);
  writeFileSync(mom.configFile, readFileSync(mom.configFile, 'utf8') + `[tools]\nguestfish = ${slow}\n`);
  const job = { id: `${process.pid}2.head`, script };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const r = await mom.prologue(job, { alarm: 500 });
  const said = r.ou + r.er;
  t.equal(r.code, 2, `requeued: ${said}`);
  t.match(said, /cannot take VM job [^ ]+ now: preparing the job took [0-9]+ s of \[timeouts\] total 400 s/);
  t.notMatch(said, /did not answer|taken offline/);
  t.same(mom.pbsnodesCalls().filter((c) => / -o /.test(` ${c} `)), [], 'pbsnodes is never called to offline the node');
  t.same(qemusOf(job.id), [], 'no qemu of the job runs');
});
