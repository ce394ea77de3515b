// cloud-init seeds, checked by cloud-init itself: every user-data goes through
// `cloud-init schema -c`, every network-config through cloud-init's own
// parser and renderer (`cloud-init devel net-convert`), every YAML through
// PyYAML (what cloud-init reads with), every profile through sh, and every
// medium is read back with isoinfo or mtools.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { renderSeed, seedShared, writeSeed, type SeedInput } from '../src/seed/index.js';
import { toYaml } from '../src/seed/render.js';
import { USER_DATA_KEYS, buildUserData } from '../src/seed/user-data.js';
import { OSV_KEYS } from '../src/seed/osv.js';
import { checkAccountName, checkJobName, checkJobPath, gecosFor, guestHostname, instanceId } from '../src/seed/names.js';
import { GUEST_STAGING_DIR, PUT_AS_USER } from '../src/seed/guest-files.js';
import { AGENT_CONFIG_PATH, AGENT_PATH, AGENT_SOURCE, agentRuncmd, type AgentConfig } from '../src/seed/agent.js';
import { profileText, profileVars } from '../src/seed/profile.js';
import { GUEST_KEYS_DIR, SSHD_DROPIN, SSHD_DROPIN_TEXT, SSHD_INCLUDE } from '../src/seed/ssh-keys.js';
import { parseStaticLine } from '../src/seed/network.js';
import type { VmRequest } from '../src/request/resolve.js';
import { isJobFault, isNodeFault } from '../src/core/errors.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';
import { REPO } from './harness/mom.js';
import { TORQUE_TERMS, torqueGuestVars } from '../src/torque/engine.js';
import { SLURM_TERMS, slurmGuestVars } from '../src/slurm/engine.js';

/** The seed's batch system in these tests: Torque's names (SeedInput.batch). */
const TORQUE = { guestVars: torqueGuestVars, terms: TORQUE_TERMS };
/** Torque's job variables in the guest, for profileVars called directly. */
const torqueJob = (id: string, name: string, workdir?: string) => torqueGuestVars({ id, name, workdir, vms: [], vcpus: 1 }).vars;

type Tap = Pick<typeof t, 'equal' | 'match'>;

const work = mkdtempSync(join(tmpdir(), 'vtorque-seed-'));
chmodSync(work, 0o755);

const TEST_USER = SEED_USER;
const home = join(work, 'home');
ensureSeedUser(home);
mkdirSync(join(home, '.ssh'), { recursive: true });
const KEY1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0dGVzdGtleWZvcnZ0b3JxdWVzZWVkdGVzdHMx alice@laptop';
const KEY2 = 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= "quoted #comment"';
writeFileSync(join(home, '.ssh/authorized_keys'), `# my keys\n${KEY1}\ncommand="/bin/evil" ${KEY1}\n\n${KEY2}\nnot a key\n`);
for (const p of [home, join(home, '.ssh'), join(home, '.ssh/authorized_keys')]) chownSync(p, TEST_USER.uid, TEST_USER.gid);
chmodSync(join(home, '.ssh'), 0o700);

/** The error fn throws (undefined if none), for assertions on its fields. */
function caught(fn: () => unknown): { message: string; problems: { message: string; fix?: string }[] } | undefined {
  try {
    fn();
  } catch (e) {
    return e as never;
  }
  return undefined;
}

function config(ini = ''): Config {
  return parseConfig(ini, 'test.ini').config;
}

const request = (over: Partial<VmRequest> = {}): VmRequest => ({
  img: 'debian12.qcow2', arch: 'x86_64', vcpus: 1, ram: 2 ** 31, vms_per_node: 1, fs_type: 'sharedfs', vcpu_pinning: false,
  distro: 'debian', family: 'debian', sources: {}, forcedByQueue: false, ...over,
} as VmRequest);

function input(cfg: Config, over: Partial<SeedInput> = {}): SeedInput {
  const dir = mkdtempSync(join(work, 'vm-'));
  return {
    config: cfg, batch: TORQUE,
    job: { id: '42.head', user: TEST_USER.name, group: TEST_USER.group, name: 'job1', workdir: home },
    node: 'node01', vm: { index: 0, count: 1, jobIndex: 0 }, family: 'debian', request: request(),
    owner: { uid: TEST_USER.uid, gid: TEST_USER.gid, fileMode: 0o600, dirMode: 0o750 },
    dir, overlay: join(dir, 'disk.qcow2'), ...over,
  };
}

