'use strict';
// Black-box test of the real eventflow binaries from Node.js (node:test, `node --test`).
//
// Starts its own redis-server on a free port (nothing on disk) and the four binaries from
// $EVENTFLOW_BIN_DIR (default: target/debug of this repo, or $CARGO_TARGET_DIR/debug) with a
// unique key prefix and free ports, waits for grpc.health.v1 SERVING on each, then talks gRPC
// to them through ../client.js. Build first: `cargo build --bins` (at the repo root).

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, it, before, after } = require('node:test');

const ef = require('../client');
const { uid, freePort, startRedis, startService, startServices, stop, stopAll } = require('../harness');

const RECEIVE_TIMEOUT_MS = 15_000; // events to arrive on a Subscribe call
const ENTRY_ID = /^\d+-\d+$/;
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
const TRACEPARENT_FORMAT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const EVENT_TYPE = 'com.example.node';
const BINARIES = ['publisher', 'subscriber', 'admin', 'dlq'];

// ------------------------------------------------------------------------- test helpers

let addrs = {};
let clients = null;
/** What startServices was given: tmp directory, Redis URL and key prefix. */
let setup = null;

const call = (service, method, request, opts) => ef.unary(clients[service], method, request, opts);

/** A new stream with a subscription "sub" starting at the earliest event; returns the stream name. */
async function newStream({ ackDeadlineSeconds = 0 } = {}) {
  const name = `node-${uid()}`;
  await call('admin', 'CreateStream', { stream: { name } });
  await call('admin', 'CreateSubscription', {
    subscription: { stream: name, name: 'sub', ack_deadline_seconds: ackDeadlineSeconds },
    start_position: { earliest: true },
  });
  return name;
}

function event(n, { id = '', type = EVENT_TYPE, attributes = {} } = {}) {
  return ef.makeEvent(type, { n }, { id, source: '/node', attributes });
}

async function publish(stream, events) {
  const response = await call('publisher', 'Publish', { stream, events });
  assert.equal(response.results.length, events.length, 'one result per event');
  return response.results;
}

function entryKey(entryId) {
  const [ms, seq] = entryId.split('-');
  return [BigInt(ms), BigInt(seq)];
}

function assertStored(result, what) {
  assert.equal(result.error, null, `${what}: unexpected error ${JSON.stringify(result.error)}`);
  assert.equal(result.duplicate, false, `${what}: not a duplicate`);
  assert.match(result.entry_id, ENTRY_ID, `${what}: entry id`);
}

async function assertGrpcError(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `expected ${ef.grpc.status[code]}, got ${ef.grpc.status[err.code]}: ${err.details}`);
    return true;
  });
}

// ------------------------------------------------------------------------- the tests

