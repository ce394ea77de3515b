// The request on a node without the job script: VTORQUE_REQUEST and its
// encoding, the VM_<KEY> job variables, disagreement with the script, and the
// node's place in PBS_NODEFILE. Pure functions, tested directly.
import t from 'tap';
import { parseConfig } from '../src/config/load.js';
import { NOT_YET, resolveRequest, type VmRequest } from '../src/request/resolve.js';
import { VM_KEYS, VM_KEY_NAMES, type VmKey } from '../src/request/keys.js';
import { REQUEST_VARIABLE, canonicalValue, decodeRequest, encodeRequest, requestFromEncoded } from '../src/request/encoding.js';
import {
  describeDisagreement, directivesFromVmVariables, nodePosition, requestDisagreement, requestFromVariables, vmVariableName,
} from '../src/request/sister.js';
import { parseQstat } from '../src/torque/qstat.js';
import { TORQUE_TERMS } from '../src/torque/engine.js';
import { isJobFault, isNodeFault, type Problem } from '../src/core/errors.js';

const config = parseConfig('[defaults]\nvcpus = 2\n', 'test.ini').config;
const resolve = (pairs: [string, string][]) => resolveRequest({ directives: pairs.map(([key, value], i) => ({ key, value, line: i + 1 })), config });

/** Values each key accepts, in odd spellings too: the canonical form must read back to the same value. Keys in NOT_YET are refused, so none. */
const VALID: Record<VmKey, string[]> = {
  img: ['debian12.qcow2', 'sub/dir/rocky-9.1+x_y.raw', '/scratch/u/mine.qcow2'],
  distro: ['debian', 'ROCKY', ' osv '],
  arch: ['x86_64', 'aarch64'],
  vcpus: ['1', '4', '64', '007'],
  ram: ['64M', '2G', '1.5G', '1000M', '123456789', '1.001G', '200G', '512MiB'],
  vms_per_node: ['1', '8'],
  vcpu_pinning: ['true', 'no', 'ON', '0'],
  disk: [],
  fs_type: ['sharedfs', 'RAMDISK'],
  metadata: ['cc.yaml', '/scratch/me/x.yaml', '../shared/d.yaml', './-a'],
  vm_prologue: ['setup.sh', '../up/x.sh', '/scratch/me/p+1.sh'],
  vm_epilogue: ['cleanup.sh', './-e.sh'],
  vrdma: ['true', 'false'],
  iocm: ['yes'],
  iocm_min_cores: ['1', '2'],
  iocm_max_cores: ['4'],
  unclot: ['true'],
  unclot_shmem: ['1G', '1536M', '1048577'],
};

type Tap = Pick<typeof t, 'match' | 'same'>;

const roundTrips = (t: Tap, r: VmRequest, what: string) => {
  const enc = encodeRequest(r);
  t.match(enc, /^v1(:[a-z_]+=[A-Za-z0-9._+\/-]+)*$/, `${what}: ${enc} stays in qsub's safe alphabet`);
  t.same(requestFromEncoded(enc, config), r, `${what}: decodes to the same request`);
};

t.test('every valid value of every key round-trips through VTORQUE_REQUEST', async (t) => {
  t.same(Object.keys(VALID).sort(), [...VM_KEY_NAMES].sort(), 'the table covers every key');
  for (const k of VM_KEY_NAMES) {
    for (const v of VALID[k]) {
      let r: VmRequest;
      try {
        r = resolve([[k, v]]);
      } catch {
        // absolute img paths need allow_user_images; the rest must resolve
        if (k === 'img' && v.startsWith('/')) continue;
        t.fail(`${k}=${v} should be valid`);
        continue;
      }
      roundTrips(t, r, `${k}=${v}`);
    }
  }
  // The example of every key, all at once.
  roundTrips(t, resolve(VM_KEY_NAMES.filter((k) => k !== 'iocm_min_cores' && !NOT_YET.includes(k)).map((k) => VM_KEYS[k].example.split('=') as [string, string])), 'all keys');
  roundTrips(t, resolveRequest({ directives: [], config, forcedByQueue: true }), 'a VM queue job with no #VM lines');
});

t.test('random valid requests round-trip (seeded, so a failure can be replayed)', async (t) => {
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 300; i++) {
    const keys = VM_KEY_NAMES.filter((k) => rnd(3) === 0 && k !== 'iocm_min_cores' && VALID[k].length > 0);
    const pairs = keys.map((k) => [k, VALID[k][rnd(VALID[k].length)]!] as [string, string]).filter(([k, v]) => !(k === 'img' && v.startsWith('/')));
    // No keys at all decodes as a VM-queue job: covered in the test above.
    if (pairs.length === 0) continue;
    roundTrips(t, resolve(pairs), `#${i} ${pairs.map((p) => p.join('=')).join(',')}`);
  }
});

