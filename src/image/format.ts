// Format safety in two layers: our own header reading, then qemu-img as a
// cross-check. Either layer alone can be fooled; together they must agree.
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import type { Problem } from '../core/errors.js';
import { runTool } from '../tools/run.js';
import type { AuthorisedImage } from './authorise.js';
import type { HeaderFacts, VmdkFacts } from './header.js';

export interface FormatVerdict {
  format: 'qcow2' | 'raw' | 'vmdk';
  virtualSize: number;
  actualSize: number;
  /** qemu-img check found leaked clusters: harmless, but worth a log line. */
  leaks?: number;
}

interface QemuInfo {
  format?: string;
  'virtual-size'?: number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; encrypt?: unknown; corrupt?: boolean; 'create-type'?: string; extents?: { filename?: string }[] } };
  encrypted?: boolean;
}

const hazard = (img: AuthorisedImage, id: string, message: string, fix: string): Problem => ({ id, where: img.name, message, fix });

/** Layer 1: decide from the bytes alone, before any tool parses the file. */
export function checkHeader(img: AuthorisedImage, h: HeaderFacts, config: Config): { problems: Problem[]; format?: FormatVerdict['format'] } {
  const problems: Problem[] = [];
  const allowed = config.policy.formats as readonly string[];
  const rebuild = 'convert it to a standalone image: qemu-img convert -O qcow2 SRC DST';
  switch (h.format) {
    case 'qed':
      problems.push(hazard(img, 'format-not-allowed', 'is a QED image; QED is not accepted', rebuild));
      break;
    case 'luks':
      problems.push(hazard(img, 'encrypted', 'is LUKS-encrypted; the node cannot open it without a key', 'use an unencrypted image'));
      break;
    case 'iso':
      problems.push(hazard(img, 'format-not-allowed', 'is an ISO 9660 (CD) image, not a disk image', 'use a qcow2 or raw disk image'));
      break;
    case 'vmdk':
      if (!allowed.includes('vmdk')) problems.push(hazard(img, 'format-not-allowed', 'is a VMDK image; this site does not accept VMDK', `${rebuild} (or the admin adds vmdk to [policy] formats)`));
      else problems.push(...vmdkHazards(img, h.vmdk!));
      break;
    case 'qcow2': {
      const q = h.qcow2!;
      if (q.version !== 2 && q.version !== 3) problems.push(hazard(img, 'corrupt', `has qcow2 version ${q.version}; only 2 and 3 exist`, rebuild));
      if (q.backingFileOffset !== 0 || q.backingFileSize !== 0) {
        problems.push(hazard(img, 'backing-file', 'is a qcow2 overlay with a backing file; it would read another file on the node', rebuild));
      }
      if (q.externalDataFile) problems.push(hazard(img, 'data-file', 'keeps its data in an external data file; it would read another file on the node', rebuild));
      if (q.cryptMethod !== 0) problems.push(hazard(img, 'encrypted', 'is encrypted', 'use an unencrypted image'));
      if (q.corruptBit) problems.push(hazard(img, 'corrupt', 'is marked corrupt in its qcow2 header', 'repair it with qemu-img check -r all, or rebuild it'));
      if (q.unknownIncompatible !== 0n) problems.push(hazard(img, 'format-not-allowed', `uses qcow2 features this checker does not know (0x${q.unknownIncompatible.toString(16)})`, rebuild));
      break;
    }
    case 'raw':
      break;
  }
  const fmt = h.format === 'qcow2' || h.format === 'raw' || h.format === 'vmdk' ? h.format : undefined;
  if (fmt && img.declaredFormat && img.declaredFormat !== fmt) {
    problems.push(hazard(img, 'format-mismatch', `is named as ${img.declaredFormat} but is really ${fmt}`, `rename it to match its format, or convert it: qemu-img convert -O ${img.declaredFormat} SRC DST`));
  }
  if (fmt && !allowed.includes(fmt) && !(fmt === 'vmdk')) {
    problems.push(hazard(img, 'format-not-allowed', `is ${fmt}; this site accepts ${allowed.join(', ')}`, `convert it: qemu-img convert -O ${allowed[0] ?? 'qcow2'} SRC DST`));
  }
  if (fmt) problems.push(...sizeHazards(img, h, config));
  return { problems, format: problems.length === 0 ? fmt : undefined };
}

