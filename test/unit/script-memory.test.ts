/**
 * ScriptMemory's bound (MAX_BYTES, lowered here): past it keymux stops remembering script bodies for shards added
 * later, but a body first run with EVAL is still loaded on every other shard (EVALSHA and SCRIPT EXISTS right after
 * the EVAL find it on any shard, as before the bound), and only once: its SHA1 is kept, so a later EVAL of it sends
 * nothing. SCRIPT FLUSH forgets those SHA1s too. Fake shards: each connection records what is sent and the test
 * answers it.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { setRootLogger } from '../../src/log.js';
import { ScriptMemory } from '../../src/keyspace/script-memory.js';
import type { BackendOp } from '../../src/core/request.js';
import type { BackendConnection } from '../../src/backend/backend-connection.js';
import type { ShardPool } from '../../src/backend/pool.js';
import type { Topology } from '../../src/routing/topology.js';

interface Sent {
  shard: number;
  op: BackendOp;
  frame: Buffer;
}

/** Three fake shards; `sent` collects every op sent to them. */
function fakeShards(): { topo: Topology; connectionOf: (pool: ShardPool) => BackendConnection; sent: Sent[] } {
  const sent: Sent[] = [];
  const pools = [0, 1, 2].map((i) => ({ index: i }) as unknown as ShardPool);
  const topo = { shards: pools.map((pool, index) => ({ index, pool })) } as unknown as Topology;
  const connectionOf = (pool: ShardPool): BackendConnection =>
    ({
      send: (op: BackendOp, frame: Buffer) =>
        sent.push({ shard: (pool as unknown as { index: number }).index, op, frame }),
    }) as unknown as BackendConnection;
  return { topo, connectionOf, sent };
}

setRootLogger(pino({ level: 'silent' }));

const sha1 = (body: string): string => createHash('sha1').update(body).digest('hex');

/** Each shard answers the SCRIPT LOADs sent since `from` with the script's SHA1, as Redis does. */
function answerLoads(sent: Sent[], from: number): void {
  for (const s of sent.slice(from)) {
    const body = s.frame.toString('latin1').split('\r\n')[6];
    s.op.deliver(Buffer.from(`$40\r\n${sha1(body)}\r\n`));
  }
}

describe('ScriptMemory: EVAL sharing past the bound', () => {
  it('still loads a new EVAL body on every other shard once full, once, without remembering it', () => {
    const memory = new ScriptMemory(100);
    const { topo, connectionOf, sent } = fakeShards();
    const big = `return '${'x'.repeat(80)}'`;
    memory.shareEval(Buffer.from(big), 0, topo, connectionOf);
    expect(sent.map((s) => s.shard)).toEqual([1, 2]);
    answerLoads(sent, 0);
    // This one does not fit: shared, not remembered; the memory is full from now on.
    memory.shareEval(Buffer.from("return 'over'"), 0, topo, connectionOf);
    expect(sent.length).toBe(4);
    answerLoads(sent, 2);
    expect(memory.scriptCount).toBe(1);

    // Full: the next new body is loaded on the other shards all the same, but not remembered.
    const after = "return 'after-cap'";
    memory.shareEval(Buffer.from(after), 1, topo, connectionOf);
    expect(sent.slice(4).map((s) => [s.shard, s.frame.toString('latin1')])).toEqual(
      [0, 2].map((shard) => [shard, `*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$${after.length}\r\n${after}\r\n`]),
    );
    answerLoads(sent, 4);
    expect(memory.scriptCount).toBe(1);
    expect(memory.replayFrames().length).toBe(1); // a shard added later gets the remembered one only

    // Its next EVAL sends nothing: every shard has it.
    memory.shareEval(Buffer.from(after), 0, topo, connectionOf);
    expect(sent.length).toBe(6);

    // SCRIPT FLUSH forgets it: the next EVAL of it loads it again (and now remembers it).
    memory.forgetScripts();
    memory.shareEval(Buffer.from(after), 0, topo, connectionOf);
    expect(sent.slice(6).map((s) => s.shard)).toEqual([1, 2]);
    answerLoads(sent, 6);
    expect(memory.scriptCount).toBe(1);
  });
});
