'use strict';
// The real eventflow binaries serving gRPC over TLS and mutual TLS, talked to from Node.js with
// grpc.credentials.createSsl (node:test, `node --test`); the Node twin of
// examples/python/test_tls.py.
//
// Certificates are made per run with the `openssl` command (../harness.js): a CA and a server
// certificate for localhost/127.0.0.1, and a client certificate from a second CA for mTLS. The
// binaries get them through EVENTFLOW_TLS_CERT_FILE / EVENTFLOW_TLS_KEY_FILE, plus
// EVENTFLOW_TLS_CLIENT_CA_FILE for the mTLS set. Build first: `cargo build --bins`.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, it, before, after } = require('node:test');

const ef = require('../client');
const { uid, startRedis, startServices, stopAll, makeCertificates } = require('../harness');

const RECEIVE_TIMEOUT_MS = 15_000; // events to arrive on a Subscribe call
const SERVICES = ['publisher', 'subscriber', 'admin'];
/** The server certificate is checked for "localhost" (it is also valid for 127.0.0.1, but a TLS
 * server name may not be an IP address). */
const CHANNEL_OPTIONS = { 'grpc.ssl_target_name_override': 'localhost' };

/** Publishes two events to a new stream, receives them on a Subscribe call and acks them. */
async function publishSubscribeAck(clients) {
  const call = (service, method, request) => ef.unary(clients[service], method, request);
  const stream = `tls-${uid()}`;
  await call('admin', 'CreateStream', { stream: { name: stream } });
  await call('admin', 'CreateSubscription', { subscription: { stream, name: 'sub' }, start_position: { earliest: true } });
  const events = [0, 1].map((n) => ef.makeEvent('com.example.tls', { n }));
  const { results } = await call('publisher', 'Publish', { stream, events });
  assert.deepEqual(results.map((r) => r.error), [null, null], 'both events stored');

  const sub = ef.subscribe(clients.subscriber, { stream, subscription: 'sub', max_outstanding_messages: 10 });
  try {
    const received = await sub.take(2, RECEIVE_TIMEOUT_MS);
    assert.deepEqual(received.map((r) => JSON.parse(r.event.text_data).n), [0, 1]);
    const ackIds = received.map((r) => r.ack_id);
    const ack = await call('subscriber', 'Acknowledge', { ack_ids: ackIds });
    assert.deepEqual([ack.invalid_ack_ids, ack.expired_ack_ids], [[], []]);
  } finally {
    sub.cancel();
  }
  const stats = await call('admin', 'GetStreamStats', { stream });
  assert.equal(stats.stats.subscriptions[0].pending, '0', 'nothing left pending');
}

/** Asserts that `promise` (a call) fails as UNAVAILABLE: the TLS handshake was refused. */
async function assertRefused(promise, what) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, ef.grpc.status.UNAVAILABLE, `${what}: got ${ef.grpc.status[err.code]}: ${err.details}`);
    return true;
  });
}

describe('eventflow over TLS and mutual TLS from Node.js', { timeout: 180_000 }, () => {
  let certs = null;
  let tlsAddrs = {};
  let mtlsAddrs = {};
  const opened = [];

  /** Clients of `addrs` with `credentials`, closed after the tests. */
  const connect = (addrs, credentials) => {
    const clients = ef.connect(addrs, { credentials, channelOptions: CHANNEL_OPTIONS });
    opened.push(clients);
    return clients;
  };

  before(async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eventflow-node-tls-'));
    certs = makeCertificates(tmp);
    const redisUrl = await startRedis(tmp);
    const tlsEnv = { EVENTFLOW_TLS_CERT_FILE: certs.serverCert, EVENTFLOW_TLS_KEY_FILE: certs.serverKey };
    const mtlsEnv = { ...tlsEnv, EVENTFLOW_TLS_CLIENT_CA_FILE: certs.clientCa };
    const trusting = ef.tlsCredentials({ ca: certs.ca });
    const withCert = ef.tlsCredentials({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey });
    const prefix = `node-tls-${uid()}`;
    [tlsAddrs, mtlsAddrs] = await Promise.all([
      startServices(SERVICES, { tmp, redisUrl, prefix, env: tlsEnv, credentials: trusting, channelOptions: CHANNEL_OPTIONS, tag: '-tls' }),
      startServices(SERVICES, { tmp, redisUrl, prefix, env: mtlsEnv, credentials: withCert, channelOptions: CHANNEL_OPTIONS, tag: '-mtls' }),
    ]);
  });

  after(async () => {
    for (const clients of opened) clients.close();
    await stopAll();
  });

  it('publishes, subscribes and acks over TLS', async () => {
    await publishSubscribeAck(connect(tlsAddrs, ef.tlsCredentials({ ca: certs.ca })));
  });

  it('refuses a plaintext client and a client that does not trust the CA', async () => {
    const plain = connect(tlsAddrs, ef.grpc.credentials.createInsecure());
    await assertRefused(ef.unary(plain.admin, 'ListStreams', {}, { timeoutMs: 5000 }), 'plaintext');
    const systemRoots = connect(tlsAddrs, ef.tlsCredentials());
    await assertRefused(ef.unary(systemRoots.admin, 'ListStreams', {}, { timeoutMs: 5000 }), 'system roots only');
  });

  it('publishes, subscribes and acks over mutual TLS with a client certificate', async () => {
    const credentials = ef.tlsCredentials({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey });
    await publishSubscribeAck(connect(mtlsAddrs, credentials));
  });

  it('refuses a client without a certificate under mutual TLS', async () => {
    const noCert = connect(mtlsAddrs, ef.tlsCredentials({ ca: certs.ca }));
    await assertRefused(ef.unary(noCert.admin, 'ListStreams', {}, { timeoutMs: 5000 }), 'admin without a certificate');
    await assertRefused(
      ef.unary(noCert.publisher, 'Publish', { stream: 'x', events: [ef.makeEvent('t', {})] }, { timeoutMs: 5000 }),
      'publisher without a certificate',
    );
  });
});
