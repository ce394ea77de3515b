// Entry point: global options, subcommands, exit codes. Nothing else, and
// nothing heavy: every subcommand is imported only when it is chosen.
import { DEFAULT_CONFIG_FILE } from './config/peek.js';
import { HOOK_KINDS, type HookKind } from './core/engine.js';
import { EXIT_JOB_FAULT, EXIT_NODE_FAULT, EXIT_RUN, isVtorqueError, type ExitCode } from './core/errors.js';
import { processIO, type HookIO } from './core/io.js';
import { runHook } from './torque/hook.js';
import { VERSION } from './version.js';
import { heavy, slurmHook } from './lazy.js';

/** The exit code: ExitCode, or submit-check --vm-status's 10 for a VM job that passed. */
export async function main(argv: readonly string[], io: HookIO = processIO): Promise<number> {
  let configFile = DEFAULT_CONFIG_FILE;
  let configExplicit = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config') {
      const v = argv[++i];
      if (!v) return usage(io, '--config needs a FILE');
      configFile = v;
      configExplicit = true;
    } else if (a.startsWith('--config=')) {
      configFile = a.slice('--config='.length);
      configExplicit = true;
    } else if (a === '--help' || a === '-h') {
      io.out((await heavy()).helpFor(undefined) + '\n');
      return EXIT_RUN;
    } else if (a === '--version' || a === '-V') {
      io.out(`vtorque-prologue ${VERSION}\n`);
      return EXIT_RUN;
    } else break;
  }
  const cmd = argv[i];
  const rest = argv.slice(i + 1);
  if (cmd === undefined) return usage(io, 'no command given');
  if (cmd === 'help') {
    const h = (await heavy()).helpFor(rest[0]);
    if (!h) return usage(io, `no help for ${JSON.stringify(rest[0])}`);
    io.out(h + '\n');
    return EXIT_RUN;
  }
  if ((HOOK_KINDS as readonly string[]).includes(cmd)) {
    if (rest[0] === '--help' || rest[0] === '-h') {
      io.out((await heavy()).helpFor(cmd) + '\n');
      return EXIT_RUN;
    }
    return runHook(cmd as HookKind, rest, configFile, io);
  }
  if (cmd === 'slurm-prolog' || cmd === 'slurm-epilog') {
    if (rest[0] === '--help' || rest[0] === '-h') {
      io.out((await heavy()).helpFor(cmd) + '\n');
      return EXIT_RUN;
    }
    // Evaluated only on Slurm nodes: a Torque job's fast path pays nothing for it.
    const { runSlurmHook } = await slurmHook();
    return runSlurmHook(cmd, rest, configFile, io);
  }
  if (cmd === 'submit-check') {
    if (rest[0] === '--help' || rest[0] === '-h') {
      io.out((await heavy()).HELP['submit-check'] + '\n');
      return EXIT_RUN;
    }
    const { runSubmitCheck } = await heavy();
    return runSubmitCheck(rest, configFile, configExplicit, io);
  }
  if (cmd === 'check') return runCheck(rest, configFile, configExplicit, io);
  if (cmd === 'doctor') return (await heavy()).doctorCommand(rest, configFile, io, (await heavy()).HELP.doctor!);
  if (cmd === 'submit-filter') {
    if (rest[0] === '--help' || rest[0] === '-h') {
      io.out((await heavy()).HELP['submit-filter'] + '\n');
      return EXIT_RUN;
    }
    const { runSubmitFilter } = await import('./submit/filter.js');
    return runSubmitFilter({ argv: rest, configFile, configExplicit, env: process.env, inFd: 0, outFd: 1, err: io.err });
  }
  if (cmd === 'cache') return runCache(rest, configFile, io);
  if (cmd === '__append-as-owner') {
    const { appendAsOwner } = await heavy();
    return appendAsOwner(rest[0], rest[1]) === 0 ? EXIT_RUN : EXIT_NODE_FAULT;
  }
  return usage(io, `unknown command ${JSON.stringify(cmd)}`);
}

