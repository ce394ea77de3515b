// Whether libguestfs may use KVM on this node. Never assumed: a nested
// /dev/kvm can exist and still hang guest kernels, so `auto` probes once with
// a short deadline and keeps the answer per kernel release.
import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import type { Config } from '../config/schema.js';
import { runTool } from '../tools/run.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { accelMemoPath, layoutOf } from '../cache/layout.js';

export type Accel = 'kvm' | 'tcg';
const PROBE_SECONDS = 90;

/**
 * The environment every guestfish run gets: the direct backend (no libvirtd on
 * a compute node), root's HOME for supermin's appliance cache, the appliance's
 * memory, and TCG forced when KVM is not to be used. The probe gives neither
 * memory nor accel: it asks whether the default (KVM) launch works at all.
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

export async function resolveAccel(config: Config, signal?: AbortSignal): Promise<{ accel: Accel; how: string }> {
  if (config.guestfs.accel !== 'auto') return { accel: config.guestfs.accel, how: '[guestfs] accel' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', how: '/dev/kvm is not usable' };
  }
  const memo = accelMemoPath(layoutOf(config));
  try {
    const m = JSON.parse(readFileSync(memo, 'utf8')) as { kernel?: string; accel?: Accel };
    if (m.kernel === release() && (m.accel === 'kvm' || m.accel === 'tcg')) return { accel: m.accel, how: `probed earlier (${memo})` };
  } catch {
    /* no memo yet, or unreadable: probe */
  }
  const t0 = performance.now();
  const ok = await runTool(config.tools.guestfish, ['--ro', '-a', '/dev/null', 'run'], {
    timeout: PROBE_SECONDS * 1000, toolKey: 'guestfish', env: libguestfsEnv(), signal,
  }).then(() => true, () => false);
  const accel: Accel = ok ? 'kvm' : 'tcg';
  try {
    mkdirSync(config.paths.cache_dir, { recursive: true, mode: 0o755 });
    writeFileAtomic(memo, JSON.stringify({ kernel: release(), accel, probedAt: new Date().toISOString(), ms: Math.round(performance.now() - t0) }) + '\n', 0o644);
  } catch {
    /* the answer still holds for this run */
  }
  return { accel, how: `probed now in ${Math.round(performance.now() - t0)} ms` };
}
