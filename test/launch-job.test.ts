// A #VM job from start to end, as pbs_mom runs it, under TCG: the prologue
// boots the real Debian boot guest (scripts/build-boot-guest); pbs_mom starts
// the job through $job_starter as the job owner, with the script arriving on
// the shell's pipe (Torque's default build); the script runs inside VM 0 as
// the job owner, its output lands in the job's .OU/.ER and its exit status is
// the job's; the epilogue leaves no qemu and no file.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, lookupUser } from './harness/mom.js';
import { bootGuestImage, qemusOf, bootingIni } from './harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';

t.setTimeout(1800_000);
const guest = bootGuestImage();
// A real account, as a cluster user is: the guest image has no such user, so
// cloud-init creates it with its home (the image's own "nobody" would keep /nonexistent).
ensureSeedUser();
const OWNER = lookupUser(SEED_USER.name);

const INI = bootingIni();


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
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const p = await mom.prologue(job, { alarm: 1300 });
  t.equal(p.code, 0, p.er);
  t.match(p.ou, /vtorque: VM vnode01 booted in [0-9.]+ s \(tcg\)/);

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

  // What the script wrote stays in the VM's disk, which the host can read once the VM is gone.
  const manifest = JSON.parse(readFileSync(join(mom.jobDir, job.id, 'manifest.json'), 'utf8'));
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
