// Where a job's VMs go and what they are called, the same on every node: each
// node derives its place in the job's host list, so VM indices, hostnames and
// instance-ids are unique across the job without the nodes talking.
import { NodeFault } from '../core/errors.js';
import { guestHostname } from '../seed/names.js';
import { nodePosition } from './sister.js';

export interface PlacedVm {
  host: string;
  /** Index on its host. */
  index: number;
  /** Index across the whole job: host position * vms_per_node + index. */
  jobIndex: number;
  hostname: string;
}

export interface Placement {
  /** This node's position among the job's hosts. */
  position: number;
  hosts: string[];
  /** Every VM of the job, host by host. */
  vms: PlacedVm[];
}

/** Hosts from qstat's exec_host ("node01/0-1+node02/0+..."), for a sister that has no PBS_NODEFILE. */
export function hostsFromExecHost(execHost: string): string {
  return execHost.split('+').map((s) => s.split('/')[0]!.trim()).filter((h) => h !== '').join('\n');
}

export function placeVms(hostList: string, me: string, perNode: number): Placement {
  const { index, hosts } = nodePosition(hostList, me);
  const vms = hosts.flatMap((host, h) => Array.from({ length: perNode }, (_, i) => ({ host, index: i, jobIndex: h * perNode + i, hostname: guestHostname(host, i, perNode) })));
  return { position: index, hosts, vms };
}

/** A job run by hand or by a Torque that gave no host list: this node alone. */
export function soloPlacement(me: string, perNode: number): Placement {
  return placeVms(me, me, perNode);
}

export function noHostList(why: string): NodeFault {
  return new NodeFault(`cannot tell where this node stands in the job's node list (${why})`, [
    { id: 'nodefile', where: 'PBS_NODEFILE', message: why, fix: 'pbs_mom passes PBS_NODEFILE, and qstat -f shows exec_host; check both reach this node' },
  ]);
}
