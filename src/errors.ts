/**
 * Client-facing error replies. Every error keymux itself produces is a RESP error line encoded once: fixed ones
 * as Buffer constants, variable ones through `errorReply()` (control plane or rare paths only). Backend error
 * replies are never rewritten; they pass through as values. Messages follow Redis's wording where Redis has one,
 * so clients that match on prefixes (ERR, NOAUTH, WRONGPASS, NOPROTO, CROSSSLOT) behave as against Redis.
 */

/** Encodes `-<message>\r\n`, stripping CR/LF from the message so a reply can never be split. */
export function errorReply(message: string): Buffer {
  return Buffer.from(`-${message.replace(/[\r\n]+/g, ' ')}\r\n`, 'utf8');
}

export const ERR_CROSSSLOT = errorReply("CROSSSLOT Keys in request don't hash to the same slot");
export const ERR_NOAUTH = errorReply('NOAUTH Authentication required.');
export const ERR_WRONGPASS = errorReply('WRONGPASS invalid username-password pair or user is disabled.');
/** An AUTH queued in a transaction after a failed one there reached clients.auth_failures.close_after. */
export const ERR_AUTH_NOT_CHECKED = errorReply(
  'ERR keymux: AUTH not checked: too many failed AUTHs on this connection, which closes after this reply',
);
export const ERR_AUTH_NOT_CONFIGURED = errorReply(
  'ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?',
);
export const ERR_NOPROTO = errorReply('NOPROTO unsupported protocol version');
// Worded as Redis's own refusal of a database it does not have, so clients and tests that match it keep working.
export const ERR_SELECT_DB = errorReply(
  'ERR DB index is out of range (keymux: only database 0 is available; a sharded keyspace has no other databases)',
);
export const ERR_SELECT_INVALID = errorReply('ERR value is not an integer or out of range');
export const ERR_SYNTAX = errorReply('ERR syntax error');
export const ERR_MAX_CLIENTS = errorReply('ERR max number of clients reached');
export const ERR_CONNECTION_RATE = errorReply(
  'ERR keymux: too many new connections per second (clients.max_new_connections_per_s); retry with backoff',
);
export const ERR_NO_KEY = errorReply('ERR keymux: this command has no key to route by');
export const ERR_SLOT_NOT_SERVED = errorReply('CLUSTERDOWN Hash slot not served');
export const ERR_MIGRATION_FAILED = errorReply(
  'TRYAGAIN keymux: the key is being moved to its new shard and the move failed; retry',
);
export const ERR_RETRY_OUT_OF_ORDER = errorReply(
  'TRYAGAIN keymux: a later command of this connection for the same slot already ran, so this one could not be ' +
    'retried in order; it was not applied',
);
export const ERR_EXECABORT = errorReply('EXECABORT Transaction discarded because of previous errors.');
export const ERR_NESTED_MULTI = errorReply('ERR MULTI calls can not be nested');
export const ERR_REFUSED_TX = errorReply(
  'ERR keymux: not run: it follows a MULTI that keymux refused (EXEC will abort the transaction, DISCARD ends it)',
);
export const ERR_CLIENT_GONE = errorReply('ERR keymux: not run: the client disconnected');
/** A blocking command or WAIT reached after the client ended its side (server/client-session.ts runAlone). */
export const ERR_ENDED_BEFORE_BLOCKING = errorReply(
  'ERR keymux: not run: the client ended its input before this command could block (Redis frees such a client)',
);
export const ERR_FANOUT_UNEXPECTED = errorReply(
  'ERR keymux: unexpected reply from a shard while merging a multi-key command',
);

export function wrongArity(name: string): Buffer {
  return errorReply(`ERR wrong number of arguments for '${name}' command`);
}

/** Up to `max` bytes of `b` as C's `%.*s` prints them: ending at a NUL byte, if any. */
function cBytes(b: Buffer, max: number): Buffer {
  const cut = b.subarray(0, max);
  const nul = cut.indexOf(0);
  return nul < 0 ? cut : cut.subarray(0, nul);
}

/** An error line made of raw bytes, with CR and LF inside it turned to spaces as Redis's addReplyErrorFormat does. */
function errorLine(parts: Buffer[]): Buffer {
  const out = Buffer.concat([DASH, ...parts, CRLF]);
  for (let i = 1; i < out.length - 2; i++) if (out[i] === 13 || out[i] === 10) out[i] = 32;
  return out;
}
const DASH = Buffer.from('-');
const CRLF = Buffer.from('\r\n');
const QUOTE = Buffer.from("'");
const QUOTE_SPACE = Buffer.from("' ");

/**
 * Redis's reply to an unknown command, byte for byte (server.c processCommand): the name up to 128 bytes, then
 * the arguments quoted, each cut so that the list stops at 128 bytes.
 */
export function unknownCommand(name: Buffer, args: Buffer[]): Buffer {
  const parts = [Buffer.from("ERR unknown command '"), cBytes(name, 128), Buffer.from("', with args beginning with: ")];
  let listed = 0;
  for (let i = 1; i < args.length && listed < 128; i++) {
    const a = cBytes(args[i], 128 - listed);
    parts.push(QUOTE, a, QUOTE_SPACE);
    listed += a.length + 3;
  }
  return errorLine(parts);
}

/** Redis's reply to an unknown subcommand of a known container, byte for byte. */
export function unknownSubcommand(container: string, sub: Buffer): Buffer {
  return errorLine([
    Buffer.from("ERR unknown subcommand '"),
    cBytes(sub, 128),
    Buffer.from(`'. Try ${container.toUpperCase()} HELP.`),
  ]);
}

/** At most 128 bytes, control characters replaced: safe to put in an error line. */
export function printable(b: Buffer): string {
  const s = b
    .subarray(0, 128)
    .toString('latin1')
    .replace(/[\x00-\x1f\x7f]/g, '?');
  return b.length > 128 ? `${s}...` : s;
}

/** read_from: replica, and every replica of the shard is down. */
export function noReplicaReachable(shardName: string): Buffer {
  return errorReply(
    `ERR keymux: no replica of shard '${shardName}' is reachable (read_from: replica never reads from the master)`,
  );
}

/** A shard could not be used: names the shard so an operator knows where to look. */
export function shardError(shardName: string, address: string, reason: string): Buffer {
  return errorReply(`ERR keymux: shard '${shardName}' (${address}) ${reason}`);
}
