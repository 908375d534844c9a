/**
 * keymux command line: `keymux --config FILE [--check]` runs the proxy; `keymux SUBCOMMAND ...` runs one of the
 * operator tools in src/cli/ (import-twemproxy, plan, top), each in a file of its own that returns an exit code.
 * Running the proxy: loads and validates the config (a bad config is printed with file and line for every
 * problem, and keymux exits non-zero), starts the Proxy, and wires signals: SIGHUP re-reads the config file (so
 * do changes to the file, watched by the proxy; a bad file is logged and the running config stays), SIGTERM/SIGINT
 * drain (stop accepting, finish in-flight requests within a grace period, exit 0).
 */
import cluster from 'node:cluster';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile } from './config/load.js';
import type { KeymuxConfig } from './config/schema.js';
import { Proxy } from './proxy.js';
import { LOG_FORMATS, rootLogger, setLogFormat, setLogLevel, type LogFormat } from './log.js';
import { workerCount } from './workers/protocol.js';

const USAGE = `usage: keymux --config FILE [--check] [--no-watch] [--log-format json|pretty]
       keymux import-twemproxy NUTCRACKER.YML [--pool NAME] > keymux.yaml
       keymux plan --config NEW.YAML [--against http://ADMIN | --current OLD.YAML] [--json]
       keymux top [--admin ADDRESS] [--token-file FILE] [--once]

  -c, --config FILE   YAML configuration (see config/*.yaml and README.md)
      --check         validate the configuration and exit (0 = valid)
      --no-watch      do not reload when the config file changes (SIGHUP and POST /reload still do)
      --log-format F  json (one JSON object per line) or pretty (human-readable); default: pretty when stdout is
                      a terminal, json otherwise (also KEYMUX_LOG_FORMAT)
  -h, --help          this help (keymux SUBCOMMAND --help for a subcommand's)
  -v, --version       print the version
`;

/** Subcommands: name -> module in src/cli/ exporting `run(argv): Promise<number>` (the exit code). */
const SUBCOMMANDS: Record<string, () => Promise<{ run(argv: string[]): Promise<number> }>> = {
  'import-twemproxy': () => import('./cli/import-twemproxy.js'),
  plan: () => import('./cli/plan.js'),
  top: () => import('./cli/top.js'),
};

