// The one description of /etc/vtorque/prologue.ini: every key with its type,
// default and a one-line doc. Validation, conf/prologue.ini and the admin
// reference are all generated from this table, so they cannot drift apart.
import {
  absPathType, boolType, durationType, enumType, intType, listType, modeType, relNameType, sizeType, stringType, type ValueType,
} from './values.js';
import { VM_KEYS } from '../request/keys.js';
import { DEFAULT_TORQUE_HOME, queueListType } from './peek.js';
import { RULES, type Level, type RuleId } from '../image/rules.js';

export interface KeySpec<T> {
  readonly type: ValueType<T>;
  /** The default exactly as it would be written in the ini. */
  readonly default: string;
  readonly doc: string;
}

const key = <T>(type: ValueType<T>, dflt: string, doc: string): KeySpec<T> => ({ type, default: dflt, doc });
const seconds = (min: number, max: number) => intType(min, max);
const tool = (path: string, what: string) => key(absPathType(), path, what);

export const SECTION_DOCS: Record<string, string> = {
  paths: 'Where images come from and where node-local state goes. All must be absolute.',
  defaults: 'Values for #VM keys a job leaves out. Same syntax as in #VM lines.',
  policy: 'What jobs may ask for. A job that asks for more is rejected (exit 1) with the limit in the message.',
  timeouts: "Deadlines in seconds. pbs_mom kills the prologue 10 s before its $prologalarm (300 s unless mom_priv/config sets it): keep `total` at least 20 s below that (Slurm: PrologEpilogTimeout at least total + 3 x qstat). doctor's timeouts check compares them.",
  tools: 'Absolute paths of every external program. pbs_mom gives us PATH=/bin:/usr/bin only, so nothing is looked up on PATH.',
  logging: 'The admin log: JSON lines (pino), one per event, each with job id, node and stage.',
  limits: 'Resource limits for tools that parse untrusted images (applied with prlimit).',
  guestfs: 'How libguestfs looks inside images.',
  cache: 'The node-local image cache: one verified copy per content digest, shared by every job, each VM on a copy-on-write overlay.',
  jobfiles: "Ownership and modes of the per-job files (overlays, seeds, manifest), so that whatever launches the VMs can open them, and the job owner cannot: a user who could rewrite their VM's seed or disk would get root in it. Directories stay root-owned.",
  batch: "Which batch system this node runs. The hooks need no key (pbs_mom runs `prologue`, slurmd runs `slurm-prolog`); the node's admin commands (doctor, cache gc) read it to know whom to ask.",
  torque: 'How the prologue talks back to Torque.',
  launch: "How the prologue boots a #VM job's VMs on this node: qemu runs as an unprivileged launch account (never root, never the job owner), daemonized so it outlives a prologue that succeeded (a boot guard stops it if the prologue dies first); the epilogue powers them off.",
  seed: "What each VM's cloud-init NoCloud seed holds (doc/admin.md, Seeds): mounts, DNS, NTP, packages, SSH keys, network, and the medium it is written to.",
  requirements: "The guest image rules (doc/guest-images.md). Each is error (the job is rejected), warn (logged and shown, the job runs) or off.",
};

const nfsType = stringType(/^(?:|[A-Za-z0-9][A-Za-z0-9.-]*:\/[A-Za-z0-9._+\/%-]*)$/, 'HOST:/export/path, or empty');
const hostType = stringType(/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$/, 'a host or domain name');
const packageType = stringType(/^[a-z0-9][a-z0-9.+_-]{0,127}$/, 'a package name');
// `job` (the job owner) was allowed once; it gave users root in their VMs, so an old ini that still says so is refused with the reason.
const accountType = (kind: 'user' | 'group') => stringType(/^(?!job$)(?:root|[a-z_][a-z0-9_-]{0,31})$/, `root or a ${kind} name of the launch account (not job: the job owner must not control their VM's files)`);
// qemu must never run as root (a guest escape would own the node) nor as the job owner (who could then ptrace it or rewrite its disks).
const launchAccountType = (kind: 'user' | 'group') => stringType(/^(?!root$|job$)[a-z_][a-z0-9_-]{0,31}$/, `a ${kind} name of the launch account; not root, not job`);
// Tokens only: no shell ever sees them, and a quote or a blank inside one would not mean what the admin thinks.
const qemuArgsType = stringType(/^(?:|[A-Za-z0-9_=,.:\/+-]+(?: +[A-Za-z0-9_=,.:\/+-]+)*)$/, 'qemu arguments separated by spaces (letters, digits and _=,.:/+-), or empty');
const levelType = enumType(['error', 'warn', 'off'] as const);