t.test('sizes and counts keep their canonical text exact', async (t) => {
  t.equal(canonicalValue('ram', 8 * 1024 ** 3), '8G');
  t.equal(canonicalValue('ram', 1.5 * 1024 ** 3), '1536M');
  t.equal(canonicalValue('ram', 1074815566), '1074815566', 'no unit fits exactly: bytes');
  t.equal(canonicalValue('vcpus', 1024), '1024', 'a count never becomes 1K');
  t.equal(canonicalValue('vcpu_pinning', true), 'true');
  t.equal(encodeRequest(resolve([['vcpus', '2']])), 'v1:vcpus=2', 'a value the job gave is carried even when it equals the default');
  t.equal(encodeRequest(resolve([['ram', '4G'], ['img', 'x.qcow2']])), 'v1:img=x.qcow2:ram=4G', 'table order, defaults left to each node');
});

const TAMPERED: [string, string, RegExp][] = [
  ['another format', 'v2:vcpus=4', /is in format v2; this vtorque-prologue reads v1/],
  ['no version', 'vcpus=4', /does not start with "v1"/],
  ['empty', '', /does not start with "v1"/],
  ['an empty item', 'v1:', /"" is not key=value/],
  ['an item without =', 'v1:vcpus', /item 1: "vcpus" is not key=value/],
  ['a key twice', 'v1:img=a.qcow2:img=b.qcow2', /item 2: img is given twice \(first as item 1\)/],
  ['a comma smuggling a second value', 'v1:vcpus=4,ram=2G', /item 1: vcpus: "4,ram=2G" is not a whole number/],
  ['an unknown key', 'v1:vpcus=4', /item 1: unknown key "vpcus".*did you mean vcpus\?/],
  ['a path escape', 'v1:img=../../etc/shadow', /item 1: img: image name "..\/..\/etc\/shadow" contains '\.\.'/],
  ['shell characters', 'v1:img=$(reboot)', /characters outside A-Z/],
  ['a control character', 'v1:vcpus=4\u001b[2J', /contains a control character \(\\x1b\)/],
  ['more than the site allows', 'v1:vcpus=65', /item 1: vcpus=65 is more than this site allows \(64\)/],
  ['out of range', 'v1:vms_per_node=0', /vms_per_node: 0 is out of range/],
  ['inconsistent', 'v1:iocm_min_cores=4:iocm_max_cores=2', /iocm_min_cores=4 is more than iocm_max_cores=2/],
  ['a user path nothing reads yet', 'v1:disk=/dev/sda', /item 1: disk= is not supported yet on this site/],
  ['a vm_prologue with shell characters', 'v1:vm_prologue=a.sh;reboot', /vm_prologue "a\.sh;reboot" has characters outside/],
  ['a megabyte of it', `v1:img=${'a'.repeat(1024 * 1024)}`, /characters long, more than 8192/],
];

t.test('a tampered VTORQUE_REQUEST is refused as the job\'s fault, naming the item', async (t) => {
  for (const [name, enc, says] of TAMPERED) {
    try {
      requestFromEncoded(enc, config);
      t.fail(`${name}: accepted`);
    } catch (e) {
      t.ok(isJobFault(e), `${name}: a job fault (exit 1)`);
      const text = (e as { problems: Problem[] }).problems.map((p) => `${p.where}: ${p.message}. ${p.fix}`).join('\n');
      t.match(text, says, name);
      t.match(text, /VTORQUE_REQUEST/, `${name}: says where`);
    }
  }
  t.same(decodeRequest('v1:img=a.qcow2:vcpus=4'), [{ key: 'img', value: 'a.qcow2', line: 1 }, { key: 'vcpus', value: '4', line: 2 }]);
});

t.test('a sister takes VTORQUE_REQUEST, else the VM_<KEY> variables, else nothing', async (t) => {
  const enc = encodeRequest(resolve([['vcpus', '4'], ['ram', '8G']]));
  const both = requestFromVariables({ [REQUEST_VARIABLE]: enc, VM_VCPUS: '1', PBS_O_HOME: '/home/u' }, config);
  t.equal(both.source, REQUEST_VARIABLE);
  t.equal(both.source !== 'none' && both.request.vcpus, 4, 'VTORQUE_REQUEST wins over VM_ variables');
  const vars = requestFromVariables({ VM_IMG: 'rocky9.qcow2', VM_DISTRO: 'rocky', VM_VMS_PER_NODE: '2', VM_HOME: '/x' }, config);
  t.equal(vars.source, 'VM_variables');
  if (vars.source === 'VM_variables') {
    t.same(vars.names, ['VM_IMG', 'VM_DISTRO', 'VM_VMS_PER_NODE'], 'VM_HOME is not ours and is left alone');
    t.equal(vars.request.img, 'rocky9.qcow2');
    t.equal(vars.request.family, 'redhat');
    t.equal(vars.request.vms_per_node, 2);
    t.equal(vars.request.vcpus, 2, 'defaults from this node\'s ini');
  }
  t.same(requestFromVariables({ PBS_O_HOME: '/home/u', VM_HOME: '/x' }, config), { source: 'none' });
  try {
    requestFromVariables({ [REQUEST_VARIABLE]: 'v1:vcpus=999', VM_VCPUS: '2' }, config);
    t.fail('a bad VTORQUE_REQUEST never falls through to VM_ variables');
  } catch (e) {
    t.equal((e as { problems: Problem[] }).problems[0]!.where, 'VTORQUE_REQUEST item 1', 'a bad VTORQUE_REQUEST never falls through to VM_ variables');
  }
  try {
    requestFromVariables({ VM_VCPUS: '0', VM_RAM: 'lots' }, config);
    t.fail('accepted');
  } catch (e) {
    t.ok(isJobFault(e));
    t.same((e as { problems: Problem[] }).problems.map((p) => p.where), ['qsub -v VM_VCPUS', 'qsub -v VM_RAM']);
  }
});