async function runCache(args: readonly string[], configFile: string, io: HookIO): Promise<ExitCode> {
  const action = args[0];
  if (action === undefined || action === '--help' || action === '-h') {
    io.out((await heavy()).HELP.cache + '\n');
    return action === undefined ? EXIT_NODE_FAULT : EXIT_RUN;
  }
  if (action !== 'list' && action !== 'gc' && action !== 'verify' && action !== 'evict') return usage(io, `cache: unknown action ${JSON.stringify(action)}; use list, gc, verify or evict`);
  const json = args.includes('--json');
  const operands = args.slice(1).filter((a) => a !== '--json');
  if (operands.some((a) => a.startsWith('-'))) return usage(io, `cache ${action}: unknown option ${JSON.stringify(operands.find((a) => a.startsWith('-')))}`);
  if (action === 'evict' ? operands.length !== 1 : operands.length !== 0) return usage(io, action === 'evict' ? 'cache evict needs one DIGEST' : `cache ${action} takes no operands`);
  try {
    const h = await heavy();
    const { config } = h.loadConfig(configFile);
    // The CLI is an edge: it creates the batch system's engine, as the hooks do for pbs_mom's and slurmd's runs.
    // No job here: [batch] system says which batch system judges a lease's job.
    const engine = config.batch.system === 'slurm' ? h.slurmEngine(undefined, process.env) : h.torqueEngine(process.env);
    return await h.runCacheCommand({ action, digest: operands[0], json, config, engine, io });
  } catch (e) {
    if (!isVtorqueError(e)) throw e;
    const { problemLine, line } = await heavy();
    io.err([line(e.message), ...e.problems.map((p) => problemLine(p))].join('\n') + '\n');
    return EXIT_NODE_FAULT;
  }
}

function usage(io: HookIO, why: string): ExitCode {
  io.err(`vtorque: ${why}\nRun 'vtorque-prologue --help' for the commands, or 'vtorque-prologue help COMMAND'.\n`);
  return EXIT_NODE_FAULT;
}

async function runCheck(args: readonly string[], configFile: string, configExplicit: boolean, io: HookIO): Promise<ExitCode> {
  let script: string | undefined;
  let queue: string | undefined;
  let render: string | undefined;
  let distro: string | undefined;
  let arch: string | undefined;
  const images: string[] = [];
  let json = false;
  for (let j = 0; j < args.length; j++) {
    const a = args[j]!;
    if (a === '--help' || a === '-h') {
      io.out((await heavy()).HELP.check + '\n');
      return EXIT_RUN;
    } else if (a === '--job') script = args[++j];
    else if (a === '--queue') queue = args[++j];
    else if (a === '--render') render = args[++j];
    else if (a === '--distro') distro = args[++j];
    else if (a === '--arch') arch = args[++j];
    else if (a === '--image') {
      while (args[j + 1] !== undefined && !args[j + 1]!.startsWith('--')) images.push(args[++j]!);
    } else if (a === '--json') json = true;
    else return usage(io, `check: unknown option ${JSON.stringify(a)}`);
  }
  if (render !== undefined && !script) return usage(io, 'check --render DIR goes with --job SCRIPT');
  if (!script && images.length === 0) return usage(io, 'check needs --job SCRIPT or --image NAME');
  try {
    const h = await heavy();
    if (images.length > 0) {
      const notes: string[] = [];
      const config = h.configForCheck(configFile, configExplicit, notes);
      for (const n of notes) io.err(`vtorque: ${n}\n`);
      const d = distro === undefined ? undefined : h.VM_KEYS.distro.type.parse(distro);
      if (d && !d.ok) return usage(io, `--distro: ${d.message}; ${d.fix}`);
      return await h.checkImages({ names: images, config, distro: d?.ok ? d.value : null, arch: arch ?? config.defaults.arch, json, io });
    }
    return await h.checkJob({ script: script!, configFile, configExplicit, queue, json, io, render });
  } catch (e) {
    const { problemLine, line } = await heavy();
    if (!isVtorqueError(e)) throw e;
    io.err([line(e.message), ...e.problems.map((p) => problemLine(p))].join('\n') + '\n');
    return e.exitCode === EXIT_JOB_FAULT ? EXIT_JOB_FAULT : EXIT_NODE_FAULT;
  }
}

