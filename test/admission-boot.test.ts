// Admission with real VMs (TCG): a booted VM job's manifest holds its room on
// the node while its qemu runs, and not once its qemu is gone. The second job
// names an image the pool does not have, so that its verdict tells admission's
// answer without a second boot: busy (exit 2) while the first VM runs, the
// image's refusal (exit 1, not-in-pool, which comes after admission) once it
// no longer does.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { Mom } from './harness/mom.js';
import { bootGuestImage, bootingIni, ensureLaunchUser, qemusOf } from './harness/launch-user.js';

t.setTimeout(1800_000);
ensureLaunchUser();
const guest = bootGuestImage();
const memKiB = Number(/^MemTotal:\s+([0-9]+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);

t.test("a running VM's manifest holds its room while its qemu runs, and not after", async (t) => {
  // This node gives VMs 3 GiB.
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: `${bootingIni(600)}[launch]\nreserve_memory = ${memKiB - 3 * 1024 * 1024}K\n` });
  const a = { id: `${process.pid}1.head`, script: '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho hello\n' };
  t.teardown(() => { for (const p of qemusOf(a.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const ra = await mom.prologue(a, { alarm: 1300 });
  t.equal(ra.code, 0, ra.er);
  const pids = qemusOf(a.id);
  t.equal(pids.length, 1, 'its VM runs');

  const b = { id: `${process.pid}2.head`, script: '#!/bin/bash\n#VM img=missing.qcow2,ram=2G,vcpus=1\necho hello\n' };
  const busy = await mom.prologue(b);
  t.equal(busy.code, 2, busy.er);
  t.match(busy.er, `other VM jobs hold 1.3 GiB of the 3.0 GiB this node gives VMs (${a.id})`);
  t.same(mom.pbsnodesCalls().filter((c) => / -o|^-o/.test(c)), [], 'not offlined');

  // The VM is gone (its files are not: no epilogue yet): it holds nothing.
  for (const p of pids) process.kill(p, 'SIGKILL');
  for (let i = 0; i < 100 && qemusOf(a.id).length > 0; i++) await new Promise((res) => setTimeout(res, 100));
  const admitted = await mom.prologue({ ...b, qstat: { start_count: '2' } });
  t.equal(admitted.code, 1, admitted.er);
  // The spool's .ER keeps the first start's lines: only this start's count.
  const now = admitted.er.slice(busy.er.length);
  t.match(now, /there is no image "missing\.qcow2"/, 'past admission: the image is what refuses it now');
  t.notMatch(now, /no room/);
  t.equal((await mom.run('epilogue', a)).code, 0);
});
