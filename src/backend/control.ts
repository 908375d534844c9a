/**
 * Control-plane requests to a backend: a short-lived connection that sends a few commands and decodes the
 * replies with redis-parser (the reference decoder) into values. Used for discovery (COMMAND, INFO server),
 * never on the data path, and SCRIPT KILL / FUNCTION KILL. Bounded by a timeout (for a KILL: the connection, then the
 * answers by a bound of their own, see ControlTarget.awaitAnswers); always closes its socket. One timer per connection:
 * the connection's, then the answers'.
 */
import { createRequire } from 'node:module';
import { commandFrame } from '../resp/writer.js';
import { connectBackend, describeConnectError, isTlsError } from './connect.js';
import type { BackendTlsSettings } from '../security/tls.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

export interface ControlTarget {
  host: string;
  port: number;
  password: string | null;
  username: string | null;
  timeoutMs: number;
  /**
   * true: `timeoutMs` bounds the TCP connection only, and the replies are awaited for `answerTimeoutMs` more (0: as
   * long as the server takes), on a socket with TCP keepalive. For SCRIPT KILL / FUNCTION KILL: a server running a
   * script reads nothing (AUTH included) until the script has run for its busy-reply-threshold, which keymux cannot
   * learn then (CONFIG GET waits too, and is refused -BUSY), and then answers at once; a stopped or hung server never
   * answers, and its TCP connection stays up.
   */
  awaitAnswers?: boolean;
  /** With awaitAnswers: how long the replies may take once connected (0 = no bound); past it, AnswerTimeoutError. */
  answerTimeoutMs?: number;
  /** backend.tls (null or disabled: plain TCP). */
  tls?: BackendTlsSettings | null;
}

/** The server accepted the connection but did not answer within ControlTarget.answerTimeoutMs. */
export class AnswerTimeoutError extends Error {
  constructor(
    readonly address: string,
    readonly ms: number,
  ) {
    super(`no answer from ${address} within ${ms} ms`);
  }
}

/** Sends `commands` (after AUTH when configured); resolves with their replies (Error values for error replies). */
export function controlCommands(target: ControlTarget, commands: string[][]): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const all =
      target.password !== null
        ? [
            target.username !== null ? ['AUTH', target.username, target.password] : ['AUTH', target.password],
            ...commands,
          ]
        : commands;
    const replies: unknown[] = [];
    // Commands written before a TLS handshake ends wait in the socket until it is done.
    const { socket: sock } = connectBackend(target.host, target.port, target.tls ?? null);
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err !== null) {
        reject(err);
        return;
      }
      const own = target.password !== null ? replies.slice(1) : replies;
      if (target.password !== null && replies[0] instanceof Error) {
        reject(replies[0] as Error);
        return;
      }
      resolve(own);
    };
    let timer = setTimeout(
      () =>
        finish(
          new Error(
            target.awaitAnswers === true
              ? `could not connect to ${target.host}:${target.port} within ${target.timeoutMs} ms`
              : `no answer from ${target.host}:${target.port} within ${target.timeoutMs} ms`,
          ),
        ),
      target.timeoutMs,
    );
    if (target.awaitAnswers === true) {
      // TCP's 'connect', even over TLS: a busy server does not do its side of the TLS handshake either.
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.setKeepAlive(true, 10_000);
        const answerMs = target.answerTimeoutMs ?? 0;
        if (answerMs > 0) {
          timer = setTimeout(() => finish(new AnswerTimeoutError(`${target.host}:${target.port}`, answerMs)), answerMs);
        }
      });
    }
    const onValue = (v: unknown) => {
      replies.push(v);
      if (replies.length === all.length) finish(null);
    };
    const parser = new RedisParser({ returnReply: onValue, returnError: onValue, returnFatalError: (e) => finish(e) });
    sock.on('data', (d: Buffer) => parser.execute(d));
    sock.on('error', (e) => finish(isTlsError(e) ? new Error(describeConnectError(e)) : e));
    sock.on('close', () => finish(new Error(`connection to ${target.host}:${target.port} closed`)));
    sock.write(Buffer.concat(all.map((c) => commandFrame(c))));
  });
}
