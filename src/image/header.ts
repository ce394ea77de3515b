// Our own reading of an image's first bytes, before any external tool touches
// the file. qemu-img trusts header fields (a backing file, an external data
// file, a VMDK's extent list) that let a crafted image read host files; we
// look for them first.
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

export type DetectedFormat = 'qcow2' | 'qed' | 'vmdk' | 'luks' | 'iso' | 'raw';

/** One line of a VMDK descriptor's extent list: `RW 2048 SPARSE "name"`. */
export interface VmdkExtent {
  access: string;
  sectors: number;
  type: string;
  file?: string;
}

export interface VmdkFacts {
  /** `text`: a descriptor file, every extent another file; `sparse`: a "KDMV" binary file. */
  kind: 'text' | 'sparse';
  /** From the descriptor embedded in a sparse file (or the text itself); [] when there is none. */
  extents: VmdkExtent[];
  createType?: string;
  /** The descriptor names a parent: a backing file by another name. */
  parent: boolean;
  hasDescriptor: boolean;
}

export interface HeaderFacts {
  format: DetectedFormat;
  /** qcow2 only. */
  qcow2?: {
    version: number;
    backingFileOffset: number;
    backingFileSize: number;
    cryptMethod: number;
    incompatibleFeatures: bigint;
    /** Bit 2 of the incompatible features: data lives in another file. */
    externalDataFile: boolean;
    /** Bits we do not know: refuse rather than guess what they change. */
    unknownIncompatible: bigint;
    corruptBit: boolean;
  };
  vmdk?: VmdkFacts;
  /** File size in bytes. */
  size: number;
  /** The disk size the header declares (raw: the file size); undefined where the header says none. */
  virtualSize?: number;
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
const QED_MAGIC = 0x00444551; // "QED\0" little-endian
const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
const ISO_OFFSET = 0x8001;
const KNOWN_INCOMPATIBLE = 0b11111n; // dirty, corrupt, external data, compression type, extended L2
/** qemu reads at most this much of an embedded VMDK descriptor. */
const VMDK_DESC_MAX = 20 * 1024;

function readAt(fd: number, len: number, pos: number): Buffer {
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

async function readAtAsync(fh: FileHandle, len: number, pos: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** Where a sparse VMDK keeps its embedded descriptor, in bytes; undefined when it has none. */
function vmdkDescriptorAt(head: Buffer): { pos: number; len: number } | undefined {
  if (head.length < 44 || head.subarray(0, 4).toString('latin1') !== 'KDMV') return undefined;
  const offset = head.readBigUInt64LE(28);
  const sectors = head.readBigUInt64LE(36);
  if (offset === 0n || sectors === 0n) return undefined;
  return { pos: Number(offset) * 512, len: Math.min(Number(sectors) * 512, VMDK_DESC_MAX) };
}

/** The lines of a VMDK descriptor that decide which files it reads. */
export function parseVmdkDescriptor(text: string): Pick<VmdkFacts, 'extents' | 'createType' | 'parent'> {
  const extents: VmdkExtent[] = [];
  let createType: string | undefined;
  let parent = false;
  for (const raw of text.replace(/\0[\s\S]*$/, '').split(/\r?\n/)) {
    const l = raw.trim();
    const e = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?/.exec(l);
    if (e) extents.push({ access: e[1]!, sectors: Number(e[2]), type: e[3]!, file: e[4] });
    const c = /^createType\s*=\s*"([^"]*)"/.exec(l);
    if (c) createType = c[1];
    if (/^parentFileNameHint\s*=/.test(l)) parent = true;
  }
  return { extents, createType, parent };
}

export function parseHeader(head: Buffer, isoProbe: Buffer, size: number, vmdkDescriptor?: Buffer): HeaderFacts {
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC) {
    if (head.length < 72) return { format: 'qcow2', size, qcow2: truncatedQcow2() };
    const version = head.readUInt32BE(4);
    const incompatible = version >= 3 && head.length >= 80 ? head.readBigUInt64BE(72) : 0n;
    return {
      format: 'qcow2',
      size,
      virtualSize: Number(head.readBigUInt64BE(24)),
      qcow2: {
        version,
        backingFileOffset: Number(head.readBigUInt64BE(8)),
        backingFileSize: head.readUInt32BE(16),
        cryptMethod: head.readUInt32BE(32),
        incompatibleFeatures: incompatible,
        externalDataFile: (incompatible & 0b100n) !== 0n,
        corruptBit: (incompatible & 0b10n) !== 0n,
        unknownIncompatible: incompatible & ~KNOWN_INCOMPATIBLE,
      },
    };
  }
  if (head.length >= 4 && head.readUInt32LE(0) === QED_MAGIC) return { format: 'qed', size };
  if (head.length >= 4 && head.subarray(0, 4).toString('latin1') === 'KDMV') {
    const desc = vmdkDescriptor && vmdkDescriptor.length > 0 ? parseVmdkDescriptor(vmdkDescriptor.toString('latin1')) : { extents: [], parent: false };
    const virtualSize = head.length >= 20 ? Number(head.readBigUInt64LE(12)) * 512 : undefined;
    return { format: 'vmdk', size, virtualSize, vmdk: { kind: 'sparse', hasDescriptor: vmdkDescriptorAt(head) !== undefined, ...desc } };
  }
  if (head.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile') {
    return { format: 'vmdk', size, vmdk: { kind: 'text', hasDescriptor: true, ...parseVmdkDescriptor(head.toString('latin1')) } };
  }
  if (head.length >= 6 && head.subarray(0, 6).equals(LUKS_MAGIC)) return { format: 'luks', size };
  if (isoProbe.toString('latin1') === 'CD001') return { format: 'iso', size };
  return { format: 'raw', size, virtualSize: size };
}

function truncatedQcow2() {
  return { version: 0, backingFileOffset: 0, backingFileSize: 0, cryptMethod: 0, incompatibleFeatures: 0n, externalDataFile: false, corruptBit: true, unknownIncompatible: 0n };
}

/** The file's identity as authorised; a different file behind the same path is refused. */
export interface Identity {
  dev: number;
  ino: number;
  uid: number;
}

export class NotTheAuthorisedFile extends Error {}

/** Throws unless st is a regular file with the authorised identity. */
export function assertIdentity(st: Pick<Stats, 'dev' | 'ino' | 'uid' | 'isFile'>, expect: Identity | undefined, path: string): void {
  if (!st.isFile()) throw new NotTheAuthorisedFile(`${path} is no longer a regular file`);
  if (expect && (st.dev !== expect.dev || st.ino !== expect.ino || st.uid !== expect.uid)) throw new NotTheAuthorisedFile(`${path} was replaced after it was checked`);
}

/** Reads the header of an already authorised regular file (no symlinks, no FIFOs), checking it is still that file. */
export function readHeader(path: string, expect?: Identity): HeaderFacts {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    assertIdentity(st, expect, path);
    const head = readAt(fd, 512, 0);
    const at = vmdkDescriptorAt(head);
    return parseHeader(head, readAt(fd, 5, ISO_OFFSET), st.size, at ? readAt(fd, at.len, at.pos) : undefined);
  } finally {
    closeSync(fd);
  }
}

/** The same, from a descriptor the caller opened and checked. */
export async function readHeaderFrom(fh: FileHandle, size: number): Promise<HeaderFacts> {
  const head = await readAtAsync(fh, 512, 0);
  const at = vmdkDescriptorAt(head);
  return parseHeader(head, await readAtAsync(fh, 5, ISO_OFFSET), size, at ? await readAtAsync(fh, at.len, at.pos) : undefined);
}
