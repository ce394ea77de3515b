// Whether libguestfs may use KVM on this node. Never assumed: a nested
// /dev/kvm can exist and still hang guest kernels, so `auto` probes once with
// a short deadline and keeps the answer per kernel release.
import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import type { Config } from '../config/schema.js';
import { runTool } from '../tools/run.js';
import { writeFileAtomic } from '../tools/atomic.js';

export type Accel = 'kvm' | 'tcg';
const PROBE_SECONDS = 90;

export async function resolveAccel(config: Config, signal?: AbortSignal): Promise<{ accel: Accel; how: string }> {
  if (config.guestfs.accel !== 'auto') return { accel: config.guestfs.accel, how: '[guestfs] accel' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', how: '/dev/kvm is not usable' };
  }
  const memo = `${config.paths.cache_dir}/accel.json`;
  try {
    const m = JSON.parse(readFileSync(memo, 'utf8')) as { kernel?: string; accel?: Accel };
    if (m.kernel === release() && (m.accel === 'kvm' || m.accel === 'tcg')) return { accel: m.accel, how: `probed earlier (${memo})` };
  } catch {
    /* no memo yet, or unreadable: probe */
  }
  const t0 = performance.now();
  const ok = await runTool(config.tools.guestfish, ['--ro', '-a', '/dev/null', 'run'], {
    timeout: PROBE_SECONDS * 1000, toolKey: 'guestfish', env: { LIBGUESTFS_BACKEND: 'direct', HOME: '/root' }, signal,
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
