/**
 * INFO as keymux answers it: a Server section (keymux's version and the backends' redis_version), Clients,
 * a Keymux section (mode, every shard's state) and a Keyspace section aggregated over all shards (keys and
 * expires summed per db, avg_ttl weighted by expires). keymux sends "INFO keyspace" to every shard and builds
 * the text here. A shard that does not answer is shown as down rather than failing INFO, so client libraries
 * that run INFO on connect (ioredis's ready check) still connect while one shard is out. The reply is a bulk string
 * in RESP2 and a verbatim string (`=len`, `txt:` format) in RESP3, as Redis writes it; a RESP3 client's shards
 * answer "INFO keyspace" in that form too, and readBulk reads both (the `txt:` prefix is on no db line).
 */
import type { Request } from '../core/request.js';
import type { Fragment } from '../core/fragment.js';
import type { Topology } from '../routing/topology.js';
import type { ProxyContext } from '../server/context.js';
import { commandFrame, bulkReply } from '../resp/writer.js';
import { errorText, isErrorFrame, readBulk } from '../resp/reply-reader.js';

export const INFO_KEYSPACE_FRAME = commandFrame(['INFO', 'keyspace']);

export interface InfoContext {
  args: Buffer[];
  topology: Topology;
  ctx: ProxyContext;
}

const ALL_SECTIONS = ['server', 'clients', 'keymux', 'keyspace'];

export function mergeInfo(parent: Request): Buffer {
  const { args, topology, ctx } = parent.mergeContext as InfoContext;
  const fragments = parent.fragments as Fragment[];
  let wanted = args.slice(1).map((a) => a.toString('latin1').toLowerCase());
  if (wanted.length === 0 || wanted.some((w) => w === 'all' || w === 'default' || w === 'everything'))
    wanted = ALL_SECTIONS;
  const dbs = new Map<string, { keys: number; expires: number; ttlWeighted: number }>();
  const shardLines: string[] = [];
  let up = 0;
  topology.shards.forEach((shard, i) => {
    const reply = fragments[i].reply as Buffer;
    if (isErrorFrame(reply)) {
      shardLines.push(
        `shard_${i}:name=${shard.name},address=${shard.address},status=down,error=${errorText(reply).replace(/[,\r\n]/g, ' ')}`,
      );
      return;
    }
    up++;
    shardLines.push(`shard_${i}:name=${shard.name},address=${shard.address},status=up`);
    const body = readBulk(reply);
    if (body === null) return;
    for (const line of body.toString('latin1').split('\r\n')) {
      const m = /^(db\d+):keys=(\d+),expires=(\d+),avg_ttl=(\d+)/.exec(line);
      if (m === null) continue;
      const d = dbs.get(m[1]) ?? { keys: 0, expires: 0, ttlWeighted: 0 };
      d.keys += Number(m[2]);
      d.expires += Number(m[3]);
      d.ttlWeighted += Number(m[3]) * Number(m[4]);
      dbs.set(m[1], d);
    }
  });
  const config = topology.config;
  const sections: string[] = [];
  for (const name of wanted) {
    switch (name) {
      case 'server':
        sections.push(
          [
            '# Server',
            `redis_version:${ctx.backendVersion}`,
            `keymux_version:${ctx.version}`,
            'redis_mode:standalone',
            `os:${process.platform}`,
            `process_id:${process.pid}`,
            `tcp_port:${config.listen?.port ?? config.tls.listen?.port ?? 0}`,
            `uptime_in_seconds:${Math.floor((Date.now() - ctx.startedAt) / 1000)}`,
          ].join('\r\n'),
        );
        break;
      case 'clients':
        sections.push(
          [
            '# Clients',
            `connected_clients:${ctx.clientCount()}`,
            `maxclients:${config.clients.max}`,
            // keymux's own clients blocked in a blocking command sent to its shard (as one Redis server counts them).
            `blocked_clients:${ctx.sessions.blockedCount()}`,
          ].join('\r\n'),
        );
        break;
      case 'keymux':
        sections.push(
          [
            '# Keymux',
            `mode:${config.mode}`,
            `config_version:${topology.version}`,
            `shards:${topology.shards.length}`,
            `shards_up:${up}`,
            ...shardLines,
          ].join('\r\n'),
        );
        break;
      case 'keyspace': {
        const lines = ['# Keyspace'];
        for (const [db, d] of [...dbs.entries()].sort()) {
          lines.push(
            `${db}:keys=${d.keys},expires=${d.expires},avg_ttl=${d.expires > 0 ? Math.round(d.ttlWeighted / d.expires) : 0}`,
          );
        }
        sections.push(lines.join('\r\n'));
        break;
      }
      default:
        break; // unknown sections are empty, as in Redis
    }
  }
  const text = sections.length > 0 ? `${sections.join('\r\n\r\n')}\r\n` : '';
  return parent.protocol === 3 ? verbatimReply(text) : bulkReply(text);
}

/** A RESP3 verbatim string of plain text: `=<len>\r\ntxt:<text>\r\n`. */
export function verbatimReply(text: string): Buffer {
  const body = Buffer.from(`txt:${text}`, 'utf8');
  return Buffer.concat([Buffer.from(`=${body.length}\r\n`, 'latin1'), body, Buffer.from('\r\n', 'latin1')]);
}
