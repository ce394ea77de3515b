// The README's first command: plays pbs_mom's part for a few jobs on a
// throw-away TORQUE_HOME and shows what the user and Torque would see.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, NOBODY, lookupUser, type Job } from '../test/harness/mom.js';
import { bootGuestImage } from '../test/harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from '../test/harness/seed-user.js';

const TORQUE_DOES: Record<number, string> = {
  0: 'Torque starts the job',
  1: "Torque aborts the job (its .o/.e files are not delivered; our report was written to the job's error path)",
  2: 'Torque requeues the job (a node fault; the job is not to blame)',
};

interface DemoJob {
  title: string;
  job: Job;
}

/** An example job script from examples/. */
const ex = (f: string) => readFileSync(new URL(`../../examples/${f}`, import.meta.url), 'utf8');

function banner(s: string): void {
  console.log(`\n\x1b[1m== ${s} ==\x1b[0m`);
}

function indent(text: string, prefix = '  | '): string {
  return text.replace(/\n$/, '').split('\n').map((l) => prefix + l).join('\n');
}

async function main(): Promise<void> {
  console.log('building the test images (cached after the first run) and looking inside them; the first run takes a few minutes without KVM');
  // A node of its own: cold cache, so the demo shows the first job on an image too.
  const mom = new Mom({ privateCache: true, pool: { 'debian12.qcow2': 'debian-ok.qcow2', 'tools.qcow2': 'debian-opt-used.qcow2' } });
  console.log(`A throw-away node: TORQUE_HOME=${mom.torqueHome}`);
  console.log(`config: ${mom.configFile}; jobs run as user ${NOBODY.name}; example scripts in examples/`);
  const jobs: DemoJob[] = [
    { title: 'an ordinary batch job', job: { id: '101.demo', name: 'plain', script: ex('plain.pbs') } },
    { title: 'a VM job: 2 Debian VMs per node', job: { id: '102.demo', name: 'vmjob', script: ex('vm-job.pbs') } },
    { title: 'a VM job whose image puts software in /opt', job: { id: '104.demo', name: 'tools', script: ex('bad-image.pbs'), qstat: { Error_Path: `login1:${mom.workdir}/tools.err`, Join_Path: 'n', start_count: '1' } } },
    { title: 'a VM job with mistakes in its #VM lines', job: { id: '103.demo', name: 'typo', script: ex('bad-request.pbs'), qstat: { Error_Path: `login1:${mom.workdir}/typo.err`, Join_Path: 'n', start_count: '1' } } },
  ];
  for (const { title, job } of jobs) {
    banner(`job ${job.id}: ${title}`);
    console.log('job script header:');
    console.log(indent(String(job.script).split('\n').slice(0, 8).join('\n')));
    const r = await mom.prologue(job);
    console.log(`pbs_mom ran mom_priv/prologue: exit ${r.code} after ${Math.round(r.ms)} ms -> ${TORQUE_DOES[r.code ?? 2]}`);
    if (r.ou) console.log(`job output (.OU):\n${indent(r.ou)}`);
    if (r.er) console.log(`job errors (.ER):\n${indent(r.er)}`);
    const dir = join(mom.jobDir, job.id);
    if (existsSync(dir)) {
      console.log(`files prepared in ${dir} (mode, owner, bytes):`);
      for (const f of (readdirSync(dir, { recursive: true }) as string[]).sort()) {
        const st = statSync(join(dir, f));
        const who = st.uid === 0 ? 'root' : st.uid === NOBODY.uid ? NOBODY.name : String(st.uid);
        console.log(`  ${(st.mode & 0o777).toString(8).padStart(4, '0')} ${who.padEnd(7)} ${String(st.size).padStart(8)}  ${f}${st.isDirectory() ? '/' : ''}`);
      }
      const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      console.log(`manifest.json: request ${JSON.stringify({ img: m.request.img, distro: m.request.distro, vcpus: m.request.vcpus, ram: m.request.ram, vms_per_node: m.request.vms_per_node })}`);
      console.log(`  base: ${m.base.path} (${m.base.format}, sha256 ${m.base.digest.slice(0, 12)}, ${m.base.ingested ? 'copied into the cache by this job' : 'already cached'})`);
      for (const vm of m.vms) {
        const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '--force-share', vm.overlay], { encoding: 'utf8' }));
        console.log(`  VM ${vm.index} ${vm.hostname}: ${info.format} overlay of ${info['virtual-size'] / 1048576} MiB backed by the cached base; seed ${vm.seed.path} (${vm.seed.media}, instance-id ${vm.seed.instanceId})`);
      }
      const first = m.vms[0];
      if (first?.seed.media === 'iso') {
        const userData = execFileSync('isoinfo', ['-i', first.seed.path, '-J', '-x', '/user-data'], { encoding: 'utf8' });
        console.log(`user-data of ${first.hostname} (read back from its seed with isoinfo), its top-level keys:`);
        console.log(indent(userData.split('\n').filter((l) => /^[#a-z_]/.test(l)).join('\n')));
      }
    }
    if (r.code === 1 && job.qstat?.Error_Path) {
      const p = job.qstat.Error_Path.split(':')[1]!;
      console.log(`delivered to the user at ${p} (owner uid ${statSync(p).uid}):\n${indent(readFileSync(p, 'utf8'))}`);
    }
  }
  banner('the node\'s image cache (vtorque-prologue cache list)');
  console.log(indent(execFileSync(process.execPath, [BIN, '--config', mom.configFile, 'cache', 'list'], { encoding: 'utf8' })));
  banner('epilogue for job 102.demo');
  const e = await mom.run('epilogue', { id: '102.demo' });
  console.log(`exit ${e.code}; ${existsSync(join(mom.jobDir, '102.demo')) ? 'files still there!' : 'its overlays, manifest and lease are gone; the cached image stays for the next job'}`);
  console.log(`\nadmin log (${mom.logFile}), first lines:`);
  console.log(indent(readFileSync(mom.logFile, 'utf8').split('\n').slice(0, 4).join('\n')));
  await runInVm();
}

// The whole life of a VM job: the prologue boots its VM, pbs_mom starts the
// job through the job starter, the script runs inside VM 0, the epilogue
// stops the VM. The image is the small bootable Debian guest the tests use.
async function runInVm(): Promise<void> {
  banner('job 105.demo: a VM job whose script runs inside its VM');
  console.log('building the bootable Debian guest (debootstrap; cached after the first run, a few minutes) ...');
  const guest = bootGuestImage();
  ensureSeedUser();
  const user = lookupUser(SEED_USER.name);
  // Without KVM (as on many build machines) the VM boots under TCG: slow, but the same path. The
  // deadlines are a loaded TCG machine's: a cold image's check and copy (tool, up to 600 s) before a
  // boot of up to 900 s, which the prologue starts only while the deadline still leaves it (boot-time).
  const vm = new Mom({ pool: { 'debian12-boot.qcow2': guest }, ini: '[launch]\nstart = true\naccel = auto\nboot = 900\n[timeouts]\ntotal = 1700\ntool = 600\n[seed]\nssh_keys_from =\n' });
  const job: Job = { id: '105.demo', name: 'invm', user, script: ex('vm-run.pbs') };
  console.log('job script:');
  console.log(indent(String(job.script)));
  const t0 = performance.now();
  const p = await vm.prologue(job, { alarm: 1800 });
  const tp = performance.now();
  console.log(`pbs_mom ran mom_priv/prologue: exit ${p.code} after ${((tp - t0) / 1000).toFixed(1)} s (image check, cache, overlay, seed, boot) -> ${TORQUE_DOES[p.code ?? 2]}`);
  // The admin log times each stage: ms, or seconds for a VM's boot.
  for (const l of vm.logLines()) {
    const s = typeof l.ms === 'number' ? l.ms / 1000 : typeof l.seconds === 'number' ? l.seconds : undefined;
    if (s !== undefined && typeof l.msg === 'string') console.log(`  stage ${String(l.stage).padEnd(8)} ${l.msg}${l.vm ? ` (${String(l.vm)})` : ''}: ${s.toFixed(1)} s`);
  }
  if (p.code !== 0) {
    console.log(indent(p.er));
    return;
  }
  const r = await vm.startJob(job);
  const tj = performance.now();
  console.log(`pbs_mom started the job through $job_starter (as ${user.name}): exit ${r.code} after ${((tj - tp) / 1000).toFixed(1)} s`);
  console.log(`job output (.OU), the prologue's lines, then the script's own, from inside the VM:\n${indent(r.ou)}`);
  if (r.er) console.log(`job errors (.ER):\n${indent(r.er)}`);
  const e = await vm.run('epilogue', job);
  console.log(`epilogue: exit ${e.code} after ${((performance.now() - tj) / 1000).toFixed(1)} s; ${existsSync(join(vm.jobDir, job.id)) ? 'files still there!' : 'the VM is powered off and its files are gone'}`);
}


main().catch((e) => {
  console.error(e);
  process.exit(1);
});
