// vm_prologue= and vm_epilogue= in a real VM, and qdel of a running VM job,
// under TCG with the Debian boot guest (scripts/build-boot-guest). The job
// starter, already the job owner, reads the two scripts and sends VM 0 one
// script: vm_prologue, the job script, vm_epilogue (src/launch/starter.ts).
// Two boots, one after the other: a VM runs one job script per boot.
import t from 'tap';
import { chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, lookupUser } from './harness/mom.js';
import { bootGuestImage, qemusOf, bootingIni, bootingTotal } from './harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';

t.setTimeout(1800_000);
const guest = bootGuestImage();
ensureSeedUser();
const OWNER = lookupUser(SEED_USER.name);

const INI = bootingIni();


/** A file of the job owner's in the submit directory, as they would write it. */
function ownerFile(mom: Mom, rel: string, text: string): void {
  const p = join(mom.workdir, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, text, { mode: 0o600 });
  chownSync(p, OWNER.uid, OWNER.gid);
}

t.test('vm_prologue runs in VM 0 before the job script and vm_epilogue after it, as the job owner; the job\'s status is the script\'s', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: INI });
  // The submit directory is the owner's, as a real one is (the harness makes it nobody's).
  chownSync(mom.workdir, OWNER.uid, OWNER.gid);
  ownerFile(mom, 'pre.sh', '#!/bin/sh\necho "vm_prologue as $(id -un) on $(hostname)"\necho made-by-the-prologue > "$HOME/pre-line"\n');
  ownerFile(mom, 'tools/post.sh', 'echo "vm_epilogue after status $VTORQUE_JOB_STATUS"\necho "vm_epilogue to stderr" >&2\nexit 9\n');
  const job = {
    id: `${process.pid}1.head`,
    name: 'vmscripts',
    user: OWNER,
    script: [
      '#!/bin/bash',
      '#VM img=boot-guest.qcow2,ram=1G,vcpus=1',
      '#VM vm_prologue=pre.sh,vm_epilogue=tools/post.sh',
      'echo "job sees: $(cat ~/pre-line)"',
      'echo "job on $(hostname)"',
      'exit 4',
      '',
    ].join('\n'),
  };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const p = await mom.prologue(job, { alarm: bootingTotal() + 100 });
  t.equal(p.code, 0, p.er);
  const r = await mom.startJob(job);
  t.comment(`job .OU:\n${r.ou}\njob .ER:\n${r.er}`);
  t.equal(r.code, 4, "the job's status is the script's, not vm_epilogue's");
  const out = r.ou.slice(p.ou.length);
  t.equal(out, [
    `vm_prologue as ${OWNER.name} on vnode01`,
    'job sees: made-by-the-prologue',
    'job on vnode01',
    'vm_epilogue after status 4',
    '',
  ].join('\n'), 'vm_prologue, the job script, vm_epilogue, in that order, in VM 0');
  t.match(r.er, /^vm_epilogue to stderr$/m);
  t.match(r.er, /^vtorque: vm_epilogue tools\/post\.sh exited with status 9; the job's status stays 4\. Fix: /m, 'a failing vm_epilogue is reported, not hidden');
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.same(qemusOf(job.id), [], 'no qemu left');
});

t.test('qdel of a running VM job: the TERM trap with $(...) runs once to its end, nothing else is written, the job ends with the trap\'s 143, and the epilogue leaves no qemu and no file', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: INI });
  // The script a user writes to see qdel. Under runuser its shell got TERM twice:
  // the trap ran again inside itself and broke off its $(...) ("trap: line N:
  // unexpected EOF while looking for matching `)'"), and "Session terminated,
  // killing shell..." landed in the .ER (a Torque 6.1 run; src/seed/agent.ts become_user).
  const job = {
    id: `${process.pid}2.head`,
    name: 'qdelled',
    user: OWNER,
    script: [
      '#!/bin/bash',
      '#VM img=boot-guest.qcow2,ram=1G,vcpus=1',
      'trap \'echo "caught TERM in $(hostname) as $(id -un)"; sleep 1; echo "cleaned up in $(pwd)"; exit 143\' TERM',
      'echo started',
      'sleep 600 &',
      'wait',
      'echo not-reached',
      '',
    ].join('\n'),
  };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const p = await mom.prologue(job, { alarm: bootingTotal() + 100 });
  t.equal(p.code, 0, p.er);
  t.equal(qemusOf(job.id).length, 1, 'VM 0 runs');
  const t0 = Date.now();
  const r = await mom.startJob(job, { termAfterMs: 20_000 });
  t.comment(`job .OU:\n${r.ou}\njob .ER:\n${r.er} (${Date.now() - t0} ms)`);
  t.equal(r.code, 143, "the job's status is the trap's exit 143");
  t.equal(r.ou.slice(p.ou.length), `started\ncaught TERM in vnode01 as ${OWNER.name}\ncleaned up in /home/${OWNER.name}\n`,
    'the script was running when qdel came; its trap ran once, in VM 0, to its end');
  t.equal(r.er.slice(p.er.length), '', 'nothing else in the .ER: no "Session terminated", no bash parse error, no vtorque: line');
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.same(qemusOf(job.id), [], 'no qemu left');
  t.equal(existsSync(join(mom.jobDir, job.id)), false, 'no job file left');
});
