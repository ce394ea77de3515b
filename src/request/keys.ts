// The #VM keys, named as vTorque's `vsub -vm` names them. One table gives each
// key's type and meaning; the directive parser, the [defaults] section of the
// ini, `check` and doc/user.md all read it.
import {
  boolType, enumType, imageRefType, intType, sizeType, userPathType, type ValueType,
} from '../config/values.js';

export const DISTROS = ['debian', 'ubuntu', 'redhat', 'rhel', 'centos', 'rocky', 'alma', 'fedora', 'osv'] as const;
export type Distro = (typeof DISTROS)[number];
export type Family = 'debian' | 'redhat' | 'osv';

export const FAMILY_OF: Record<Distro, Family> = {
  debian: 'debian', ubuntu: 'debian',
  redhat: 'redhat', rhel: 'redhat', centos: 'redhat', rocky: 'redhat', alma: 'redhat', fedora: 'redhat',
  osv: 'osv',
};

export const ARCHES = ['x86_64', 'aarch64', 'ppc64le', 's390x'] as const;
export const FS_TYPES = ['sharedfs', 'ramdisk'] as const;

interface KeyDef<T> {
  type: ValueType<T>;
  doc: string;
  example: string;
}

const def = <T>(type: ValueType<T>, example: string, doc: string): KeyDef<T> => ({ type, doc, example });

export const VM_KEYS = {
  img: def(imageRefType(), 'img=debian12.qcow2', 'guest image, by its name in the image pool'),
  distro: def(enumType(DISTROS), 'distro=debian', "the image's OS; checked against what the image really holds"),
  arch: def(enumType(ARCHES), 'arch=x86_64', 'guest CPU architecture'),
  vcpus: def(intType(1, 1024), 'vcpus=4', 'virtual CPUs per VM'),
  ram: def(sizeType(64 * 1024 ** 2, 16 * 1024 ** 4), 'ram=8G', 'memory per VM, with K, M, G or T'),
  vms_per_node: def(intType(1, 64), 'vms_per_node=2', 'VMs started on each node of the job'),
  vcpu_pinning: def(boolType, 'vcpu_pinning=true', 'pin each vCPU to a host core'),
  disk: def(userPathType('disk'), 'disk=/scratch/me/data.img', 'an extra disk image of yours, attached to each VM; not supported yet on this site: a job that gives it is refused'),
  fs_type: def(enumType(FS_TYPES), 'fs_type=ramdisk', 'where the VM disks live: sharedfs (node cache) or ramdisk (node RAM)'),
  metadata: def(userPathType('metadata'), 'metadata=my-cloud-config.yaml', 'your own cloud-config to merge, if the site allows it'),
  vm_prologue: def(userPathType('vm_prologue'), 'vm_prologue=setup.sh', 'a script of yours run in VM 0 before the job script, as you; if it fails, the job stops with its status'),
  vm_epilogue: def(userPathType('vm_epilogue'), 'vm_epilogue=cleanup.sh', 'a script of yours run in VM 0 after the job script, as you, whatever its status; the job keeps the script\'s status'),
  vrdma: def(boolType, 'vrdma=true', 'virtual RDMA (passed to the VM launcher)'),
  iocm: def(boolType, 'iocm=true', 'IO core manager (passed to the VM launcher)'),
  iocm_min_cores: def(intType(1, 1024), 'iocm_min_cores=1', 'IOcm: fewest dedicated I/O cores'),
  iocm_max_cores: def(intType(1, 1024), 'iocm_max_cores=4', 'IOcm: most dedicated I/O cores'),
  unclot: def(boolType, 'unclot=true', 'UNCLOT shared-memory communication (passed to the VM launcher)'),
  unclot_shmem: def(sizeType(1024 ** 2, 1024 ** 4), 'unclot_shmem=1G', 'UNCLOT shared memory size'),
} as const;

export type VmKey = keyof typeof VM_KEYS;
export const VM_KEY_NAMES = Object.keys(VM_KEYS) as VmKey[];
export type VmValues = { [K in VmKey]: (typeof VM_KEYS)[K] extends KeyDef<infer T> ? T : never };

export function isVmKey(k: string): k is VmKey {
  return Object.prototype.hasOwnProperty.call(VM_KEYS, k);
}

/** The keys an admin may default in [defaults]; the rest only make sense per job. */
export const DEFAULTABLE = ['img', 'distro', 'arch', 'vcpus', 'ram', 'vms_per_node', 'fs_type', 'vcpu_pinning'] as const;