t.test('the request survives Torque\'s Variable_List as qstat -f prints it', async (t) => {
  const enc = encodeRequest(resolve([['img', 'sub/a+b_c-1.qcow2'], ['ram', '1536M'], ['metadata', '/scratch/x.yaml']]));
  const text = `Job Id: 7.head\n    Job_Name = j\n    Variable_List = PBS_O_QUEUE=batch,PBS_O_HOME=/home/u,OPTS=a\\,b=c,${REQUEST_VARIABLE}=${enc},PBS_O_WORKDIR=/home/u\n    start_count = 1\n`;
  const v = parseQstat(text).variables;
  t.equal(v[REQUEST_VARIABLE], enc);
  const r = requestFromVariables(v, config);
  t.equal(r.source, REQUEST_VARIABLE);
  t.same(r.source !== 'none' && r.request, resolve([['img', 'sub/a+b_c-1.qcow2'], ['ram', '1536M'], ['metadata', '/scratch/x.yaml']]));
});

t.test('VM_<KEY> names: one per #VM key, as vsub named them', async (t) => {
  const names = VM_KEY_NAMES.map(vmVariableName);
  t.equal(new Set(names).size, VM_KEY_NAMES.length);
  t.equal(vmVariableName('vms_per_node'), 'VM_VMS_PER_NODE');
  t.equal(vmVariableName('vm_prologue'), 'VM_VM_PROLOGUE');
  t.same(directivesFromVmVariables({ VM_RAM: '4G', VM_IMG: 'a.qcow2' }).map((d) => [d.key, d.value, d.line]), [['img', 'a.qcow2', 1], ['ram', '4G', 2]]);
});

t.test('disagreement compares what the requests resolve to, not how they were written', async (t) => {
  const script = resolve([['vcpus', '2'], ['ram', '8G']]);
  t.same(requestDisagreement(script, requestFromEncoded('v1:ram=8G', config)), [], 'vcpus=2 written or defaulted is the same');
  const d = requestDisagreement(script, requestFromEncoded('v1:vcpus=4:ram=8G:vrdma=true', config));
  t.same(d, [{ key: 'vcpus', script: '2', other: '4' }, { key: 'vrdma', script: '(none)', other: 'true' }]);
  t.equal(describeDisagreement(d, REQUEST_VARIABLE), 'vcpus: #VM 2, VTORQUE_REQUEST 4; vrdma: #VM (none), VTORQUE_REQUEST true');
  const img = requestDisagreement(resolve([['img', 'x.qcow2']]), resolve([['img', 'x.qcow2'], ['distro', 'rocky']]));
  t.same(img.map((x) => [x.key, x.script, x.other]), [['distro', '(from the image)', 'rocky']]);
});

t.test('a node\'s position: distinct hosts of PBS_NODEFILE in first-occurrence order', async (t) => {
  const nf = 'n03.cluster\nn03.cluster\nn01.cluster\nn01.cluster\nn07.cluster\nn01.cluster\n';
  t.same(nodePosition(nf, 'n03', TORQUE_TERMS), { index: 0, hosts: ['n03', 'n01', 'n07'] });
  t.same(nodePosition(nf, 'n01.cluster', TORQUE_TERMS).index, 1, 'an FQDN host name');
  t.same(nodePosition(nf, 'N07', TORQUE_TERMS).index, 2, 'case does not matter');
  t.same(nodePosition('a\r\n\r\nb\r\n', 'b', TORQUE_TERMS), { index: 1, hosts: ['a', 'b'] }, 'CRLF and blank lines');
  t.same(nodePosition('solo\n', 'solo', TORQUE_TERMS), { index: 0, hosts: ['solo'] });
  for (const [name, file, host, says] of [
    ['not in the list', nf, 'n09', /lists n03, n01, n07 but not n09/],
    ['empty node file', '\n', 'n01', /lists no hosts/],
    ['two FQDNs with one short name', 'n1.a\nn1.b\n', 'n1', /n1\.a and n1\.b share the short name n1/],
  ] as const) {
    try {
      nodePosition(file, host, TORQUE_TERMS);
      t.fail(`${name}: accepted`);
    } catch (e) {
      t.ok(isNodeFault(e), `${name}: a node fault (exit 2)`);
      t.match((e as { problems: Problem[] }).problems[0]!.message, says, name);
    }
  }
});
