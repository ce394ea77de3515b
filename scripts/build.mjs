// CommonJS bundles, split so that each path parses only what it runs:
// - vtorque-prologue.cjs: the fast path (cli, config, #VM scanning), every job;
// - vtorque-heavy.cjs: the VM path, failures and commands;
// - vtorque-slurm.cjs: Slurm's Prolog/Epilog front (a Torque job never parses it);
// - vendor-yaml.cjs: when seeds or verdicts are written;
// - vendor-execa.cjs: only for a libguestfs session (a new image is inspected),
//   never by a VM job whose verdict is cached.
// Each is taken with require: import() of a .cjs makes Node lex it for export
// names first. One bundle made the non-VM prologue parse ~500 KB it never ran.
import { build } from 'esbuild';

const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'warning' };
const external = (name, filter, path) => ({
  name,
  setup(b) {
    b.onResolve({ filter }, () => ({ path, external: true }));
  },
});

await build({
  ...common,
  entryPoints: ['src/cli.ts'],
  outfile: 'dist/vtorque-prologue.cjs',
  plugins: [external('heavy', /(\/heavy\.js|vtorque-heavy\.cjs)$/, './vtorque-heavy.cjs'), external('slurm', /(\/slurm\/hook\.js|vtorque-slurm\.cjs)$/, './vtorque-slurm.cjs')],
});
await build({
  ...common,
  entryPoints: ['src/slurm/hook.ts'],
  outfile: 'dist/vtorque-slurm.cjs',
  plugins: [external('heavy', /(\/heavy\.js|vtorque-heavy\.cjs)$/, './vtorque-heavy.cjs'), external('slurm', /(\/slurm\/hook\.js|vtorque-slurm\.cjs)$/, './vtorque-slurm.cjs')],
});
await build({
  ...common,
  entryPoints: ['src/heavy.ts'],
  outfile: 'dist/vtorque-heavy.cjs',
  plugins: [external('slurm', /(\/slurm\/hook\.js|vtorque-slurm\.cjs)$/, './vtorque-slurm.cjs'), external('execa', /^(execa|\.\/vendor-execa\.cjs)$/, './vendor-execa.cjs'), external('yaml', /^(yaml|\.\/vendor-yaml\.cjs)$/, './vendor-yaml.cjs')],
});
await build({ ...common, stdin: { contents: "module.exports = require('execa');", resolveDir: '.' }, outfile: 'dist/vendor-execa.cjs' });
await build({ ...common, stdin: { contents: "module.exports = require('yaml');", resolveDir: '.' }, outfile: 'dist/vendor-yaml.cjs' });
// The job starter's VM side: its own small bundle, so a VM job's starter parses only the frame code and itself.
// `--slurm`: Slurm's job runner (bin/vtorque-slurm-run), the same VM side behind a wrapped batch script.
await build({
  ...common,
  stdin: { contents: "if (process.argv[2] === '--slurm') require('./src/slurm/run.ts').slurmRunMain(process.argv.slice(3)); else require('./src/torque/starter.ts').starterMain();", resolveDir: '.', loader: 'js' },
  outfile: 'dist/vtorque-starter.cjs',
});
// vsub, vTorque's submit command for users: its own bundle, so a user's submit never parses the prologue.
await build({ ...common, entryPoints: ['src/submit/vsub.ts'], outfile: 'dist/vsub.cjs' });