/** Metadata a qcow2 or sparse VMDK may add to its virtual size, and then some: internal snapshots and padding are refused. */
const slack = (virtual: number) => virtual + Math.max(64 * 1024 * 1024, virtual / 8);

/**
 * The size from the header alone, so that an image no node would take is
 * refused before a byte of it is hashed or copied (raw: the file size is the
 * virtual size; qcow2, VMDK: the declared size, and a file much larger than it).
 */
export function sizeHazards(img: AuthorisedImage, h: HeaderFacts, config: Config): Problem[] {
  const out: Problem[] = [];
  const max = config.policy.max_virtual_size;
  const smaller = 'use a smaller image, or ask your admin to raise [policy] max_virtual_size';
  if (h.virtualSize === undefined) return out;
  if (h.virtualSize > max) {
    out.push(hazard(img, 'too-large', `declares a virtual disk of ${formatSize(h.virtualSize)}, more than this site allows (${formatSize(max)})`, smaller));
  } else if (h.format !== 'raw' && h.size > slack(h.virtualSize)) {
    out.push(hazard(img, 'too-large', `is a ${formatSize(h.size)} file for a ${formatSize(h.virtualSize)} virtual disk (internal snapshots or padding)`, 'write a compact copy and use that: qemu-img convert -O qcow2 SRC DST'));
  }
  return out;
}

/**
 * A VMDK descriptor names extents: files qemu-img, libguestfs and the VM would
 * open on the node. Only a single-file sparse VMDK is accepted: a "KDMV" file
 * whose embedded descriptor lists one extent, itself (a bare name, as qemu-img
 * writes it), and no parent.
 */
function vmdkHazards(img: AuthorisedImage, v: VmdkFacts): Problem[] {
  const fix = 'make it a single file: qemu-img convert -O vmdk -o subformat=monolithicSparse SRC DST (or qemu-img convert -O qcow2 SRC DST)';
  if (v.kind === 'text') return [hazard(img, 'vmdk-extent', 'is a VMDK descriptor file: its data is in other files, which the node would read', fix)];
  if (!v.hasDescriptor) return [hazard(img, 'vmdk-extent', 'is a VMDK without an embedded descriptor', fix)];
  const out: Problem[] = [];
  const [only, ...more] = v.extents;
  if (!only || more.length > 0 || only.type !== 'SPARSE' || !only.file || only.file.includes('/')) {
    const named = v.extents.map((e) => `${e.type} ${JSON.stringify(e.file ?? '')}`).join(', ') || 'none';
    out.push(hazard(img, 'vmdk-extent', `lists extents other than itself (${named}); the node would read those files`, fix));
  }
  if (v.createType !== 'monolithicSparse' && v.createType !== 'streamOptimized') {
    out.push(hazard(img, 'vmdk-extent', `is a VMDK of type ${JSON.stringify(v.createType ?? '')}; only monolithicSparse and streamOptimized are single files`, fix));
  }
  if (v.parent) out.push(hazard(img, 'backing-file', 'is a VMDK with a parent (parentFileNameHint); it would read another file on the node', fix));
  return out;
}

