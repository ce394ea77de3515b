// Whether libguestfs may use KVM on this node. Never assumed: a nested
// /dev/kvm can exist and still hang guest kernels, so `auto` asks the node's
// one KVM probe (src/launch/kvm.ts) with the options libguestfs runs qemu
// with. Not a guestfish launch, as before: an appliance launch that hangs on
// KVM gave its answer only after 90 s, and one that works needs supermin's
// appliance; a bare kernel boot answers in about a second, or 20 s at most.
import { accessSync, constants } from 'node:fs';
import type { Config } from '../config/schema.js';
import { GUESTFS_SHAPE, probeKvm, type Accel } from '../launch/kvm.js';
import { resolveLaunchAccount } from '../launch/qemu.js';

export type { Accel };

/**
 * The environment every guestfish run gets: the direct backend (no libvirtd on
 * a compute node), root's HOME for supermin's appliance cache, the appliance's
 * memory, and TCG forced when KVM is not to be used.
 */
export function libguestfsEnv(o: { memsize?: number; accel?: Accel } = {}): Record<string, string> {
  const env: Record<string, string> = { LIBGUESTFS_BACKEND: 'direct' };
  if (o.memsize !== undefined) env.LIBGUESTFS_MEMSIZE = String(o.memsize);
  env.HOME = '/root';
  if (o.accel === 'tcg') env.LIBGUESTFS_BACKEND_SETTINGS = 'force_tcg';
  return env;
}

/** libguestfsEnv for a session under this config with the accel resolved for it. */
export const guestfsEnv = (config: Config, accel: Accel): Record<string, string> => libguestfsEnv({ memsize: config.guestfs.memsize, accel });

/**
 * [guestfs] accel as an accelerator: kvm and tcg as said; auto is KVM only
 * when root can open /dev/kvm and the probe booted a kernel under KVM with
 * libguestfs's options, as the launch account (qemu never runs a probe as
 * root). Without a usable launch account KVM is not probed, so TCG.
 */
export async function resolveAccel(config: Config, signal?: AbortSignal): Promise<{ accel: Accel; how: string }> {
  if (config.guestfs.accel !== 'auto') return { accel: config.guestfs.accel, how: '[guestfs] accel' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', how: '/dev/kvm is not usable' };
  }
  const v = await probeKvm(config, { shape: GUESTFS_SHAPE, account: () => resolveLaunchAccount(config, signal), signal });
  return { accel: v.accel, how: v.how };
}
