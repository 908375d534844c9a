/**
 * SCRIPT KILL / FUNCTION KILL: sent to every shard (cluster mode: every master) on a short-lived connection of
 * its own. Not on the shared pipelined connection: the script to kill may be running from that very connection,
 * and Redis reads nothing more from a connection whose script is running, so a KILL queued behind it would wait
 * for the script it should stop. +OK when some shard killed a script; otherwise keymux's error for a shard that
 * could not be asked or did not answer (it may be running a script keymux cannot then say is not there), else the
 * first shard's own error (-NOTBUSY No scripts in execution right now, -UNKILLABLE ...), as Redis answers.
 * The KILL waits for its answer past backend.timeout_ms: a shard running a script reads it only once the script has
 * run for the shard's busy-reply-threshold (5 s by default, set per shard), and then answers at once; an operation
 * timeout would fail a KILL sent early although the shard kills the script later. But not for ever: a shard that is
 * stopped (SIGSTOP) or hung accepts the connection and never answers, and the client's KILL, and everything it sent
 * after it, would wait with it. So the answer is awaited for backend.busy_reply_threshold_ms (the shards' threshold,
 * as the operator declares it) plus backend.timeout_ms once connected (timeout_ms 0: no timeouts, no bound here
 * either), and past that the shard's part is an error naming it.
 */
import { AnswerTimeoutError, controlCommands } from '../../backend/control.js';
import { errorReply } from '../../errors.js';
import { OK } from '../../resp/writer.js';
import type { DispatchHandler } from './types.js';

/** keymux's own failure to get a shard's answer (as opposed to the shard's error reply). */
class ShardFailure extends Error {}

export const dispatchKill: DispatchHandler = (_session, req, _spec, topo) => {
  const b = topo.config.backend;
  const command = req.args.map((a) => a.toString('latin1'));
  const commandName = `${command[0]} ${command[1]}`.toUpperCase();
  const answerTimeoutMs = b.timeoutMs > 0 ? b.busyReplyThresholdMs + b.timeoutMs : 0;
  const answers = topo.shards.map((shard) =>
    controlCommands(
      {
        host: shard.config.host,
        port: shard.config.port,
        password: b.password,
        username: b.username,
        timeoutMs: Math.max(1000, b.connectTimeoutMs),
        awaitAnswers: true,
        answerTimeoutMs,
        tls: b.tls,
      },
      [command],
    ).then(
      (replies) => replies[0],
      (err: Error) =>
        new ShardFailure(
          err instanceof AnswerTimeoutError
            ? `ERR keymux: shard ${shard.name} (${shard.address}) did not answer ${commandName} within ${err.ms} ms`
            : `ERR keymux: shard ${shard.name} (${shard.address}): ${err.message}`,
        ),
    ),
  );
  void Promise.all(answers).then((replies) => {
    if (replies.some((r) => r === 'OK')) {
      req.deliver(OK);
      return;
    }
    // A shard keymux could not ask may be running a script: its failure, not another shard's NOTBUSY, is the answer.
    const failed =
      replies.find((r): r is ShardFailure => r instanceof ShardFailure) ??
      replies.find((r): r is Error => r instanceof Error);
    req.deliver(failed !== undefined ? errorReply(failed.message) : OK);
  });
};
