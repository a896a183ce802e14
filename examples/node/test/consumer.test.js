'use strict';
// The subscriber helper's batch size, without servers (its behaviour against the real binaries
// is in client.test.js).

const assert = require('node:assert/strict');
const { it } = require('node:test');

const { batchLimit, consume } = require('../consumer');

it('a settlement batch is at most the larger of 250 and a quarter of the slots, capped by ackBatchSize', () => {
  const cases = [
    [1000, 1, 1],
    [1000, 16, 16],
    [1000, 250, 250],
    [1000, 400, 250],
    [1000, 1000, 250],
    [1000, 4000, 1000],
    [1000, 8000, 1000],
    [100, 1000, 100],
    [1, 16, 1],
  ];
  for (const [ackBatchSize, slots, expected] of cases) {
    assert.equal(batchLimit(ackBatchSize, slots), expected, `ackBatchSize ${ackBatchSize}, ${slots} slots`);
  }
});

it('a lease is 0 (never extend) or 1 s to the longest ack deadline, 600 s', () => {
  for (const leaseMs of [1, 999, 600_001, -1, NaN]) {
    // Refused before any call is made: the client is never used.
    assert.throws(() => consume(null, { stream: 's', subscription: 'n' }, async () => {}, { leaseMs }), RangeError, `leaseMs ${leaseMs}`);
  }
});
