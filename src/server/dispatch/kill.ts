/**
 * SCRIPT KILL / FUNCTION KILL: sent to every shard (cluster mode: every master) on a short-lived connection of
 * its own. Not on the shared pipelined connection: the script to kill may be running from that very connection,
 * and Redis reads nothing more from a connection whose script is running, so a KILL queued behind it would wait
 * for the script it should stop. +OK when some shard killed a script; otherwise the first shard's error
 * (-NOTBUSY No scripts in execution right now, -UNKILLABLE ...), as Redis answers. The KILL waits for its answer as
 * long as the shard takes (backend.connect_timeout_ms bounds the connection only): a shard running a script reads
 * it only once the script has run for the shard's busy-reply-threshold (5 s by default, set per shard), however long
 * that is, and then answers at once; an operation timeout would fail a KILL sent early although the shard kills the
 * script later.
 */
import { controlCommands } from '../../backend/control.js';
import { errorReply } from '../../errors.js';
import { OK } from '../../resp/writer.js';
import type { DispatchHandler } from './types.js';

export const dispatchKill: DispatchHandler = (_session, req, _spec, topo) => {
  const b = topo.config.backend;
  const command = req.args.map((a) => a.toString('latin1'));
  const answers = topo.shards.map((shard) =>
    controlCommands(
      {
        host: shard.config.host,
        port: shard.config.port,
        password: b.password,
        username: b.username,
        timeoutMs: Math.max(1000, b.connectTimeoutMs),
        awaitAnswers: true,
        tls: b.tls,
      },
      [command],
    ).then(
      (replies) => replies[0],
      (err: Error) => new Error(`ERR keymux: shard ${shard.name} (${shard.address}): ${err.message}`),
    ),
  );
  void Promise.all(answers).then((replies) => {
    if (replies.some((r) => r === 'OK')) {
      req.deliver(OK);
      return;
    }
    const failed = replies.find((r): r is Error => r instanceof Error);
    req.deliver(failed !== undefined ? errorReply(failed.message) : OK);
  });
};
