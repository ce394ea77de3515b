// install.sh into a staging root and into a harness node: files and modes,
// chaining of a site's own prologue, idempotence, uninstall.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Mom, NOBODY, REPO } from './harness/mom.js';

const install = (...args: string[]) => spawnSync('bash', [join(REPO, 'install.sh'), ...args], { encoding: 'utf8' });

t.test('install into a staging root: modes, chaining, idempotence, uninstall', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const mom = join(root, 'var/spool/torque/mom_priv');
  spawnSync('mkdir', ['-p', mom]);
  writeFileSync(join(mom, 'prologue'), '#!/bin/sh\necho site\n', { mode: 0o500 });
  const first = install('--root', root);
  t.equal(first.status, 0, first.stderr);
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) {
    const st = statSync(join(mom, h));
    t.equal(st.mode & 0o777, 0o500, `${h} is 0500`);
    t.equal(st.uid, 0, `${h} is root's`);
  }
  t.ok(existsSync(join(mom, 'prologue.orig')), 'the site prologue is kept');
  const wrapper = readFileSync(join(mom, 'prologue'), 'utf8');
  t.match(wrapper, /prologue\.orig" "\$@" \|\| exit \$\?\nexec \/usr\/bin\/env -i LANG=C\.UTF-8 PATH=\/bin:\/usr\/bin \\\n/, 'the site prologue runs first, then node with a clean environment');
  t.match(wrapper, / \/\S+\/node --no-global-search-paths --no-addons \/opt\/vtorque-prologue\/bin\/vtorque-prologue --config \/etc\/vtorque\/prologue\.ini prologue "\$@"\n$/);
  t.ok(existsSync(join(root, 'etc/vtorque/prologue.ini')));
  t.ok(existsSync(join(root, 'opt/vtorque-prologue/dist/vtorque-prologue.cjs')));
  const ramdisk = /^ramdisk_dir = (\S+)/m.exec(readFileSync(join(REPO, 'conf/prologue.ini'), 'utf8'))![1]!.slice(1);
  for (const [dir, mode] of [['var/lib/vtorque/images', 0o755], ['var/cache/vtorque', 0o755], ['var/lib/vtorque/jobs', 0o755], [ramdisk, 0o755], ['var/log/vtorque', 0o750]] as const) {
    const st = statSync(join(root, dir));
    t.ok(st.isDirectory() && st.uid === 0 && (st.mode & 0o777) === mode, `${dir} is root's, ${mode.toString(8)}`);
  }
  t.match(readFileSync(join(root, 'etc/logrotate.d/vtorque-prologue'), 'utf8'), /^\/var\/log\/vtorque\/prologue\.log \{\n {4}weekly\n/m);
  t.match(first.stdout, /doctor skipped: --root stages files/);
  t.equal(readlinkSync(join(root, 'usr/local/bin/vtorque-prologue')), '/opt/vtorque-prologue/bin/vtorque-prologue', 'users find the command in /usr/local/bin');
  const second = install('--root', root);
  t.equal(second.status, 0);
  t.notMatch(second.stdout, /wrote|created|fixed|would/, 'a second run changes nothing');
  writeFileSync(join(root, 'etc/vtorque/prologue.ini'), '[logging]\nlevel = debug\n');
  const third = install('--root', root);
  t.match(third.stdout, /kept your .*prologue\.ini; the shipped one is .*prologue\.ini\.new/);
  t.equal(readFileSync(join(root, 'etc/vtorque/prologue.ini'), 'utf8'), '[logging]\nlevel = debug\n');
  const dry = install('--root', root, '--uninstall', '--dry-run');
  t.match(dry.stdout, /would: rm -f/);
  t.ok(existsSync(join(mom, 'prologue.orig')));
  const un = install('--root', root, '--uninstall');
  t.equal(un.status, 0);
  t.equal(readFileSync(join(mom, 'prologue'), 'utf8'), '#!/bin/sh\necho site\n', 'the original is back');
  t.notOk(existsSync(join(mom, 'epilogue')));
  t.notOk(existsSync(join(root, 'opt/vtorque-prologue')));
  t.notOk(existsSync(join(root, 'etc/logrotate.d/vtorque-prologue')), 'the logrotate snippet goes');
  t.notOk(existsSync(join(root, 'usr/local/bin/vtorque-prologue')), 'and the link users ran');
  t.ok(existsSync(join(root, 'var/cache/vtorque')) && existsSync(join(root, 'var/log/vtorque')), 'cache and logs stay');
  rmSync(root, { recursive: true, force: true });
});

t.test('a path that would change what the wrappers run is refused', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const r = install('--root', root, '--prefix', '/opt/vt $(touch /tmp/x)');
  t.equal(r.status, 1);
  t.match(r.stderr, /^install\.sh: --prefix "\/opt\/vt \$\(touch \/tmp\/x\)" must be an absolute path of letters, digits and \._\/\+@- only; .*Fix: /m);
  t.same(readdirSync(root), [], 'nothing was written');
  rmSync(root, { recursive: true, force: true });
});

t.test('--dry-run on a fresh root prints every action and changes nothing', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const r = install('--root', root, '--dry-run');
  t.equal(r.status, 0, r.stderr);
  for (const action of [
    /^would: write .*\/opt\/vtorque-prologue\/dist\/vtorque-heavy\.cjs \(mode 0644\)$/m,
    /^would: write .*\/etc\/vtorque\/prologue\.ini \(mode 0644\)$/m,
    /^would: install -d -o root -g root -m 0755 .*\/var\/cache\/vtorque$/m,
    /^would: install -d -o root -g root -m 0755 .*\/var\/lib\/vtorque\/images$/m,
    /^would: install -d -o root -g root -m 0750 .*\/var\/log\/vtorque$/m,
    /^would: write .*\/etc\/logrotate\.d\/vtorque-prologue \(mode 0644\)$/m,
    /^would: write .*\/mom_priv\/epilogue\.parallel \(mode 0500\)$/m,
  ]) t.match(r.stdout, action);
  t.same(readdirSync(root), [], 'nothing was written');
  rmSync(root, { recursive: true, force: true });
});

t.test('--deps --dry-run names the packages for this system', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const r = install('--root', root, '--deps', '--dry-run');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^would: env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-utils qemu-system-x86 libguestfs-tools genisoimage xorriso mtools dosfstools /m);
  rmSync(root, { recursive: true, force: true });
});

