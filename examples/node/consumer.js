'use strict';
// A subscriber helper for Node.js, the counterpart of the Python and Rust clients' Subscriber:
// runs `handler(receivedEvent)` for each delivered event, at most `maxConcurrency` at once, and
// settles each by its outcome, in batches; reopens the Subscribe call with backoff when it
// breaks; `stop()` drains.
//
//   const consumer = ef.consume(c.subscriber, { stream: 'orders', subscription: 'billing' },
//     async (received) => { await bill(received.event); });     // resolves: ack
//   ...
//   await consumer.stop();
//
// Outcomes: the handler resolving with nothing (or Outcome.ack()) acknowledges; throwing (or
// resolving with Outcome.nack(reason)) nacks: redelivered after the subscription's retry
// backoff, the message kept as its last error; throwing a PermanentError (or resolving with
// Outcome.reject(reason)) dead-letters at once; Outcome.ignore() leaves the event to its ack
// deadline.
//
// Leases, as in the Python and Rust clients: every half `leaseMs` (default 30 000, the server's
// default ack deadline; set it to the subscription's), one ModifyAckDeadline call extends by
// `leaseMs` the events whose handlers have run that long, so a slow handler keeps its event
// instead of it being redelivered elsewhere meanwhile. `leaseMs: 0` never extends: a handler then
// has the subscription's ack deadline. A failed extension is counted (`leaseFailures`) and tried
// again at the next tick while the handler runs.
//
// Flow control: the Subscribe call asks for `maxConcurrency` outstanding events, and a handler
// keeps its slot until the call carrying its outcome has ended, so the server's window and the
// running handlers agree; the stream is paused while every slot is taken (handlers of a call
// that broke still hold theirs). Settlements of one kind (acks; nacks or rejects with one
// reason) share one call, sent when `ackBatchSize` ids wait or `ackBatchDelayMs` after the first,
// and a batch is at most the larger of 250 and a quarter of the slots (as in the other clients:
// a batch of every slot leaves the server's window full for each call's round trip).
// Settlement calls that meet UNAVAILABLE or DEADLINE_EXCEEDED are retried for `settleRetryMs`
// (ack ids settle on any replica, also after a reconnect).
//
// A status a reconnect cannot fix (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
// UNAUTHENTICATED, FAILED_PRECONDITION, UNIMPLEMENTED) stops the consumer; `done` then rejects
// with it, after the drain. `stop()`: events received from then on are nacked at once, handlers
// in flight finish and are settled (open batches go at once), then the call is cancelled and
// `done` (and the promise `stop()` returned) resolves.

const { status } = require('@grpc/grpc-js');

const RETRYABLE = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
const FATAL = new Set([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.PERMISSION_DENIED,
  status.UNAUTHENTICATED,
  status.FAILED_PRECONDITION,
  status.UNIMPLEMENTED,
]);
/** How many settlement batches a window of slots is cut into, once it is over MIN_BATCH. */
const BATCHES_PER_WINDOW = 4;
/** Ids a batch keeps before it is cut to a quarter of the window. */
const MIN_BATCH = 250;
/** Most ack ids one call may carry. */
const MAX_IDS_PER_CALL = 10_000;
/** Longest lease the server grants (a subscription's ack deadline is at most 600 s). */
const MAX_LEASE_MS = 600_000;
/** Most bytes of a nack or reject reason the server keeps. */
const MAX_REASON_BYTES = 1024;

/** Thrown by a handler for an event that can never succeed: it is dead-lettered. */
class PermanentError extends Error {}

/** How to settle an event. */
const Outcome = {
  ack: () => ({ kind: 'ack', reason: '' }),
  nack: (reason = '') => ({ kind: 'nack', reason: String(reason) }),
  reject: (reason) => ({ kind: 'reject', reason: String(reason) }),
  ignore: () => ({ kind: 'ignore', reason: '' }),
};

/** Most ids one settlement call carries for `maxConcurrency` slots. */
function batchLimit(ackBatchSize, maxConcurrency) {
  const cut = Math.max(Math.ceil(maxConcurrency / BATCHES_PER_WINDOW), Math.min(MIN_BATCH, maxConcurrency));
  return Math.max(1, Math.min(ackBatchSize, cut));
}

