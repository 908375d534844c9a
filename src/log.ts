/**
 * Logging: one pino root logger, child loggers per component. Nothing on the data path logs per request at
 * info level; connection-level events (connect, loss, reconnect, timeout) and control-plane events are logged.
 *
 * Format: JSON lines (one object per line, for machines) unless stdout is a terminal, where the same records are
 * printed human-readable through pino-pretty (time, level, component, message, fields). `KEYMUX_LOG_FORMAT=json`
 * or `pretty` (or `keymux --log-format`) forces either. The pretty stream is synchronous, like pino's own
 * destination, so a fatal line is never lost on exit.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export type LogFormat = 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];

/** The format from KEYMUX_LOG_FORMAT, else pretty on a terminal and JSON otherwise. */
export function defaultLogFormat(
  env: NodeJS.ProcessEnv = process.env,
  isTty: boolean = process.stdout.isTTY === true,
): LogFormat {
  const forced = env.KEYMUX_LOG_FORMAT?.trim().toLowerCase();
  if (forced === 'json' || forced === 'pretty') return forced;
  return isTty ? 'pretty' : 'json';
}

/** A root logger writing `format` to stdout (or to `destination`, for tests). */
export function createRootLogger(format: LogFormat, level: string, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { app: 'keymux' } };
  if (format === 'json') {
    if (destination !== undefined) return pino(options, destination);
    const stdout = pino.destination({ dest: 1, sync: true });
    // stdout gone (a closed pipe, a terminal that went away): a log line cannot be written, and keymux goes on
    // without its log. Unhandled, the stream's error made every log call throw, and a drain that logged while
    // closing never finished: keymux then ignored SIGTERM for good.
    stdout.on('error', () => undefined);
    return pino(options, stdout);
  }
  const stream = pretty({
    destination: destination ?? 1,
    sync: true,
    colorize: destination === undefined ? process.stdout.isTTY === true : false,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,app,component',
    singleLine: true,
    messageFormat: '{if component}[{component}] {end}{msg}',
  });
  stream.on('error', () => undefined); // as for JSON: no stdout, no log, keymux goes on
  return pino(options, stream);
}

let root: Logger = createRootLogger(defaultLogFormat(), process.env.KEYMUX_LOG_LEVEL ?? 'info');

export function rootLogger(): Logger {
  return root;
}

export function setLogLevel(level: string): void {
  root.level = level;
}

/** Replaces the root logger with one of `format` at the current level (the CLI's --log-format). */
export function setLogFormat(format: LogFormat): void {
  root = createRootLogger(format, root.level);
}

/** Replaces the root logger (tests silence it or capture it). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function childLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}
