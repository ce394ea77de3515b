// media = inject: no medium; the files go into the VM's own overlay at
// /var/lib/cloud/seed/nocloud/, NoCloud's seed directory, with libguestfs.
// Only the overlay changes; the shared base image is never opened for writing.
import type { Config } from '../../config/schema.js';
import { guestfsEnv, resolveAccel } from '../../image/accel.js';
import { runTool } from '../../tools/run.js';
import { fileNames, type SeedFiles } from '../files.js';

export const SEED_DIR = '/var/lib/cloud/seed/nocloud';

export async function injectSeed(config: Config, staging: string, files: SeedFiles, overlay: string, signal?: AbortSignal): Promise<void> {
  const { accel } = await resolveAccel(config, signal);
  const env = guestfsEnv(config, accel);
  // Every path in this script is ours (staging is root's 0700 directory); the
  // guest's own files are never read back into it. A seed of an earlier start
  // is replaced: rm-rf first, so no stale network-config survives.
  const script = [
    `rm-rf ${SEED_DIR}`,
    `mkdir-p ${SEED_DIR}`,
    `chmod 0700 ${SEED_DIR}`,
    ...fileNames(files).flatMap((f) => [`upload ${staging}/${f} ${SEED_DIR}/${f}`, `chmod 0600 ${SEED_DIR}/${f}`]),
    '',
  ].join('\n');
  await runTool(config.tools.guestfish, ['--rw', '--format=qcow2', '-a', overlay, '-i'], {
    timeout: config.timeouts.tool * 1000, toolKey: 'guestfish', input: script, env, signal,
  });
}