async function main(): Promise<void> {
  const sub = process.argv[2];
  if (sub !== undefined && Object.hasOwn(SUBCOMMANDS, sub)) {
    const { run } = await SUBCOMMANDS[sub]!();
    // Exit as soon as the tool is done (stdout and stderr writes are synchronous on Linux for files, pipes and
    // terminals), rather than waiting for idle keep-alive sockets of its HTTP client to close.
    process.exit(await run(process.argv.slice(3)));
  }
  let values: {
    config?: string;
    check?: boolean;
    help?: boolean;
    version?: boolean;
    'no-watch'?: boolean;
    'log-format'?: string;
  };
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean' },
        'no-watch': { type: 'boolean' },
        'log-format': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`keymux: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (values.version) {
    const { createRequire } = await import('node:module');
    process.stdout.write(`${(createRequire(import.meta.url)('../package.json') as { version: string }).version}\n`);
    return;
  }
  const logFormat = values['log-format'];
  if (logFormat !== undefined) {
    if (!LOG_FORMATS.includes(logFormat as LogFormat)) {
      process.stderr.write(`keymux: --log-format must be json or pretty, got ${JSON.stringify(logFormat)}\n`);
      process.exit(2);
    }
    setLogFormat(logFormat as LogFormat);
  }
  if (cluster.isWorker) {
    // workers > 1: this process is one of the primary's workers; it gets its config from the primary.
    const { runWorker } = await import('./workers/worker.js');
    runWorker();
    return;
  }
  if (values.config === undefined) {
    process.stderr.write(`keymux: --config FILE is required\n${USAGE}`);
    process.exit(2);
  }
  const file = values.config;
  let config;
  try {
    config = loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(
        `keymux: invalid configuration (${err.errors.length} problem${err.errors.length === 1 ? '' : 's'}):\n`,
      );
      for (const e of err.errors) process.stderr.write(`  ${e}\n`);
      process.exit(1);
    }
    throw err;
  }
  if (values.check) {
    process.stdout.write(`${file}: configuration is valid (mode ${config.mode}, ${config.shards.length} shards)\n`);
    return;
  }
  setLogLevel(config.log.level);
  const log = rootLogger();
  const workers = workerCount(config.workers, os.availableParallelism);
  if (workers > 1) {
    await runPrimary(config, workers, file, values['no-watch'] !== true);
    return;
  }
  const stopSignals = keepStopSignals(log);
  let proxy: Proxy;
  try {
    proxy = await Proxy.start(config, { configPath: file, watchConfig: values['no-watch'] !== true });
  } catch (err) {
    cannotStart(err);
  }
  process.on('SIGHUP', () => void proxy.reloadFromFile('SIGHUP'));
  stopSignals.started((signal) => {
    const graceMs = proxy.topology.config.drain.graceS * 1000;
    // Logging must not stand between a signal and the drain: when stdout is gone (a closed pipe, a terminal that
    // went away) a log write can throw, and a drain that never starts would leave keymux deaf to SIGTERM.
    quietly(() => log.info({ signal, graceMs }, 'draining'));
    drainThenExit(log, () => proxy.drain(graceMs), graceMs + 5000);
  });
}

/** workers > 1: this process is the primary (src/workers/primary.ts): the control plane for its workers. */
async function runPrimary(config: KeymuxConfig, workers: number, file: string, watchConfig: boolean): Promise<void> {
  const { WorkerPrimary } = await import('./workers/primary.js');
  const log = rootLogger();
  const stopSignals = keepStopSignals(log);
  let primary: Awaited<ReturnType<typeof WorkerPrimary.start>>;
  try {
    primary = await WorkerPrimary.start(config, workers, { configPath: file, watchConfig });
  } catch (err) {
    cannotStart(err);
  }
  process.on('SIGHUP', () => void primary.reloadFromFile('SIGHUP'));
  stopSignals.started((signal) => {
    const graceMs = primary.config.drain.graceS * 1000;
    quietly(() => log.info({ signal, graceMs, workers }, 'draining every worker'));
    // The primary's drain kills workers still there 5 s after the grace; the rest of its closing gets 5 s more.
    drainThenExit(log, () => primary.drain(graceMs), graceMs + 10_000);
  });
}

/** The start failed: a certificate, key, CA, token or password file the config names is missing or bad. */
function cannotStart(err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`keymux: cannot start (${err.errors.length} problem${err.errors.length === 1 ? '' : 's'}):\n`);
  for (const e of err.errors) process.stderr.write(`  ${e}\n`);
  process.exit(1);
}

/**
 * Runs `drain` and exits: 0 once it is done, 1 when a step of it failed (told to stop, keymux must not linger
 * half-closed) or when it still runs after `boundMs`, whatever a closing step waits on.
 */
function drainThenExit(log: ReturnType<typeof rootLogger>, drain: () => Promise<void>, boundMs: number): void {
  setTimeout(() => process.exit(1), boundMs).unref();
  void drain().then(
    () => {
      quietly(() => log.info('stopped'));
      process.exit(0);
    },
    (err: unknown) => {
      quietly(() => log.error({ err }, 'drain failed'));
      process.exit(1);
    },
  );
}

/**
 * SIGTERM and SIGINT from the start on: one received while keymux starts (Kubernetes stopping a pod that has just
 * started) is kept and acted on once it has started, where Node's default would end the process on the spot (its
 * start half done, workers and shards' connections cut without a drain). `started(stop)` hands over: a kept signal
 * runs `stop` at once; later ones call it, the first only.
 */
function keepStopSignals(log: ReturnType<typeof rootLogger>): { started(stop: (signal: string) => void): void } {
  let pending: string | null = null;
  let act: ((signal: string) => void) | null = null;
  let stopping = false;
  const onSignal = (signal: string): void => {
    if (act === null) {
      if (pending === null) quietly(() => log.info({ signal }, 'stop requested while starting: draining once started'));
      pending ??= signal;
      return;
    }
    if (stopping) return;
    stopping = true;
    act(signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  return {
    started(stop) {
      act = stop;
      if (pending !== null) onSignal(pending);
    },
  };
}

function quietly(write: () => void): void {
  try {
    write();
  } catch {
    /* stdout is gone; nobody is reading the log */
  }
}

main().catch((err) => {
  rootLogger().fatal({ err }, 'keymux failed to start');
  process.stderr.write(`keymux: ${(err as Error).message}\n`);
  process.exit(1);
});
