// network-config (version 2) per VM, from [seed] network:
// - dhcp: the VM's NIC by DHCP. The NIC is matched by a MAC we choose
//   (locally administered, from the job, VM and start) and named eth0:
//   cloud-init's eni, sysconfig and networkd renderers ignore name globs in
//   a v2 match, so a MAC is the one match every guest family honours. The
//   launcher must give the NIC that MAC (SeedResult.network.mac);
// - none: "config: disabled", cloud-init's own word for leaving the network
//   alone (no file at all would make it fall back to DHCP on the first NIC);
// - static: [seed] network_command names each VM's MAC and address, vTorque's
//   IP_TO_MAC_SCRIPT idea; its output is validated, never passed on as text.
// With [launch] network = user and more than one VM on this node, each VM also
// gets eth1 on the job's private segment (qemu.ts wires it), at a fixed
// address by its index on this node, so the VMs reach each other by host name
// (render.ts adds them to /etc/hosts) whatever the user-mode NIC's NAT hides.
import type { Config } from '../config/schema.js';
import { quote } from '../config/values.js';
import { NodeFault } from '../core/errors.js';
import { runTool } from '../tools/run.js';

import { createHash } from 'node:crypto';

/** What the VM launcher must give the VM's NIC; address only for network = static. */
export interface VmNic {
  mac: string;
  address?: string;
  gateway?: string;
  /** The second NIC, on the job's private segment on this node ([launch] network = user). */
  segment?: { mac: string; address: string };
}

/** The private segment's subnet: only this job's VMs on this node are on it, so every job may use the same one. */
export const SEGMENT_NET = '10.254.0';
export const segmentAddress = (index: number) => `${SEGMENT_NET}.${index + 1}`;

/** The segment NIC of VM index on this node; its MAC from the same identity as eth0's, made distinct. */
export function segmentNic(jobId: string, jobIndex: number, nonce: string, index: number): NonNullable<VmNic['segment']> {
  return { mac: vmMac(jobId, jobIndex, `${nonce}\0segment`), address: `${segmentAddress(index)}/24` };
}

export type NetworkConfig = { kind: 'dhcp' | 'none' | 'static'; doc: Record<string, unknown>; nic?: VmNic };

/** 02:xx:xx:xx:xx:xx: locally administered unicast, 40 bits from the VM's identity. */
export function vmMac(jobId: string, jobIndex: number, nonce: string): string {
  const h = createHash('sha256').update(`${jobId}\0${jobIndex}\0${nonce}`).digest();
  return ['02', ...[0, 1, 2, 3, 4].map((i) => h[i]!.toString(16).padStart(2, '0'))].join(':');
}

export function nicDoc(nic: VmNic, dns: Record<string, unknown>): Record<string, unknown> {
  const eth: Record<string, unknown> = { match: { macaddress: nic.mac }, 'set-name': 'eth0' };
  if (nic.address) eth.addresses = [nic.address];
  else eth.dhcp4 = true;
  if (nic.gateway) eth.routes = [{ to: '0.0.0.0/0', via: nic.gateway }];
  // No gateway and no DNS on eth1: the default route and resolv.conf stay eth0's.
  const seg = nic.segment ? { eth1: { match: { macaddress: nic.segment.mac }, 'set-name': 'eth1', addresses: [nic.segment.address] } } : {};
  return { version: 2, ethernets: { eth0: { ...eth, ...dns }, ...seg } };
}

const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})\.){3}(?:25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})$/;