/** The reason cut to what the server keeps (whole characters). */
function reasonOf(text) {
  const bytes = Buffer.from(text);
  return bytes.length <= MAX_REASON_BYTES ? text : bytes.subarray(0, MAX_REASON_BYTES).toString().replace(/\uFFFD+$/, '');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Consumer {
  constructor(client, target, handler, options = {}) {
    const {
      maxConcurrency = 16,
      ackBatchSize = 1000,
      ackBatchDelayMs = 5,
      settleRetryMs = 30_000,
      backoffMs = [100, 5000],
      callTimeoutMs = 10_000,
      leaseMs = 30_000,
      metadata,
    } = options;
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) throw new RangeError('maxConcurrency must be at least 1');
    if (!(leaseMs === 0 || (leaseMs >= 1000 && leaseMs <= MAX_LEASE_MS))) {
      throw new RangeError(`leaseMs must be 0 (never extend) or 1000 to ${MAX_LEASE_MS}`);
    }
    this.client = client;
    this.request = { stream: target.stream, subscription: target.subscription, max_outstanding_messages: maxConcurrency };
    this.handler = handler;
    this.config = { maxConcurrency, ackBatchDelayMs, settleRetryMs, backoffMs, callTimeoutMs, metadata };
    this.limit = batchLimit(ackBatchSize, maxConcurrency);
    /** Handlers running or waiting for their settlement call to end. */
    this.busy = 0;
    /** Open batches by `kind reason`. */
    this.batches = new Map();
    /** Settlement calls under way. */
    this.calls = 0;
    /** When each running handler started (ms), by ack id: what lease extension looks at. */
    this.running = new Map();
    this.stats = {
      received: 0, acked: 0, nacked: 0, rejected: 0, ignored: 0, expired: 0,
      settleCalls: 0, settleFailures: 0, reconnects: 0, leaseExtensions: 0, leaseFailures: 0,
    };
    this.stopping = false;
    /** The open Subscribe call; null while waiting to reopen one. */
    this.call = null;
    /** Reopens since a call last delivered (the backoff's exponent). */
    this.attempt = 0;
    this.fatal = null;
    this.done = new Promise((resolve, reject) => {
      this.finish = () => (this.fatal ? reject(this.fatal) : resolve(this.stats));
    });
    this.done.catch(() => {}); // a caller that never awaits `done` does not crash the process
    if (leaseMs > 0) {
      this.lease = setInterval(() => this.extend(leaseMs), leaseMs / 2);
      this.lease.unref(); // never what keeps the process alive
    }
    this.open();
  }

  open() {
    const options = this.config.metadata ? [this.config.metadata] : [];
    const call = this.client.Subscribe(this.request, ...options);
    this.call = call;
    if (this.busy >= this.config.maxConcurrency) call.pause();
    call.on('data', (batch) => {
      this.attempt = 0;
      for (const received of batch.events) this.start(received);
    });
    // A call ends with 'error' (a status) or 'end'; whichever comes first counts, once.
    const broken = (err) => {
      if (call !== this.call || this.stopping) return;
      this.call = null;
      if (err && FATAL.has(err.code)) {
        this.fatal = err;
        this.stop();
        return;
      }
      this.reopen();
    };
    call.on('error', broken);
    call.on('end', () => broken(null));
  }

  /** Opens a new call after a jittered backoff that grows until a call delivers again. */
  async reopen() {
    const attempt = this.attempt;
    this.attempt += 1;
    await sleep(this.backoff(attempt) * (0.5 + Math.random() / 2));
    if (this.stopping) return;
    this.stats.reconnects += 1;
    this.open();
  }

  /** The wait before retry `attempt` (from 0): doubling from the first backoff up to the most. */
  backoff(attempt) {
    const [first, most] = this.config.backoffMs;
    return Math.min(most, first * 2 ** Math.min(attempt, 16));
  }

  /** Runs the handler of one delivered event (or nacks it at once while stopping). */
  start(received) {
    this.stats.received += 1;
    this.take();
    if (this.stopping) {
      this.settle(received.ack_id, Outcome.nack('consumer stopping'));
      return;
    }
    this.running.set(received.ack_id, Date.now());
    Promise.resolve()
      .then(() => this.handler(received))
      .then(
        (outcome) => outcome ?? Outcome.ack(),
        (err) => (err instanceof PermanentError ? Outcome.reject(err.message) : Outcome.nack(err?.message ?? String(err))),
      )
      .then((outcome) => {
        this.running.delete(received.ack_id);
        this.settle(received.ack_id, outcome);
      });
  }

  /** Extends by `leaseMs` the events whose handlers have run at least half of it. */
  async extend(leaseMs) {
    const since = Date.now() - (leaseMs / 2) * 0.9;
    const due = [...this.running].filter(([, started]) => started <= since).map(([ackId]) => ackId);
    const seconds = Math.floor(leaseMs / 1000);
    for (let i = 0; i < due.length; i += MAX_IDS_PER_CALL) {
      const ids = due.slice(i, i + MAX_IDS_PER_CALL);
      this.stats.settleCalls += 1;
      try {
        const reply = await this.unary('ModifyAckDeadline', { ack_ids: ids, ack_deadline_seconds: seconds });
        this.stats.leaseExtensions += ids.length - reply.expired_ack_ids.length - reply.invalid_ack_ids.length;
      } catch {
        this.stats.leaseFailures += ids.length;
      }
    }
  }

  take() {
    this.busy += 1;
    if (this.busy >= this.config.maxConcurrency) this.call?.pause();
  }

  release(n) {
    this.busy -= n;
    if (this.busy < this.config.maxConcurrency) this.call?.resume();
    this.maybeFinish();
  }

  settle(ackId, outcome) {
    if (outcome.kind === 'ignore') {
      this.stats.ignored += 1;
      this.release(1);
      return;
    }
    const key = `${outcome.kind} ${outcome.reason}`;
    let batch = this.batches.get(key);
    if (!batch) {
      batch = { outcome, ids: [], timer: null };
      this.batches.set(key, batch);
    }
    batch.ids.push(ackId);
    if (batch.ids.length >= this.limit || this.stopping || this.config.ackBatchDelayMs <= 0) {
      this.flush(key);
    } else if (!batch.timer) {
      batch.timer = setTimeout(() => this.flush(key), this.config.ackBatchDelayMs);
    }
  }

  flush(key) {
    const batch = this.batches.get(key);
    if (!batch) return;
    this.batches.delete(key);
    clearTimeout(batch.timer);
    this.calls += 1;
    this.send(batch.ids, batch.outcome).finally(() => {
      this.calls -= 1;
      this.release(batch.ids.length);
    });
  }

  /** One settlement call for `ids`, retried while the service is unavailable. */
  async send(ids, outcome) {
    const [method, request] = {
      ack: ['Acknowledge', { ack_ids: ids }],
      nack: ['ModifyAckDeadline', { ack_ids: ids, ack_deadline_seconds: 0, reason: reasonOf(outcome.reason) }],
      reject: ['Reject', { ack_ids: ids, reason: reasonOf(outcome.reason) }],
    }[outcome.kind];
    const started = Date.now();
    for (let attempt = 0; ; attempt += 1) {
      this.stats.settleCalls += 1;
      try {
        const reply = await this.unary(method, request);
        const expired = reply.expired_ack_ids.length + reply.invalid_ack_ids.length;
        this.stats[{ ack: 'acked', nack: 'nacked', reject: 'rejected' }[outcome.kind]] += ids.length - expired;
        this.stats.expired += expired;
        return;
      } catch (err) {
        if (!RETRYABLE.has(err.code) || Date.now() - started >= this.config.settleRetryMs) {
          this.stats.settleFailures += ids.length;
          return;
        }
        await sleep(this.backoff(attempt));
      }
    }
  }

  unary(method, request) {
    const deadline = { deadline: Date.now() + this.config.callTimeoutMs };
    return new Promise((resolve, reject) => {
      const done = (err, reply) => (err ? reject(err) : resolve(reply));
      if (this.config.metadata) this.client[method](request, this.config.metadata, deadline, done);
      else this.client[method](request, deadline, done);
    });
  }

  /** Stops taking events, lets handlers in flight finish and settle, then ends the call. */
  stop() {
    if (!this.stopping) {
      this.stopping = true;
      for (const key of [...this.batches.keys()]) this.flush(key);
      this.maybeFinish();
    }
    return this.done;
  }

  maybeFinish() {
    if (!this.stopping || this.busy > 0 || this.calls > 0 || this.batches.size > 0) return;
    this.call?.cancel();
    clearInterval(this.lease);
    this.finish();
  }
}

/** Starts consuming `{ stream, subscription }` with `handler`; see the top of this file. */
function consume(subscriberClient, target, handler, options) {
  return new Consumer(subscriberClient, target, handler, options);
}

module.exports = { consume, Consumer, Outcome, PermanentError, batchLimit };
