'use strict';
// A small eventflow client for Node.js: loads the protos from ../../proto at run time with
// @grpc/proto-loader (no code generation) and creates clients for the four services and for
// grpc.health.v1.Health.
//
//   const ef = require('./client');
//   const c = ef.connect({ publisher: '127.0.0.1:50051', subscriber: '127.0.0.1:50052',
//                          admin: '127.0.0.1:50053', dlq: '127.0.0.1:50054' });
//   await ef.unary(c.admin, 'CreateStream', { stream: { name: 'orders' } });
//   // Services serving TLS (mutual TLS: also cert and key):
//   const s = ef.connect(addrs, { credentials: ef.tlsCredentials({ ca: 'ca.crt', cert: 'client.crt', key: 'client.key' }) });
//
// Messages use the proto field names (snake_case, `keepCase`), int64 values are strings, enums
// are their names, unset message fields are null, and a set oneof is named by its oneof field
// (e.g. `event.data === 'text_data'`).

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

/** The repository's proto directory (eventflow/v1/*.proto). */
const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
/** This example's own protos (a copy of grpc/health/v1/health.proto). */
const LOCAL_PROTO_ROOT = path.join(__dirname, 'proto');

const PROTO_FILES = [
  'eventflow/v1/cloudevent.proto',
  'eventflow/v1/publisher.proto',
  'eventflow/v1/subscriber.proto',
  'eventflow/v1/admin.proto',
  'eventflow/v1/dead_letter.proto',
  'grpc/health/v1/health.proto',
];

const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  // google/protobuf/{duration,timestamp,field_mask,any}.proto come bundled with protobufjs,
  // which proto-loader uses; only our own roots need listing.
  includeDirs: [PROTO_ROOT, LOCAL_PROTO_ROOT],
};

/** Full gRPC service name of each binary, as registered with grpc.health.v1. */
const SERVICE_NAMES = {
  publisher: 'eventflow.v1.PublisherService',
  subscriber: 'eventflow.v1.SubscriberService',
  admin: 'eventflow.v1.AdminService',
  dlq: 'eventflow.v1.DeadLetterService',
};

/** Default address of each service (what `make run` uses). */
const DEFAULT_ADDRS = {
  publisher: '127.0.0.1:50051',
  subscriber: '127.0.0.1:50052',
  admin: '127.0.0.1:50053',
  dlq: '127.0.0.1:50054',
};

/** Reconnect quickly while a server is starting (gRPC's default backoff starts at 1 s). */
const CHANNEL_OPTIONS = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.min_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

let loaded = null;

/** The loaded gRPC package object: `load().eventflow.v1.AdminService`, `load().grpc.health.v1.Health`. */
function load() {
  if (loaded === null) {
    const definition = protoLoader.loadSync(PROTO_FILES, LOADER_OPTIONS);
    loaded = grpc.loadPackageDefinition(definition);
  }
  return loaded;
}

/** The client constructor of each service. */
function constructors() {
  const pkg = load();
  return {
    publisher: pkg.eventflow.v1.PublisherService,
    subscriber: pkg.eventflow.v1.SubscriberService,
    admin: pkg.eventflow.v1.AdminService,
    dlq: pkg.eventflow.v1.DeadLetterService,
    health: pkg.grpc.health.v1.Health,
  };
}

/**
 * Channel credentials for services serving TLS (EVENTFLOW_TLS_CERT_FILE): trust the CA in the
 * PEM file `ca` (the system's roots when omitted) and, for services that require mutual TLS
 * (EVENTFLOW_TLS_CLIENT_CA_FILE), present the client certificate `cert` with its key `key`.
 */
function tlsCredentials({ ca = null, cert = null, key = null } = {}) {
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(ca), read(key), read(cert));
}

/**
 * A client of `service` ("publisher", "subscriber", "admin", "dlq" or "health") at `addr`;
 * plaintext unless `credentials` (see `tlsCredentials`) are given. `channelOptions` add to the
 * defaults, e.g. `{ 'grpc.ssl_target_name_override': 'localhost' }` to check the server's
 * certificate for a name other than the address's host.
 */
function createClient(service, addr, credentials = grpc.credentials.createInsecure(), channelOptions = {}) {
  const Ctor = constructors()[service];
  if (!Ctor) throw new Error(`unknown service ${service}`);
  return new Ctor(addr, credentials, { ...CHANNEL_OPTIONS, ...channelOptions });
}

/**
 * Clients for the four services: `{publisher, subscriber, admin, dlq, close()}`. `addrs` maps
 * service to "host:port"; missing entries use EVENTFLOW_<SERVICE>_ADDR or the default port.
 * `credentials` (see `tlsCredentials`) for services serving TLS, plaintext by default;
 * `channelOptions` as for `createClient`.
 */
function connect(addrs = {}, { credentials, channelOptions } = {}) {
  const clients = {};
  for (const service of Object.keys(SERVICE_NAMES)) {
    const addr =
      addrs[service] || process.env[`EVENTFLOW_${service.toUpperCase()}_ADDR`] || DEFAULT_ADDRS[service];
    clients[service] = createClient(service, addr, credentials, channelOptions);
  }
  clients.close = () => {
    for (const service of Object.keys(SERVICE_NAMES)) clients[service].close();
  };
  return clients;
}

