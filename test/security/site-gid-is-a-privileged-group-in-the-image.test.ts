// The seed makes the job's group in the VM with the node's gid, and makes it
// the VM user's primary group. A site gid that the image already uses names
// one of the image's own groups (Debian: adm 4, disk 6, sudo 27, shadow 42;
// RHEL: wheel 10, mail 12; docker, lxd, kvm wherever they were made), and the
// user would be its member in the VM: disk or docker is root there, and root
// in a VM is root against the NFS exports. The numbering differs between
// distributions, so a site group harmless on the node can be wheel in a RHEL
// image. The prologue refuses such a job (rule guest-group, from the image's
// /etc/group), and the guest's groupadd no longer takes -o, so cloud-init
// cannot make that user even where the rule is switched off.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { evaluateRules, type Expectation } from '../../src/image/rules.js';
import { parseGroupFile, type GuestFacts } from '../../src/image/guestfs.js';
import { parseConfig } from '../../src/config/load.js';
import { buildUserData } from '../../src/seed/user-data.js';
import { toYaml } from '../../src/seed/render.js';
import { agentConfig } from '../../src/seed/agent.js';
import { compliantFacts } from '../harness/guest-facts.js';
import { BIN, Mom, NOBODY, type User } from '../harness/mom.js';

const config = parseConfig('', 'x').config;
const rule = (f: GuestFacts, want: Partial<Expectation>, c = config) => evaluateRules(f, { distro: null, arch: 'x86_64', ...want }, c).find((x) => x.id === 'guest-group')!;

