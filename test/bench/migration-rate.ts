/**
 * The migration rate behind `keymux plan`'s default (migration/estimate.ts DEFAULT_KEYS_PER_SECOND): N keys of
 * 100 bytes on a 3-member ring (real redis-servers on free ports), then a reload that adds a fourth member; prints
 * the keys the migration moved, the time from its start to its end (scanning included) and keys/s.
 * Run: `npx tsx test/bench/migration-rate.ts [N]` (default 100,000).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import { startRedis, redisCommands } from '../support/redis.js';
import '../support/keymux.js'; // silent logs

const N = Number(process.argv[2] ?? 100_000);
const redis = await Promise.all([0, 1, 2, 3].map(() => startRedis()));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-rate-'));
const file = path.join(dir, 'keymux.yaml');
const config = (members: number): string =>
  stringify({
    listen: '127.0.0.1:0',
    mode: 'ring',
    shards: redis.slice(0, members).map((r, i) => ({ name: 'abcd'[i], address: r.address })),
    log: { level: 'silent' },
  });
try {
  fs.writeFileSync(file, config(3));
  const proxy = await Proxy.start(parseConfigText(config(3), file).config!, { configPath: file, watchConfig: false });
  for (let i = 0; i < N; i += 10_000) {
    const batch = Array.from({ length: Math.min(10_000, N - i) }, (_, j) => ['SET', `k:${i + j}`, 'v'.repeat(100)]);
    await redisCommands(proxy.port, batch, { timeoutMs: 60_000 });
  }
  fs.writeFileSync(file, config(4));
  await proxy.reloadFromFile('bench');
  for (;;) {
    const m = proxy.migrationProgress().at(-1)!;
    if (m.state === 'done') {
      const seconds = (m.finishedAt! - m.startedAt) / 1000;
      console.log(
        `${N} keys, ${m.keysMoved} moved in ${seconds.toFixed(2)} s: ${Math.round(m.keysMoved / seconds)} keys/s`,
      );
      break;
    }
    await new Promise((r) => setTimeout(r, 50)); // polling the progress; a benchmark, not a test
  }
  await proxy.close();
} finally {
  await Promise.all(redis.map((r) => r.stop()));
  fs.rmSync(dir, { recursive: true, force: true });
}
