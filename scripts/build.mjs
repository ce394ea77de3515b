// Two CommonJS bundles: the fast path (cli, config, #VM scanning) and, loaded
// only for VM jobs and failures, everything else. A single bundle made the
// non-VM prologue parse ~500 KB of pino/execa it never runs.
import { build } from 'esbuild';

const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'warning' };

await build({
  ...common,
  entryPoints: ['src/cli.ts'],
  outfile: 'dist/vtorque-prologue.cjs',
  plugins: [{
    name: 'heavy-is-separate',
    setup(b) {
      b.onResolve({ filter: /(\/heavy\.js|vtorque-heavy\.cjs)$/ }, () => ({ path: './vtorque-heavy.cjs', external: true }));
    },
  }],
});
await build({ ...common, entryPoints: ['src/heavy.ts'], outfile: 'dist/vtorque-heavy.cjs' });
