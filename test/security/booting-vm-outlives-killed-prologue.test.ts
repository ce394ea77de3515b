// Issue 21 item 8: a prologue killed while its VM boots must leave no qemu
// behind. qemu is daemonized (it must outlive a prologue that succeeded: the
// job runs in it), so it is in no session or process group of the prologue's
// and no parent-death signal reaches it; the boot guard stops it. Killed as
// pbs_mom's $prologalarm does (the whole session) and as an admin's kill -9 or
// the OOM killer would (node alone). The boot guest really starts (TCG); the
// kill comes as soon as the prologue waits for its agent. And the KVM probe
// before it, hung as it hangs on this machine's nested /dev/kvm, goes too.
import t from 'tap';
import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { Mom } from '../harness/mom.js';
import { bootGuestImage, bootingIni, ensureLaunchUser, qemusOf } from '../harness/launch-user.js';
import { describe, killMidway, treeOf } from '../harness/procs.js';

t.setTimeout(1800_000);
ensureLaunchUser();
const guest = bootGuestImage();
const script = '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho hello\n';

const isSocket = (p: string) => {
  try {
    return lstatSync(p).isSocket();
  } catch {
    return false;
  }
};

for (const how of ['session', 'node'] as const) {
  const killer = how === 'session' ? "pbs_mom's $prologalarm kills the prologue's session" : 'node alone is SIGKILLed';
  t.test(`a VM still booting is stopped, with its boot guard, when ${killer}`, async (t) => {
    const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: bootingIni(600) });
    const job = { id: `${process.pid}${how === 'session' ? 1 : 2}.head`, script };
    t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
    // The agent socket is moved into the job directory once qemu is up; then the prologue waits for the guest.
    const agent = join(mom.jobDir, job.id, 'vm-0.agent');
    const k = await killMidway(mom, job, how, () => isSocket(agent) && qemusOf(job.id).length > 0, [mom.root, `vtorque-${job.id}-vm`]);
    t.ok(k.seen, `the VM's qemu was running, and the prologue waiting for its agent, when the prologue was killed${k.seen ? '' : `: ${k.r.ou}${k.r.er}`}`);
    t.equal(k.r.signal, 'SIGKILL', 'the prologue died of SIGKILL: nothing of ours could clean up');
    t.same(qemusOf(job.id), [], 'no qemu of the job is left');
    t.same(k.left.map((p) => p.cmdline.join(' ').slice(0, 200)), [], `nothing of the prologue is left (before the kill: ${describe(k.before)})`);
    t.comment(`left ${k.ms} ms after the kill: ${k.left.length} processes`);
  });
}

t.test('the KVM probe for the VMs, hung on this nested /dev/kvm, is gone when node alone is SIGKILLed', async (t) => {
  // auto: the probe boots this node's kernel under KVM with the VMs' options. Here -cpu host,-arch-capabilities
  // starts on the nested /dev/kvm and then never prints a console byte (src/launch/kvm.ts): it hangs for its 20 s.
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, privateCache: true, ini: `${bootingIni(600)}[launch]\naccel = auto\nextra_args = -cpu host,-arch-capabilities\n` });
  const job = { id: `${process.pid}3.head`, script };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const probe = (pid: number) => treeOf(pid).some((p) => /qemu-system/.test(p.cmdline[0] ?? '') && p.cmdline.some((a) => a.includes('panic=-1')));
  const k = await killMidway(mom, job, 'node', probe, [mom.root, `vtorque-${job.id}-vm`]);
  t.ok(k.seen, `the probe's qemu was running when the prologue was killed${k.seen ? '' : `: ${k.r.ou}${k.r.er}`}`);
  t.equal(k.r.signal, 'SIGKILL', 'the prologue died of SIGKILL');
  t.same(k.left.map((p) => p.cmdline.join(' ').slice(0, 200)), [], `nothing of the prologue is left (before the kill: ${describe(k.before)})`);
  t.comment(`left ${k.ms} ms after the kill: ${k.left.length} processes`);
});