describe('eventflow from Node.js', { timeout: 180_000 }, () => {
  before(async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eventflow-node-'));
    setup = { tmp, redisUrl: await startRedis(tmp), prefix: `node-${uid()}` };
    addrs = await startServices(BINARIES, setup);
    clients = ef.connect(addrs);
  });

  after(async () => {
    if (clients) clients.close();
    await stopAll();
  });

  it('each binary reports SERVING, overall and for its service', async () => {
    for (const name of BINARIES) {
      const health = ef.createClient('health', addrs[name]);
      try {
        assert.equal(await ef.healthStatus(health, ''), 'SERVING', `eventflow-${name} overall`);
        assert.equal(await ef.healthStatus(health, ef.SERVICE_NAMES[name]), 'SERVING', `eventflow-${name} service`);
      } finally {
        health.close();
      }
    }
  });

  it('creates a stream and a subscription starting at the earliest event', async () => {
    const name = `node-${uid()}`;
    const created = await call('admin', 'CreateStream', { stream: { name } });
    assert.equal(created.stream.name, name);
    const got = await call('admin', 'GetStream', { name });
    assert.equal(got.stream.name, name);

    const sub = await call('admin', 'CreateSubscription', {
      subscription: { stream: name, name: 'sub', ack_deadline_seconds: 30 },
      start_position: { earliest: true },
    });
    assert.equal(sub.subscription.stream, name);
    assert.equal(sub.subscription.name, 'sub');
    assert.equal(sub.subscription.ack_deadline_seconds, 30);

    await assertGrpcError(call('admin', 'CreateStream', { stream: { name } }), ef.grpc.status.ALREADY_EXISTS);
  });

  it('publishes a batch of 3 with one result per event and assigns a missing id', async () => {
    const stream = await newStream();
    const ids = [`e-${crypto.randomUUID()}`, '', `e-${crypto.randomUUID()}`];
    const results = await publish(stream, ids.map((id, n) => event(n, { id })));

    results.forEach((result, i) => {
      assertStored(result, `results[${i}]`);
      if (ids[i]) assert.equal(result.event_id, ids[i], `results[${i}] keeps the given id`);
    });
    const assigned = results[1].event_id;
    assert.ok(assigned && !ids.includes(assigned), 'the server assigned an id');
    assert.match(assigned, UUID_V7, 'server-assigned ids are UUIDv7');

    const keys = results.map((r) => entryKey(r.entry_id));
    for (let i = 1; i < keys.length; i++) {
      const [a, b] = [keys[i - 1], keys[i]];
      assert.ok(a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]), 'entries stored in request order');
    }
  });

  it('publishes over PublishStream: answers in order, stored in the order sent', async () => {
    const stream = await newStream();
    const batches = Array.from({ length: 30 }, (_, b) => [stream, Array.from({ length: 4 }, (_, i) => event(i, { id: `b${b}-${i}` }))]);
    batches.splice(5, 0, ['no-such-stream', [event(0)]]);
    const responses = await ef.publishStream(clients.publisher, batches, { window: 3 });

    assert.deepEqual(responses.map((r) => r.request_id), batches.map((_, i) => String(i)), 'one answer per batch, in order');
    assert.equal(responses[5].error.code, ef.grpc.status.NOT_FOUND);
    assert.equal(responses[5].results.length, 0);
    const stored = responses.filter((_, i) => i !== 5).flatMap((r) => r.results);
    assert.deepEqual(stored.map((r) => r.event_id), batches.filter(([s]) => s === stream).flatMap(([, events]) => events.map((e) => e.id)));
    stored.forEach((result, i) => assertStored(result, `stored[${i}]`));
    const keys = stored.map((r) => entryKey(r.entry_id));
    for (let i = 1; i < keys.length; i++) {
      const [a, b] = [keys[i - 1], keys[i]];
      assert.ok(a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]), 'entries stored in the order sent');
    }
  });

  it('rejects an event without type and stores its neighbours', async () => {
    const stream = await newStream();
    const bad = event(1, { id: `e-${crypto.randomUUID()}` });
    delete bad.type;
    const results = await publish(stream, [event(0), bad, event(2)]);

    assert.notEqual(results[1].error, null, 'events[1] has an error');
    assert.equal(results[1].error.code, 3, 'INVALID_ARGUMENT');
    assert.equal(results[1].error.field, 'events[1].type');
    assert.equal(results[1].entry_id, '', 'nothing stored for events[1]');
    assertStored(results[0], 'results[0]');
    assertStored(results[2], 'results[2]');

    const stats = await call('admin', 'GetStreamStats', { stream });
    assert.equal(stats.stats.length, '2', 'exactly the two valid events are in the stream');
  });

  it('subscribes, nacks, acks, rejects to the DLQ and requeues', async () => {
    const stream = await newStream();
    const events = [
      event(0, { id: `e-${crypto.randomUUID()}` }),
      event(1, { id: `e-${crypto.randomUUID()}` }),
      event(2, { id: `e-${crypto.randomUUID()}`, attributes: { traceparent: TRACEPARENT } }),
    ];
    const results = await publish(stream, events);
    results.forEach((r, i) => assertStored(r, `results[${i}]`));

    const sub = ef.subscribe(clients.subscriber, { stream, subscription: 'sub', max_outstanding_messages: 10 });
    try {
      // First delivery, in stream order.
      const received = await sub.take(3, RECEIVE_TIMEOUT_MS);
      assert.deepEqual(
        received.map((r) => [r.event.id, r.entry_id]),
        results.map((r) => [r.event_id, r.entry_id]),
      );
      received.forEach((r, n) => {
        assert.equal(r.delivery_attempt, 1);
        assert.ok(r.ack_id, 'has an ack id');
        assert.ok(Number(r.publish_time.seconds) > 0, 'has a publish time');
        assert.equal(r.event.type, EVENT_TYPE);
        assert.equal(r.event.source, '/node');
        assert.equal(r.event.spec_version, '1.0');
        assert.equal(r.event.data, 'text_data');
        assert.deepEqual(JSON.parse(r.event.text_data), { n });
        // The publisher adds a traceparent only when tracing is on: if there is one, it is well formed.
        const tp = r.event.attributes.traceparent;
        if (tp) assert.match(tp.ce_string, TRACEPARENT_FORMAT);
      });
      assert.equal(received[2].event.attributes.traceparent.ce_string, TRACEPARENT, 'the producer traceparent is delivered unchanged');

      // Nack one: it comes back with delivery_attempt 2.
      const nacked = received[1];
      const modify = await call('subscriber', 'ModifyAckDeadline', { ack_ids: [nacked.ack_id], ack_deadline_seconds: 0 });
      assert.deepEqual([modify.invalid_ack_ids, modify.expired_ack_ids], [[], []]);
      const [again] = await sub.take(1, RECEIVE_TIMEOUT_MS);
      assert.equal(again.event.id, nacked.event.id);
      assert.equal(again.entry_id, nacked.entry_id);
      assert.equal(again.delivery_attempt, 2);

      // Ack all.
      const ackIds = [received[0].ack_id, received[2].ack_id, again.ack_id];
      const ack = await call('subscriber', 'Acknowledge', { ack_ids: ackIds });
      assert.deepEqual([ack.invalid_ack_ids, ack.expired_ack_ids], [[], []]);
      const ackAgain = await call('subscriber', 'Acknowledge', { ack_ids: ackIds });
      assert.deepEqual([...ackAgain.expired_ack_ids].sort(), [...ackIds].sort(), 'acked twice -> expired');

      // Reject a new event: it lands in the subscription's dead-letter queue with the reason.
      const doomed = event(3, { id: `e-${crypto.randomUUID()}` });
      const [doomedResult] = await publish(stream, [doomed]);
      assertStored(doomedResult, 'doomed');
      const [delivered] = await sub.take(1, RECEIVE_TIMEOUT_MS);
      assert.equal(delivered.event.id, doomed.id);
      assert.equal(delivered.delivery_attempt, 1);
      const reason = `node test rejected ${uid()}`;
      const reject = await call('subscriber', 'Reject', { ack_ids: [delivered.ack_id], reason });
      assert.deepEqual([reject.invalid_ack_ids, reject.expired_ack_ids], [[], []]);

      const list = await call('dlq', 'ListDeadLetters', { stream, subscription: 'sub' });
      const dead = list.dead_letters.filter((d) => d.event && d.event.id === doomed.id);
      assert.equal(dead.length, 1, `one dead letter for ${doomed.id}: ${JSON.stringify(list.dead_letters)}`);
      assert.equal(dead[0].reason, reason);
      assert.equal(dead[0].stream, stream);
      assert.equal(dead[0].subscription, 'sub');
      assert.equal(dead[0].entry_id, doomedResult.entry_id);
      assert.equal(dead[0].delivery_attempts, 1);

      // Requeue it: delivered again to this subscription, starting over at attempt 1.
      const requeue = await call('dlq', 'RequeueDeadLetters', { stream, subscription: 'sub', ids: [dead[0].id] });
      assert.equal(requeue.requeued, '1');
      assert.deepEqual(requeue.not_found_ids, []);
      const [redriven] = await sub.take(1, RECEIVE_TIMEOUT_MS);
      assert.equal(redriven.event.id, doomed.id);
      assert.equal(redriven.event.type, EVENT_TYPE);
      assert.equal(redriven.event.text_data, doomed.text_data);
      assert.equal(redriven.delivery_attempt, 1);
      const ackRedriven = await call('subscriber', 'Acknowledge', { ack_ids: [redriven.ack_id] });
      assert.deepEqual([ackRedriven.invalid_ack_ids, ackRedriven.expired_ack_ids], [[], []]);

      const after = await call('dlq', 'ListDeadLetters', { stream, subscription: 'sub' });
      assert.equal(after.dead_letters.filter((d) => d.event && d.event.id === doomed.id).length, 0, 'requeued dead letter left the queue');
    } finally {
      sub.cancel();
    }
  });

  it('consume: handlers settle by outcome in batched calls, and stop drains', { timeout: 60_000 }, async () => {
    const stream = await newStream();
    const ids = Array.from({ length: 60 }, (_, i) => `c-${i}`);
    await publish(stream, ids.map((id, i) => event(i, { id })));
    const attempts = new Map();
    let running = 0;
    let mostRunning = 0;
    let settled;
    const allHandled = new Promise((resolve) => (settled = resolve));
    const consumer = ef.consume(
      clients.subscriber,
      { stream, subscription: 'sub' },
      async (received) => {
        const id = received.event.id;
        attempts.set(id, received.delivery_attempt);
        running += 1;
        mostRunning = Math.max(mostRunning, running);
        await new Promise((resolve) => setImmediate(resolve));
        running -= 1;
        const first = received.delivery_attempt === 1;
        if (attempts.size === ids.length && attempts.get('c-7') === 2 && attempts.get('c-11') === 2) settled();
        if (id === 'c-7' && first) throw new Error('try again');
        if (id === 'c-9') throw new ef.PermanentError('never');
        return id === 'c-11' && first ? ef.Outcome.nack('later') : undefined;
      },
      { maxConcurrency: 8 },
    );
    await Promise.race([allHandled, consumer.done.then(() => assert.fail('stopped early'))]);
    const stats = await consumer.stop();
    assert.ok(mostRunning <= 8, `at most maxConcurrency handlers at once: ${mostRunning}`);
    // Every event acked but c-9 (rejected); c-7 and c-11 nacked once first.
    assert.deepEqual([stats.acked, stats.nacked, stats.rejected], [ids.length - 1, 2, 1], JSON.stringify(stats));
    assert.deepEqual([stats.expired, stats.settleFailures], [0, 0]);
    assert.ok(stats.settleCalls < stats.acked, `settlements share calls: ${JSON.stringify(stats)}`);

    const list = await call('dlq', 'ListDeadLetters', { stream, subscription: 'sub' });
    assert.deepEqual(list.dead_letters.map((d) => [d.event.id, d.reason]), [['c-9', 'never']]);
  });

  it('consume: a restarted subscriber breaks the call; it is reopened and every event handled', { timeout: 90_000 }, async () => {
    const stream = await newStream();
    const addr = `127.0.0.1:${await freePort()}`;
    let subscriber = await startService('subscriber', addr, { ...setup, tag: '-restart-1' });
    const client = ef.createClient('subscriber', addr);
    const ids = Array.from({ length: 40 }, (_, i) => `r-${i}`);
    const handled = new Set();
    const waiters = [];
    const handledAtLeast = (n) => new Promise((resolve) => waiters.push([n, resolve]));
    const consumer = ef.consume(client, { stream, subscription: 'sub' }, async (received) => {
      handled.add(received.event.id);
      for (const [n, resolve] of waiters) if (handled.size >= n) resolve();
    }, { maxConcurrency: 4, backoffMs: [50, 500] });
    try {
      await publish(stream, ids.slice(0, 20).map((id, i) => event(i, { id })));
      await handledAtLeast(20);
      await stop(subscriber); // SIGTERM: the server ends the Subscribe call with UNAVAILABLE
      subscriber = await startService('subscriber', addr, { ...setup, tag: '-restart-2' });
      await publish(stream, ids.slice(20).map((id, i) => event(20 + i, { id })));
      await handledAtLeast(ids.length);
      const stats = await consumer.stop();
      assert.ok(stats.reconnects >= 1, JSON.stringify(stats));
      assert.equal(stats.settleFailures, 0, JSON.stringify(stats));
      assert.deepEqual([...handled].sort(), [...ids].sort());
    } finally {
      await consumer.stop().catch(() => {});
      client.close();
      await stop(subscriber);
    }
  });

  // A handler running 5 s on a subscription whose ack deadline is 2 s: with leases (every
  // second, by 2 s) it keeps its event; without them (the control, which shows the test can
  // fail) the event is redelivered while the first handler still runs.
  for (const leaseMs of [2000, 0]) {
    const what = leaseMs ? 'a handler longer than the ack deadline keeps its event by lease extension'
      : 'without leases, a handler longer than the ack deadline sees its event redelivered';
    it(`consume: ${what}`, { timeout: 60_000 }, async () => {
      const stream = await newStream({ ackDeadlineSeconds: 2 });
      await publish(stream, [event(0, { id: 'slow' })]);
      const attempts = [];
      let redelivered;
      const secondAttempt = new Promise((resolve) => (redelivered = resolve));
      let finished;
      const firstDone = new Promise((resolve) => (finished = resolve));
      const consumer = ef.consume(clients.subscriber, { stream, subscription: 'sub' }, async (received) => {
        attempts.push(received.delivery_attempt);
        if (received.delivery_attempt > 1) return redelivered();
        await Promise.race([new Promise((resolve) => setTimeout(resolve, 5000)), secondAttempt]);
        finished();
      }, { maxConcurrency: 4, leaseMs });
      try {
        await firstDone;
        const stats = await consumer.stop();
        if (leaseMs) {
          assert.deepEqual(attempts, [1], `one delivery: ${JSON.stringify(stats)}`);
          assert.ok(stats.leaseExtensions >= 2, `extended every half lease: ${JSON.stringify(stats)}`);
          assert.deepEqual([stats.acked, stats.expired, stats.leaseFailures], [1, 0, 0], JSON.stringify(stats));
        } else {
          assert.deepEqual(attempts, [1, 2], 'redelivered while the first handler ran');
          assert.equal(stats.leaseExtensions, 0);
        }
      } finally {
        await consumer.stop().catch(() => {});
      }
    });
  }

  it('consume: a subscription that does not exist ends it with NOT_FOUND', { timeout: 30_000 }, async () => {
    const consumer = ef.consume(clients.subscriber, { stream: `node-${uid()}`, subscription: 'sub' }, async () => {});
    await assert.rejects(consumer.done, (err) => err.code === ef.grpc.status.NOT_FOUND);
  });

  it('GetStream of an unknown stream is NOT_FOUND', async () => {
    await assertGrpcError(call('admin', 'GetStream', { name: `missing-${uid()}` }), ef.grpc.status.NOT_FOUND);
    assert.equal(ef.grpc.status.NOT_FOUND, 5);
  });

  it('Publish to an unknown stream is NOT_FOUND', async () => {
    await assertGrpcError(publish(`missing-${uid()}`, [event(0)]), ef.grpc.status.NOT_FOUND);
  });
});
