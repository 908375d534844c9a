/**
 * A read/write load checked against a model, for tests that change where keys live under traffic (migrations,
 * reloads, workers): each client works on its own partition of the model's keys, so the model always knows
 * the value a read must return; every reply is compared with it.
 */
import type { Redis } from 'ioredis';

export interface WorkloadResult {
  /** The first replies that differed from the model, or errors (at most 10 kept). */
  problems: string[];
  /** Replies checked. */
  ops: number;
}

/**
 * Pipelines of `batch` commands per client (a third SET + GET of a key, the rest GET and a 2-key MGET) until
 * `stop()` says so, each client at least 3 pipelines. Keys keep their TTL (SET ... KEEPTTL).
 */
export async function checkedWorkload(
  clients: Redis[],
  model: Map<string, string>,
  stop: () => boolean,
  batch = 40,
): Promise<WorkloadResult> {
  const problems: string[] = [];
  let ops = 0;
  const keys = [...model.keys()];
  const n = clients.length;
  const run = async (client: Redis, id: number): Promise<void> => {
    for (let round = 0; !stop() || round < 3; round++) {
      const pipe = client.pipeline();
      const expected: unknown[] = [];
      for (let j = 0; j < batch; j++) {
        const idx = (Math.floor((Math.random() * keys.length) / n) * n + id) % keys.length;
        const key = keys[idx]!;
        if (j % 3 === 0) {
          const v = `w:${id}:${round}:${j}`;
          pipe.set(key, v, 'KEEPTTL');
          expected.push('OK');
          model.set(key, v);
          pipe.get(key);
          expected.push(v);
        } else {
          pipe.get(key);
          expected.push(model.get(key));
          const other = keys[(idx + n) % keys.length]!;
          pipe.mget(key, other);
          expected.push([model.get(key), model.get(other)]);
        }
      }
      const res = await pipe.exec();
      res?.forEach(([err, v], i) => {
        ops++;
        if (problems.length >= 10) return;
        if (err) problems.push(`client ${id}: ${err.message}`);
        else if (JSON.stringify(v) !== JSON.stringify(expected[i]))
          problems.push(`client ${id}: got ${JSON.stringify(v)} want ${JSON.stringify(expected[i])}`);
      });
    }
  };
  await Promise.all(clients.map((client, id) => run(client, id)));
  return { problems, ops };
}
