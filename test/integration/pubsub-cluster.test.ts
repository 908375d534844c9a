/**
 * Pub/sub through keymux in front of a real Redis Cluster (3 masters), with Redis Cluster's own rules:
 * - PUBLISH propagates cluster-wide, so keymux subscribes a channel (or a pattern) on one master only, and a
 *   message published on any node reaches each subscriber exactly once;
 * - shard channels live on their slot's owner: SSUBSCRIBE / SPUBLISH go there, channels of one SSUBSCRIBE must
 *   share a slot (CROSSSLOT otherwise), and when the slot moves to another master (the old owner drops its shard
 *   channels with a sunsubscribe) keymux subscribes on the new owner: the client keeps its subscription and
 *   receives what is published afterwards, through keymux or on the new owner directly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type ClusterNode, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import { PubSubSocket, backendChannels, cmd } from '../support/pubsub.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
const open: PubSubSocket[] = [];

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 0 });
  proxy = await startKeymux({
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 1), refresh_interval_ms: 1000 },
  });
}, 120_000);

afterAll(async () => {
  for (const s of open) s.close();
  await proxy?.close();
  await cluster?.stop();
});

async function client(): Promise<PubSubSocket> {
  const s = await PubSubSocket.connect(proxy.port);
  open.push(s);
  return s;
}

/** The master owning `slot` now (as CLUSTER SLOTS says). */
async function ownerOf(slot: number): Promise<ClusterNode> {
  const ranges = await cluster.slotRanges();
  const id = [...ranges].find(([, rs]) => rs.some(([a, z]) => a <= slot && slot <= z))![0];
  return cluster.node(id);
}

/** Masters whose own PUBSUB (CHANNELS, or SHARDCHANNELS) lists `name`. */
async function mastersListing(name: string, shard = false): Promise<number[]> {
  const out: number[] = [];
  for (const m of cluster.masters()) if ((await backendChannels(m.port, shard)).includes(name)) out.push(m.port);
  return out;
}

describe('cluster mode: PUBLISH propagates cluster-wide', () => {
  it('one subscription on one master; messages published on any node arrive once; patterns too', async () => {
    const s = await client();
    s.send(cmd('SUBSCRIBE', 'cl:news'), cmd('PSUBSCRIBE', 'cl:*'));
    await s.untilCount(2);
    expect(await mastersListing('cl:news')).toHaveLength(1);
    expect((await mastersListing('cl:news'))[0]).toBe((await ownerOf(keySlot(Buffer.from('cl:news')))).port);
    let numpat = 0;
    for (const m of cluster.masters()) numpat += Number(await redisCommand(m.port, 'PUBSUB', 'NUMPAT'));
    expect(numpat).toBe(1);
    // Through keymux: one subscriber, reached by its channel and its pattern.
    expect(await redisCommand(proxy.port, 'PUBLISH', 'cl:news', 'via-keymux')).toBe(2);
    // Directly on every master: the cluster propagates each message; keymux hears it once.
    for (const m of cluster.masters()) await redisCommand(m.port, 'PUBLISH', 'cl:news', `on-${m.port}`);
    const total = 1 + cluster.masters().length;
    await s.untilMessages('cl:news', total);
    await s.untilMessages('cl:*|cl:news', total);
    s.send(cmd('PING', 'end'));
    await s.until((f) => JSON.stringify(f.at(-1)) === JSON.stringify(['pong', 'end']));
    expect(s.counts.get('cl:news')).toBe(total);
    expect(s.counts.get('cl:*|cl:news')).toBe(total);
    const [numsub] = (await redisCommand(proxy.port, 'PUBSUB', 'NUMSUB', 'cl:news')) as [string, number];
    expect(numsub).toBe('cl:news');
    expect(await redisCommand(proxy.port, 'PUBSUB', 'NUMSUB', 'cl:news')).toEqual(['cl:news', 1]);
    expect(await redisCommand(proxy.port, 'PUBSUB', 'NUMPAT')).toBe(1);
    s.close();
  });
});

describe('cluster mode: sharded pub/sub', () => {
  it('SSUBSCRIBE on the slot owner, SPUBLISH there, channels of one SSUBSCRIBE must share a slot', async () => {
    const sub = new Redis({ port: proxy.port, lazyConnect: true });
    await sub.connect();
    const got: string[] = [];
    sub.on('smessage', (ch: string, m: string) => got.push(`${ch}=${m}`));
    expect(await sub.ssubscribe('{room}:a', '{room}:b')).toBe(2);
    await expect(sub.ssubscribe('x:one', 'x:two')).rejects.toThrow(/CROSSSLOT/);
    const owner = await ownerOf(keySlot(Buffer.from('{room}:a')));
    expect(await mastersListing('{room}:a', true)).toEqual([owner.port]);
    expect(await redisCommand(proxy.port, 'SPUBLISH', '{room}:a', 'hi')).toBe(1);
    expect(await redisCommand(owner.port, 'SPUBLISH', '{room}:b', 'direct')).toBe(1);
    await waitFor(() => got.length === 2, 'smessages');
    expect(got).toEqual(['{room}:a=hi', '{room}:b=direct']);
    expect(await redisCommand(proxy.port, 'PUBSUB', 'SHARDNUMSUB', '{room}:a', '{room}:c')).toEqual([
      '{room}:a',
      1,
      '{room}:c',
      0,
    ]);
    expect(((await redisCommand(proxy.port, 'PUBSUB', 'SHARDCHANNELS', '{room}*')) as string[]).sort()).toEqual([
      '{room}:a',
      '{room}:b',
    ]);
    sub.disconnect();
  });

  it('when the slot moves to another master, keymux follows it and the subscriber keeps receiving', async () => {
    const channel = 'moving:{shard}';
    const slot = keySlot(Buffer.from(channel));
    const s = await client();
    s.send(cmd('SSUBSCRIBE', channel));
    await s.untilCount(1);
    expect(await redisCommand(proxy.port, 'SPUBLISH', channel, 'before')).toBe(1);
    await s.untilMessages(channel, 1);
    const from = await ownerOf(slot);
    const to = cluster.masters().find((m) => m.id !== from.id) as ClusterNode;
    // Move the (empty) slot the way redis-cli does: IMPORTING, MIGRATING, then SETSLOT NODE on every master.
    await redisCommand(to.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
    await redisCommand(from.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
    for (const n of [to, from, ...cluster.masters().filter((m) => m !== to && m !== from)]) {
      await redisCommand(n.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
    }
    await cluster.waitStable();
    // The old owner dropped keymux's subscription (sunsubscribe); keymux subscribes on the new owner.
    await waitFor(
      async () => (await mastersListing(channel, true)).join() === String(to.port),
      'subscribed on the new owner',
      10_000,
    );
    expect(await redisCommand(proxy.port, 'SPUBLISH', channel, 'after')).toBe(1);
    expect(await redisCommand(to.port, 'SPUBLISH', channel, 'direct')).toBe(1);
    await s.untilMessages(channel, 3);
    expect(s.frames).toEqual([
      ['ssubscribe', channel, 1],
      ['smessage', channel, 'before'],
      ['smessage', channel, 'after'],
      ['smessage', channel, 'direct'],
    ]);
    expect(s.closed).toBe(false);
    s.close();
  });
});
