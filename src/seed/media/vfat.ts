// media = vfat: a FAT image labelled CIDATA (NoCloud's other label), made
// with mkfs.vfat and filled with mcopy, without mounting anything.
import { statSync } from 'node:fs';
import type { Config } from '../../config/schema.js';
import { runTool } from '../../tools/run.js';
import { fileNames, type SeedFiles } from '../files.js';

export async function makeVfat(config: Config, staging: string, files: SeedFiles, out: string, signal?: AbortSignal): Promise<void> {
  const t = { timeout: config.timeouts.tool * 1000, signal };
  const bytes = fileNames(files).reduce((n, f) => n + statSync(`${staging}/${f}`).size, 0);
  // KiB blocks: the files twice over plus room for FAT12's tables; 1 MiB at least.
  const blocks = Math.max(1024, Math.ceil((bytes * 2) / 1024) + 256);
  await runTool(config.tools.mkfs_vfat, ['-n', 'CIDATA', '-C', out, String(blocks)], { ...t, toolKey: 'mkfs_vfat' });
  for (const f of fileNames(files)) {
    // MTOOLS_SKIP_CHECK: the image is ours and fresh; no ~/.mtoolsrc is read as root.
    await runTool(config.tools.mcopy, ['-i', out, '-o', '--', `${staging}/${f}`, `::${f}`], { ...t, toolKey: 'mcopy', env: { MTOOLS_SKIP_CHECK: '1', HOME: '/nonexistent' } });
  }
}