t.test("the config's [paths] decide the directories; an unsafe one is made root's", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  mkdirSync(join(root, 'etc/vtorque'), { recursive: true });
  writeFileSync(join(root, 'etc/vtorque/prologue.ini'), '[paths]\ncache_dir = /srv/vtcache ; on the big disk\njob_dir = /srv/vtjobs\nlog_file =\n');
  mkdirSync(join(root, 'srv/vtjobs'), { recursive: true, mode: 0o777 });
  chmodSync(join(root, 'srv/vtjobs'), 0o777);
  const r = install('--root', root, '--no-doctor');
  t.equal(r.status, 0, r.stderr);
  t.ok(statSync(join(root, 'srv/vtcache')).isDirectory(), 'cache_dir from the ini, inline comment dropped');
  t.match(r.stdout, /fixed .*\/srv\/vtjobs: now root's, mode 0755/);
  t.equal(statSync(join(root, 'srv/vtjobs')).mode & 0o777, 0o755);
  t.notOk(existsSync(join(root, 'var/cache/vtorque')), 'not the default');
  t.notOk(existsSync(join(root, 'etc/logrotate.d/vtorque-prologue')), 'log_file empty: no log, no rotation');
  rmSync(root, { recursive: true, force: true });
});

/** A harness node stripped of its wrappers, with its ini where install.sh will keep it. */
function bareNode(): Mom {
  const node = new Mom({ privateCache: true });
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) rmSync(join(node.momPriv, h), { force: true });
  mkdirSync(join(node.root, 'etc'));
  copyFileSync(node.configFile, join(node.root, 'etc', 'prologue.ini'));
  return node;
}

const installInto = (node: Mom, ...more: string[]) =>
  install('--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--config', join(node.root, 'etc'), '--logrotate', join(node.root, 'logrotate.d'), '--bin-dir', join(node.root, 'usr-bin'), ...more);

t.test('the installed wrapper runs through the pbs_mom harness, after the site prologue', async (t) => {
  const node = bareNode();
  writeFileSync(join(node.momPriv, 'prologue'), '#!/bin/sh\necho "site prologue for $1"\n', { mode: 0o500 });
  const r = installInto(node, '--no-doctor');
  t.equal(r.status, 0, r.stderr);
  // A request ours refuses: its message shows that ours ran after the site's (a plain job would print nothing of ours).
  const out = await node.prologue({ id: '50.srv', script: '#!/bin/sh\n#VM vcpus=0\necho\n' });
  t.equal(out.code, 1, out.er);
  t.equal(out.ou, 'site prologue for 50.srv\n');
  t.match(out.er, /^vtorque: .*vcpus: 0 is out of range/m);
  writeFileSync(join(node.momPriv, 'prologue.orig'), '#!/bin/sh\nexit 3\n', { mode: 0o500 });
  const failed = await node.prologue({ id: '51.srv', script: '#!/bin/sh\necho\n' });
  t.equal(failed.code, 3, "the site prologue's failure wins");
});

t.test('install.sh ends with doctor, and a freshly installed harness node is healthy', async (t) => {
  const node = bareNode();
  const r = installInto(node);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^checking the node: vtorque-prologue doctor$/m);
  t.equal(r.stdout.match(/^ok {4}mom_priv {2}.* runs vtorque-prologue .*clean environment/gm)?.length, 4, 'doctor sees the four wrappers install.sh wrote');
  t.match(r.stdout, /^ok {4}mom_priv {2}.*node and the program in .*\/opt are root's/m, 'and trusts the node and program they run');
  t.match(r.stdout, /^ok {4}guestfs {3}libguestfs launched/m);
  t.match(r.stdout, /^healthy/m);
  t.ok(statSync(node.jobDir).isDirectory(), 'the job directory of the ini was made');
  chmodSync(join(node.momPriv, 'epilogue'), 0o755);
  const broken = installInto(node, '--dry-run');
  t.match(broken.stdout, /^would: write .*mom_priv\/epilogue \(mode 0500\)$/m, 'a wrong mode is put right on the next run');
});

