// The agent channel's framing: whatever way the stream splits or joins the
// bytes, the decoder gives back exactly the frames that were encoded, and it
// refuses what a broken or hostile peer could send.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { FRAME, FrameDecoder, MAX_PAYLOAD, ProtocolError, encodeFrame, parseExit, parseReady, type Frame, type FrameType } from '../src/launch/protocol.js';

const sample: { type: FrameType; payload: Buffer }[] = [
  { type: 'H', payload: Buffer.alloc(0) },
  { type: 'R', payload: Buffer.from('{"hostname":"vnode01","agent":1}') },
  { type: 'S', payload: Buffer.from('#!/bin/bash\necho "héllo"\nexit 3\n') },
  { type: 'I', payload: Buffer.alloc(0) },
  { type: 'O', payload: randomBytes(70_000) },
  { type: 'E', payload: Buffer.from([0, 1, 2, 0xff, 0x0a]) },
  { type: 'K', payload: Buffer.from('TERM') },
  { type: 'X', payload: Buffer.from('{"status":3,"signal":null}') },
  { type: '!', payload: Buffer.from('the job script already ran') },
];
const stream = Buffer.concat(sample.map((f) => encodeFrame(f.type, f.payload)));
const plain = (fs: Frame[]) => fs.map((f) => ({ type: f.type, payload: f.payload.toString('hex') }));
const want = plain(sample);

t.test('the frame layout: one type byte, a 4-byte big-endian length, the payload', async (t) => {
  t.same([...encodeFrame('H')], [0x48, 0, 0, 0, 0]);
  t.same([...encodeFrame('K', 'TERM')], [0x4b, 0, 0, 0, 4, 0x54, 0x45, 0x52, 0x4d]);
  t.same([...encodeFrame('O', Buffer.alloc(0x010203))].slice(0, 5), [0x4f, 0, 1, 2, 3], 'the length is big-endian');
  t.same(Object.values(FRAME).sort(), ['!', 'E', 'H', 'I', 'K', 'O', 'R', 'S', 'X'], 'exactly the spec\'s nine types');
});

t.test('one push of the whole stream, one byte at a time, and every single split point give the same frames', async (t) => {
  t.same(plain(new FrameDecoder().push(stream)), want, 'all at once');
  const d = new FrameDecoder();
  const bytewise: Frame[] = [];
  for (let i = 0; i < stream.length; i++) bytewise.push(...d.push(stream.subarray(i, i + 1)));
  t.same(plain(bytewise), want, 'one byte at a time');
  t.equal(d.pending, 0, 'nothing left over at the end');
  let bad = 0;
  for (let cut = 0; cut <= stream.length; cut += cut < 200 ? 1 : 997) {
    const e = new FrameDecoder();
    const got = [...e.push(stream.subarray(0, cut)), ...e.push(stream.subarray(cut))];
    if (JSON.stringify(plain(got)) !== JSON.stringify(want)) bad++;
  }
  t.equal(bad, 0, 'split in two anywhere (every offset in the headers, then every 997 bytes)');
  for (let seed = 1; seed <= 20; seed++) {
    const e = new FrameDecoder();
    const got: Frame[] = [];
    let at = 0;
    let x = seed;
    while (at < stream.length) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const n = 1 + (x % 9000);
      got.push(...e.push(stream.subarray(at, at + n)));
      at += n;
    }
    if (JSON.stringify(plain(got)) !== JSON.stringify(want)) bad++;
  }
  t.equal(bad, 0, 'twenty pseudo-random chunkings');
});

t.test('a payload handed out does not change when the decoder is fed more', async (t) => {
  const d = new FrameDecoder();
  const [f] = d.push(Buffer.concat([encodeFrame('O', 'abc'), encodeFrame('E', 'x').subarray(0, 3)]));
  d.push(encodeFrame('E', 'x').subarray(3));
  t.equal(f!.payload.toString(), 'abc');
});

t.test('unknown types and oversize lengths are refused, and the decoder stays refused', async (t) => {
  const d = new FrameDecoder();
  t.throws(() => d.push(Buffer.from([0x5a, 0, 0, 0, 0])), new ProtocolError('unknown frame type 0x5a'));
  t.throws(() => d.push(encodeFrame('H')), ProtocolError, 'a byte stream cannot be resynchronised: every later push throws');
  const big = Buffer.alloc(5);
  big.write('S', 0, 'latin1');
  big.writeUInt32BE(MAX_PAYLOAD + 1, 1);
  t.throws(() => new FrameDecoder().push(big), /over the 16777216-byte limit/, 'a length over 16 MiB is refused from the header alone');
  const edge = Buffer.alloc(5);
  edge.write('S', 0, 'latin1');
  edge.writeUInt32BE(MAX_PAYLOAD, 1);
  const e = new FrameDecoder();
  t.same(e.push(edge), [], 'exactly 16 MiB is allowed (waits for the payload)');
  t.equal(e.pending, 5);
  t.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 0, 0])), /unknown frame type 0x00/, 'a NUL type byte too');
  t.throws(() => encodeFrame('Z' as FrameType), /unknown frame type/);
  t.throws(() => encodeFrame('HH' as FrameType), /unknown frame type/);
  t.throws(() => encodeFrame('O', Buffer.alloc(MAX_PAYLOAD + 1)), /over the/);
});

t.test('R and X payloads are checked', async (t) => {
  t.same(parseReady(Buffer.from('{"hostname":"vnode01","agent":1}')), { hostname: 'vnode01', agent: 1 });
  t.same(parseExit(Buffer.from('{"status":143,"signal":"TERM"}')), { status: 143, signal: 'TERM' });
  t.same(parseExit(Buffer.from('{"status":0,"signal":null}')), { status: 0, signal: null });
  for (const bad of ['', 'null', '[]', '{"status":256,"signal":null}', '{"status":-1,"signal":null}', '{"status":1.5,"signal":null}', '{"status":1,"signal":"$(x)"}', '{"status":"0","signal":null}']) {
    t.throws(() => parseExit(Buffer.from(bad)), ProtocolError, `X ${bad || '(empty)'} refused`);
  }
  t.throws(() => parseReady(Buffer.from('{"hostname":1,"agent":1}')), ProtocolError);
});