/** Layer 2: qemu-img, always with -f, under prlimit, and it must agree with layer 1. */
export async function checkWithQemuImg(img: AuthorisedImage, format: FormatVerdict['format'], config: Config, signal?: AbortSignal): Promise<{ problems: Problem[]; verdict?: FormatVerdict }> {
  const limited = (args: string[]) => [
    `--as=${config.limits.qemu_img_memory}`, `--cpu=${config.limits.qemu_img_cpu}`, config.tools.qemu_img, ...args,
  ];
  const opts = { timeout: config.timeouts.tool * 1000, toolKey: 'qemu_img', signal, maxBuffer: 16 * 1024 * 1024 };
  const info = await runTool(config.tools.prlimit, limited(['info', '-f', format, '--output=json', '--force-share', img.path]), opts).catch((e) => {
    // qemu-img refusing to parse the file as the format both layers agree on: the image is broken, not the node.
    if ((e as { toolExitCode?: number }).toolExitCode === 1) return undefined;
    throw e;
  });
  if (!info) return { problems: [hazard(img, 'corrupt', `qemu-img cannot read it as ${format}`, 'rebuild the image')] };
  let j: QemuInfo;
  try {
    j = JSON.parse(info.stdout) as QemuInfo;
  } catch {
    return { problems: [hazard(img, 'corrupt', 'qemu-img gave no readable description of it', 'rebuild the image')] };
  }
  const problems: Problem[] = [];
  if (j.format !== format) problems.push(hazard(img, 'format-mismatch', `qemu-img reads it as ${String(j.format)}, not ${format}`, 'rebuild the image'));
  if (j['backing-filename'] || j['full-backing-filename']) problems.push(hazard(img, 'backing-file', 'has a backing file (qemu-img)', 'convert it to a standalone image'));
  if (j['format-specific']?.data?.['data-file']) problems.push(hazard(img, 'data-file', 'has an external data file (qemu-img)', 'convert it to a standalone image'));
  if (j.encrypted || j['format-specific']?.data?.encrypt) problems.push(hazard(img, 'encrypted', 'is encrypted (qemu-img)', 'use an unencrypted image'));
  if (format === 'vmdk') {
    const extents = j['format-specific']?.data?.extents;
    if (!Array.isArray(extents) || extents.length !== 1 || extents[0]?.filename !== img.path) {
      const named = Array.isArray(extents) ? extents.map((e) => JSON.stringify(e?.filename ?? '')).join(', ') : 'none';
      problems.push(hazard(img, 'vmdk-extent', `has extents other than itself (qemu-img: ${named})`, 'make it a single file: qemu-img convert -O vmdk -o subformat=monolithicSparse SRC DST'));
    }
  }
  const vsize = j['virtual-size'] ?? 0;
  if (vsize > config.policy.max_virtual_size) {
    problems.push(hazard(img, 'too-large', `declares a virtual disk of ${formatSize(vsize)}, more than this site allows (${formatSize(config.policy.max_virtual_size)})`, 'use a smaller image, or ask your admin to raise [policy] max_virtual_size'));
  }
  let leaks: number | undefined;
  if (format === 'qcow2' && problems.length === 0) {
    // Exit 2: corruption; 3: leaked clusters only (harmless); 1: could not check.
    const c = await runTool(config.tools.prlimit, limited(['check', '-f', 'qcow2', '--output=json', '--force-share', img.path]), { ...opts, okExitCodes: [1, 2, 3] });
    if (c.exitCode === 2 || c.exitCode === 1) {
      let detail = '';
      try {
        const cj = JSON.parse(c.stdout) as { corruptions?: number };
        if (cj.corruptions) detail = ` (${cj.corruptions} corruptions)`;
      } catch {
        /* qemu-img check may print nothing parseable for badly broken files */
      }
      problems.push(hazard(img, 'corrupt', `fails qemu-img check${detail}`, 'repair it with qemu-img check -r all on a copy, or rebuild it'));
    } else if (c.exitCode === 3) {
      try {
        leaks = (JSON.parse(c.stdout) as { leaks?: number }).leaks;
      } catch {
        leaks = undefined;
      }
    }
  }
  if (problems.length > 0) return { problems };
  return { problems, verdict: { format, virtualSize: vsize, actualSize: j['actual-size'] ?? img.stat.size, leaks } };
}
