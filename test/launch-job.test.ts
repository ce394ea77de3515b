// A #VM job from start to end, as pbs_mom runs it, under TCG: the prologue
// boots the real Debian boot guest (scripts/build-boot-guest); pbs_mom starts
// the job through $job_starter as the job owner, with the script arriving on
// the shell's pipe (Torque's default build); the script runs inside VM 0 as
// the job owner, its output lands in the job's .OU/.ER and its exit status is
// the job's; the epilogue leaves no qemu and no file.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { cgroupV1Mounts } from '../src/launch/cgroup.js';
import { Mom, lookupUser } from './harness/mom.js';
import { bootGuestImage, qemusOf, bootingIni, bootingTotal } from './harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';

t.setTimeout(1800_000);
const guest = bootGuestImage();
// A real account, as a cluster user is: the guest image has no such user, so
// cloud-init creates it with its home (the image's own "nobody" would keep /nonexistent).
ensureSeedUser();
const OWNER = lookupUser(SEED_USER.name);

const INI = bootingIni();

/** Asks qemu for an ACPI power-off over its QMP socket, as the epilogue does. */
function powerdown(qmp: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = createConnection(qmp);
    let sent = false;
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      if (!sent && d.includes('"QMP"')) {
        sent = true;
        c.write('{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n');
      } else if ((d.match(/"return"/g) ?? []).length > 0 && sent) {
        c.end();
        resolve();
      }
    });
    c.on('error', reject);
  });
}

async function gone(jobId: string, seconds: number): Promise<boolean> {
  for (let i = 0; i < seconds * 2; i++) {
    if (qemusOf(jobId).length === 0) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

/**
 * The job's cgroups as Torque 6.1 makes them (<v1 mount>/torque/<jobid>/), in
 * the v1 hierarchies this node has mounted (cpuset left out: it needs cpus and
 * mems written first).
 */
function torqueCgroups(jobId: string): string[] {
  return cgroupV1Mounts().filter((m) => !/\/cpuset$/.test(m)).flatMap((m) => {
    try {
      mkdirSync(join(m, 'torque', jobId), { recursive: true });
      return [join(m, 'torque', jobId)];
    } catch {
      return [];
    }
  });
}


t.test('the job script runs in VM 0 as its owner; its output is the job\'s .OU/.ER and its exit status the job\'s', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: INI });
  const job = {
    id: `${process.pid}7.head`,
    name: 'invm',
    user: OWNER,
    script: [
      '#!/bin/bash',
      '#PBS -l nodes=1',
      '#VM img=boot-guest.qcow2,ram=1G,vcpus=1',
      'echo "host=$(hostname)"',
      'echo "user=$(id -un) uid=$(id -u)"',
      'echo "pwd=$(pwd)"',
      '. /etc/os-release; echo "os=$ID $VERSION_ID"',
      'echo "vmnodes=$(cat "$PBS_VM_NODEFILE" | tr "\\n" " ")np=$PBS_NP"',
      'echo "jobid=$PBS_JOBID"',
      'echo "written in the VM" > ~/from-the-job',
      'sudo -n true 2>/dev/null && echo "root=yes" || echo "root=no"',
      'echo "to stderr" >&2',
      'exit 3',
      '',
    ].join('\n'),
  };
  const cgroups = torqueCgroups(job.id);
  t.teardown(async () => {
    for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    await gone(job.id, 10);
    for (const d of cgroups) try { rmdirSync(d); } catch { /* busy or gone */ }
  });
  const p = await mom.prologue(job, { alarm: bootingTotal() + 100 });
  t.equal(p.code, 0, p.er);
  t.match(p.ou, /vtorque: VM vnode01 booted in [0-9.]+ s \(tcg\)/);
  const [qemu] = qemusOf(job.id);
  t.comment(`Torque-style job cgroups on this node: ${cgroups.join(' ') || 'none (no cgroup v1 mounts)'}`);
  for (const d of cgroups) {
    t.ok(readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').includes(String(qemu)), `qemu (pid ${qemu}) is in the job's cgroup ${d}`);
  }

  const r = await mom.startJob(job);
  t.comment(`job .OU:\n${r.ou}\njob .ER:\n${r.er}`);
  t.equal(r.code, 3, 'the script\'s exit status is the job\'s');
  t.match(r.ou, /^host=vnode01$/m, 'hostname: inside the VM');
  t.match(r.ou, new RegExp(`^user=${OWNER.name} uid=${OWNER.uid}$`, 'm'), 'as the job owner, with the node uid');
  t.match(r.ou, new RegExp(`^pwd=/home/${OWNER.name}$`, 'm'), 'in the owner\'s home in the VM');
  t.match(r.ou, /^os=debian 12$/m, "the guest's /etc/os-release");
  t.match(r.ou, /^vmnodes=vnode01 np=1$/m, 'PBS_VM_NODEFILE and PBS_NP');
  t.match(r.ou, new RegExp(`^jobid=${job.id.replace(/\./g, '\\.')}$`, 'm'), 'the job\'s PBS variables');
  t.match(r.ou, /^root=no$/m, 'root is out of the script\'s reach');
  t.match(r.er, /^to stderr$/m, 'stderr lands in .ER');

  // What the script wrote stays in the VM's disk, which the host can read once the VM is off.
  const manifest = JSON.parse(readFileSync(join(mom.jobDir, job.id, 'manifest.json'), 'utf8'));
  await powerdown(join(mom.jobDir, job.id, 'vm-0.qmp'));
  t.ok(await gone(job.id, 300), 'the guest powers off on ACPI');
  const written = execFileSync('/usr/bin/virt-cat', ['--format=qcow2', '-a', manifest.vms[0].overlay, `/home/${OWNER.name}/from-the-job`], {
    encoding: 'utf8', timeout: 600_000, env: { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' },
  });
  t.equal(written, 'written in the VM\n', 'the file the script wrote in its home is on the VM\'s disk, read on the host');
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.same(qemusOf(job.id), [], 'no qemu left');
  t.equal(existsSync(join(mom.jobDir, job.id)), false, 'no job file left');
  t.ok(manifest.vms[0].overlay);
});

t.test('a job without #VM lines runs on the host through the same starter, unchanged', async (t) => {
  const mom = new Mom({ ini: INI });
  const job = { id: `${process.pid}8.head`, script: '#!/bin/bash\necho "on $(hostname -s)"\nexit 5\n' };
  const p = await mom.prologue(job);
  t.equal(p.code, 0);
  const r = await mom.startJob(job);
  t.equal(r.code, 5);
  t.equal(r.ou, `${p.ou}on ${execFileSync('hostname', ['-s'], { encoding: 'utf8' }).trim()}\n`, 'the prologue\'s line, then the job\'s own output');
});