/** PyYAML, as cloud-init loads user-data (safe_load, YAML 1.1). */
function pyyaml(texts: string[]): unknown[] {
  const dir = mkdtempSync(join(work, 'py-'));
  const files = texts.map((x, i) => { const f = join(dir, `${i}.yaml`); writeFileSync(f, x); return f; });
  const out = execFileSync('python3', ['-c', 'import sys,yaml,json\nfor f in sys.argv[1:]: print(json.dumps(yaml.safe_load(open(f, encoding="utf-8")), ensure_ascii=False))', ...files], { encoding: 'utf8' });
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

const schemaTimes: number[] = [];
/** `cloud-init schema -c FILE`: exit 0 and "Valid cloud-config". */
function cloudInitSchema(t: Tap, text: string, what: string): void {
  const f = join(mkdtempSync(join(work, 'schema-')), 'user-data');
  writeFileSync(f, text);
  const t0 = performance.now();
  const r = spawnSync('cloud-init', ['schema', '-c', f], { encoding: 'utf8' });
  schemaTimes.push(performance.now() - t0);
  t.equal(r.status, 0, `cloud-init schema accepts the ${what}: ${r.stdout}${r.stderr}`);
  t.match(r.stdout, /Valid cloud-config/, `${what} is valid cloud-config`);
}

/** cloud-init's own network-config parser and networkd renderer. */
function netConvert(t: Tap, text: string, what: string): string {
  const d = mkdtempSync(join(work, 'net-'));
  writeFileSync(join(d, 'network-config'), text);
  const r = spawnSync('cloud-init', ['devel', 'net-convert', '-p', join(d, 'network-config'), '-k', 'yaml', '-d', join(d, 'out'), '-D', 'debian', '-O', 'networkd'], { encoding: 'utf8' });
  t.equal(r.status, 0, `cloud-init net-convert reads the ${what}: ${r.stderr.slice(-500)}`);
  const dir = join(d, 'out/etc/systemd/network');
  return execFileSync('sh', ['-c', 'cat "$1"/*', 'sh', dir], { encoding: 'utf8' });
}

const staticCmd = join(work, 'ip-to-mac');
writeFileSync(staticCmd, '#!/bin/sh\n# JOBID NODE VM-INDEX HOSTNAME\nprintf "mac=52:54:00:aa:00:%02x address=10.9.0.%d/24 gateway=10.9.0.1\\n" "$3" "$(($3 + 10))"\n');
chmodSync(staticCmd, 0o755);

const FULL = `[seed]
nfs_home = head:/export/home/%u
nfs_workspace = head:/export/workspace
nfs_opt = head:/export/opt
nameservers = 10.0.0.2, 10.0.0.3
search = cluster.example, example
ntp_servers = ntp1.cluster.example, 10.0.0.5
packages_debian = htop, nfs-common
packages_redhat = htop, nfs-utils
`;

const COMBOS: { name: string; ini: string; family: 'debian' | 'redhat' | 'osv'; keys: string[]; net: 'dhcp' | 'none' | 'static' | undefined }[] = [];
const LINUX_BASE = ['hostname', 'preserve_hostname', 'manage_etc_hosts', 'disable_root', 'ssh_pwauth', 'no_ssh_fingerprints', 'bootcmd', 'users', 'write_files', 'runcmd'];
/** For buildUserData called directly: an agent config that plays no part in what those tests check. */
const AGENT: AgentConfig = { user: 'alice', uid: 1234, home: '/home/alice', vms: ['vx'], np: 1, env: {}, script_env: {}, nodefile_env: [], np_env: [] };

type FileEntry = { path: string; content: string; encoding: string; owner: string; permissions: string };
/** The VM user's keys as the seed delivers them: the root-owned file's lines under /etc/ssh (ssh-keys.ts); undefined: no such file. */
function keysOf(r: { userData: string }): string[] | undefined {
  const f = (pyyaml([r.userData])[0] as { write_files: FileEntry[] }).write_files.find((x) => x.path === `${GUEST_KEYS_DIR}/${TEST_USER.name}`);
  return f && Buffer.from(f.content, 'base64').toString('utf8').split('\n').filter((l) => l !== '');
}
const b64json = (e: FileEntry | undefined): unknown => JSON.parse(Buffer.from(e!.content, 'base64').toString('utf8'));
for (const family of ['debian', 'redhat'] as const) {
  COMBOS.push({ name: `${family}, defaults`, ini: '', family, keys: LINUX_BASE, net: 'dhcp' });
  COMBOS.push({
    name: `${family}, every [seed] option`, ini: FULL, family, net: 'dhcp',
    keys: [...LINUX_BASE, 'mounts', ...(family === 'redhat' ? ['manage_resolv_conf', 'resolv_conf'] : []), 'ntp', 'package_update', 'packages'],
  });
  COMBOS.push({ name: `${family}, network none, no keys`, ini: '[seed]\nnetwork = none\nssh_keys_from =\n', family, keys: LINUX_BASE, net: 'none' });
  COMBOS.push({ name: `${family}, network static`, ini: `[seed]\nnetwork = static\nnetwork_command = ${staticCmd}\nnameservers = 10.0.0.2\n`, family, keys: [...LINUX_BASE, ...(family === 'redhat' ? ['manage_resolv_conf', 'resolv_conf'] : [])], net: 'static' });
}
COMBOS.push({ name: 'osv, every [seed] option', ini: FULL, family: 'osv', keys: ['hostname', 'files', 'run', 'mounts'], net: undefined });
COMBOS.push({ name: 'osv, defaults', ini: '', family: 'osv', keys: ['hostname', 'files', 'run'], net: undefined });

t.test('every family and option combination passes cloud-init schema, with exactly the keys we mean to emit', async (t) => {
  for (const c of COMBOS) {
    await t.test(c.name, async (t) => {
      const r = await renderSeed(input(config(c.ini), { family: c.family, request: request({ distro: c.family === 'osv' ? 'osv' : c.family, family: c.family }), nonce: 'abcd0123' }));
      const [meta, user] = pyyaml([r.metaData, r.userData]) as [Record<string, unknown>, Record<string, unknown>];
      t.same(meta, { 'instance-id': 'iid-42.head-vm0-abcd0123', 'local-hostname': 'vnode01' }, 'meta-data holds the instance-id and local-hostname only');
      t.same(Object.keys(user), c.keys, 'user-data has exactly these top-level keys, in this order');
      if (c.family === 'osv') {
        t.notOk(r.userData.startsWith('#cloud-config'), "OSv's dialect is plain YAML");
        t.ok(Object.keys(user).every((k) => (OSV_KEYS as readonly string[]).includes(k)), 'only keys OSv has handlers for');
        t.equal(r.networkConfig, undefined, 'OSv reads no network-config');
        const run = user.run as Record<string, string>[];
        t.same(run[0], { PUT: '/env/PBS_JOBID', val: '42.head' }, 'the environment goes through OSv /env API calls');
        return;
      }
      t.ok(r.userData.startsWith('#cloud-config\n'), 'user-data starts with #cloud-config');
      t.ok(Object.keys(user).every((k) => (USER_DATA_KEYS as readonly string[]).includes(k)), 'no key outside USER_DATA_KEYS');
      cloudInitSchema(t, r.userData, `${c.name} user-data`);
      const u = (user.users as Record<string, unknown>[])[0]!;
      t.match(u, { name: TEST_USER.name, uid: TEST_USER.uid, primary_group: TEST_USER.group, gecos: TEST_USER.gecos, lock_passwd: true }, 'the job owner with the node uid and exact GECOS');
      t.same(user.bootcmd, [['sh', '-c', SSHD_INCLUDE], ['cloud-init-per', 'instance', 'vtorque-group', 'groupadd', '-g', String(TEST_USER.gid), TEST_USER.group]], 'sshd reads our drop-in first; the group gets the node gid, by argv list, never a gid the image already uses (no -o)');
      t.equal(user.disable_root, true);
      t.equal(user.ssh_pwauth, false);
      t.equal(user.no_ssh_fingerprints, true, 'ssh_authkey_fingerprints, which makes ~/.ssh as root, is off');
      const files = user.write_files as FileEntry[];
      const agentPy = files.find((f) => f.path === AGENT_PATH);
      t.match(agentPy, { encoding: 'b64', owner: 'root:root', permissions: '0700' }, 'the guest agent, root-only');
      t.equal(Buffer.from(agentPy!.content, 'base64').toString('utf8'), AGENT_SOURCE, 'byte for byte');
      t.match(files.find((f) => f.path === AGENT_CONFIG_PATH), { encoding: 'b64', owner: 'root:root', permissions: '0600' }, 'its config, root-only');
      t.same(b64json(files.find((f) => f.path === AGENT_CONFIG_PATH)), {
        user: TEST_USER.name, uid: TEST_USER.uid, home: `/home/${TEST_USER.name}`, vms: ['vnode01'], np: 1,
        env: { PBS_JOBID: '42.head', PBS_JOBNAME: 'job1', PBS_O_WORKDIR: home, PBS_NODEFILE: '/etc/vtorque/nodefile', PBS_VM_NODEFILE: '/etc/vtorque/nodefile', DISTRO: c.family, VTORQUE_VM_INDEX: '0', VTORQUE_VM_NODE_INDEX: '0', VTORQUE_VMS_ON_NODE: '1', VTORQUE_HOSTNAME: 'vnode01' },
        script_env: { PBS_ENVIRONMENT: 'PBS_BATCH' }, nodefile_env: ['PBS_NODEFILE', 'PBS_VM_NODEFILE'], np_env: ['PBS_NP'],
      }, 'the agent runs the script as the job owner in the guest home, with the profile\'s variables; a one-node job by default');
      t.same(user.runcmd, [agentRuncmd()], 'the agent is started by our one fixed runcmd entry');
      t.notOk('ssh_authorized_keys' in u, 'cloud-init is never given the keys: it would write them into the home as root');
      t.match(files.find((f) => f.path === SSHD_DROPIN), { encoding: 'b64', owner: 'root:root', permissions: '0644' }, 'the sshd drop-in, root\'s');
      t.equal(Buffer.from(files.find((f) => f.path === SSHD_DROPIN)!.content, 'base64').toString('utf8'), SSHD_DROPIN_TEXT);
      const keyFile = files.find((f) => f.path === `${GUEST_KEYS_DIR}/${TEST_USER.name}`);
      if (c.ini.includes('ssh_keys_from =')) t.equal(keyFile, undefined, 'no keys file when ssh_keys_from is empty');
      else {
        t.match(keyFile, { encoding: 'b64', owner: 'root:root', permissions: '0644' }, 'the keys in a root-owned file under /etc/ssh');
        t.equal(Buffer.from(keyFile!.content, 'base64').toString('utf8'), `${KEY1}\n${KEY2}\n`, 'key lines only: comments, options and junk are left out');
      }
      t.notOk(files.some((f) => f.path.startsWith('/home/')), 'no write_files entry under the home');
      if (c.ini === FULL) {
        t.same(user.mounts, [
          ['head:/export/home/vtseed', '/home/vtseed', 'nfs', 'nofail,_netdev', '0', '0'],
          ['head:/export/workspace', '/workspace', 'nfs', 'nofail,_netdev', '0', '0'],
          ['head:/export/opt', '/opt-vm', 'nfs', 'nofail,_netdev', '0', '0'],
        ]);
        t.same(user.packages, c.family === 'debian' ? ['htop', 'nfs-common'] : ['htop', 'nfs-utils']);
        t.same(user.ntp, { enabled: true, servers: ['ntp1.cluster.example', '10.0.0.5'] });
      }
      const net = pyyaml([r.networkConfig!])[0] as Record<string, unknown>;
      cloudInitSchema(t, `#cloud-config\n${r.networkConfig}`, `${c.name} network-config`);
      if (c.net === 'none') {
        t.same(net, { config: 'disabled' }, "network none: cloud-init's own switch-off");
      } else if (c.net === 'dhcp') {
        t.same(Object.keys(net), ['version', 'ethernets']);
        const out = netConvert(t, r.networkConfig!, `${c.name} network-config`);
        t.match(out, /MACAddress=02(:[0-9a-f]{2}){5}/, 'the NIC is matched by the MAC we chose, which every renderer honours');
        t.match(out, /Name=eth0/);
        t.match(out, /DHCP=ipv4/, 'by DHCP');
        t.match(r.network, { mac: /^02:/ }, 'the MAC is handed back for the launcher');
        if (c.ini === FULL) t.match(out, /DNS=10\.0\.0\.2 10\.0\.0\.3/);
      } else {
        t.same(r.network, { mac: '52:54:00:aa:00:00', address: '10.9.0.10/24', gateway: '10.9.0.1' }, 'the static mapping is handed back for the launcher');
        const out = netConvert(t, r.networkConfig!, `${c.name} network-config`);
        t.match(out, /MACAddress=52:54:00:aa:00:00/);
        t.match(out, /Address=10\.9\.0\.10\/24/);
        t.match(out, /Gateway=10\.9\.0\.1/);
      }
    });
  }
});

t.test('requeued jobs and each VM get their own instance-id', async (t) => {
  const cfg = config();
  const a = await renderSeed(input(cfg));
  const b = await renderSeed(input(cfg));
  t.not(a.instanceId, b.instanceId, 'a second start of the same job gets a new instance-id');
  t.match(a.instanceId, /^iid-42\.head-vm0-[0-9a-f]{8}$/);
  t.equal(instanceId('42.head:#{x} y', 3, 'n'), 'iid-42.head-x-y-vm3-n', 'odd job ids are sanitised');
  const two = await renderSeed(input(cfg, { vm: { index: 1, count: 2, jobIndex: 5 }, nonce: 'n' }));
  t.equal(two.hostname, 'vnode01-1', 'several VMs on a node: v<node>-<index>');
  t.equal(two.instanceId, 'iid-42.head-vm5-n', 'the job-wide index names the VM');
});

t.test('[launch] network = user, two VMs on a node: eth1 on the job\'s segment at 10.254.0.<index+1>, every VM of the node in /etc/hosts', async (t) => {
  const r = await renderSeed(input(config(), { vm: { index: 1, count: 2, jobIndex: 3 }, nonce: 'n' }));
  t.match(r.network, { mac: /^02:/, segment: { mac: /^02:/, address: '10.254.0.2/24' } }, 'the segment NIC is handed back for the launcher');
  t.not(r.network!.segment!.mac, r.network!.mac, 'a MAC of its own');
  const net = pyyaml([r.networkConfig!])[0] as { ethernets: Record<string, unknown> };
  t.same(net.ethernets.eth1, { match: { macaddress: r.network!.segment!.mac }, 'set-name': 'eth1', addresses: ['10.254.0.2/24'] }, 'no gateway, no DNS: the default route stays eth0\'s');
  cloudInitSchema(t, `#cloud-config\n${r.networkConfig}`, 'segment network-config');
  const out = netConvert(t, r.networkConfig!, 'segment network-config');
  t.match(out, new RegExp(`\\[Address\\]\\nAddress=10\\.254\\.0\\.2/24\\n\\n\\[Match\\]\\nMACAddress=${r.network!.segment!.mac}\\nName=eth1\\n`), 'networkd: eth1 by its MAC, with its address');
  const u = pyyaml([r.userData])[0] as { write_files: (FileEntry & { append?: boolean; defer?: boolean })[] };
  const hosts = u.write_files.filter((f) => f.path === '/etc/hosts');
  t.equal(hosts.length, 1);
  t.match(hosts[0], { append: true, defer: true, owner: 'root:root', encoding: 'b64' }, 'appended after manage_etc_hosts wrote /etc/hosts');
  t.equal(Buffer.from(hosts[0]!.content, 'base64').toString('utf8'), "# this job's VMs on its private segment (vtorque)\n10.254.0.1 vnode01-0\n10.254.0.2 vnode01-1\n");
  for (const [ini, why] of [['', 'one VM: no one to reach'], ['[launch]\nnetwork = bridge\n', 'bridge: the site\'s network'], ['[launch]\nstart = false\n', 'a launcher of the site\'s own wires no segment'], ['[seed]\nnetwork = none\n', 'network none']] as const) {
    const o = await renderSeed(input(config(ini), ini === '' ? {} : { vm: { index: 1, count: 2, jobIndex: 3 } }));
    t.equal(o.network?.segment, undefined, why);
    t.notMatch(o.userData, '/etc/hosts', why);
  }
});

t.test('the guest agent gets every VM of the job (vmHostnames) and PBS_NP = VMs x vCPUs; its start line is valid sh', async (t) => {
  const r = await renderSeed(input(config(), { vm: { index: 1, count: 2, jobIndex: 3 }, vmHostnames: ['vnode00-0', 'vnode00-1', 'vnode01-0', 'vnode01-1'], request: request({ vcpus: 3 }) }));
  const u = pyyaml([r.userData])[0] as { write_files: FileEntry[] };
  t.match(b64json(u.write_files.find((f) => f.path === AGENT_CONFIG_PATH)), { vms: ['vnode00-0', 'vnode00-1', 'vnode01-0', 'vnode01-1'], np: 12, env: { VTORQUE_VM_INDEX: '3', VTORQUE_HOSTNAME: 'vnode01-1' } });
  const alone = await renderSeed(input(config(), { vm: { index: 0, count: 2, jobIndex: 0 } }));
  t.match(b64json((pyyaml([alone.userData])[0] as { write_files: FileEntry[] }).write_files.find((f) => f.path === AGENT_CONFIG_PATH)), { vms: ['vnode01-0', 'vnode01-1'], np: 2 }, 'without vmHostnames: this node\'s VMs');
  const [cmd, flag, script, argv0, path] = agentRuncmd();
  t.same([cmd, flag, argv0, path], ['sh', '-c', 'sh', AGENT_PATH]);
  const n = spawnSync('sh', ['-n', '-c', script!], { encoding: 'utf8' });
  t.equal(n.status, 0, `sh -n accepts it: ${n.stderr}`);
});

t.test('the VMs get a node file of their own: PBS_NODEFILE in the guest lists the job\'s VMs, never a host path', async (t) => {
  const vms = ['vnode01-0', 'vnode01-1', 'vnode02-0', 'vnode02-1'];
  const r = await renderSeed(input(config(), { vm: { index: 1, count: 2, jobIndex: 1 }, vmHostnames: vms }));
  const u = pyyaml([r.userData])[0] as { write_files: FileEntry[] };
  const file = (path: string) => u.write_files.find((f) => f.path === path);
  const profile = Buffer.from(file('/etc/profile.d/vtorque-job.sh')!.content, 'base64').toString('utf8');
  t.notMatch(profile, /torque\/aux|\/\//, `no host path in the profile: ${profile}`);
  const nf = file('/etc/vtorque/nodefile');
  t.ok(nf, 'the seed writes the guest node file');
  t.equal(Buffer.from(nf!.content, 'base64').toString('utf8'), vms.map((v) => `${v}\n`).join(''), 'one line per VM of the job, in job order');
  t.match(nf, { owner: 'root:root', permissions: '0644', encoding: 'b64' });
  const f = join(mkdtempSync(join(work, 'profile-')), 'p.sh');
  writeFileSync(f, profile);
  const sh = spawnSync('sh', ['-c', '. "$1" && printf "%s\\0%s" "$PBS_NODEFILE" "$PBS_VM_NODEFILE"', 'sh', f], { encoding: 'utf8' });
  t.same(sh.stdout.split('\0'), ['/etc/vtorque/nodefile', '/etc/vtorque/nodefile'], 'login shells in the VM get PBS_NODEFILE and PBS_VM_NODEFILE, both the guest\'s file');
  t.match(b64json(file(AGENT_CONFIG_PATH)), { env: { PBS_NODEFILE: '/etc/vtorque/nodefile' } });
});

t.test("under Slurm the guest gets Slurm's job variables (the engine's guestVars): SLURM_JOB_ID and the VMs as nodes, VTORQUE_NODEFILE, and no PBS_ name", async (t) => {
  const vms = ['vnode01-0', 'vnode01-1', 'vnode02-0', 'vnode02-1'];
  const slurm = { guestVars: slurmGuestVars, terms: SLURM_TERMS };
  const r = await renderSeed(input(config(), { batch: slurm, job: { id: '4242', user: TEST_USER.name, group: TEST_USER.group, name: "it's $x", workdir: home }, vm: { index: 1, count: 2, jobIndex: 1 }, vmHostnames: vms, request: request({ vcpus: 3 }) }));
  t.notMatch(r.userData, /PBS_/, 'no PBS_ name anywhere in user-data');
  const u = pyyaml([r.userData])[0] as { write_files: FileEntry[] };
  const file = (path: string) => u.write_files.find((f) => f.path === path);
  const profile = Buffer.from(file('/etc/profile.d/vtorque-job.sh')!.content, 'base64').toString('utf8');
  t.notMatch(profile, /PBS_/, `no PBS_ name in the profile: ${profile}`);
  const f = join(mkdtempSync(join(work, 'profile-')), 'p.sh');
  writeFileSync(f, profile);
  const names = ['SLURM_JOB_ID', 'SLURM_JOBID', 'SLURM_JOB_NAME', 'SLURM_SUBMIT_DIR', 'SLURM_JOB_NODELIST', 'SLURM_JOB_NUM_NODES', 'SLURM_NNODES', 'SLURM_CPUS_ON_NODE', 'VTORQUE_NODEFILE', 'VTORQUE_VM_INDEX'];
  const sh = spawnSync('sh', ['-c', `. "$1" && printf '%s\\0' ${names.map((n) => `"$${n}"`).join(' ')}`, 'sh', f], { encoding: 'utf8' });
  t.equal(sh.status, 0, sh.stderr);
  t.same(sh.stdout.split('\0').slice(0, -1), ['4242', '4242', "it's $x", home, vms.join(','), '4', '4', '3', '/etc/vtorque/nodefile', '1'], 'a login shell reads the job, its VMs as the nodes, and the guest node file');
  t.same(b64json(file(AGENT_CONFIG_PATH)), {
    user: TEST_USER.name, uid: TEST_USER.uid, home: `/home/${TEST_USER.name}`, vms, np: 12,
    env: {
      SLURM_JOB_ID: '4242', SLURM_JOBID: '4242', SLURM_JOB_NAME: "it's $x", SLURM_SUBMIT_DIR: home, SLURM_JOB_NODELIST: vms.join(','), SLURM_JOB_NUM_NODES: '4', SLURM_NNODES: '4', SLURM_CPUS_ON_NODE: '3',
      DISTRO: 'debian', VTORQUE_VM_INDEX: '1', VTORQUE_VM_NODE_INDEX: '1', VTORQUE_VMS_ON_NODE: '2', VTORQUE_HOSTNAME: 'vnode01-1', VTORQUE_NODEFILE: '/etc/vtorque/nodefile',
    },
    script_env: {}, nodefile_env: ['VTORQUE_NODEFILE'], np_env: [],
  }, "the agent sets Slurm's names for the script, and the run's node file in VTORQUE_NODEFILE");
  const noDir = await renderSeed(input(config(), { batch: slurm, job: { id: '7', user: TEST_USER.name, group: TEST_USER.group, name: 'j' } }));
  const env = (b64json((pyyaml([noDir.userData])[0] as { write_files: FileEntry[] }).write_files.find((x) => x.path === AGENT_CONFIG_PATH)) as { env: Record<string, string> }).env;
  t.notOk('SLURM_SUBMIT_DIR' in env, 'SLURM_SUBMIT_DIR only when the submit directory is known');
  t.match(caught(() => guestHostname('node_01', 0, 1, SLURM_TERMS))?.problems[0], { fix: /slurm\.conf \(NodeName\)/ }, "a node name no guest name can be made from: Slurm's fix");
});

// Hostile names: each either survives YAML (PyYAML), /etc/passwd and sh exactly, or is refused with a message.
const HOSTILE_ACCOUNTS: { name: string; ok: boolean }[] = [
  { name: 'a:b', ok: false }, { name: 'a#b', ok: false }, { name: "o'neil", ok: false }, { name: 'a"b', ok: false },
  { name: 'a\nb', ok: false }, { name: '{x}', ok: false }, { name: '&*!', ok: false }, { name: 'jürgen', ok: false },
  { name: '-rf', ok: false }, { name: '.hidden', ok: false }, { name: '', ok: false }, { name: 'a'.repeat(33), ok: false },
  // YAML 1.1 would read these unquoted as booleans, null or numbers.
  { name: 'no', ok: true }, { name: 'on', ok: true }, { name: 'y', ok: true }, { name: 'null', ok: true },
  { name: '0644', ok: true }, { name: '1e3', ok: true }, { name: '1_000', ok: true }, { name: 'True', ok: true }, { name: 'first.last', ok: true },
];

t.test('hostile user and group names round-trip through PyYAML or are refused with a clear message', async (t) => {
  const cfg = config(FULL);
  for (const h of HOSTILE_ACCOUNTS) {
    for (const kind of ['user', 'group'] as const) {
      if (!h.ok) {
        const e = caught(() => checkAccountName(kind, h.name));
        t.ok(isJobFault(e), `${kind} ${JSON.stringify(h.name)} refused`);
        t.match(e?.problems[0]?.message, /names in VMs must be 1-32 of/, 'saying what is allowed');
        continue;
      }
      t.equal(checkAccountName(kind, h.name), h.name);
      const account = { user: kind === 'user' ? h.name : 'alice', uid: 1234, group: kind === 'group' ? h.name : 'staff', gid: 99, gecos: '', home: '/home/x' };
      const doc = `#cloud-config\n${await toYaml(buildUserData({ config: cfg, family: 'debian', hostname: 'vnode01', account, sshKeys: [], profile: 'x\n', agent: AGENT }))}`;
      cloudInitSchema(t, doc, `user-data for ${kind} ${JSON.stringify(h.name)}`);
      const back = pyyaml([doc])[0] as { users: { name: string; primary_group: string }[]; bootcmd: string[][]; mounts: string[][] };
      const groupadd = back.bootcmd.find((c) => c.includes('groupadd'))!;
      t.equal(kind === 'user' ? back.users[0]!.name : back.users[0]!.primary_group, h.name, `${kind} ${JSON.stringify(h.name)} survives YAML 1.1 as a string`);
      if (kind === 'group') t.equal(groupadd.at(-1), h.name, "groupadd's last argument");
      else t.equal(back.mounts[0]![1], `/home/${h.name}`);
    }
  }
});

const HOSTILE_TEXT = ['colon: here', '#hash', 'single \' quote', 'double " quote', '{braces} [brackets]', '&*! anchors', 'Jürgen Müller ☃', 'a, b, c', '- dash', '| pipe', '> fold', '@at `tick`', '%percent', 'no', '0644', '~', ' leading space', 'trailing space ', '$(touch /tmp/vtorque-pwned) `id` $HOME'];

t.test('hostile GECOS fields round-trip exactly, or are left out with a note when /etc/passwd cannot hold them', async (t) => {
  for (const g of HOSTILE_TEXT) {
    const r = gecosFor(g);
    if (g.includes(':')) {
      t.equal(r.gecos, undefined, `${JSON.stringify(g)} left out`);
      t.match(r.note, /which \/etc\/passwd cannot hold/);
      continue;
    }
    t.equal(r.gecos, g);
    const account = { user: 'alice', uid: 1234, group: 'staff', gid: 99, gecos: g, home: '/home/x' };
    const doc = `#cloud-config\n${await toYaml(buildUserData({ config: config(), family: 'redhat', hostname: 'vx', account, gecos: g, sshKeys: [], profile: '', agent: AGENT }))}`;
    cloudInitSchema(t, doc, `user-data for GECOS ${JSON.stringify(g)}`);
    t.equal((pyyaml([doc])[0] as { users: { gecos: string }[] }).users[0]!.gecos, g, `${JSON.stringify(g)} survives YAML`);
  }
  t.match(gecosFor('line\nbreak').note, /control character/, 'a newline is left out too');
  t.match(gecosFor('line\u2028break').note, /line separator \(U\+2028\)/, 'and a line separator, which PyYAML reads as a newline');
  t.notOk(gecosFor('line\u2028break').note?.includes('\u2028'), 'the note itself holds no raw separator');
});

t.test('hostile paths and job names survive YAML and the sh profile exactly; control characters are refused', async (t) => {
  const docs: string[] = [];
  const cases = HOSTILE_TEXT.map((x) => ({ workdir: `/home/u/${x}/ü`, name: x }));
  for (const c of cases) {
    const vars = profileVars({ job: torqueJob('1.h', c.name, c.workdir), distro: 'debian', index: 0, count: 1, jobIndex: 0, hostname: 'vx' });
    const text = profileText(vars);
    const account = { user: 'alice', uid: 1234, group: 'staff', gid: 99, gecos: '', home: '/home/x' };
    const doc = `#cloud-config\n${await toYaml(buildUserData({ config: config(), family: 'debian', hostname: 'vx', account, sshKeys: [], profile: text, agent: AGENT }))}`;
    cloudInitSchema(t, doc, `user-data for job name ${JSON.stringify(c.name)}`);
    docs.push(doc);
    // Sourcing it must set the variables to exactly these bytes and run nothing.
    const f = join(mkdtempSync(join(work, 'profile-')), 'p.sh');
    writeFileSync(f, text);
    const r = spawnSync('sh', ['-c', '. "$1" && printf "%s\\0%s" "$PBS_O_WORKDIR" "$PBS_JOBNAME"', 'sh', f], { encoding: 'utf8' });
    t.equal(r.status, 0);
    t.same(r.stdout.split('\0'), [c.workdir, c.name], `sh reads back ${JSON.stringify(c.name)}`);
  }
  t.notOk(spawnSync('test', ['-e', '/tmp/vtorque-pwned']).status === 0, 'no command substitution ran');
  const back = pyyaml(docs) as { write_files: { content: string; encoding: string }[] }[];
  // The profile goes in as base64: no text of the job's is ever a YAML scalar of its own.
  const profiles = back.map((b) => Buffer.from(b.write_files[0]!.content, 'base64').toString('utf8'));
  back.forEach((b, i) => t.equal(b.write_files[0]!.encoding, 'b64', `profile ${i} is base64`));
  profiles.forEach((p, i) => t.match(p, `export PBS_JOBNAME=`, `profile ${i} survives YAML`));
  t.same(profiles, await Promise.all(cases.map(async (c) => profileText(profileVars({ job: torqueJob('1.h', c.name, c.workdir), distro: 'debian', index: 0, count: 1, jobIndex: 0, hostname: 'vx' })))), 'byte for byte');
  for (const bad of ['/a\nb', '/a\tb', 'relative/path', '/nul\0byte', '/a\u2028b', '/a\u2029b', '/a\u0085b', '/a\ud800b', '/a\uffffb']) {
    const e = caught(() => checkJobPath('PBS_O_WORKDIR', bad));
    // Escaped: a raw U+2028 in a test name would break the TAP stream itself.
    t.ok(isJobFault(e), `${JSON.stringify(bad).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)} refused`);
    t.match(e?.message, /PBS_O_WORKDIR cannot be passed to the VMs/);
  }
  t.match(caught(() => checkJobPath('PBS_O_WORKDIR', '/a\u2028b'))?.problems[0]?.message, 'contains a line separator (U+2028)', 'the character is named');
  t.match(caught(() => checkJobName('j\u2029x', TORQUE_TERMS))?.problems[0]?.message, 'contains a paragraph separator (U+2029)', 'job names too');
  t.equal(checkJobName("it's $(id) ü ☃", TORQUE_TERMS), "it's $(id) ü ☃", 'any single line of text is a job name');
  await t.rejects(renderSeed(input(config(), { job: { id: '1', user: TEST_USER.name, group: TEST_USER.group, name: 'j', workdir: '/x\ny' } })), /PBS_O_WORKDIR cannot be passed/, 'renderSeed refuses it too');
});

t.test('the YAML writer refuses any key or string a YAML 1.1 reader would not read as one line, naming where it is', async (t) => {
  for (const [ch, name] of [['\u2028', 'a line separator (U+2028)'], ['\u2029', 'a paragraph separator (U+2029)'], ['\u0085', 'a next-line character (U+0085)'], ['\n', 'a control character (\\x0a)'], ['\u009b', 'a control character (\\x9b)'], ['\ud800', 'an unpaired surrogate (U+D800)'], ['\ufffe', 'a non-character (U+FFFE)']] as const) {
    const e = await toYaml({ hostname: 'vx', users: [{ name: 'a', gecos: `x${ch}runcmd: [id]` }] }).then(() => undefined, (x: unknown) => x);
    t.ok(isJobFault(e), `${name}: a job fault`);
    t.match((e as { problems: { where: string; message: string }[] }).problems[0], { where: 'users[0].gecos', message: `contains ${name}` }, `${name}: the YAML path and the character`);
  }
  const k = await toYaml({ write_files: [{ ['p\u2028x']: 1 }] }).then(() => undefined, (x: unknown) => x);
  t.match((k as { problems: { where: string }[] }).problems[0]!.where, /^write_files\[0\]\["p\\u2028x"\] \(the key\)$/, 'keys are checked too, and quoted in the message');
  t.equal(await toYaml({ a: ['Jürgen ☃ 😀', "it's", 1, true] }), "a:\n  - Jürgen ☃ 😀\n  - it's\n  - 1\n  - true\n", 'printable text of any script passes');
});

t.test('OSv gets the profile as one line that sh reads back exactly', async (t) => {
  const cases = HOSTILE_TEXT.map((x) => ({ workdir: `/home/u/${x}`, name: x }));
  for (const c of cases) {
    const r = await renderSeed(input(config(), { family: 'osv', request: request({ distro: 'osv', family: 'osv' }), job: { id: '1.h', user: TEST_USER.name, group: TEST_USER.group, name: c.name, workdir: c.workdir } }));
    const doc = pyyaml([r.userData])[0] as { files: Record<string, string> };
    const line = doc.files['/etc/vtorque-job.sh']!;
    t.notOk(line.includes('\n'), 'one line');
    const f = join(mkdtempSync(join(work, 'osv-')), 'p.sh');
    writeFileSync(f, line);
    const sh = spawnSync('sh', ['-c', '. "$1" && printf "%s\\0%s" "$PBS_O_WORKDIR" "$PBS_JOBNAME"', 'sh', f], { encoding: 'utf8' });
    t.same(sh.stdout.split('\0'), [c.workdir, c.name], `sh reads back ${JSON.stringify(c.name)}`);
  }
});

t.test('hostile node names never become a guest hostname; good ones follow vTorque', async (t) => {
  t.equal(guestHostname('Node01', 0, 1, TORQUE_TERMS), 'vnode01');
  t.equal(guestHostname('n1', 3, 4, TORQUE_TERMS), 'vn1-3');
  for (const bad of ['node_01', 'nöde', 'a:b', 'a b', 'x#', '{x}', '&*!', "o'x", 'a\nb', 'n'.repeat(63), 'node-']) {
    const e = caught(() => guestHostname(bad, 0, 1, TORQUE_TERMS));
    t.ok(isNodeFault(e), `${JSON.stringify(bad)} refused`);
    t.match(e?.problems[0], { message: /is not a DNS label/, fix: /\[torque\] node_name/ });
  }
});

t.test('the real getent path: a GECOS with quotes, #, {} and non-ASCII arrives exactly', async (t) => {
  const r = await renderSeed(input(config()));
  const u = (pyyaml([r.userData])[0] as { users: { gecos: string; uid: number }[] }).users[0]!;
  t.equal(u.gecos, TEST_USER.gecos);
  t.equal(u.uid, TEST_USER.uid);
  await t.rejects(renderSeed(input(config(), { job: { id: '1', user: 'vtnosuchuser', group: TEST_USER.group, name: 'j' } })), /is not known on this node/, 'an unknown user is a node fault naming NSS');
});

function userFile(name: string, text: string | Buffer, mode = 0o644, uid = TEST_USER.uid): string {
  const p = join(home, name);
  writeFileSync(p, text);
  chownSync(p, uid, TEST_USER.gid);
  chmodSync(p, mode);
  return name;
}

t.test('user cloud-config: deny refuses it; allowlist merges safe keys and names every refused key', async (t) => {
  const deny = config();
  const allow = config('[policy]\nuser_cloud_config = allowlist\n');
  const ok = userFile('ok.yaml', '#cloud-config\ntimezone: Europe/Berlin\npackages: [jq]\nwrite_files:\n  - path: /workspace/in.txt\n    content: "hi: #1"\n    permissions: "0640"\n  - path: /home/vtseed/.bashrc.d/x\n    content: x\n');
  await t.rejects(renderSeed(input(deny, { request: request({ metadata: ok }) })), /cannot be used/, 'deny refuses any metadata');
  const r = await renderSeed(input(allow, { request: request({ metadata: ok }) }));
  const u = pyyaml([r.userData])[0] as { write_files: FileEntry[]; runcmd: string[][]; timezone: string; packages: string[] };
  t.equal(u.timezone, 'Europe/Berlin');
  t.same(u.packages, ['jq']);
  t.same(u.write_files.filter((f) => f.path.startsWith(GUEST_STAGING_DIR)), [
    { path: `${GUEST_STAGING_DIR}/0`, content: Buffer.from('hi: #1').toString('base64'), encoding: 'b64', owner: 'root:root', permissions: '0600' },
    { path: `${GUEST_STAGING_DIR}/1`, content: Buffer.from('x').toString('base64'), encoding: 'b64', owner: 'root:root', permissions: '0600' },
  ], 'staged root-only, as base64');
  t.same(u.runcmd, [
    ['sh', '-c', PUT_AS_USER, 'sh', 'vtseed', '/workspace/in.txt', `${GUEST_STAGING_DIR}/0`, '0640', 'false'],
    ['sh', '-c', PUT_AS_USER, 'sh', 'vtseed', '/home/vtseed/.bashrc.d/x', `${GUEST_STAGING_DIR}/1`, '0644', 'false'],
    agentRuncmd(),
  ], 'copied into place as the user by the fixed script, before the agent starts');
  cloudInitSchema(t, r.userData, 'merged user-data');

  const refused = async (text: string | Buffer, re: RegExp, what: string, mode = 0o644, uid = TEST_USER.uid, ini = '') => {
    const f = userFile(`bad-${Math.random().toString(36).slice(2)}.yaml`, text, mode, uid);
    const e = await renderSeed(input(ini ? config(`[policy]\nuser_cloud_config = allowlist\n${ini}`) : allow, { request: request({ metadata: f }) })).then(() => undefined, (x: unknown) => x);
    t.ok(isJobFault(e), `${what}: a job fault`);
    const msg = (e as { problems?: { message: string; fix?: string }[] }).problems?.map((p) => `${p.message} / ${p.fix}`).join('\n') ?? String(e);
    t.match(msg, re, what);
  };
  for (const key of ['runcmd', 'bootcmd', 'users', 'groups', 'chpasswd', 'ssh_authorized_keys', 'disable_root', 'apt', 'mounts', 'yum_repos', 'random_key']) {
    await refused(`#cloud-config\n${key}: []\n`, new RegExp(`key "${key}" is not allowed`), `${key} refused by name`);
  }
  await refused('runcmd: [id]\nbootcmd: [id]\n', /key "runcmd"[^]*key "bootcmd"/, 'every refused key is named at once');
  await refused('write_files:\n  - path: /etc/sudoers.d/me\n    content: "vtseed ALL=(ALL) NOPASSWD: ALL"\n', /outside your home and \/workspace/, '/etc is out of reach');
  await refused('write_files:\n  - path: /workspace/../etc/shadow\n', /not a plain absolute path/, '.. is refused');
  await refused('write_files:\n  - path: /workspace/x\n    owner: root:root\n', /owner "root:root" is not you/, 'another owner is refused');
  await refused("write_files:\n  - path: /workspace/x\n    permissions: '4755'\n", /set-id/, 'set-id modes are refused');
  await refused('write_files:\n  - path: /workspace/x\n', /mounted from NFS/, 'NFS-mounted /workspace: write it from the node', 0o644, TEST_USER.uid, '[seed]\nnfs_workspace = head:/ws\n');
  await refused('#!/bin/sh\nid\n', /only #cloud-config YAML is merged/, 'scripts are refused');
  await refused('a: [\n', /is not valid YAML/, 'broken YAML names the problem');
  await refused('- a\n', /not a YAML mapping/, 'a list is not cloud-config');
  await refused('timezone: x\n', /is not readable by you/, 'read as the user: a root-only file is refused', 0o600, 0);
  await refused(Buffer.alloc(70 * 1024, 'a'), /larger than 65536 bytes/, 'size cap');
  const link = join(home, 'link.yaml');
  symlinkSync('/etc/shadow', link);
  const e = await renderSeed(input(allow, { request: request({ metadata: 'link.yaml' }) })).then(() => undefined, (x: unknown) => x);
  t.match((e as unknown as { problems: { message: string }[] }).problems[0]!.message, /symbolic link/, 'metadata=link.yaml (to /etc/shadow) is refused');
  execFileSync('mkfifo', [join(home, 'fifo.yaml')]);
  chownSync(join(home, 'fifo.yaml'), TEST_USER.uid, TEST_USER.gid);
  const f = await renderSeed(input(allow, { request: request({ metadata: 'fifo.yaml' }) })).then(() => undefined, (x: unknown) => x);
  t.match((f as { problems: { message: string }[] }).problems[0]!.message, /is empty, or not a regular file/, 'a FIFO does not hang the prologue');
  const m = await renderSeed(input(allow, { request: request({ metadata: 'missing.yaml' }) })).then(() => undefined, (x: unknown) => x);
  t.match((m as { problems: { message: string }[] }).problems[0]!.message, /does not exist/);
  const o = await renderSeed(input(allow, { family: 'osv', request: request({ metadata: ok, distro: 'osv', family: 'osv' }) })).then(() => undefined, (x: unknown) => x);
  t.match((o as Error).message, /OSv/, 'OSv takes no cloud-config');
});

t.test('unreadable SSH key files are a note, never a failed job', async (t) => {
  const cfg = config(`[seed]\nssh_keys_from = %h/.ssh/authorized_keys, %h/secret.pub, %h/none.pub\n`);
  userFile('secret.pub', `${KEY1}\n`, 0o600, 0);
  const r = await renderSeed(input(cfg));
  t.same(keysOf(r), [KEY1, KEY2]);
  t.equal(r.notes.length, 1, 'a missing file is silent; an unreadable one is noted');
  t.match(r.notes[0], /secret\.pub is not readable by you/);
});

t.test('one seedShared() per job: the owner and their files are read once for all its VMs', async (t) => {
  const cfg = config(`[seed]\nssh_keys_from = %h/shared.pub\n`);
  userFile('shared.pub', `${KEY1}\n`);
  const shared = seedShared();
  const a = await renderSeed(input(cfg, { shared }));
  chmodSync(join(home, 'shared.pub'), 0o000);
  const b = await renderSeed(input(cfg, { shared, vm: { index: 1, count: 2, jobIndex: 1 } }));
  const c = await renderSeed(input(cfg));
  t.same(keysOf(a), [KEY1]);
  t.same(keysOf(b), [KEY1], 'the second VM reuses what the first read');
  t.equal(keysOf(c), undefined, 'without it, the file is read again (now unreadable: no keys)');
  t.not(a.instanceId, b.instanceId, 'instance-ids stay per VM');
});

t.test('network = static: the command output is validated, and a broken command is a node fault', async (t) => {
  t.same(parseStaticLine('mac=52:54:00:AA:00:01 address=10.0.0.2/16\n'), { mac: '52:54:00:aa:00:01', address: '10.0.0.2/16', gateway: undefined });
  for (const [out, re] of [
    ['', /printed 0 lines/], ['a\nb', /printed 2 lines/], ['mac=52:54:00:aa:00:01 address=10.0.0.2/33', /IPv4\/PREFIX/],
    ['mac=zz address=10.0.0.2/24', /not a MAC/], ['mac=01:00:5e:00:00:01 address=10.0.0.2/24', /multicast/],
    ['mac=52:54:00:aa:00:01 address=10.0.0.2/24 gateway=x', /gateway/], ['mac=52:54:00:aa:00:01 address=10.0.0.2/24; rm -rf /', /expected mac=/],
  ] as const) t.match(parseStaticLine(out), re, JSON.stringify(out));
  const bad = join(work, 'bad-net');
  writeFileSync(bad, '#!/bin/sh\necho "mac=nonsense"\n');
  chmodSync(bad, 0o755);
  const e = await renderSeed(input(config(`[seed]\nnetwork = static\nnetwork_command = ${bad}\n`))).then(() => undefined, (x: unknown) => x);
  t.ok(isNodeFault(e), 'the admin command is the node\'s business');
  t.match((e as unknown as { problems: { message: string }[] }).problems[0]!.message, /not a MAC address/);
  const none = await renderSeed(input(config('[seed]\nnetwork = static\n'))).then(() => undefined, (x: unknown) => x);
  t.match((none as { problems: { fix: string }[] }).problems[0]!.fix, /network_command/);
  const dry = await renderSeed(input(config(`[seed]\nnetwork = static\nnetwork_command = ${bad}\n`), { dryRun: true }));
  t.match(dry.notes.join('\n'), /was not run/, 'check --render does not run the command');
});

function seedOf(media: 'iso' | 'vfat', tool?: string): Promise<{ path: string; dir: string; rendered: Awaited<ReturnType<typeof renderSeed>> }> {
  const cfg = config(`[seed]\nmedia = ${media}\n${tool ? `[tools]\nmkisofs = ${tool}\n` : ''}`);
  const inp = input(cfg, { nonce: 'feedbeef' });
  return Promise.all([writeSeed(inp), renderSeed(inp)]).then(([w, r]) => ({ path: w.path, dir: inp.dir, rendered: r }));
}

t.test('iso media: volume id cidata, Joliet and Rock Ridge, our three files, owner-only', async (t) => {
  for (const tool of ['/usr/bin/genisoimage', '/usr/bin/xorriso']) {
    const t0 = performance.now();
    const s = await seedOf('iso', tool);
    t.comment(`${tool}: seed.iso in ${Math.round(performance.now() - t0)} ms (render + medium)`);
    t.equal(s.path, join(s.dir, 'seed.iso'));
    const st = statSync(s.path);
    t.equal(st.mode & 0o777, 0o600, 'mode 0600 whatever the umask');
    t.equal(st.uid, TEST_USER.uid);
    t.equal(st.gid, TEST_USER.gid);
    const d = execFileSync('isoinfo', ['-d', '-i', s.path], { encoding: 'utf8' });
    t.match(d, /Volume id: cidata/);
    t.match(d, /Joliet with UCS level/);
    t.match(d, /Rock Ridge signatures/);
    t.same(execFileSync('isoinfo', ['-R', '-f', '-i', s.path], { encoding: 'utf8' }).trim().split('\n').sort(), ['/meta-data', '/network-config', '/user-data']);
    const user = execFileSync('isoinfo', ['-R', '-i', s.path, '-x', '/user-data'], { encoding: 'utf8' });
    t.equal(user, s.rendered.userData, 'user-data read back byte for byte');
    t.match(execFileSync('isoinfo', ['-R', '-i', s.path, '-x', '/meta-data'], { encoding: 'utf8' }), /instance-id: iid-42\.head-vm0-feedbeef/);
    t.same(execFileSync('sh', ['-c', 'ls -A "$1"', 'sh', s.dir], { encoding: 'utf8' }).trim().split('\n'), ['seed.iso'], 'no staging or temporary file is left');
  }
});

t.test('vfat media: label CIDATA, our three files, owner-only', async (t) => {
  const t0 = performance.now();
  const s = await seedOf('vfat');
  t.comment(`seed.img (vfat) in ${Math.round(performance.now() - t0)} ms (render + medium)`);
  t.equal(s.path, join(s.dir, 'seed.img'));
  t.equal(statSync(s.path).mode & 0o777, 0o600);
  t.equal(statSync(s.path).uid, TEST_USER.uid);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  t.match(execFileSync('mlabel', ['-i', s.path, '-s', '::'], { encoding: 'utf8', env }), /Volume label is CIDATA/);
  t.same(execFileSync('mdir', ['-i', s.path, '-b', '::'], { encoding: 'utf8', env }).trim().split('\n').map((l) => l.replace(/^::\//, '')).sort(), ['meta-data', 'network-config', 'user-data']);
  t.equal(execFileSync('mtype', ['-i', s.path, '::user-data'], { encoding: 'utf8', env }), s.rendered.userData, 'user-data read back byte for byte');
  t.equal(execFileSync('mtype', ['-i', s.path, '::network-config'], { encoding: 'utf8', env }), s.rendered.networkConfig);
});

t.test('check --job SCRIPT --render DIR writes the seed files each VM would get, as the user, touching nothing else', async (t) => {
  const ini = join(work, 'render.ini');
  writeFileSync(ini, `[paths]\nimage_pool = ${join(work, 'no-such-pool')}\njob_dir = ${join(work, 'no-such-jobs')}\ncache_dir = ${join(work, 'no-such-cache')}\n[policy]\nuser_cloud_config = allowlist\n`);
  chmodSync(ini, 0o644);
  userFile('render.pbs', '#!/bin/sh\n#PBS -l nodes=1\n#VM vms_per_node=2,metadata=ok-render.yaml\necho hi\n', 0o700);
  userFile('ok-render.yaml', '#cloud-config\ntimezone: UTC\n');
  const out = join(home, 'seeds');
  const r = spawnSync(process.execPath, [join(REPO, 'bin/vtorque-prologue'), '--config', ini, 'check', '--job', 'render.pbs', '--render', out], { cwd: home, uid: TEST_USER.uid, gid: TEST_USER.gid, encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  t.equal(r.status, 0, `exit 0: ${r.stdout}${r.stderr}`);
  t.match(r.stdout, /seed for VM 1 \(v[a-z0-9-]+-1, iso medium at job start\)/);
  for (const vm of ['vm-0', 'vm-1']) {
    const files = execFileSync('ls', [join(out, vm)], { encoding: 'utf8' }).trim().split('\n');
    t.same(files, ['meta-data', 'network-config', 'user-data'], `${vm}: the three NoCloud files`);
    t.equal(statSync(join(out, vm, 'user-data')).mode & 0o777, 0o600, 'readable by the user only');
    t.equal(statSync(join(out, vm, 'user-data')).uid, TEST_USER.uid, 'written as the user');
    const ud = readFileSync(join(out, vm, 'user-data'), 'utf8');
    t.match(ud, /timezone: UTC/, 'the merged metadata is shown');
    const profile = (pyyaml([ud])[0] as { write_files: { content: string }[] }).write_files[0]!.content;
    t.match(Buffer.from(profile, 'base64').toString('utf8'), `export PBS_O_WORKDIR='${home}'`, 'the directory check ran in stands for PBS_O_WORKDIR');
    cloudInitSchema(t, ud, `rendered ${vm} user-data`);
  }
  t.notOk(spawnSync('test', ['-e', join(work, 'no-such-jobs')]).status === 0, 'no job directory was made');
  t.notOk(spawnSync('test', ['-e', join(work, 'no-such-cache')]).status === 0, 'nor a cache');
  const u = spawnSync(process.execPath, [join(REPO, 'bin/vtorque-prologue'), 'check', '--render', out], { encoding: 'utf8' });
  t.equal(u.status, 2);
  t.match(u.stderr, /--render DIR goes with --job SCRIPT/);
  const h = spawnSync(process.execPath, [join(REPO, 'bin/vtorque-prologue'), 'help', 'check'], { encoding: 'utf8' });
  t.match(h.stdout, /--render DIR +with --job: write each VM's cloud-init seed files under DIR/, 'documented in help check');
});

t.test('writeSeed per VM, as the prologue calls it: one seed beside each overlay, VM indexes from the node\'s first, hostnames v<node>-<n>', async (t) => {
  const cfg = config('[seed]\nmedia = iso\n');
  const base = mkdtempSync(join(work, 'job-'));
  const vms = [0, 1, 2].map((index) => { const d = join(base, `vm-${index}`); mkdirSync(d); return { index, path: join(d, 'disk.qcow2') }; });
  const { vm: _vm, dir: _dir, overlay: _o, ...one } = input(cfg);
  const t0 = performance.now();
  const shared = seedShared();
  const res = await Promise.all(vms.map((v) => writeSeed({
    ...one, shared, overlay: v.path, dir: v.path.slice(0, v.path.lastIndexOf('/')), vm: { index: v.index, count: vms.length, jobIndex: 6 + v.index },
  })));
  t.comment(`writeSeed, 3 VMs, iso: ${Math.round(performance.now() - t0)} ms`);
  t.same(res.map((r) => r.path), vms.map((v) => v.path.replace('disk.qcow2', 'seed.iso')));
  t.same(res.map((r) => r.hostname), ['vnode01-0', 'vnode01-1', 'vnode01-2']);
  t.same(res.map((r) => /-vm([0-9]+)-/.exec(r.instanceId)![1]), ['6', '7', '8'], 'job-wide VM indexes');
  t.equal(new Set(res.map((r) => r.network!.mac)).size, 3, 'a MAC of its own per VM');
  for (const r of res) t.match(execFileSync('isoinfo', ['-d', '-i', r.path], { encoding: 'utf8' }), /Volume id: cidata/);
});

t.test('a failing media tool leaves no seed and no temporary file behind', async (t) => {
  const cfg = config('[seed]\nmedia = iso\n[tools]\nmkisofs = /bin/false\n');
  const inp = input(cfg);
  await t.rejects(writeSeed(inp), /\/bin\/false failed/);
  t.equal(execFileSync('sh', ['-c', 'ls -A "$1"', 'sh', inp.dir], { encoding: 'utf8' }).trim(), '', 'the VM directory is as it was');
});

t.teardown(() => {
  t.comment(`cloud-init schema -c: ${schemaTimes.length} runs, median ${Math.round([...schemaTimes].sort((a, b) => a - b)[Math.floor(schemaTimes.length / 2)]!)} ms`);
  execFileSync('rm', ['-rf', work]);
});
