// The agent channel between the host (prologue's READY check, the job
// starter) and the guest agent (src/seed/agent.ts): one byte of type, four
// bytes of big-endian length, the payload. The same framing both ways, over a
// virtio-serial port that is a byte stream: a frame may arrive in any number
// of pieces, and several frames in one piece.

/** Frame types and who sends them. */
export const FRAME = {
  /** host -> guest: hello, empty payload. */
  hello: 'H',
  /** guest -> host: ready, JSON {"hostname", "agent": 1}. */
  ready: 'R',
  /** host -> guest: the whole job script, once. */
  script: 'S',
  /** host -> guest: stdin for the script; empty = EOF. */
  stdin: 'I',
  /** guest -> host: a stdout chunk. */
  stdout: 'O',
  /** guest -> host: a stderr chunk. */
  stderr: 'E',
  /** guest -> host: the script ended, JSON {"status": 0-255, "signal": name | null}. */
  exit: 'X',
  /** host -> guest: signal the script's process group, payload the signal name ("TERM"). */
  kill: 'K',
  /** guest -> host: refused or failed, UTF-8 text. */
  error: '!',
} as const;

export type FrameType = (typeof FRAME)[keyof typeof FRAME];

const TYPES: ReadonlySet<number> = new Set(Object.values(FRAME).map((c) => c.charCodeAt(0)));

export const HEADER_BYTES = 5;
/** A script or an output chunk is far below this; a larger length is a broken or hostile peer. */
export const MAX_PAYLOAD = 16 * 1024 * 1024;

export interface Frame {
  type: FrameType;
  payload: Buffer;
}

/** Thrown by FrameDecoder.push; the stream cannot be resynchronised after it. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

export function encodeFrame(type: FrameType, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  if (!TYPES.has(type.charCodeAt(0)) || type.length !== 1) throw new ProtocolError(`unknown frame type ${JSON.stringify(type)}`);
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length > MAX_PAYLOAD) throw new ProtocolError(`a ${type} frame of ${body.length} bytes is over the ${MAX_PAYLOAD}-byte limit`);
  const head = Buffer.alloc(HEADER_BYTES);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * Streaming decoder: push() whatever the stream gave, get the frames it
 * completed. Holds at most one partial frame. After a ProtocolError it stays
 * broken (every later push throws): a byte stream has no frame boundary to
 * find again, so the connection must be dropped.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private size = 0;
  private broken: ProtocolError | undefined;

  push(chunk: Buffer): Frame[] {
    if (this.broken) throw this.broken;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.size += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.size >= HEADER_BYTES) {
      const head = this.peek(HEADER_BYTES);
      const code = head[0]!;
      if (!TYPES.has(code)) return this.fail(`unknown frame type 0x${code.toString(16).padStart(2, '0')}`);
      const length = head.readUInt32BE(1);
      if (length > MAX_PAYLOAD) return this.fail(`a frame announces ${length} bytes, over the ${MAX_PAYLOAD}-byte limit`);
      if (this.size < HEADER_BYTES + length) break;
      const whole = this.take(HEADER_BYTES + length);
      frames.push({ type: String.fromCharCode(code) as FrameType, payload: whole.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  /** Bytes of a frame not yet complete (0 at a frame boundary): a peer that hangs up mid-frame left this many. */
  get pending(): number {
    return this.size;
  }

  private fail(why: string): never {
    this.broken = new ProtocolError(why);
    this.chunks = [];
    this.size = 0;
    throw this.broken;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    // copy: the caller keeps the payload, which must not pin the rest of the read buffer.
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.size = rest.length;
    return out;
  }
}

/** The 'R' payload. */
export interface ReadyInfo {
  hostname: string;
  agent: number;
}

/** The 'X' payload. */
export interface ExitInfo {
  status: number;
  signal: string | null;
}

export function parseReady(payload: Buffer): ReadyInfo {
  const v = parseJson(payload, 'R');
  if (typeof v.hostname !== 'string' || typeof v.agent !== 'number') throw new ProtocolError('an R frame without hostname and agent');
  return { hostname: v.hostname, agent: v.agent };
}

export function parseExit(payload: Buffer): ExitInfo {
  const v = parseJson(payload, 'X');
  const status = v.status;
  const signal = v.signal;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 0 || status > 255) throw new ProtocolError('an X frame without a status 0-255');
  if (signal !== null && (typeof signal !== 'string' || !/^[A-Z0-9]{1,10}$/.test(signal))) throw new ProtocolError('an X frame with a malformed signal name');
  return { status, signal };
}

function parseJson(payload: Buffer, type: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch (e) {
    throw new ProtocolError(`an ${type} frame whose payload is not JSON`, { cause: e });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ProtocolError(`an ${type} frame whose payload is not a JSON object`);
  return v as Record<string, unknown>;
}