/** Calls the unary `method` of `client` with a deadline; resolves with the response. */
function unary(client, method, request, { timeoutMs = 10_000, metadata = new grpc.Metadata() } = {}) {
  if (typeof client[method] !== 'function') {
    return Promise.reject(new Error(`no method ${method} on this client`));
  }
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + timeoutMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/**
 * Publishes `batches` (an array of `[stream, events]`) over one PublishStream call, with at most
 * `window` batches sent and not yet answered; resolves with one response per batch, in order.
 * Events of one call are stored in the order sent. A response with `error` set is a batch the
 * server refused as a whole (e.g. NOT_FOUND; UNAVAILABLE: resend it, publish is idempotent by
 * event id). Rejects if the call itself fails.
 */
function publishStream(publisherClient, batches, { window = 16, timeoutMs = 60_000, metadata = new grpc.Metadata() } = {}) {
  return new Promise((resolve, reject) => {
    const call = publisherClient.PublishStream(metadata, { deadline: Date.now() + timeoutMs });
    const responses = [];
    let sent = 0;
    let ended = false;
    const sendMore = () => {
      while (sent < batches.length && sent - responses.length < window) {
        const [stream, events] = batches[sent];
        call.write({ stream, events, request_id: String(sent) });
        sent += 1;
      }
      if (sent === batches.length && !ended) {
        ended = true;
        call.end(); // half-close: the server answers the rest, then ends the call
      }
    };
    call.on('data', (response) => {
      responses.push(response);
      sendMore();
    });
    call.on('error', reject);
    call.on('end', () =>
      responses.length === batches.length
        ? resolve(responses)
        : reject(new Error(`PublishStream ended after ${responses.length} of ${batches.length} answers`)),
    );
    sendMore();
  });
}

/** The grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of `service` at `healthClient`. */
async function healthStatus(healthClient, service = '', timeoutMs = 2000) {
  const response = await unary(healthClient, 'Check', { service }, { timeoutMs });
  return response.status;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls grpc.health.v1 Check at `addr` until every name in `services` is SERVING. Rejects after
 * `timeoutMs` (with the last answer or error), or as soon as `stillAlive()` returns false.
 * `credentials` and `channelOptions` as for `createClient`.
 */
async function waitServing(addr, services = [''], { timeoutMs = 30_000, stillAlive = null, credentials, channelOptions } = {}) {
  const deadline = Date.now() + timeoutMs;
  const health = createClient('health', addr, credentials, channelOptions);
  let last = 'no answer yet';
  try {
    const pending = [...services];
    while (pending.length > 0) {
      if (stillAlive && !stillAlive()) {
        throw new Error(`server at ${addr} exited before it was healthy (${last})`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`${addr} not SERVING for ${JSON.stringify(pending[0])} after ${timeoutMs} ms: ${last}`);
      }
      try {
        const status = await healthStatus(health, pending[0], Math.min(1000, remaining));
        last = `status ${status}`;
        if (status === 'SERVING') {
          pending.shift();
          continue;
        }
      } catch (err) {
        last = `${grpc.status[err.code] ?? err.code}: ${err.details ?? err.message}`;
      }
      await sleep(50); // poll interval, bounded by the deadline above
    }
  } finally {
    health.close();
  }
}

/** A CloudEvent with a JSON `text_data` payload; an empty id lets the server assign one. */
function makeEvent(type, data, { id = '', source = '/node', attributes = {} } = {}) {
  const attrs = {};
  for (const [name, value] of Object.entries(attributes)) attrs[name] = { ce_string: String(value) };
  return { id, source, spec_version: '1.0', type, attributes: attrs, text_data: JSON.stringify(data) };
}

/**
 * Buffers the batches of a Subscribe call so a caller can `await take(n)` events. `call` is
 * the ClientReadableStream from `subscriber.Subscribe(...)`; cancel it with `cancel()`.
 */
class Subscription {
  constructor(call) {
    this.call = call;
    this.buffer = [];
    this.error = null;
    this.ended = false;
    this.waiters = new Set();
    call.on('data', (batch) => {
      this.buffer.push(...batch.events);
      this.wake();
    });
    call.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    call.on('end', () => {
      this.ended = true;
      this.wake();
    });
  }

  wake() {
    for (const waiter of this.waiters) waiter();
  }

  /** Resolves with the next `n` received events; rejects after `timeoutMs` or if the call ends. */
  take(n, timeoutMs = 15_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.buffer.length >= n) {
          done();
          resolve(this.buffer.splice(0, n));
        } else if (this.error || this.ended) {
          done();
          reject(new Error(`Subscribe call ended after ${this.buffer.length}/${n} events: ${this.error ?? 'end'}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`only ${this.buffer.length}/${n} events received within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Cancels the call (the server then redelivers its unsettled events elsewhere). */
  cancel() {
    this.call.cancel();
  }
}

/** Opens a Subscribe call and wraps it in a Subscription. */
function subscribe(subscriberClient, request, { timeoutMs = 120_000 } = {}) {
  const call = subscriberClient.Subscribe(request, { deadline: Date.now() + timeoutMs });
  return new Subscription(call);
}

module.exports = {
  grpc,
  PROTO_ROOT,
  SERVICE_NAMES,
  DEFAULT_ADDRS,
  load,
  tlsCredentials,
  createClient,
  connect,
  unary,
  publishStream,
  healthStatus,
  waitServing,
  makeEvent,
  subscribe,
  Subscription,
  // The subscriber helper (consumer.js): handlers with bounded concurrency, batched settlement.
  ...require('./consumer'),
};
