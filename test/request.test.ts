import t from 'tap';
import { parseConfig } from '../src/config/load.js';
import { resolveRequest } from '../src/request/resolve.js';
import { scanDirectives } from '../src/request/directives.js';
import { JobFault } from '../src/core/errors.js';

const config = parseConfig('[defaults]\nimg = debian12.qcow2\ndistro = debian\n[policy]\nmax_vcpus = 16\n', 'test.ini').config;
const resolve = (script: string, forced = false) => resolveRequest({ directives: scanDirectives(script).directives, config, forcedByQueue: forced });
const problemsOf = (script: string) => {
  try {
    resolve(script);
  } catch (e) {
    if (e instanceof JobFault) return e.problems;
    throw e;
  }
  return [];
};

t.test('gaps are filled from [defaults] and each value records its source', async (t) => {
  const r = resolve('#VM vcpus=4,ram=8G\n');
  t.equal(r.img, 'debian12.qcow2');
  t.equal(r.vcpus, 4);
  t.equal(r.ram, 8 * 1024 ** 3);
  t.equal(r.sources.vcpus, 'job');
  t.equal(r.sources.img, 'default');
  t.ok(Object.isFrozen(r));
});

t.test('the default distro applies only to the default image', async (t) => {
  t.equal(resolve('#VM vcpus=1\n').distro, 'debian');
  const other = resolve('#VM img=rocky9.qcow2\n');
  t.equal(other.distro, null);
  t.equal(other.sources.distro, 'image');
});

t.test("distro=redhat stays RedHat (vsub's redhat-to-debian bug does not come back)", async (t) => {
  for (const d of ['redhat', 'centos', 'rocky', 'rhel']) {
    const r = resolve(`#VM img=x.qcow2,distro=${d}\n`);
    t.equal(r.distro, d);
    t.equal(r.family, 'redhat');
  }
  t.equal(resolve('#VM distro=ubuntu\n').family, 'debian');
  t.equal(resolve('#VM distro=osv\n').family, 'osv');
});

t.test('an unknown key gets a did-you-mean', async (t) => {
  const [p] = problemsOf('#VM vpcus=2\n');
  t.match(p!.message, /unknown key "vpcus"/);
  t.match(p!.fix, /did you mean vcpus\?/);
});

t.test('a duplicate key is an error naming both lines', async (t) => {
  const [p] = problemsOf('#VM img=a\n#VM vcpus=1,img=b\n');
  t.equal(p!.where, 'line 2');
  t.match(p!.message, /given twice \(first on line 1\)/);
});

t.test('policy limits are enforced with the limit in the message', async (t) => {
  const [p] = problemsOf('#VM vcpus=32\n');
  t.match(p!.message, /vcpus=32 is more than this site allows \(16\)/);
  t.match(p!.fix, /\[policy\] max_vcpus/);
});

t.test('every problem is reported, not only the first', async (t) => {
  t.equal(problemsOf('#VM ram=12X,vcpus=0,fs_type=nfs,arch=mips\n').length, 4);
});

t.test('iocm_min_cores above iocm_max_cores is refused', async (t) => {
  t.match(problemsOf('#VM iocm_min_cores=4,iocm_max_cores=2\n')[0]!.message, /more than iocm_max_cores/);
});

t.test('pass-through keys are format-checked', async (t) => {
  const r = resolve('#VM vrdma=yes,iocm=false,unclot=1,unclot_shmem=512M\n');
  t.equal(r.vrdma, true);
  t.equal(r.iocm, false);
  t.equal(r.unclot_shmem, 512 * 1024 ** 2);
  t.match(problemsOf('#VM vrdma=maybe\n')[0]!.message, /not true or false/);
});

t.test('a queue in vm_queues makes a job without #VM lines a VM job with all defaults', async (t) => {
  const r = resolve('echo\n', true);
  t.equal(r.forcedByQueue, true);
  t.equal(r.img, 'debian12.qcow2');
});
