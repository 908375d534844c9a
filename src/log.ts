/**
 * Logging: one pino root logger, child loggers per component. Nothing on the data path logs per request at
 * info level; connection-level events (connect, loss, reconnect, timeout) and control-plane events are logged.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger = pino({ level: process.env.KEYMUX_LOG_LEVEL ?? 'info', base: { app: 'keymux' } });

export function rootLogger(): Logger {
  return root;
}

export function setLogLevel(level: string): void {
  root.level = level;
}

/** Replaces the root logger (tests silence it or capture it). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function childLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}
