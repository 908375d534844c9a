/**
 * keymux command line: `keymux --config FILE [--check]`. Loads and validates the config (a bad config is printed
 * with file and line for every problem, and keymux exits non-zero), starts the Proxy, and wires signals:
 * SIGHUP re-reads the config file (so do changes to the file, watched by the proxy; a bad file is logged and the
 * running config stays), SIGTERM/SIGINT drain
 * (stop accepting, finish in-flight requests within a grace period, exit 0).
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile } from './config/load.js';
import { Proxy } from './proxy.js';
import { rootLogger, setLogLevel } from './log.js';

const USAGE = `usage: keymux --config FILE [--check]

  -c, --config FILE   YAML configuration (see config/*.yaml and README.md)
      --check         validate the configuration and exit (0 = valid)
      --no-watch      do not reload when the config file changes (SIGHUP and POST /reload still do)
  -h, --help          this help
  -v, --version       print the version
`;

async function main(): Promise<void> {
  let values: { config?: string; check?: boolean; help?: boolean; version?: boolean; 'no-watch'?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean' },
        'no-watch': { type: 'boolean' },
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
  const proxy = await Proxy.start(config, { configPath: file, watchConfig: values['no-watch'] !== true });
  process.on('SIGHUP', () => void proxy.reloadFromFile('SIGHUP'));
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const graceMs = proxy.topology.config.drain.graceS * 1000;
    log.info({ signal, graceMs }, 'draining');
    void proxy.drain(graceMs).then(() => {
      log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  rootLogger().fatal({ err }, 'keymux failed to start');
  process.stderr.write(`keymux: ${(err as Error).message}\n`);
  process.exit(1);
});
