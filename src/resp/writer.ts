/**
 * Encoders for what keymux writes itself: command frames for sub-commands (fan-out, handshakes) and reply
 * frames for locally answered commands and merged replies. Common constants are encoded once.
 */

export const CRLF = Buffer.from('\r\n');
export const OK = Buffer.from('+OK\r\n');
export const PONG = Buffer.from('+PONG\r\n');
export const NIL_BULK = Buffer.from('$-1\r\n');
export const EMPTY_ARRAY = Buffer.from('*0\r\n');

const headerCache: Buffer[] = [];
/** "*n\r\n" for small n is cached. */
export function arrayHeader(n: number): Buffer {
  if (n < 1024) {
    let h = headerCache[n];
    if (h === undefined) headerCache[n] = h = Buffer.from(`*${n}\r\n`, 'latin1');
    return h;
  }
  return Buffer.from(`*${n}\r\n`, 'latin1');
}

export function bulkHeader(n: number): Buffer {
  return Buffer.from(`$${n}\r\n`, 'latin1');
}

export function integerReply(n: number): Buffer {
  return Buffer.from(`:${n}\r\n`, 'latin1');
}

export function simpleReply(s: string): Buffer {
  return Buffer.from(`+${s}\r\n`, 'latin1');
}

export function bulkReply(b: Buffer | string): Buffer {
  const body = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  const out = Buffer.allocUnsafe(1 + String(body.length).length + 2 + body.length + 2);
  let p = out.write(`$${body.length}\r\n`, 0, 'latin1');
  p += body.copy(out, p);
  out.write('\r\n', p, 'latin1');
  return out;
}

/** An array reply of already-encoded element frames. */
export function arrayReply(elements: Buffer[]): Buffer {
  return Buffer.concat([arrayHeader(elements.length), ...elements]);
}

/** A command frame from string or Buffer arguments (control plane and sub-commands). */
export function commandFrame(args: Array<Buffer | string>): Buffer {
  const parts: Buffer[] = [arrayHeader(args.length)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
    parts.push(bulkHeader(b.length), b, CRLF);
  }
  return Buffer.concat(parts);
}

/** A RESP3 verbatim string of plain text: `=<len>\r\ntxt:<text>\r\n`. */
function verbatimReply(text: string): Buffer {
  const body = Buffer.from(`txt:${text}`, 'utf8');
  return Buffer.concat([Buffer.from(`=${body.length}\r\n`, 'latin1'), body, Buffer.from('\r\n', 'latin1')]);
}

/** Plain text as Redis answers INFO and CLIENT LIST: a verbatim string in RESP3, a bulk string in RESP2. */
export function textReply(text: string, protocol: number): Buffer {
  return protocol === 3 ? verbatimReply(text) : bulkReply(text);
}
