// media = iso: ISO9660 with volume id "cidata" (what NoCloud looks for), Joliet
// and Rock Ridge, from genisoimage or xorriso's mkisofs emulation.
import { basename } from 'node:path';
import type { Config } from '../../config/schema.js';
import { runTool } from '../../tools/run.js';
import { fileNames, type SeedFiles } from '../files.js';

export async function makeIso(config: Config, staging: string, files: SeedFiles, out: string, signal?: AbortSignal): Promise<void> {
  const tool = config.tools.mkisofs;
  const pre = basename(tool).startsWith('xorriso') ? ['-as', 'mkisofs'] : [];
  // Graft points name each file explicitly, so nothing else in staging can slip in.
  const names = fileNames(files).map((n) => `${n}=${staging}/${n}`);
  await runTool(tool, [...pre, '-quiet', '-output', out, '-volid', 'cidata', '-joliet', '-rock', '-input-charset', 'utf-8', '-graft-points', ...names], {
    timeout: config.timeouts.tool * 1000, toolKey: 'mkisofs', signal, stdout: 'ignore',
  });
}
