// Starts gRPC echo backends: node backends.js [mtls:]NAME=HOST:PORT ...
// Each replies with its NAME. Plaintext, or with "mtls:" TLS that requires a
// client certificate (server.pem, server.key and ca.pem from the directory
// ECHO_TLS_DIR). Prints "ready" once every one listens; stops on SIGTERM or
// SIGINT.
'use strict';
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const def = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true });
const proto = grpc.loadPackageDefinition(def).meshd.e2e;

const servers = [];

function credentials(mtls) {
  if (!mtls) return grpc.ServerCredentials.createInsecure();
  const dir = process.env.ECHO_TLS_DIR;
  if (!dir) throw new Error('mtls backends need ECHO_TLS_DIR');
  const read = (f) => fs.readFileSync(path.join(dir, f));
  return grpc.ServerCredentials.createSsl(read('ca.pem'),
    [{ private_key: read('server.key'), cert_chain: read('server.pem') }], true);
}

function start(name, addr, mtls) {
  return new Promise((resolve, reject) => {
    const server = new grpc.Server();
    server.addService(proto.Echo.service, {
      Echo: (call, cb) => cb(null, { server: name, message: call.request.message }),
    });
    server.bindAsync(addr, credentials(mtls), (err) => {
      if (err) return reject(new Error(`${name} on ${addr}: ${err.message}`));
      servers.push(server);
      resolve();
    });
  });
}

function stop() {
  for (const s of servers) s.forceShutdown();
  process.exit(0);
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const specs = process.argv.slice(2).map((arg) => {
  const mtls = arg.startsWith('mtls:');
  const a = mtls ? arg.slice(5) : arg;
  const eq = a.indexOf('=');
  if (eq <= 0) throw new Error(`backend "${arg}": want [mtls:]NAME=HOST:PORT`);
  return [a.slice(0, eq), a.slice(eq + 1), mtls];
});

Promise.all(specs.map(([n, a, m]) => start(n, a, m))).then(
  () => {
    process.stdout.write('ready\n');
  },
  (err) => {
    process.stderr.write(`backends: ${err.message}\n`);
    process.exit(1);
  },
);