t.test('--submit-filter writes a wrapper qsub can run as the user; uninstall removes it', async (t) => {
  const node = bareNode();
  const filter = join(node.root, 'sbin', 'torque_submitfilter');
  const r = installInto(node, '--no-doctor', '--submit-filter', filter);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /add 'SUBMITFILTER .*torque_submitfilter' to .*torque\.cfg/);
  t.equal(statSync(filter).mode & 0o777, 0o755);
  const good = spawnSync(filter, [], { input: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n', encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: '/' });
  t.equal(good.status, 0, good.stderr);
  t.match(good.stdout, /^#PBS -v VTORQUE_REQUEST=v1/m);
  const bad = spawnSync(filter, [], { input: '#!/bin/sh\n#VM ram=12X\necho\n', encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: '/' });
  t.not(bad.status, 0, 'a bad request is refused at qsub time');
  t.match(bad.stderr, /ram: "12X" is not a size/);
  t.equal(bad.stdout, '');
  t.equal(installInto(node, '--no-doctor', '--submit-filter', filter).stdout.includes(`wrote ${filter}`), false, 'a second run changes nothing');
  const u = installInto(node, '--uninstall', '--submit-filter', filter);
  t.equal(u.status, 0, u.stderr);
  t.notOk(existsSync(filter));
  writeFileSync(filter, '#!/bin/sh\ncat\n', { mode: 0o755 });
  const theirs = installInto(node, '--no-doctor', '--submit-filter', filter);
  t.equal(theirs.status, 2, 'a site filter is never overwritten');
  t.match(theirs.stderr, /exists and is not ours/);
});

t.test("$job_starter: written into mom_priv/config, a site's line kept and chained, restored by --uninstall", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const mom = join(root, 'var/spool/torque/mom_priv');
  mkdirSync(mom, { recursive: true });
  const site = '$pbsserver head\n$job_starter /usr/local/bin/site-starter\n$usecp *:/home /home\n';
  writeFileSync(join(mom, 'config'), site);
  const first = install('--root', root);
  t.equal(first.status, 0, first.stderr);
  const config = readFileSync(join(mom, 'config'), 'utf8');
  t.equal(config.match(/^\s*\$job_starter\s.*$/gm)?.join('\n'), '$job_starter /opt/vtorque-prologue/bin/vtorque-starter', 'one live $job_starter line: ours');
  t.match(config, /^# vtorque-prologue chains: \$job_starter \/usr\/local\/bin\/site-starter$/m, "the site's line is kept as a comment");
  t.match(config, /^\$pbsserver head\n/, 'the rest is untouched');
  const starter = readFileSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter'), 'utf8');
  t.match(starter, /^JOB_DIR=\/var\/lib\/vtorque\/jobs$/m);
  t.match(starter, /^NODE=\/\S+$/m);
  t.match(starter, /^BUNDLE=\/opt\/vtorque-prologue\/dist\/vtorque-starter\.cjs$/m);
  t.match(starter, /^SITE_STARTER=\/usr\/local\/bin\/site-starter$/m, "non-VM jobs go on to the site's starter");
  t.equal(statSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter')).mode & 0o777, 0o755);
  t.ok(existsSync(join(root, 'opt/vtorque-prologue/dist/vtorque-starter.cjs')));
  const second = install('--root', root);
  t.notMatch(second.stdout, /wrote|would/, 'a second run changes nothing');
  t.equal(readFileSync(join(mom, 'config'), 'utf8'), config);
  const un = install('--root', root, '--uninstall');
  t.equal(un.status, 0, un.stderr);
  t.equal(readFileSync(join(mom, 'config'), 'utf8'), site, "the site's config is back as it was");
  rmSync(root, { recursive: true, force: true });
});

t.test('a fresh mom_priv/config gets our $job_starter; uninstall leaves no $job_starter', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  mkdirSync(join(root, 'var/spool/torque/mom_priv'), { recursive: true });
  t.equal(install('--root', root).status, 0);
  const cfg = join(root, 'var/spool/torque/mom_priv/config');
  t.match(readFileSync(cfg, 'utf8'), /^\$job_starter \/opt\/vtorque-prologue\/bin\/vtorque-starter$/m);
  t.match(readFileSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter'), 'utf8'), /^SITE_STARTER=$/m);
  install('--root', root, '--uninstall');
  t.notMatch(readFileSync(cfg, 'utf8'), /job_starter/);
  rmSync(root, { recursive: true, force: true });
});

// pbs_mom reads mom_priv/config into char line[120] with fgets(line, sizeof(line) - 1, ...)
// (Torque 6.1 src/resmom/parse_config.c read_config): 118 bytes a read, the newline
// included. A longer line's rest is read as a line of its own.
const MOM_LINE_MAX = 120 - 1 - 1 - 1;
const momConfigIn = (root: string) => join(root, 'var/spool/torque/mom_priv/config');
const tooLong = (text: string) => text.split('\n').filter((l) => Buffer.byteLength(l) > MOM_LINE_MAX);

t.test('every line install.sh writes into mom_priv/config fits in one read of pbs_mom (117 bytes and its newline); a longer one is refused', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const cfg = momConfigIn(root);
  mkdirSync(join(cfg, '..'), { recursive: true });
  writeFileSync(cfg, '$pbsserver head\n$job_starter /usr/local/bin/site-starter\n');
  t.equal(install('--root', root).status, 0);
  const config = readFileSync(cfg, 'utf8');
  t.same(tooLong(config), [], 'with the default --prefix');
  t.match(config, /^# vtorque-prologue: job starter, written by install\.sh; runs VM jobs in their VM\n\$job_starter \/opt\/vtorque-prologue\/bin\/vtorque-starter\n$/m);
  // "$job_starter " + PREFIX + "/bin/vtorque-starter": 117 bytes with a PREFIX of 84, one too many with 85.
  const prefix = (n: number) => `/opt/${'p'.repeat(n - 5)}`;
  const fits = install('--root', root, '--prefix', prefix(84), '--no-bin-links');
  t.equal(fits.status, 0, fits.stderr);
  const at84 = readFileSync(cfg, 'utf8');
  t.equal(Math.max(...at84.split('\n').map((l) => Buffer.byteLength(l))), MOM_LINE_MAX, 'a --prefix of 84 bytes makes a line of exactly 117');
  t.match(at84, /^# vtorque-prologue chains: \$job_starter \/usr\/local\/bin\/site-starter$/m, 'the site starter stays chained');
  t.equal(at84.match(/^\$job_starter /gm)?.length, 1, 'our line under the earlier --prefix is replaced, not chained');
  const long = install('--root', root, '--prefix', prefix(85), '--no-bin-links');
  t.equal(long.status, 2);
  t.match(long.stderr, /^install\.sh: \S+mom_priv\/config would get a line of 118 bytes, our \$job_starter \(line \d+: "\$job_starter \/opt\/p+\/bin\/vtorque-starter"\); pbs_mom reads at most 117 bytes of a line and its newline \(char line\[120\], fgets\(line, sizeof\(line\) - 1\) in Torque's read_config\) .*nothing was written\. Fix: install with a --prefix of at most 84 bytes/m);
  t.equal(readFileSync(cfg, 'utf8'), at84, 'the config is left as it was');
  t.notOk(existsSync(join(root, prefix(85))), 'and nothing else was written');
  // A site line that fitted live can be too long as our comment: refused as well.
  writeFileSync(cfg, `$job_starter /site/${'s'.repeat(72)}\n`);
  const site = install('--root', root);
  t.equal(site.status, 2);
  t.match(site.stderr, /would get a line of 118 bytes, the site's \$job_starter line kept as a comment \(line 1: "# vtorque-prologue chains: \$job_starter \/site\/s+"\);.* Fix: name the site's starter by a path at least 1 bytes shorter/);
  t.equal(readFileSync(cfg, 'utf8'), `$job_starter /site/${'s'.repeat(72)}\n`);
  rmSync(root, { recursive: true, force: true });
});

t.test("a config from an earlier install.sh (its 128-byte comment, its long mark) is rewritten in short lines; --uninstall still restores the site's", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const cfg = momConfigIn(root);
  mkdirSync(join(cfg, '..'), { recursive: true });
  const earlier = '$pbsserver head\n# vtorque-prologue: the site job starter, chained by ours: $job_starter /usr/local/bin/site-starter\n'
    + '# vtorque-prologue: job starter, written by install.sh; runs VM jobs in their VM (see /opt/vtorque-prologue/bin/vtorque-starter)\n'
    + '$job_starter /opt/vtorque-prologue/bin/vtorque-starter\n';
  writeFileSync(cfg, earlier);
  t.equal(install('--root', root).status, 0);
  t.equal(readFileSync(cfg, 'utf8'), '$pbsserver head\n# vtorque-prologue chains: $job_starter /usr/local/bin/site-starter\n'
    + '# vtorque-prologue: job starter, written by install.sh; runs VM jobs in their VM\n$job_starter /opt/vtorque-prologue/bin/vtorque-starter\n');
  t.match(readFileSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter'), 'utf8'), /^SITE_STARTER=\/usr\/local\/bin\/site-starter$/m);
  t.equal(install('--root', root, '--uninstall').status, 0);
  t.equal(readFileSync(cfg, 'utf8'), '$pbsserver head\n$job_starter /usr/local/bin/site-starter\n');
  writeFileSync(cfg, earlier);
  t.equal(install('--root', root, '--uninstall').status, 0, 'an earlier install is uninstalled too');
  t.equal(readFileSync(cfg, 'utf8'), '$pbsserver head\n$job_starter /usr/local/bin/site-starter\n');
  rmSync(root, { recursive: true, force: true });
});

t.test('a site $job_starter that leads back to our starter is refused: chained, the two would exec each other in a loop', async (t) => {
  const ours = '/opt/vtorque-prologue/bin/vtorque-starter';
  const cases: { name: string; config: string; line: number; files: Record<string, string>; links?: Record<string, string>; why: RegExp }[] = [
    { name: 'a wrapper script that execs ours', config: '$pbsserver head\n$job_starter /usr/local/sbin/wrap\n', line: 2,
      files: { 'usr/local/sbin/wrap': `#!/bin/sh\nexport TMPDIR=/scratch\nexec ${ours} "$@"\n` },
      why: /\S+\/usr\/local\/sbin\/wrap mentions vtorque-starter \(line 3: exec \/opt\/vtorque-prologue\/bin\/vtorque-starter "\$@"\)/ },
    { name: 'a wrapper an earlier install.sh adopted, in our comment', line: 1,
      config: `# vtorque-prologue chains: $job_starter /usr/local/sbin/wrap\n# vtorque-prologue: job starter, written by install.sh; runs VM jobs in their VM\n$job_starter ${ours}\n`,
      files: { 'usr/local/sbin/wrap': `#!/bin/bash\nexec -a "$2" ${ours} "$@"\n` }, why: /wrap mentions vtorque-starter \(line 2: / },
    { name: 'a copy of our starter', config: '$job_starter /usr/local/bin/starter-copy\n', line: 1,
      files: { 'usr/local/bin/starter-copy': readFileSync(join(REPO, 'bin/vtorque-starter'), 'utf8') }, why: /starter-copy mentions vtorque-starter/ },
    { name: 'a link to ours', config: '$job_starter /usr/local/bin/vs\n', line: 1, files: {},
      links: { 'usr/local/bin/vs': ours }, why: /: it is \/opt\/vtorque-prologue\/bin\/vtorque-starter\. / },
  ];
  for (const c of cases) {
    const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
    const cfg = momConfigIn(root);
    mkdirSync(join(cfg, '..'), { recursive: true });
    writeFileSync(cfg, c.config);
    for (const [f, text] of Object.entries(c.files)) {
      mkdirSync(join(root, f, '..'), { recursive: true });
      writeFileSync(join(root, f), text, { mode: 0o755 });
    }
    for (const [f, to] of Object.entries(c.links ?? {})) {
      mkdirSync(join(root, f, '..'), { recursive: true });
      symlinkSync(to, join(root, f));
    }
    const site = /\$job_starter (\S+)/.exec(c.config)![1]!;
    const r = install('--root', root);
    t.equal(r.status, 2, c.name);
    t.match(r.stderr, new RegExp(`^install\\.sh: the site's \\$job_starter ${site} \\(line ${c.line} of \\S+mom_priv/config\\) leads back to vtorque's own starter: .*Chained, it would exec ours again for every non-VM job, in a loop .*nothing was written\\. Fix: make line ${c.line} name the site's real starter .*or delete that line`, 'm'), c.name);
    t.match(r.stderr, c.why, c.name);
    t.equal(readFileSync(cfg, 'utf8'), c.config, `${c.name}: the config is unchanged`);
    t.notOk(existsSync(join(root, 'opt')), `${c.name}: nothing was installed`);
    rmSync(root, { recursive: true, force: true });
  }
  // A genuine site starter, there in the root, is chained as before.
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  const cfg = momConfigIn(root);
  mkdirSync(join(cfg, '..'), { recursive: true });
  mkdirSync(join(root, 'usr/local/sbin'), { recursive: true });
  writeFileSync(join(root, 'usr/local/sbin/site-starter'), '#!/bin/bash\nulimit -c 0\nexec -a "$2" "$1" "${@:3}"\n', { mode: 0o755 });
  writeFileSync(cfg, '$job_starter /usr/local/sbin/site-starter\n');
  const ok = install('--root', root);
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /the site's \/usr\/local\/sbin\/site-starter now starts non-VM jobs through it/);
  t.match(readFileSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter'), 'utf8'), /^SITE_STARTER=\/usr\/local\/sbin\/site-starter$/m);
  t.equal(install('--root', root).status, 0, 'and a second run is not taken for a loop');
  rmSync(root, { recursive: true, force: true });
});

t.test('$job_starter_run_privileged is refused: the starter would run as root with the job environment', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  mkdirSync(join(root, 'var/spool/torque/mom_priv'), { recursive: true });
  writeFileSync(join(root, 'var/spool/torque/mom_priv/config'), '$job_starter_run_privileged true\n');
  const r = install('--root', root);
  t.equal(r.status, 2);
  t.match(r.stderr, /\$job_starter_run_privileged.*as root.*Fix: remove that line/);
  rmSync(root, { recursive: true, force: true });
});

t.test("the installed starter runs a non-VM job through the site's starter, which gets what pbs_mom gave ours", async (t) => {
  const node = bareNode();
  const siteStarter = join(node.root, 'site-starter');
  writeFileSync(siteStarter, '#!/bin/bash\necho "site starter: $# $*" >&2\nexec "$@"\n', { mode: 0o755 });
  writeFileSync(join(node.momPriv, 'config'), `$job_starter ${siteStarter}\n`);
  const r = installInto(node, '--no-doctor');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /pbs_mom is not running here/);
  copyFileSync(join(node.root, 'opt/bin/vtorque-starter'), join(node.root, 'bin/vtorque-starter'));
  const job = { id: '60.srv', script: '#!/bin/bash\necho "0=$0 login=$(shopt -q login_shell && echo y)"\nexit 4\n' };
  node.submit(job);
  const out = await node.startJob(job, { stdin: 'script' });
  t.equal(out.code, 4);
  t.equal(out.er, 'site starter: 1 /bin/bash\n', 'the recorded argv: [SHELL]');
  t.equal(out.ou, '0=/bin/bash login=\n', 'as under pbs_mom with the site\'s starter alone');
  rmSync(node.root, { recursive: true, force: true });
});

t.test("$source_login_batch and $source_login_interactive reach the starter, read as pbs_mom reads them; Torque's default is a login shell", async (t) => {
  for (const [lines, batch, interactive] of [
    ['', 'true', 'true'],
    ['$source_login_batch false\n', 'false', 'true'],
    ['$source_login_batch False\n$Source_Login_Interactive off\n', 'false', 'false'],
    ['$source_login_batch 0\n$source_login_batch yes\n$source_login_interactive maybe\n', 'true', 'true'],
  ] as const) {
    const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
    mkdirSync(join(root, 'var/spool/torque/mom_priv'), { recursive: true });
    writeFileSync(join(root, 'var/spool/torque/mom_priv/config'), `$pbsserver head\n${lines}`);
    const r = install('--root', root);
    t.equal(r.status, 0, r.stderr);
    const starter = readFileSync(join(root, 'opt/vtorque-prologue/bin/vtorque-starter'), 'utf8');
    t.match(starter, new RegExp(`^LOGIN_BATCH=${batch}$`, 'm'), `${JSON.stringify(lines)}: batch`);
    t.match(starter, new RegExp(`^LOGIN_INTERACTIVE=${interactive}$`, 'm'), `${JSON.stringify(lines)}: interactive`);
    rmSync(root, { recursive: true, force: true });
  }
});

t.test('users run vtorque-prologue by name, with the node install.sh vetted, whatever node their PATH has', async (t) => {
  const node = bareNode();
  const bin = join(node.root, 'usr-bin');
  const r = installInto(node, '--no-doctor');
  t.equal(r.status, 0, r.stderr);
  const link = join(bin, 'vtorque-prologue');
  t.equal(readlinkSync(link), join(node.root, 'opt/bin/vtorque-prologue'));
  t.match(r.stdout, new RegExp(`^linked ${link} -> \\S+: users run vtorque-prologue$`, 'm'));
  t.equal(lstatSync(bin).uid, 0);
  t.equal(statSync(bin).mode & 0o777, 0o755);
  const script = join(node.workdir, 'run.pbs');
  writeFileSync(script, '#!/bin/sh\n#VM img=debian12.qcow2,vcpus=2\necho\n');
  // As the user, by name, with a PATH that has no node at all: the command runs as the user types it in the messages.
  const u = spawnSync('/bin/sh', ['-c', `vtorque-prologue --config ${node.configFile} check --job run.pbs`], {
    encoding: 'utf8', uid: NOBODY.uid, gid: NOBODY.gid, cwd: node.workdir, env: { PATH: `${bin}:/nonexistent`, HOME: node.workdir },
  });
  t.equal(u.status, 0, u.stderr);
  t.match(u.stdout, /vcpus\s+2\s+#VM/);
  t.notMatch(u.stderr, /not found/);
  t.notMatch(installInto(node, '--no-doctor').stdout, /linked|wrote|created/, 'a second run changes nothing');
  const un = installInto(node, '--uninstall');
  t.equal(un.status, 0, un.stderr);
  t.notOk(existsSync(link), 'uninstall removes the link');
});

t.test('a user command of someone else is never replaced or removed; a bin dir others can write is refused', async (t) => {
  const node = bareNode();
  const bin = join(node.root, 'usr-bin');
  mkdirSync(bin, { mode: 0o755 });
  symlinkSync('/usr/bin/true', join(bin, 'vtorque-prologue'));
  const theirs = installInto(node, '--no-doctor');
  t.equal(theirs.status, 2);
  t.match(theirs.stderr, /usr-bin\/vtorque-prologue exists and is not a link to \S+opt\/bin\/vtorque-prologue \(it points to \/usr\/bin\/true\).*Fix: /);
  t.equal(readlinkSync(join(bin, 'vtorque-prologue')), '/usr/bin/true', 'kept');
  t.equal(installInto(node, '--uninstall').status, 0);
  t.equal(readlinkSync(join(bin, 'vtorque-prologue')), '/usr/bin/true', 'uninstall removes only a link to our install');
  rmSync(join(bin, 'vtorque-prologue'));
  chmodSync(bin, 0o777);
  const open = installInto(node, '--no-doctor');
  t.equal(open.status, 2, 'others could swap the link for their own program, which root runs too');
  t.match(open.stderr, /--bin-dir \S+usr-bin: \S+usr-bin has mode 0777, writable by group and others; .*Fix: /);
  t.notOk(existsSync(join(bin, 'vtorque-prologue')));
  t.equal(installInto(node, '--no-doctor', '--no-bin-links').status, 0, '--no-bin-links installs without them');
});

/** A Torque install at prefix: root-owned bin/qstat and bin/pbsnodes stand-ins, and sbin/pbs_mom. */
function fakeTorque(prefix: string): void {
  for (const d of ['bin', 'sbin']) mkdirSync(join(prefix, d), { recursive: true, mode: 0o755 });
  for (const tool of ['qstat', 'pbsnodes']) writeFileSync(join(prefix, 'bin', tool), '#!/bin/sh\necho "Version: 6.1.2"\n', { mode: 0o755 });
  copyFileSync('/bin/sleep', join(prefix, 'sbin', 'pbs_mom'));
  chmodSync(join(prefix, 'sbin', 'pbs_mom'), 0o755);
}

const toolsOf = (ini: string) => {
  const text = readFileSync(ini, 'utf8');
  const tools = text.slice(text.indexOf('\n[tools]'));
  return { qstat: /^qstat = (.*)$/m.exec(tools)?.[1], pbsnodes: /^pbsnodes = (.*)$/m.exec(tools)?.[1], text };
};

t.test("a new config gets the running pbs_mom's Torque in [tools]; doctor names it", async (t) => {
  const node = new Mom({ privateCache: true });
  for (const h of ['prologue', 'prologue.parallel', 'epilogue', 'epilogue.parallel']) rmSync(join(node.momPriv, h), { force: true });
  const torque = join(node.root, 'torque-6.1');
  fakeTorque(torque);
  // pbs_mom writes its pid into mom_priv/mom.lock (src/resmom/mom_main.c).
  const mom = spawn(join(torque, 'sbin', 'pbs_mom'), ['300'], { stdio: 'ignore' });
  t.teardown(() => void mom.kill());
  writeFileSync(join(node.momPriv, 'mom.lock'), `${mom.pid}\n`);
  const etc = join(node.root, 'etc');
  const r = install('--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--config', etc, '--logrotate', join(node.root, 'logrotate.d'),
    '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor', '--dry-run');
  t.match(r.stdout, /^would: write \S+\/etc\/prologue\.ini \(mode 0644\)$/m);
  t.match(r.stdout, new RegExp(`^Torque: \\[tools\\] qstat = ${torque}/bin/qstat, pbsnodes = ${torque}/bin/pbsnodes \\(found through the running pbs_mom \\(pid ${mom.pid}, ${torque}/sbin/pbs_mom\\)\\)$`, 'm'));
  t.notOk(existsSync(etc), 'a dry run writes nothing');
  const real = install('--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--config', etc, '--logrotate', join(node.root, 'logrotate.d'),
    '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor');
  t.equal(real.status, 0, real.stderr);
  const ini = toolsOf(join(etc, 'prologue.ini'));
  t.same([ini.qstat, ini.pbsnodes], [join(torque, 'bin/qstat'), join(torque, 'bin/pbsnodes')]);
  t.notOk(existsSync(join(etc, 'prologue.ini.new')), 'the config install.sh made is not "yours"');
  const again = install('--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--config', etc, '--logrotate', join(node.root, 'logrotate.d'),
    '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor');
  t.notMatch(again.stdout, /prologue\.ini|kept your|Torque:|linked/, 'a second run changes neither the config nor the links');
  // doctor reads the paths install.sh wrote, and says which it ran.
  writeFileSync(node.configFile, node.defaultIni().replace(/^qstat = .*$/m, `qstat = ${ini.qstat}`).replace(/^pbsnodes = .*$/m, `pbsnodes = ${ini.pbsnodes}`));
  const d = spawnSync(process.execPath, [BIN, '--config', node.configFile, 'doctor', '--skip', 'guestfs,kvm,launch', '--json'], { encoding: 'utf8', timeout: 300_000 });
  const torqueChecks = (JSON.parse(d.stdout) as { checks: { check: string; message: string }[] }).checks.filter((c) => c.check === 'torque');
  t.ok(torqueChecks.some((c) => c.message.startsWith(`${torque}/bin/qstat -B `)), JSON.stringify(torqueChecks));
  t.ok(torqueChecks.some((c) => c.message.startsWith(`${torque}/bin/pbsnodes `)), JSON.stringify(torqueChecks));
});

t.test("an existing config: keys at the defaults take the Torque found, an admin's own are kept", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-'));
  fakeTorque(join(root, 'opt/torque'));
  const etc = join(root, 'etc/vtorque');
  mkdirSync(etc, { recursive: true });
  writeFileSync(join(etc, 'prologue.ini'), '[logging]\nlevel = debug ; mine\n[tools]\nqstat = /usr/local/bin/qstat\n');
  const r = install('--root', root, '--torque-prefix', '/opt/torque');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^Torque: set \[tools\] qstat = \/opt\/torque\/bin\/qstat \[tools\] pbsnodes = \/opt\/torque\/bin\/pbsnodes in \S+prologue\.ini, where the default was \(found through --torque-prefix \/opt\/torque\); your other settings are as they were$/m);
  t.equal(readFileSync(join(etc, 'prologue.ini'), 'utf8'), '[logging]\nlevel = debug ; mine\n[tools]\nqstat = /opt/torque/bin/qstat\npbsnodes = /opt/torque/bin/pbsnodes\n');
  t.same([toolsOf(join(etc, 'prologue.ini.new')).qstat, toolsOf(join(etc, 'prologue.ini.new')).pbsnodes], ['/opt/torque/bin/qstat', '/opt/torque/bin/pbsnodes'], 'the shipped one beside it names the same Torque');
  writeFileSync(join(etc, 'prologue.ini'), '[tools]\nqstat = /site/qstat\n[paths]\nlog_file =\n');
  const mine = install('--root', root, '--torque-prefix', '/opt/torque');
  t.equal(readFileSync(join(etc, 'prologue.ini'), 'utf8'), '[tools]\nqstat = /site/qstat\npbsnodes = /opt/torque/bin/pbsnodes\n[paths]\nlog_file =\n', "the admin's qstat is kept; the missing pbsnodes is added to [tools]");
  t.match(mine.stdout, /^Torque: set \[tools\] pbsnodes = \/opt\/torque\/bin\/pbsnodes in /m);
  const bad = install('--root', root, '--torque-prefix', '/opt/nowhere');
  t.equal(bad.status, 1);
  t.match(bad.stderr, /^install\.sh: --torque-prefix \/opt\/nowhere: \S+\/opt\/nowhere\/bin has no executable qstat and pbsnodes\. Fix: /m);
  rmSync(root, { recursive: true, force: true });
});

t.test('qstat on PATH is found when no pbs_mom runs; nothing found keeps the defaults and says how to fix it', async (t) => {
  const node = new Mom({ privateCache: true });
  const torque = join(node.root, 'tq');
  fakeTorque(torque);
  const args = ['--prefix', join(node.root, 'opt'), '--torque-home', node.torqueHome, '--logrotate', join(node.root, 'logrotate.d'), '--bin-dir', join(node.root, 'usr-bin'), '--no-doctor'];
  const onPath = spawnSync('bash', [join(REPO, 'install.sh'), ...args, '--config', join(node.root, 'a')], { encoding: 'utf8', env: { ...process.env, PATH: `${torque}/bin:/usr/bin:/bin` } });
  t.equal(onPath.status, 0, onPath.stderr);
  t.match(onPath.stdout, /\(found through qstat on PATH\)/);
  t.equal(toolsOf(join(node.root, 'a/prologue.ini')).qstat, join(torque, 'bin/qstat'));
  chmodSync(join(torque, 'bin'), 0o777);
  const open = spawnSync('bash', [join(REPO, 'install.sh'), ...args, '--config', join(node.root, 'b')], { encoding: 'utf8', env: { ...process.env, PATH: `${torque}/bin:/usr/bin:/bin` } });
  t.match(open.stderr, /warning: not using the qstat and pbsnodes found on PATH in \S+: \S+\/tq\/bin has mode 0777/, 'a qstat others can replace is not one root runs');
  // This machine's own Torque, if it has one, must not be found: a PATH of everything in /usr/bin and /bin but Torque's tools.
  const bare = join(node.root, 'path-without-torque');
  mkdirSync(bare);
  for (const dir of ['/usr/bin', '/bin']) {
    for (const n of readdirSync(dir)) if (!['qstat', 'pbsnodes', 'qmgr'].includes(n) && !existsSync(join(bare, n))) symlinkSync(join(dir, n), join(bare, n));
  }
  const none = spawnSync('bash', [join(REPO, 'install.sh'), ...args, '--config', join(node.root, 'c')], { encoding: 'utf8', env: { ...process.env, PATH: bare } });
  t.equal(none.status, 0, none.stderr);
  t.match(none.stderr, /^install\.sh: warning: Torque's qstat and pbsnodes were not found \(no --torque-prefix, no running pbs_mom in \S+mom_priv\/mom\.lock, no qstat on PATH\); \[tools\] keeps qstat = \/usr\/local\/bin\/qstat and pbsnodes = \/usr\/local\/bin\/pbsnodes\. Fix: run install\.sh again with --torque-prefix DIR/m);
  t.equal(toolsOf(join(node.root, 'c/prologue.ini')).qstat, '/usr/local/bin/qstat');
});

/** A staging root with a site's slurm.conf at etc/slurm/slurm.conf. */
function slurmRoot(conf: string): { root: string; conf: string; run: (...args: string[]) => ReturnType<typeof install> } {
  const root = mkdtempSync(join(tmpdir(), 'vt-inst-slurm-'));
  mkdirSync(join(root, 'etc/slurm'), { recursive: true });
  writeFileSync(join(root, 'etc/slurm/slurm.conf'), conf);
  return { root, conf: join(root, 'etc/slurm/slurm.conf'), run: (...args) => install('--root', root, '--slurm', '--slurm-conf', '/etc/slurm/slurm.conf', ...args) };
}

const SITE_CONF = 'ClusterName=site\nPrologFlags=Contain\n# the site\'s own comment\nJobSubmitPlugins=pbs\nNodeName=n1 CPUs=2\n';

t.test('--slurm into a staging root: Slurm wrappers, runner, TaskProlog, job_submit.lua, the ini; no mom_priv; uninstall', async (t) => {
  const s = slurmRoot(SITE_CONF);
  const r = s.run();
  t.equal(r.status, 0, r.stderr);
  const bin = join(s.root, 'opt/vtorque-prologue/bin');
  for (const f of ['vtorque-slurm-prolog', 'vtorque-slurm-epilog', 'vtorque-slurm-run', 'vtorque-task-prolog']) {
    const st = statSync(join(bin, f));
    t.ok(st.uid === 0 && (st.mode & 0o777) === 0o755, `${f} is root's, 0755`);
  }
  const prolog = readFileSync(join(bin, 'vtorque-slurm-prolog'), 'utf8');
  const exec = prolog.replace(/\\\n/g, ' ').split('\n').find((l) => l.startsWith('exec '))!;
  t.match(exec, /^exec \/usr\/bin\/env -i LANG=C\.UTF-8 PATH=\/bin:\/usr\/bin +\$\{SLURM_JOB_ID\+"SLURM_JOB_ID=\$SLURM_JOB_ID"\} /, 'node starts with a clean environment');
  t.match(exec, / \/\S+\/node --no-global-search-paths --no-addons \/opt\/vtorque-prologue\/bin\/vtorque-prologue --config \/etc\/vtorque\/prologue\.ini slurm-prolog "\$@"$/);
  const passed = exec.match(/\$\{[A-Z_]+\+/g)!.map((x) => x.slice(2, -1));
  t.ok(passed.every((v) => /^SLURMD?_/.test(v)), `only SLURM_* and SLURMD_* pass: ${passed.join(' ')}`);
  t.notMatch(exec, /NODE_OPTIONS|LD_PRELOAD/);
  t.match(readFileSync(join(bin, 'vtorque-slurm-epilog'), 'utf8'), / slurm-epilog "\$@"\n$/);
  const runner = readFileSync(join(bin, 'vtorque-slurm-run'), 'utf8');
  t.match(runner, /^JOB_DIR=\/var\/lib\/vtorque\/jobs$/m);
  t.match(runner, /^NODE=\/\S+$/m);
  t.match(runner, /^BUNDLE=\/opt\/vtorque-prologue\/dist\/vtorque-starter\.cjs$/m);
  t.match(readFileSync(join(bin, 'vtorque-task-prolog'), 'utf8'), /^JOB_DIR=\/var\/lib\/vtorque\/jobs$/m);
  const lua = readFileSync(join(s.root, 'etc/slurm/job_submit.lua'), 'utf8');
  t.match(lua.split('\n')[0], /vtorque-prologue's job_submit\.lua/);
  t.match(lua, /^local VTORQUE = "\/usr\/bin\/env -u NODE_OPTIONS -u NODE_PATH \/\S+\/node --no-global-search-paths --no-addons \/opt\/vtorque-prologue\/bin\/vtorque-prologue"$/m);
  t.match(lua, /^local CONFIG = "\/etc\/vtorque\/prologue\.ini"$/m);
  t.match(lua, /^local RUNNER = "\/opt\/vtorque-prologue\/bin\/vtorque-slurm-run"$/m);
  t.equal(statSync(join(s.root, 'etc/slurm/job_submit.lua')).mode & 0o777, 0o644);
  const ini = readFileSync(join(s.root, 'etc/vtorque/prologue.ini'), 'utf8');
  t.match(ini, /^\[batch\]\n(;.*\n|\n)*system = slurm$/m, '[batch] system = slurm');
  t.match(ini, /^scontrol = \/\S+$/m);
  t.notOk(existsSync(join(s.root, 'var/spool/torque/mom_priv/prologue')), 'no mom_priv wrappers on a Slurm node');
  t.notOk(existsSync(join(s.root, 'var/spool/torque/mom_priv/config')), 'no $job_starter');
  // The slurm.conf lines: printed with the site's PrologFlags and JobSubmitPlugins kept, and slurm.conf untouched.
  for (const line of ['Prolog=/opt/vtorque-prologue/bin/vtorque-slurm-prolog', 'Epilog=/opt/vtorque-prologue/bin/vtorque-slurm-epilog',
    'TaskProlog=/opt/vtorque-prologue/bin/vtorque-task-prolog', 'PrologFlags=Contain,Alloc', 'JobSubmitPlugins=pbs,lua', 'PrologEpilogTimeout=270']) {
    t.ok(r.stdout.split('\n').includes(`  ${line}`), `prints ${line}`);
  }
  t.match(r.stdout, /^install\.sh does not edit slurm\.conf unless asked: .*--edit-slurm-conf.*scontrol reconfigure$/m);
  t.equal(readFileSync(s.conf, 'utf8'), SITE_CONF, 'slurm.conf is not edited without --edit-slurm-conf');
  t.notMatch(r.stdout + r.stderr, /would|reconfigure.*ran/);
  const again = s.run();
  t.notMatch(again.stdout, /^(wrote|created|linked)/m, 'a second run changes nothing');
  // --edit-slurm-conf: a copy first, the site's lines kept as comments, Alloc and lua added to the site's values.
  const edit = s.run('--edit-slurm-conf');
  t.equal(edit.status, 0, edit.stderr);
  const edited = readFileSync(s.conf, 'utf8');
  t.match(edited, /^#vtorque-prologue-was# PrologFlags=Contain$/m);
  t.match(edited, /^PrologFlags=Contain,Alloc$/m);
  t.match(edited, /^JobSubmitPlugins=pbs,lua$/m);
  t.match(edited, /^Prolog=\/opt\/vtorque-prologue\/bin\/vtorque-slurm-prolog$/m);
  t.match(edited, /^PrologEpilogTimeout=270$/m);
  t.match(edited, /^NodeName=n1 CPUs=2$/m, "the site's other lines stay");
  const backups = readdirSync(join(s.root, 'etc/slurm')).filter((n) => n.startsWith('slurm.conf.vtorque-'));
  t.equal(backups.length, 1);
  t.equal(readFileSync(join(s.root, 'etc/slurm', backups[0]!), 'utf8'), SITE_CONF, 'the copy is the site\'s slurm.conf');
  t.match(edit.stdout, /then run: scontrol reconfigure/);
  t.equal(s.run('--edit-slurm-conf').stdout.includes('wrote'), false, 'a second --edit-slurm-conf changes nothing');
  t.equal(readFileSync(s.conf, 'utf8'), edited);
  // Uninstall without --edit-slurm-conf says our lines are still there; with it the site's slurm.conf is back as it was.
  const un = s.run('--uninstall', '--edit-slurm-conf');
  t.equal(un.status, 0, un.stderr);
  t.equal(readFileSync(s.conf, 'utf8'), SITE_CONF, "slurm.conf is the site's again");
  t.notOk(existsSync(join(s.root, 'etc/slurm/job_submit.lua')), 'our job_submit.lua goes');
  t.notOk(existsSync(join(s.root, 'opt/vtorque-prologue')), 'and the program with its Slurm wrappers');
  rmSync(s.root, { recursive: true, force: true });
});

t.test("--slurm --edit-slurm-conf refuses a site's own Prolog with how to chain it; a site's job_submit.lua is never replaced", async (t) => {
  const site = `${SITE_CONF}Prolog=/etc/slurm/site-prolog\n`;
  const s = slurmRoot(site);
  const siteLua = '-- the site\'s own job_submit.lua\nfunction slurm_job_submit() return slurm.SUCCESS end\n';
  writeFileSync(join(s.root, 'etc/slurm/job_submit.lua'), siteLua);
  const printed = s.run();
  t.equal(printed.status, 0, 'without --edit-slurm-conf the conflict is said, and nothing is refused');
  t.match(printed.stderr, /^install\.sh: slurm\.conf has the site's own Prolog=\/etc\/slurm\/site-prolog\. Slurm runs every program a Prolog glob matches: put yours and a link to \/opt\/vtorque-prologue\/bin\/vtorque-slurm-prolog in one root-owned directory, e\.g\. \/etc\/slurm\/prolog\.d\/, and set Prolog=\/etc\/slurm\/prolog\.d\/\*$/m);
  t.equal(readFileSync(join(s.root, 'etc/slurm/job_submit.lua'), 'utf8'), siteLua, "the site's job_submit.lua is kept");
  t.match(readFileSync(join(s.root, 'etc/slurm/job_submit.lua.vtorque'), 'utf8'), /^local CONFIG = "\/etc\/vtorque\/prologue\.ini"$/m, 'ours is beside it');
  t.match(printed.stderr, /job_submit\.lua is the site's own job_submit\.lua: kept as it is; ours is beside it as \S+job_submit\.lua\.vtorque\. Fix: slurmctld loads one job_submit\.lua, so merge them: /);
  const refused = s.run('--edit-slurm-conf');
  t.equal(refused.status, 2);
  t.match(refused.stderr, /--edit-slurm-conf: \/etc\/slurm\/slurm\.conf left as it is: a site's own hook is never overwritten\. Fix: chain it as said above/);
  t.equal(readFileSync(s.conf, 'utf8'), site, 'slurm.conf untouched');
  t.same(readdirSync(join(s.root, 'etc/slurm')).filter((n) => n.startsWith('slurm.conf.vtorque-')), [], 'and not even copied');
  // Chained as said: a glob that matches ours is accepted.
  mkdirSync(join(s.root, 'etc/slurm/prolog.d'));
  symlinkSync('/etc/slurm/site-prolog', join(s.root, 'etc/slurm/prolog.d/10-site'));
  symlinkSync(join(s.root, 'opt/vtorque-prologue/bin/vtorque-slurm-prolog'), join(s.root, 'etc/slurm/prolog.d/50-vtorque'));
  writeFileSync(s.conf, `${SITE_CONF}Prolog=/etc/slurm/prolog.d/*\n`);
  const chained = s.run('--edit-slurm-conf');
  t.equal(chained.status, 0, chained.stderr);
  t.match(readFileSync(s.conf, 'utf8'), /^Prolog=\/etc\/slurm\/prolog\.d\/\*$/m, 'the glob stays');
  const un = s.run('--uninstall');
  t.equal(readFileSync(join(s.root, 'etc/slurm/job_submit.lua'), 'utf8'), siteLua, "uninstall leaves the site's job_submit.lua");
  t.notOk(existsSync(join(s.root, 'etc/slurm/job_submit.lua.vtorque')));
  t.match(un.stderr, /still has our lines .*Fix: run install\.sh --uninstall --slurm --edit-slurm-conf/);
  rmSync(s.root, { recursive: true, force: true });
});

t.test('--help teaches --slurm', async (t) => {
  const h = install('--help');
  t.equal(h.status, 0);
  for (const opt of ['--slurm ', '--slurm-conf FILE', '--slurm-prefix DIR', '--edit-slurm-conf']) t.ok(h.stdout.includes(`  ${opt}`), opt);
  t.match(h.stdout, /PrologFlags=Alloc, JobSubmitPlugins=lua, PrologEpilogTimeout=N/);
  t.match(h.stdout, /^ {2}\.\/install\.sh --slurm --edit-slurm-conf /m);
});

t.test('--slurm --dry-run prints every Slurm action and changes nothing', async (t) => {
  const s = slurmRoot(SITE_CONF);
  const r = s.run('--dry-run', '--edit-slurm-conf');
  t.equal(r.status, 0, r.stderr);
  for (const action of [
    /^would: write .*\/opt\/vtorque-prologue\/bin\/vtorque-slurm-prolog \(mode 0755\)$/m,
    /^would: write .*\/opt\/vtorque-prologue\/bin\/vtorque-slurm-epilog \(mode 0755\)$/m,
    /^would: write .*\/opt\/vtorque-prologue\/bin\/vtorque-slurm-run \(mode 0755\)$/m,
    /^would: write .*\/opt\/vtorque-prologue\/bin\/vtorque-task-prolog \(mode 0755\)$/m,
    /^would: write .*\/etc\/slurm\/job_submit\.lua \(mode 0644\)$/m,
    /^would: write .*\/etc\/vtorque\/prologue\.ini \(mode 0644\)$/m,
    /^would: copy \S+\/etc\/slurm\/slurm\.conf to \S+\/etc\/slurm\/slurm\.conf\.vtorque-\d{14}, then write the lines above into it$/m,
  ]) t.match(r.stdout, action);
  t.notMatch(r.stdout, /mom_priv/);
  t.same(readdirSync(join(s.root, 'etc/slurm')), ['slurm.conf'], 'nothing was written');
  t.equal(readFileSync(s.conf, 'utf8'), SITE_CONF);
  t.same(readdirSync(s.root), ['etc']);
  rmSync(s.root, { recursive: true, force: true });
});

t.test('--slurm on an existing ini: [batch] system and the tools at their defaults are set, an admin\'s own are kept; bad combinations are refused', async (t) => {
  const s = slurmRoot(SITE_CONF);
  mkdirSync(join(s.root, 'etc/vtorque'), { recursive: true });
  mkdirSync(join(s.root, 'opt/slurm/bin'), { recursive: true });
  for (const tool of ['scontrol', 'scancel']) writeFileSync(join(s.root, 'opt/slurm/bin', tool), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(s.root, 'etc/vtorque/prologue.ini'), '[logging]\nlevel = debug ; mine\n[tools]\nscancel = /site/scancel\n');
  const r = s.run('--slurm-prefix', '/opt/slurm');
  t.equal(r.status, 0, r.stderr);
  t.equal(readFileSync(join(s.root, 'etc/vtorque/prologue.ini'), 'utf8'), '[logging]\nlevel = debug ; mine\n[tools]\nscancel = /site/scancel\nscontrol = /opt/slurm/bin/scontrol\n\n[batch]\nsystem = slurm\n');
  t.match(r.stdout, /^Slurm: set \[batch\] system = slurm \[tools\] scontrol = \/opt\/slurm\/bin\/scontrol in \S+prologue\.ini, where the default was/m);
  t.equal(install('--root', s.root, '--edit-slurm-conf').status, 1, '--edit-slurm-conf without --slurm');
  t.equal(s.run('--submit-filter', '/usr/local/sbin/torque_submitfilter').status, 1, "Torque's submit filter with --slurm");
  rmSync(s.root, { recursive: true, force: true });
});