/** One key per guest rule, in RULES order, with the rule's own doc and default level (src/image/rules.ts). */
function requirementsSection(): { readonly [K in RuleId]: KeySpec<Level> } {
  return Object.fromEntries(RULES.map((r) => [r.id, key(levelType, r.level, r.doc)])) as { [K in RuleId]: KeySpec<Level> };
}

export const SCHEMA = {
  paths: {
    image_pool: key(absPathType(), '/var/lib/vtorque/images', 'admin-managed guest images; root-owned, not writable by group or others'),
    cache_dir: key(absPathType(), '/var/cache/vtorque', 'node-local cache of verified images, verdicts and leases'),
    job_dir: key(absPathType(), '/var/lib/vtorque/jobs', 'per-job overlays, seeds and manifest.json, under <job_dir>/<jobid>/'),
    ramdisk_dir: key(absPathType(), '/run/vtorque/ramdisk', 'VM disks of jobs that ask for fs_type=ramdisk, on a tmpfs. It and every directory above it must be root-owned and not writable by others, so never under /dev/shm or /tmp, where any user can create it first; /run is a tmpfs only root can write (systemd sizes it at 20% of RAM; mount a tmpfs of your own here for more)'),
    torque_home: key(absPathType(), DEFAULT_TORQUE_HOME, 'TORQUE_HOME; job scripts are read from <torque_home>/mom_priv/jobs/<jobid>.SC when Torque does not pass the path'),
    shared_verdicts: key(absPathType({ optional: true }), '', 'optional verdict directory shared by all nodes (e.g. on NFS); submit-filter reads it to refuse known-bad images at qsub time'),
    log_file: key(absPathType({ optional: true }), '/var/log/vtorque/prologue.log', 'admin log file (JSON lines); empty logs to stderr of the prologue instead'),
  },
  defaults: {
    img: key(relNameType('image name'), 'debian12.qcow2', VM_KEYS.img.doc),
    distro: key(VM_KEYS.distro.type, 'debian', `${VM_KEYS.distro.doc}; used only when the job also uses the default img`),
    arch: key(VM_KEYS.arch.type, 'x86_64', VM_KEYS.arch.doc),
    vcpus: key(VM_KEYS.vcpus.type, '1', VM_KEYS.vcpus.doc),
    ram: key(VM_KEYS.ram.type, '2G', VM_KEYS.ram.doc),
    vms_per_node: key(VM_KEYS.vms_per_node.type, '1', VM_KEYS.vms_per_node.doc),
    fs_type: key(VM_KEYS.fs_type.type, 'sharedfs', VM_KEYS.fs_type.doc),
    vcpu_pinning: key(VM_KEYS.vcpu_pinning.type, 'false', VM_KEYS.vcpu_pinning.doc),
  },
  policy: {
    allow_user_images: key(boolType, 'false', 'allow img=/absolute/path to an image the job user owns (still fully verified, never trusted by path)'),
    user_image_max_holes: key(sizeType(0, 64 * 1024 ** 4), '4G', "most bytes of holes a user image's file may have (its length less what it has allocated), judged before it is read: the node reads and hashes holes as zeros, so a sparse raw file would cost its whole length (a 100G raw file holding 5M takes minutes). A refused user is told to convert it to qcow2, which stores no holes"),
    require_checksums: key(boolType, 'false', 'pool images must be listed, with a matching sha256, in <image_pool>/SHA256SUMS (sha256sum format)'),
    formats: key(listType(enumType(['qcow2', 'raw', 'vmdk'] as const), 'image formats'), 'qcow2,raw', 'image formats a job may use'),
    max_virtual_size: key(sizeType(1024 ** 2, 64 * 1024 ** 4), '200G', 'largest virtual disk size an image may declare'),
    max_vcpus: key(intType(1, 1024), '64', 'most vcpus one VM may ask for'),
    max_ram: key(sizeType(64 * 1024 ** 2, 16 * 1024 ** 4), '256G', 'most ram one VM may ask for'),
    max_vms_per_node: key(intType(1, 64), '8', 'most VMs one job may start on one node'),
    max_start_count: key(intType(1, 1000), '5', "past this many starts (qstat's start_count), a node fault aborts the job instead of requeueing it once more"),
    user_cloud_config: key(enumType(['deny', 'allowlist'] as const), 'deny', "#VM metadata=FILE: deny refuses it; allowlist merges only keys that cannot give root (write_files under the user's home or /workspace, owned by the user); anything else is refused by name"),
    vm_queues: key(queueListType, '', 'queues whose jobs always run in VMs, with [defaults] when they have no #VM lines'),
  },
  timeouts: {
    total: key(seconds(10, 3600), '240', 'deadline for the whole prologue; past it the job is requeued (exit 2)'),
    tool: key(seconds(1, 3600), '120', 'deadline for any one external program (qemu-img, guestfish, ...)'),
    user_image_read: key(seconds(1, 3600), '90', "most time the node spends copying and hashing one user image (img=/path) into its cache, and never past 10 s before total's deadline: a user image not read by then fails the job (exit 1, image-slow), never the node"),
    qstat: key(seconds(1, 300), '10', 'deadline for one qstat call'),
  },
  tools: {
    qemu_img: tool('/usr/bin/qemu-img', 'qemu-img, from qemu-utils (Debian) or qemu-img (RHEL)'),
    guestfish: tool('/usr/bin/guestfish', 'guestfish, from libguestfs-tools (Debian) or guestfs-tools (RHEL)'),
    qstat: tool('/usr/local/bin/qstat', "Torque's qstat; used for the job's output path and start count"),
    pbsnodes: tool('/usr/local/bin/pbsnodes', "Torque's pbsnodes"),
    getent: tool('/usr/bin/getent', 'getent, to look users up through NSS (LDAP/SSSD included)'),
    prlimit: tool('/usr/bin/prlimit', 'prlimit (util-linux), to cap memory and CPU of qemu-img'),
    dd: tool('/usr/bin/dd', "dd (coreutils), run as the job owner to read their SSH keys and #VM metadata= file with the owner's rights"),
    mkisofs: tool('/usr/bin/genisoimage', 'for [seed] media = iso: genisoimage, or xorriso (then run as xorriso -as mkisofs)'),
    mkfs_vfat: tool('/usr/sbin/mkfs.vfat', 'for [seed] media = vfat: mkfs.vfat, from dosfstools'),
    mcopy: tool('/usr/bin/mcopy', 'for [seed] media = vfat: mcopy, from mtools'),
    ip: tool('/usr/sbin/ip', "for [launch] network = bridge: ip (iproute2), to make the VMs' tap devices and remove them"),
    scontrol: tool('/usr/bin/scontrol', "for Slurm: scontrol, to read the job's script, record and host list, to cancel a refused job and to drain the node on a node fault"),
    scancel: tool('/usr/bin/scancel', 'for Slurm: scancel, to cancel a job the Prolog refused'),
    setpriv: tool('/usr/bin/setpriv', 'setpriv (util-linux, 2.33 or later for --pdeathsig): every tool runs under it, so that it dies when the prologue dies (PR_SET_PDEATHSIG), and it starts qemu as [launch] user with its supplementary groups (the kvm group)'),
    timeout: tool('/usr/bin/timeout', "timeout (coreutils): every tool runs under it, in a process group of its own, which it stops when the prologue dies and on the tool's own deadline"),
    rm: tool('/bin/rm', "rm (coreutils), run as [launch] user to empty the VMs' run directory"),
    qemu_system: tool('/usr/bin/qemu-system-x86_64', 'qemu-system for this node, from qemu-system-x86 (Debian) or qemu-kvm (RHEL); it also runs the KVM probe'),
  },
  limits: {
    qemu_img_memory: key(sizeType(64 * 1024 ** 2, 64 * 1024 ** 3), '2G', 'address-space limit for qemu-img info/check on an image'),
    qemu_img_cpu: key(intType(1, 3600), '60', 'CPU-seconds limit for qemu-img info/check on an image'),
  },
  guestfs: {
    accel: key(enumType(['auto', 'kvm', 'tcg'] as const), 'auto', 'auto: KVM only when the KVM probe (the node\'s kernel booted under KVM with libguestfs\'s qemu options, as [launch] user, 20 s at most) reached its panic line; kept per kernel release and qemu binary in <cache_dir>/kvm-probe-*.json; else TCG'),
    memsize: key(intType(256, 8192), '768', 'appliance memory in MiB'),
  },
  requirements: requirementsSection(),
  cache: {
    max_size: key(sizeType(1024 ** 2, 1024 ** 5), '200G', 'most space the cached base images may take together; past it, the least recently used images no job holds are evicted'),
    min_free: key(sizeType(0, 1024 ** 5), '5G', 'free space to keep on the cache filesystem after an ingest; evicts like max_size'),
    lease_max_age: key(durationType(3600, 366 * 86400), '14d', "a job's hold on its images ends after this long even if its epilogue never ran, once Torque no longer has the job"),
    ramdisk_job_max: key(sizeType(1024 ** 2, 1024 ** 5), '16G', "the most of the ramdisk one fs_type=ramdisk job may take: its base copy plus each VM's overlay at its worst (the image's virtual size: a guest cannot write past its disk) and its seed. A job over it is refused (exit 1); one that fits but not beside the running ramdisk jobs' worst cases goes back to the queue"),
    lock_stale: key(durationType(2, 300), '10s', 'a lock whose holder stopped refreshing it this long ago (a killed prologue) is taken over'),
  },
  jobfiles: {
    owner: key(accountType('user'), 'vtorque-launch', "owner of the overlays, seeds and manifest: the unprivileged account that launches the VMs ([launch] user), or root. Never the job owner: whoever can write a VM's seed or disk is root in it, and root in a VM is root against the cluster's NFS exports"),
    group: key(accountType('group'), 'vtorque-launch', "group of the per-job files and directories: the launch account's group ([launch] group), or root; never one the job owner is in"),
    file_mode: key(modeType(), '0600', 'mode of the per-job files; seeds hold user data, so keep others out'),
    dir_mode: key(modeType(), '0750', 'mode of the per-job directories (root-owned, in the group above)'),
  },
  batch: {
    system: key(enumType(['torque', 'slurm'] as const), 'torque', "torque: doctor checks mom_priv and pbs_server, and cache gc asks qstat whether a lease's job is alive; slurm: doctor checks slurm.conf's wiring (Prolog, Epilog, TaskProlog, PrologFlags, JobSubmitPlugins, PrologEpilogTimeout) and this node's state through [tools] scontrol, and cache gc asks slurmctld. install.sh --slurm sets it"),
  },
  torque: {
    offline_on_fault: key(boolType, 'true', 'on a node fault, take the node out of scheduling with pbsnodes -o and a "vtorque:" note, so Torque does not loop the requeued job on it'),
    node_name: key(stringType(/^(?:|[A-Za-z0-9][A-Za-z0-9._-]{0,254})$/, 'a host name, or empty'), '', "this node's name in Torque's nodes file (server_priv/nodes), for placement in the job's host list and for pbsnodes; empty: what pbs_mom says (PBS_MSHOST on Mother Superior, PBS_NODENUM on a sister), else the host name"),
  },
  launch: {
    start: key(boolType, 'true', "boot each #VM job's VMs in the prologue; false: prepare their files and manifest.json only, for a launcher of the site's own"),
    user: key(launchAccountType('user'), 'vtorque-launch', 'the account qemu runs as (install.sh creates it: useradd --system); it owns <job_dir>/<jobid>/run/ and must be able to open /dev/kvm for KVM'),
    group: key(launchAccountType('group'), 'vtorque-launch', "the launch account's group"),
    machine: key(stringType(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'a qemu machine type (qemu-system-x86_64 -machine help)'), 'q35', 'qemu machine type of the VMs'),
    accel: key(enumType(['auto', 'kvm', 'tcg'] as const), 'auto', 'auto: KVM when the launch account can use /dev/kvm and the KVM probe (the node\'s kernel booted under KVM with the VMs\' machine, -cpu host and extra_args, 20 s at most) reached its panic line; kept per kernel release and qemu binary in <cache_dir>/kvm-probe-*.json; else TCG if allow_tcg. kvm or tcg: that one, no probe'),
    allow_tcg: key(boolType, 'true', 'with accel = auto, fall back to TCG (software emulation, about 10x slower) when KVM does not work; false makes that a node fault'),
    boot: key(seconds(5, 3600), '180', "seconds for a VM to boot and its guest agent to answer; past it the job fails (exit 1) with the VM's console tail. The wait also ends 10 s before [timeouts] total, which must stay below Torque's $prologalarm (a KVM boot takes seconds; a TCG one 70-300 s: raise both for TCG; doctor's timeouts check says what to set)"),
    console_silence: key(seconds(0, 3600), '120', "seconds a VM may print nothing at all on its serial console before it is stopped as one that cannot boot (exit 1, vm-silent): a firmware boot of an image without a bootloader, or whose bootloader and kernel do not write to ttyS0, stays silent for the whole [launch] boot. Any byte counts, so a slow boot is not a silent one: under TCG on a 2-core node at load average 8-11 the first bytes came after 10-14 s (direct kernel boot) and 13-15 s (a bootloader that writes nothing to the serial console, then the kernel). 0: never stop a VM for silence"),
    shutdown: key(seconds(1, 600), '20', 'seconds the epilogue waits after asking a VM to power off (ACPI) before it kills qemu'),
    network: key(enumType(['user', 'bridge'] as const), 'user', "user: each VM's NIC is qemu's user-mode NAT (outbound only), and a job's VMs on this node also share a private segment (eth1, 10.254.0.<index+1>/24, in each other's /etc/hosts) that no other job or user reaches; VMs on other nodes are not on it. bridge: each VM gets a tap device on [launch] bridge, made by the prologue for the launch account and removed by the epilogue; the VMs are then on the site's network (DHCP or [seed] network = static), across nodes too"),
    bridge: key(stringType(/^(?!\.\.?$)[A-Za-z0-9_.-]{1,15}$/, 'a network interface name (at most 15 characters)'), 'br0', 'for network = bridge: the bridge the taps join (the admin creates it)'),
    reserve_memory: key(sizeType(0, 16 * 1024 ** 4), '2G', "memory the host keeps for itself (the OS, pbs_mom or slurmd, page cache): a job's VMs on this node get at most MemTotal minus this, less what other VM jobs here hold. A request larger than that can never fit and is refused (exit 1, naming the limit); one that fits but not now goes back to the queue, the node stays up (doc/admin.md, Admission)"),
    vm_memory_overhead: key(sizeType(0, 64 * 1024 ** 3), '256M', "memory counted per VM on top of its ram, for qemu itself (its code, device emulation, TCG's translation cache) in admission"),
    vcpus_per_core: key(intType(0, 64), '4', "vCPU overcommit: this node's VMs may have at most this many vCPUs per core in all (per CPU of the job's allocation where its cgroup's cpuset names them); 1 is no overcommit; 0 turns the vCPU check off. A request over the node's or the job's share is refused (exit 1); over what other VM jobs leave, it goes back to the queue"),
    extra_args: key(qemuArgsType, '', 'extra qemu arguments appended to every VM, space separated (no shell, no quoting); e.g. -cpu host,-arch-capabilities'),
  },
  seed: {
    media: key(enumType(['iso', 'vfat', 'inject'] as const), 'iso', 'iso: an ISO9660 image labelled cidata; vfat: a FAT image labelled CIDATA; inject: no medium, the files go into the overlay at /var/lib/cloud/seed/nocloud/ (libguestfs, slower)'),
    nfs_home: key(nfsType, '', "NFS export mounted on /home/<user> in each VM, %u standing for the user name (e.g. head:/export/home/%u); empty: none"),
    nfs_workspace: key(nfsType, '', 'NFS export mounted on /workspace in each VM; empty: none'),
    nfs_opt: key(nfsType, '', "NFS export with the cluster's software, mounted on opt_target in each VM; empty: none"),
    opt_target: key(stringType(/^(?!\/opt\/?$)\/[A-Za-z0-9._+-]+(?:\/[A-Za-z0-9._+-]+)*$/, 'an absolute path other than /opt'), '/opt-vm', 'where nfs_opt is mounted in the VMs; never /opt, which guest images use for their own software'),
    nameservers: key(listType(stringType(/^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$/, 'an IPv4 or IPv6 address'), 'IP addresses'), '', 'DNS servers written to resolv.conf in the VMs; empty: whatever DHCP gives'),
    search: key(listType(hostType, 'domain names'), '', 'DNS search domains for the VMs'),
    ntp_servers: key(listType(hostType, 'host names or addresses'), '', 'NTP servers for the VMs; empty: the image default'),
    packages_debian: key(listType(packageType, 'package names'), '', 'packages installed in Debian/Ubuntu VMs at first boot (needs a reachable mirror; slows the boot)'),
    packages_redhat: key(listType(packageType, 'package names'), '', 'packages installed in RedHat-family VMs at first boot'),
    ssh_keys_from: key(listType(stringType(/^%h\/[A-Za-z0-9._+\/-]+$/, 'a path under %h (the home directory)'), 'paths under %h'), '%h/.ssh/authorized_keys', "the job owner's files whose public keys are authorised in the VMs, read as the owner (64 KiB at most each); empty: no keys"),
    network: key(enumType(['dhcp', 'none', 'static'] as const), 'dhcp', 'dhcp: every NIC by DHCP; none: cloud-init leaves the network alone; static: network_command gives each VM its MAC and address'),
    network_command: key(absPathType({ optional: true }), '', 'for network = static: run as COMMAND JOBID NODE VM-INDEX HOSTNAME (no shell, [timeouts] tool); prints one line: mac=52:54:00:12:34:56 address=10.1.2.3/24 gateway=10.1.2.1'),
  },
  logging: {
    level: key(enumType(['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const), 'info', 'least severe level written to the log'),
  },
} as const;

type Schema = typeof SCHEMA;
type ValueOf<S> = S extends KeySpec<infer T> ? T : never;
export type Config = {
  readonly [S in keyof Schema]: { readonly [K in keyof Schema[S]]: ValueOf<Schema[S][K]> };
} & { readonly file: string };

export type SectionName = keyof Schema;
export const SECTIONS = Object.keys(SCHEMA) as SectionName[];

export function specsOf(section: SectionName): [string, KeySpec<unknown>][] {
  return Object.entries(SCHEMA[section]) as [string, KeySpec<unknown>][];
}
