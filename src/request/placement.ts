// Where a job's VMs go and what they are called, the same on every node: each
// node derives its place in the job's host list, so VM indices, hostnames and
// instance-ids are unique across the job without the nodes talking.
import type { BatchTerms } from '../core/engine.js';
import { guestHostname } from '../seed/names.js';
import { nodePosition } from './sister.js';

export type PlacementTerms = Pick<BatchTerms, 'hostListVar' | 'hostListFix' | 'guestNameFix'>;

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

/** `terms`: the batch system's words, for a host list that does not hold this node or a name no guest name can be made from. */
export function placeVms(hostList: string, me: string, perNode: number, terms: PlacementTerms): Placement {
  const { index, hosts } = nodePosition(hostList, me, terms);
  const vms = hosts.flatMap((host, h) => Array.from({ length: perNode }, (_, i) => ({ host, index: i, jobIndex: h * perNode + i, hostname: guestHostname(host, i, perNode, terms) })));
  return { position: index, hosts, vms };
}

/** A job run by hand or by a batch system that gave no host list: this node alone. */
export function soloPlacement(me: string, perNode: number, terms: PlacementTerms): Placement {
  return placeVms(me, me, perNode, terms);
}
