// Where a job's VMs go and what they are called, the same on every node: each
// node derives its place in the job's host list, so VM indices, hostnames and
// instance-ids are unique across the job without the nodes talking.
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

export function placeVms(hostList: string, me: string, perNode: number): Placement {
  const { index, hosts } = nodePosition(hostList, me);
  const vms = hosts.flatMap((host, h) => Array.from({ length: perNode }, (_, i) => ({ host, index: i, jobIndex: h * perNode + i, hostname: guestHostname(host, i, perNode) })));
  return { position: index, hosts, vms };
}

/** A job run by hand or by a batch system that gave no host list: this node alone. */
export function soloPlacement(me: string, perNode: number): Placement {
  return placeVms(me, me, perNode);
}