export function parseStaticLine(out: string): VmNic | string {
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) return `printed ${lines.length} lines; expected one`;
  const f: Record<string, string> = {};
  for (const part of lines[0]!.trim().split(/\s+/)) {
    const m = /^(mac|address|gateway)=(.+)$/.exec(part);
    if (!m) return `printed ${quote(part, 40)}; expected mac=, address= and gateway= only`;
    f[m[1]!] = m[2]!;
  }
  const mac = f.mac?.toLowerCase();
  if (!mac || !MAC.test(mac)) return `mac ${quote(f.mac ?? '(none)', 30)} is not a MAC address like 52:54:00:12:34:56`;
  // Locally administered unicast: a MAC the site may hand out without clashing with real NICs.
  if ((parseInt(mac.slice(0, 2), 16) & 1) !== 0) return `mac ${mac} is a multicast address`;
  const a = /^([^/]+)\/([0-9]{1,2})$/.exec(f.address ?? '');
  if (!a || !IPV4.test(a[1]!) || Number(a[2]) < 1 || Number(a[2]) > 32) return `address ${quote(f.address ?? '(none)', 30)} is not IPv4/PREFIX like 10.1.2.3/24`;
  if (f.gateway !== undefined && !IPV4.test(f.gateway)) return `gateway ${quote(f.gateway, 30)} is not an IPv4 address`;
  return { mac, address: f.address!, gateway: f.gateway };
}

/** Whether a job with count VMs on this node gives them a segment NIC: the prologue boots them in user mode, and there is someone to reach. */
export function wantsSegment(config: Config, count: number): boolean {
  return config.launch.start && config.launch.network === 'user' && config.seed.network !== 'none' && count > 1;
}

export async function networkConfig(o: {
  config: Config; jobId: string; node: string; jobIndex: number; hostname: string; nonce: string; dryRun?: boolean; signal?: AbortSignal;
  /** This VM's index and the number of this job's VMs on this node. */
  index?: number; count?: number;
}): Promise<NetworkConfig> {
  const withSegment = (nic: VmNic): VmNic => (o.index !== undefined && o.count !== undefined && wantsSegment(o.config, o.count)
    ? { ...nic, segment: segmentNic(o.jobId, o.jobIndex, o.nonce, o.index) } : nic);
  const s = o.config.seed;
  const dns = s.nameservers.length > 0 || s.search.length > 0
    ? { nameservers: { ...(s.nameservers.length > 0 ? { addresses: s.nameservers } : {}), ...(s.search.length > 0 ? { search: s.search } : {}) } }
    : {};
  if (s.network === 'none') return { kind: 'none', doc: { config: 'disabled' } };
  if (s.network === 'dhcp') {
    const nic = withSegment({ mac: vmMac(o.jobId, o.jobIndex, o.nonce) });
    return { kind: 'dhcp', doc: nicDoc(nic, dns), nic };
  }
  // check --render: the command may hand out addresses, so it is not run; a documentation address (RFC 5737) stands in.
  if (o.dryRun) {
    const nic = withSegment({ mac: vmMac(o.jobId, o.jobIndex, o.nonce), address: '192.0.2.10/24', gateway: '192.0.2.1' });
    return { kind: 'static', doc: nicDoc(nic, dns), nic };
  }
  const cmd = s.network_command;
  const broken = (message: string, fix: string) => new NodeFault('the static network mapping for a VM failed', [{ id: 'seed-network', where: `[seed] network_command ${cmd || '(empty)'}`, message, fix }]);
  if (!cmd) throw broken('[seed] network = static needs a command that names each VM\'s address', 'set [seed] network_command, or use network = dhcp');
  const r = await runTool(cmd, [o.jobId, o.node, String(o.jobIndex), o.hostname], {
    timeout: o.config.timeouts.tool * 1000, toolKey: 'seed network_command', maxBuffer: 4096, signal: o.signal,
  });
  const st = parseStaticLine(r.stdout);
  if (typeof st === 'string') throw broken(`for VM ${o.jobIndex} of job ${o.jobId} it ${st}`, 'fix the command: one line "mac=52:54:00:12:34:56 address=10.1.2.3/24 gateway=10.1.2.1"');
  const nic = withSegment(st);
  return { kind: 'static', doc: nicDoc(nic, dns), nic };
}
