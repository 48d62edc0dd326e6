// Interop peer for test/common/test_grpc_interop.sh, on @grpc/grpc-js:
//   node interop.js client ADDR [--tls CA_PEM]   calls the meshd test server; prints "ok"/"not ok" lines
//   node interop.js server DIR [--tls]           echo server; writes DIR/node-port[-tls]; exits when stdin closes
'use strict';

const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const def = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true, defaults: true });
const Echo = grpc.loadPackageDefinition(def).test.Echo;

let failures = 0;
function report(name, ok, detail) {
  if (ok) {
    console.log(`ok ${name}`);
  } else {
    failures++;
    console.log(`not ok ${name}${detail ? ': ' + detail : ''}`);
  }
}

function pattern(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

function unary(client, method, data, md, opts) {
  return new Promise((resolve) => {
    let headers = null;
    const call = client[method]({ data }, md || new grpc.Metadata(), opts || {}, (err, resp) => {
      resolve({ err, resp, headers });
    });
    call.on('metadata', (m) => { headers = m; });
  });
}

async function runClient(addr, caFile, label) {
  const creds = caFile ? grpc.credentials.createSsl(fs.readFileSync(caFile)) : grpc.credentials.createInsecure();
  const opts = { 'grpc.max_receive_message_length': 8 * 1024 * 1024 };
  if (caFile) opts['grpc.ssl_target_name_override'] = 'localhost';
  const client = new Echo(addr, creds, opts);
  const name = (s) => `grpc-js client -> meshd server (${label}): ${s}`;

  // Unary with metadata.
  const md = new grpc.Metadata();
  md.set('authorization', 'Bearer from-node');
  let r = await unary(client, 'Unary', Buffer.from('hello'), md);
  report(name('unary echo with metadata'),
    !r.err && r.resp.data.toString() === 'hello' && r.headers &&
      r.headers.get('x-auth-echo')[0] === 'Bearer from-node',
    r.err ? r.err.message : JSON.stringify(r.headers && r.headers.getMap()));

  // Status and a message that needed percent-encoding.
  const fail = new grpc.Metadata();
  fail.set('x-fail', '16');
  r = await unary(client, 'Unary', Buffer.from('x'), fail);
  report(name('status code and message'),
    r.err && r.err.code === grpc.status.UNAUTHENTICATED && r.err.details === 'refused: caf\u00e9 100% "sure"',
    r.err ? `${r.err.code} ${r.err.details}` : 'no error');

  // Unknown method.
  r = await unary(client, 'Nope', Buffer.from('x'));
  report(name('unknown method is UNIMPLEMENTED'), r.err && r.err.code === grpc.status.UNIMPLEMENTED,
    r.err ? `${r.err.code} ${r.err.details}` : 'no error');

  // Large unary (3 MiB each way) and one above the server's 4 MiB limit.
  const big = pattern(3 << 20, 3);
  r = await unary(client, 'Unary', big);
  report(name('3 MiB unary'), !r.err && Buffer.compare(r.resp.data, big) === 0, r.err && r.err.message);
  r = await unary(client, 'Unary', pattern((4 << 20) + 16, 1));
  report(name('above the limit is RESOURCE_EXHAUSTED'), r.err && r.err.code === grpc.status.RESOURCE_EXHAUSTED,
    r.err ? `${r.err.code} ${r.err.details}` : 'no error');

  // Deadline on a call the server holds open.
  r = await unary(client, 'Hold', Buffer.from('x'), null, { deadline: Date.now() + 200 });
  report(name('deadline exceeded'), r.err && r.err.code === grpc.status.DEADLINE_EXCEEDED,
    r.err ? `${r.err.code} ${r.err.details}` : 'no error');

  // Bidi: three messages, echoed in order, then OK.
  await new Promise((resolve) => {
    const sent = [pattern(1, 1), pattern(1000, 2), pattern(2 << 20, 3)];
    const got = [];
    const call = client.Bidi();
    call.on('data', (m) => got.push(m.data));
    call.on('error', (e) => { report(name('bidi stream'), false, e.message); resolve(); });
    call.on('status', (s) => {
      if (s.code !== grpc.status.OK) return;
      const same = got.length === 3 && got.every((g, i) => Buffer.compare(g, sent[i]) === 0);
      report(name('bidi stream'), same, `${got.length} messages`);
      resolve();
    });
    for (const m of sent) call.write({ data: m });
    call.end();
  });
  client.close();
}

function runServer(dir, tls) {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
  server.addService(Echo.service, {
    Unary(call, cb) {
      const auth = call.metadata.get('authorization');
      if (!auth.length) {
        cb({ code: grpc.status.UNAUTHENTICATED, details: 'no token: caf\u00e9 100%' });
        return;
      }
      cb(null, { data: Buffer.concat([Buffer.from('echo:'), call.request.data]) });
    },
    Bidi(call) {
      call.on('data', (m) => call.write(m));
      call.on('end', () => call.end());
    },
    Nope(call, cb) { cb({ code: grpc.status.UNIMPLEMENTED }); },
    Hold() {},
  });
  const creds = tls
    ? grpc.ServerCredentials.createSsl(null, [{
      cert_chain: fs.readFileSync(path.join(dir, 'server.pem')),
      private_key: fs.readFileSync(path.join(dir, 'server-key.pem')),
    }], false)
    : grpc.ServerCredentials.createInsecure();
  server.bindAsync('127.0.0.1:0', creds, (err, port) => {
    if (err) {
      console.error(`bind: ${err.message}`);
      process.exit(1);
    }
    const file = path.join(dir, tls ? 'node-port-tls' : 'node-port');
    fs.writeFileSync(file + '.tmp', `${port}\n`);
    fs.renameSync(file + '.tmp', file);
  });
  process.stdin.on('end', () => {
    server.forceShutdown();
    process.exit(0);
  });
  process.stdin.resume();
}

const [mode, arg, flag, extra] = process.argv.slice(2);
if (mode === 'client') {
  const ca = flag === '--tls' ? extra : null;
  runClient(arg, ca, ca ? 'TLS' : 'plaintext').then(() => process.exit(failures ? 1 : 0), (e) => {
    console.log(`not ok grpc-js client: ${e.stack}`);
    process.exit(1);
  });
} else if (mode === 'server') {
  runServer(arg, flag === '--tls');
} else {
  console.error('usage: node interop.js client ADDR [--tls CA_PEM] | server DIR [--tls]');
  process.exit(2);
}