t.test('guest-group: a gid the image uses under another name, or a name it uses with another gid, refuses the job', async (t) => {
  const f = compliantFacts(); // Debian's adm 4, disk 6, sudo 27, users 100, nogroup 65534
  const sudo = rule(f, { group: { name: 'siteops', gid: 27 } });
  t.notOk(sudo.ok, 'gid 27 is sudo in the image');
  t.equal(sudo.level, 'error', 'an error by default: the job is refused');
  t.match(sudo.message, /has its own group "sudo" with gid 27, the gid of the job's group "siteops": the VM user would be a member of "sudo"/);
  t.match(sudo.fix, /\(you\) submit the job under another of your groups.*\(admin\)/);
  const named = rule(f, { group: { name: 'disk', gid: 5000 } });
  t.notOk(named.ok, "the image's own group disk with another gid");
  t.match(named.message, /has its own group "disk" with gid 6, not the job's gid 5000/);
  t.ok(rule(f, { group: { name: 'users', gid: 100 } }).ok, "the image's own group of the same name and gid is the site's");
  t.match(rule(f, { group: { name: 'users', gid: 100 } }).message, /is the image's own/);
  t.ok(rule(f, { group: { name: 'physics', gid: 5000 } }).ok, 'a gid and name the image does not use');
  t.ok(rule(f, {}).ok, 'no job (check --image): nothing to judge yet');
  // A duplicate gid in the image: the right name is not enough when another name shares the gid.
  const dup = compliantFacts({ groupFile: { size: 40, entries: [{ name: 'users', gid: 100 }, { name: 'wheel', gid: 100 }], bad: [] } });
  t.notOk(rule(dup, { group: { name: 'users', gid: 100 } }).ok);
  t.same(evaluateRules(f, { distro: null, arch: 'x86_64', group: { name: 'siteops', gid: 27 } }, config).filter((x) => !x.ok).map((x) => x.id), ['guest-group'], 'the other rules do not care');
  t.equal(rule(f, { group: { name: 'siteops', gid: 27 } }, parseConfig('[requirements]\nguest-group = warn\n', 'x').config).level, 'warn');
});

t.test('guest-group: an /etc/group that cannot be read whole fails, never passes over a gid it did not see', async (t) => {
  t.match(rule(compliantFacts({ groupFile: undefined }), {}), { ok: false, message: /has no \/etc\/group/ });
  t.match(rule(compliantFacts({ groupFile: { size: 2 << 20, entries: [], bad: [] } }), {}), { ok: false, message: /more than the 1048576 read/ });
  const text = 'root:x:0:\n# a comment\n\nsudo:x: 27:\nwheel:x:10:alice\nno-gid\n';
  const g = parseGroupFile(text, text.length);
  t.same(g.entries, [{ name: 'root', gid: 0 }, { name: 'wheel', gid: 10 }]);
  t.same(g.bad, [4, 6], "glibc would read ' 27' as 27: such a line is reported, not guessed at");
  t.match(rule(compliantFacts({ groupFile: g }), { group: { name: 'x', gid: 5000 } }), { ok: false, message: /lines 4, 6 are not NAME:PASSWORD:GID:MEMBERS/ });
  t.ok(rule(compliantFacts({ osv: true, groupFile: undefined }), {}).ok, 'OSv: no accounts made');
});

/**
 * The job's user-data as the seed builds it, for a job group (name, gid),
 * YAML as the seed writes it; `withO` puts back the -o the seed used to pass.
 */
async function userData(group: string, gid: number, withO = false): Promise<string> {
  const account = { user: 'vtguest', uid: 64990, group, gid, gecos: '', home: '/home/vtguest' };
  const agent = agentConfig({ account, vars: [], guest: { script: [], nodefile: [], np: [] }, vms: ['vnode'], vcpus: 1 });
  const data = buildUserData({ config, family: 'debian', hostname: 'vnode', account, sshKeys: [], profile: '', agent });
  const boot = (data.bootcmd as string[][]).find((c) => c.includes('groupadd'))!;
  if (withO) boot.splice(boot.indexOf('-g'), 0, '-o');
  return `#cloud-config\n${await toYaml(data)}`;
}

// cloud-init's own bootcmd and users_groups modules (cloudinit.config.cc_*),
// as its init stage runs them: in order, a failed module logged and the next
// one run. The cloud object gives only what these two ask of a datasource.
const CLOUD_INIT = `
import json, logging, sys, yaml
from cloudinit import distros, helpers
from cloudinit.config import cc_bootcmd, cc_users_groups
cfg = yaml.safe_load(open(sys.argv[1]).read())
distro = distros.fetch('debian')('debian', {}, helpers.Paths({'cloud_dir': '/var/lib/cloud'}))
class Cloud:
    def __init__(self): self.distro = distro
    def get_instance_id(self): return 'iid-vtorque-test'
    def get_public_ssh_keys(self): return []
out = {}
for name, mod in (('bootcmd', cc_bootcmd), ('users_groups', cc_users_groups)):
    try:
        mod.handle(name, cfg, Cloud(), logging.getLogger('vt'), [])
        out[name] = 'ok'
    except Exception as e:
        out[name] = 'failed: ' + str(e)[:300]
rows = lambda p: [l.split(':') for l in open(p).read().splitlines() if l and not l.startswith('#')]
user = next((u for u in rows('/etc/passwd') if u[0] == sys.argv[2]), None)
out['user'] = user and {'gid': int(user[3]), 'groups': [g[0] for g in rows('/etc/group') if g[2] == user[3]]}
print(json.dumps(out))
`;

interface GuestRun {
  bootcmd: string;
  users_groups: string;
  /** The VM user, and every group of the guest with its primary gid; null: not made. */
  user: { gid: number; groups: string[] } | null;
}

/**
 * Runs cloud-init's modules as root in a private mount namespace: /etc is a
 * copy of this host's (a Debian system: sudo 27, disk 6), and /home, /run,
 * /var/lib, /var/log and /var/mail are empty tmpfs, so groupadd, useradd and
 * cloud-init-per change nothing of the host's.
 */
function inGuest(userDataText: string): GuestRun {
  const work = mkdtempSync(join(tmpdir(), 'vtorque-guest-group-'));
  chmodSync(work, 0o700);
  try {
    execFileSync('cp', ['-a', '/etc', join(work, 'etc')]);
    writeFileSync(join(work, 'user-data'), userDataText);
    const setup = [
      'set -e',
      `mount --bind ${work}/etc /etc`,
      'for d in /home /run /var/lib /var/log /var/mail; do mount -t tmpfs tmpfs "$d"; done',
      'exec /usr/bin/python3 -c "$1" "$2" vtguest',
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', setup, 'sh', CLOUD_INIT, join(work, 'user-data')], {
      encoding: 'utf8', timeout: 120_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
    });
    if (r.status !== 0) throw new Error(`cloud-init's modules did not run: ${r.status} ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as GuestRun;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

t.test("the premise, through cloud-init's own modules: groupadd -o with a site gid of 27 makes the VM user a member of sudo", async (t) => {
  const r = inGuest(await userData('siteops', 27, true));
  t.equal(r.bootcmd, 'ok');
  t.equal(r.users_groups, 'ok');
  t.same(r.user, { gid: 27, groups: ['sudo', 'siteops'] }, "the user's primary gid is sudo's");
});

t.test("our seed through cloud-init's own modules: a gid the guest already uses makes no VM user at all", async (t) => {
  const r = inGuest(await userData('siteops', 27));
  t.match(r.bootcmd, /^failed/, 'groupadd refuses the gid');
  t.match(r.users_groups, /^failed/, "useradd finds no group siteops");
  t.equal(r.user, null, 'no VM user: the job cannot run in a group it should not have');
});

t.test("our seed through cloud-init's own modules: a free gid makes the user's group with the node's gid", async (t) => {
  const r = inGuest(await userData('vtfree', 64991));
  t.equal(r.bootcmd, 'ok');
  t.equal(r.users_groups, 'ok');
  t.same(r.user, { gid: 64991, groups: ['vtfree'] });
});

t.test("why the rule also refuses a name the image uses: the guest alone puts the user in the image's group of that name", async (t) => {
  const r = inGuest(await userData('disk', 5000));
  t.match(r.bootcmd, /^failed/, 'groupadd refuses the existing name');
  t.same(r.user, { gid: 6, groups: ['disk'] }, "useradd --gid disk takes the image's disk: only the prologue's rule stops this");
});

t.test('end to end: libguestfs reads /etc/group and the prologue refuses a job whose group is another group of the image', async (t) => {
  const mom = new Mom({ pool: { 'debian12.qcow2': 'debian-ok.qcow2', 'rocky9.qcow2': 'rocky-ok.qcow2' } });
  // One appliance for both images; the prologues below reuse the verdicts.
  const c = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'debian12.qcow2', 'rocky9.qcow2', '--json'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  t.equal(c.status, 0, c.stderr);
  const results = JSON.parse(c.stdout || '[]') as { image: string; rules?: { id: string; ok: boolean; message: string }[] }[];
  t.match(results.find((x) => x.image === 'rocky9.qcow2')?.rules?.find((x) => x.id === 'guest-group'), { ok: true, message: /^8 groups in \/etc\/group/ }, 'check --image has no job group to judge');

  // On this Debian node uucp is gid 10 and mail is gid 8; in a RHEL image 10 is wheel and mail is 12.
  const as = (group: string, gid: number): User => ({ ...NOBODY, group, gid });
  const wheel = await mom.prologue({ id: '71.srv', name: 'gg', user: as('uucp', 10), script: '#!/bin/sh\n#VM img=rocky9.qcow2\necho\n' });
  t.equal(wheel.code, 1, "the job's fault: exit 1, the node stays up");
  t.match(wheel.er, /vtorque: .*image rocky9\.qcow2: fails guest-group: has its own group "wheel" with gid 10, the gid of the job's group "uucp"/);
  t.match(wheel.er, /Fix: \(you\) submit the job under another of your groups/);
  t.match(readFileSync(join(mom.workdir, 'gg.e71'), 'utf8'), /fails guest-group/, "the user's error file says it");
  t.match(wheel.er, /pool images known to meet the requirements for this request: debian12\.qcow2\. Fix/, 'the hint names the image that passes for this group, not the one just refused');
  const mail = await mom.prologue({ id: '72.srv', user: as('mail', 8), script: '#!/bin/sh\n#VM img=rocky9.qcow2\necho\n' });
  t.equal(mail.code, 1);
  t.match(mail.er, /fails guest-group: has its own group "mail" with gid 12, not the job's gid 8/);

  const debian = await mom.prologue({ id: '73.srv', user: as('uucp', 10), script: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n' });
  t.equal(debian.code, 0, `gid 10 is free in the Debian image: ${debian.er}`);
  const users = await mom.prologue({ id: '74.srv', user: as('users', 100), script: '#!/bin/sh\n#VM img=rocky9.qcow2\necho\n' });
  t.equal(users.code, 0, `users 100 is the image's own users: ${users.er}`);
  t.notOk(mom.logLines().filter((l) => l.msg === 'inspecting images with libguestfs').length > 1, 'one libguestfs launch for all of it');
});
