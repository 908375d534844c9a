import { describe, it, expect } from 'vitest';
import { startRedis, redisCommand } from '../support/redis.js';

describe('test support', () => {
  it('starts a real redis-server on a free port and stops it', async () => {
    const r = await startRedis();
    expect(await redisCommand(r.port, 'PING')).toBe('PONG');
    await r.stop();
  });
});
