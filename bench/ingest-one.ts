// One cold ingest as its own process, for bench/cache: copyAndHash SRC DST, then prints the digest and peak RSS.
import { copyAndHash } from '../src/cache/copy.js';

const [src, dst] = process.argv.slice(2);
const r = await copyAndHash(src!, dst!);
process.stdout.write(JSON.stringify({ digest: r.digest, ms: r.ms, maxRssKiB: process.resourceUsage().maxRSS }) + '\n');
