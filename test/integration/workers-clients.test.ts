/**
 * CLIENT LIST and CLIENT KILL with `workers: 2` (the real binary: a primary and two worker processes, on a real
 * redis-server): a connection on either worker lists every worker's clients, and kills a client of the other
 * worker; with the primary stopped (SIGSTOP) they are refused with a clear error after a bound, not answered for
 * one worker's clients alone, while CLIENT INFO (the caller's own line) needs no primary.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { RawClient, runBinary, type RunningBinary } from '../support/keymux.js';
import { cmd } from '../support/pubsub.js';

let shard: RedisProcess;
let dir: string;
let port: number;
let binary: RunningBinary;

interface Named {
  client: RawClient;
  name: string;
  id: number;
  pid: number;
}
const named: Named[] = [];

/** A connection named `w<n>`, its CLIENT ID and the PID of the worker serving it (INFO server's process_id). */
async function connectNamed(): Promise<Named> {
  const client = await RawClient.connect(port);
  const name = `w${named.length}`;
  const [ok, id, info] = await client.exchange(
    Buffer.concat([cmd('CLIENT', 'SETNAME', name), cmd('CLIENT', 'ID'), cmd('INFO', 'server')]),
    3,
  );
  expect(ok).toBe('OK');
  const c = { client, name, id: id as number, pid: Number(/process_id:(\d+)/.exec(info as string)![1]) };
  named.push(c);
  return c;
}

function byWorker(): Map<number, Named[]> {
  const m = new Map<number, Named[]>();
  for (const c of named) if (!c.client.closed) m.set(c.pid, [...(m.get(c.pid) ?? []), c]);
  return m;
}

function listed(text: string): Map<string, string> {
  const ids = new Map<string, string>();
  for (const line of text.split('\n').filter(Boolean))
    ids.set(/ name=(\S*)/.exec(line)![1], /^id=(\d+)/.exec(line)![1]);
  return ids;
}

beforeAll(async () => {
  shard = await startRedis();
  port = await freePort();
  dir = makeTempDir('keymux-workers-clients-');
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${await freePort()}`,
      mode: 'slots',
      workers: 2,
      log: { level: 'info' },
      drain: { grace_s: 1 },
      shards: [{ name: 'a', address: shard.address, slots: ['0-16383'] }],
    }),
  );
  binary = await runBinary(file, 'keymux workers serving');
  // Connections are handed out round-robin, not strictly in turn: connect until each worker serves two.
  for (let i = 0; i < 40 && [...byWorker().values()].filter((l) => l.length >= 2).length < 2; i++) await connectNamed();
  expect([...byWorker().values()].map((l) => l.length >= 2)).toEqual([true, true]);
}, 60_000);

afterAll(async () => {
  for (const c of named) c.client.close();
  if (binary !== undefined) {
    binary.child.kill('SIGCONT'); // in case a test stopped it and failed before resuming it
    binary.child.kill('SIGTERM');
    await binary.exited;
  }
  await shard?.stop();
  if (dir !== undefined) removeTempDir(dir);
});

describe('workers: 2, CLIENT LIST and CLIENT KILL', () => {
  it("a connection on either worker lists every worker's clients, each once", async () => {
    const [onA, onB] = [...byWorker().values()].map((l) => l[0]!);
    for (const asker of [onA!, onB!]) {
      const [text] = await asker.client.exchange(cmd('CLIENT', 'LIST'), 1);
      const ids = listed(text as string);
      for (const c of named) expect(ids.get(c.name)).toBe(String(c.id));
      expect(ids.size).toBe(named.length);
      const [filtered] = await asker.client.exchange(cmd('CLIENT', 'LIST', 'ID', String(onA!.id), String(onB!.id)), 1);
      expect([...listed(filtered as string).keys()].sort()).toEqual([onA!.name, onB!.name].sort());
    }
  });

  it('kills a client of the other worker; the rest are served', async () => {
    const [listA, listB] = [...byWorker().values()];
    const asker = listA![0]!;
    const victim = listB![0]!;
    const [killed] = await asker.client.exchange(cmd('CLIENT', 'KILL', 'ID', String(victim.id)), 1);
    expect(killed).toBe(1);
    await victim.client.untilClosed();
    expect(await listB![1]!.client.exchange(cmd('PING'), 1)).toEqual(['PONG']);
    const [text] = await listB![1]!.client.exchange(cmd('CLIENT', 'LIST'), 1);
    expect(listed(text as string).has(victim.name)).toBe(false);
    const [again] = await asker.client.exchange(cmd('CLIENT', 'KILL', 'ID', String(victim.id)), 1);
    expect(again).toBe(0);
  });

  it('with the primary stopped: CLIENT LIST and KILL refused after a bound, CLIENT INFO answered', async () => {
    const [listA] = [...byWorker().values()];
    const [asker, other] = [listA![0]!, listA![1]!];
    process.kill(binary.child.pid!, 'SIGSTOP');
    try {
      const pending = asker.client.exchange(
        Buffer.concat([cmd('CLIENT', 'LIST'), cmd('CLIENT', 'KILL', 'ID', '1')]),
        2,
      );
      const [info] = await other.client.exchange(cmd('CLIENT', 'INFO'), 1);
      expect(info as string).toContain(`id=${other.id} `);
      const [list, kill] = (await pending) as Error[];
      expect(list!.message).toBe(
        "ERR keymux: CLIENT LIST needs every worker's clients, and the primary process did not answer in 5000 ms",
      );
      expect(kill!.message).toBe(
        "ERR keymux: CLIENT KILL needs every worker's clients, and the primary process did not answer in 5000 ms",
      );
    } finally {
      process.kill(binary.child.pid!, 'SIGCONT');
    }
    // Once it runs again, the asks it missed are answered to nobody, and new ones work.
    const [text] = await asker.client.exchange(cmd('CLIENT', 'LIST'), 1);
    expect(listed(text as string).get(asker.name)).toBe(String(asker.id));
  }, 30_000);
});
