'use strict';
// What the Node tests share (test/*.test.js): start a redis-server and the eventflow binaries
// as real processes on free ports, wait until they are ready, stop them afterwards, and make
// throwaway TLS certificates with the `openssl` command (node's crypto cannot issue X.509).

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const ef = require('./client');

const REPO = path.resolve(__dirname, '..', '..');
/** How long redis or a binary may take to become ready. */
const STARTUP_TIMEOUT_MS = 30_000;

/** A short random id (key prefixes, stream names). */
const uid = () => crypto.randomUUID().replaceAll('-', '').slice(0, 12);

/** The directory of the eventflow binaries: $EVENTFLOW_BIN_DIR, else target/debug of this repo. */
function binDir() {
  if (process.env.EVENTFLOW_BIN_DIR) return path.resolve(process.env.EVENTFLOW_BIN_DIR);
  return path.join(process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target'), 'debug');
}

/** A port that was free a moment ago (listen on 0, read it, close). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** True when redis at `port` answers PING with +PONG. */
function redisPing(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => finish(false));
    socket.on('error', () => finish(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
  });
}

/** The last `lines` lines of `file` (a server log), for error messages. */
function tail(file, lines = 30) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** The path of `exe` when it is on PATH, else null. */
function which(exe) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, exe);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Every process started, so the ones still running are stopped (or killed at exit). */
const children = [];

/** Spawns `exe` with stdout+stderr to `log` and the extra environment `env`. */
function start(name, exe, args, log, env = {}) {
  const out = fs.openSync(log, 'w');
  const child = spawn(exe, args, {
    stdio: ['ignore', out, out],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
  });
  fs.closeSync(out);
  const proc = { name, child, log, exited: false, exitCode: null };
  child.on('exit', (code, signal) => {
    proc.exited = true;
    proc.exitCode = code ?? signal;
  });
  child.on('error', (err) => {
    proc.exited = true;
    proc.exitCode = err.message;
  });
  children.push(proc);
  return proc;
}

/** SIGTERM, then SIGKILL if the process has not exited within 10 s. */
function stop(proc) {
  if (proc.exited) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (!proc.exited) proc.child.kill('SIGKILL');
    }, 10_000);
    proc.child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.child.kill('SIGTERM');
  });
}

/** Stops every process started: the services first, then the Redis they use. */
async function stopAll() {
  await Promise.all(children.filter((p) => p.name !== 'redis-server').map(stop));
  await Promise.all(children.filter((p) => p.name === 'redis-server').map(stop));
}

// If the runner dies without running `after`, do not leave servers behind.
process.on('exit', () => {
  for (const proc of children) if (!proc.exited) proc.child.kill('SIGKILL');
});

/** Starts a redis-server on a free port (nothing written to disk) in `tmp`; resolves with its URL. */
async function startRedis(tmp) {
  const redisServer = which('redis-server');
  if (!redisServer) throw new Error('redis-server not found on PATH: run scripts/ensure-deps.sh (or `make deps`)');
  const port = await freePort();
  const dir = path.join(tmp, 'redis');
  fs.mkdirSync(dir);
  const redis = start('redis-server', redisServer, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ], path.join(tmp, 'redis.log'));
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (!(await redisPing(port))) {
    if (redis.exited) throw new Error(`redis-server exited with ${redis.exitCode}:\n${tail(redis.log)}`);
    if (Date.now() > deadline) {
      throw new Error(`redis-server not answering PING after ${STARTUP_TIMEOUT_MS} ms:\n${tail(redis.log)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50)); // poll interval, bounded by the deadline
  }
  return `redis://127.0.0.1:${port}`;
}

/**
 * Starts the binaries `names` ("publisher", ...) on free ports against `redisUrl` with key
 * prefix `prefix` and the extra environment `env` (e.g. TLS settings), logging into `tmp` (log
 * names end in `tag`), and waits until each is SERVING (health asked with `credentials` and
 * `channelOptions`, see client.js). Resolves with their addresses.
 */
async function startServices(names, options) {
  const addrs = {};
  for (const name of names) addrs[name] = `127.0.0.1:${await freePort()}`;
  await Promise.all(names.map((name) => startService(name, addrs[name], options)));
  return addrs;
}

/**
 * Starts binary `name` listening on `addr` (options as for startServices) and waits until it is
 * SERVING; resolves with its process (for `stop`). Restarting one on the same address lets a
 * test break and restore its clients' calls.
 */
async function startService(name, addr, { tmp, redisUrl, prefix, env = {}, credentials, channelOptions, tag = '' }) {
  const exe = path.join(binDir(), `eventflow-${name}`);
  try {
    fs.accessSync(exe, fs.constants.X_OK);
  } catch {
    throw new Error(`${exe} not found: build it with \`cargo build --bins\` (or point EVENTFLOW_BIN_DIR at the binaries)`);
  }
  const proc = start(name, exe, [
    '--redis-url', redisUrl,
    '--key-prefix', prefix,
    '--grpc-addr', addr,
    '--metrics-addr', `127.0.0.1:${await freePort()}`,
  ], path.join(tmp, `${name}${tag}.log`), env);
  try {
    await ef.waitServing(addr, [''], { timeoutMs: STARTUP_TIMEOUT_MS, stillAlive: () => !proc.exited, credentials, channelOptions });
  } catch (err) {
    throw new Error(`eventflow-${name}: ${err.message}\n--- ${proc.log} ---\n${tail(proc.log)}`);
  }
  return proc;
}

/**
 * Throwaway certificates in `dir`, made with the `openssl` command: a CA (`ca.crt`) and a server
 * certificate it signs for localhost and 127.0.0.1 (`server.crt`, `server.key`); a second CA
 * (`client-ca.crt`) and a client certificate it signs (`client.crt`, `client.key`) for mTLS.
 * Resolves with the file paths.
 */
function makeCertificates(dir) {
  const openssl = which('openssl');
  if (!openssl) throw new Error('openssl not found on PATH: run scripts/ensure-deps.sh node (Debian: apt-get install -y openssl)');
  const file = (name) => path.join(dir, name);
  const run = (...args) => execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name, cn) => run('req', '-x509', ...ecKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`),
    '-days', '1', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name, caName, cn, extensions) => {
    fs.writeFileSync(file(`${name}.ext`), extensions);
    run('req', '-new', ...ecKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${cn}`);
    run('x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${caName}.crt`), '-CAkey', file(`${caName}.key`),
      '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-days', '1', '-sha256',
      '-extfile', file(`${name}.ext`), '-out', file(`${name}.crt`));
  };
  ca('ca', 'eventflow node test CA');
  leaf('server', 'ca', 'localhost', [
    'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '',
  ].join('\n'));
  ca('client-ca', 'eventflow node test client CA');
  leaf('client', 'client-ca', 'node-client', [
    'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth', '',
  ].join('\n'));
  return {
    ca: file('ca.crt'),
    serverCert: file('server.crt'),
    serverKey: file('server.key'),
    clientCa: file('client-ca.crt'),
    clientCert: file('client.crt'),
    clientKey: file('client.key'),
  };
}

module.exports = {
  STARTUP_TIMEOUT_MS,
  uid,
  binDir,
  freePort,
  tail,
  which,
  start,
  stop,
  stopAll,
  startRedis,
  startServices,
  startService,
  makeCertificates,
};
