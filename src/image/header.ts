// Our own reading of an image's first bytes, before any external tool touches
// the file. qemu-img trusts header fields (a backing file, an external data
// file) that let a crafted image read host files; we look for them first.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

export type DetectedFormat = 'qcow2' | 'qed' | 'vmdk' | 'luks' | 'iso' | 'raw';

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
  size: number;
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
const QED_MAGIC = 0x00444551; // "QED\0" little-endian
const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
const ISO_OFFSET = 0x8001;
const KNOWN_INCOMPATIBLE = 0b11111n; // dirty, corrupt, external data, compression type, extended L2

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

export function parseHeader(head: Buffer, isoProbe: Buffer, size: number): HeaderFacts {
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC) {
    if (head.length < 72) return { format: 'qcow2', size, qcow2: truncatedQcow2() };
    const version = head.readUInt32BE(4);
    const incompatible = version >= 3 && head.length >= 80 ? head.readBigUInt64BE(72) : 0n;
    return {
      format: 'qcow2',
      size,
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
  if (head.length >= 4 && head.subarray(0, 4).toString('latin1') === 'KDMV') return { format: 'vmdk', size };
  if (head.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile') return { format: 'vmdk', size };
  if (head.length >= 6 && head.subarray(0, 6).equals(LUKS_MAGIC)) return { format: 'luks', size };
  if (isoProbe.toString('latin1') === 'CD001') return { format: 'iso', size };
  return { format: 'raw', size };
}

function truncatedQcow2() {
  return { version: 0, backingFileOffset: 0, backingFileSize: 0, cryptMethod: 0, incompatibleFeatures: 0n, externalDataFile: false, corruptBit: true, unknownIncompatible: 0n };
}

/** Reads the header of an already authorised regular file (no symlinks, no FIFOs). */
export function readHeader(path: string): HeaderFacts {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const size = fstatSync(fd).size;
    return parseHeader(readAt(fd, 512, 0), readAt(fd, 5, ISO_OFFSET), size);
  } finally {
    closeSync(fd);
  }
}
