// The proxyless gRPC client of the end-to-end test. It dials meshd-configured
// services through gRPC's own xDS client (@grpc/grpc-js-xds; the bootstrap
// file is named by GRPC_XDS_BOOTSTRAP) and checks what meshd's VirtualService
// and DestinationRule say: a weighted split, a header route, fault injection,
// ring-hash affinity, mutual TLS through the bootstrap's certificate
// provider (with --mtls), and a live change of the split on the same channel.
// Prints "ok NAME" / "not ok NAME # why" per check; exits 1 if one failed.
//
// node client.js --split HOST:PORT --fault HOST:PORT --hash HOST:PORT [--mtls HOST:PORT] --vs-file FILE
'use strict';
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

grpcXds.register();
const def = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true });
const proto = grpc.loadPackageDefinition(def).meshd.e2e;

function args() {
  const out = {};
  const a = process.argv.slice(2);
  for (let i = 0; i + 1 < a.length; i += 2) out[a[i].replace(/^--/, '')] = a[i + 1];
  for (const k of ['split', 'fault', 'hash', 'vs-file'])
    if (!out[k]) throw new Error(`missing --${k}`);
  return out;
}

const opt = args();
let failed = 0;

function report(name, ok, detail) {
  if (ok) process.stdout.write(`ok ${name}${detail ? ` # ${detail}` : ''}\n`);
  else {
    failed++;
    process.stdout.write(`not ok ${name} # ${detail}\n`);
  }
}

// xDS credentials: TLS where the cluster says so, plaintext elsewhere
const xdsCreds = new grpcXds.XdsChannelCredentials(grpc.credentials.createInsecure());

function client(authority, creds) {
  return new proto.Echo(`xds:///${authority}`, creds || xdsCreds);
}

// One call: resolves to {server} or {code, details}.
function call(c, headers) {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers || {})) md.set(k, v);
  return new Promise((resolve) => {
    c.Echo({ message: 'hi' }, md, { deadline: Date.now() + 5000 }, (err, reply) => {
      if (err) resolve({ code: err.code, details: err.details });
      else resolve({ server: reply.server });
    });
  });
}

// n calls, at most `width` at a time.
async function calls(c, n, headers, width = 25) {
  const out = [];
  for (let i = 0; i < n; i += width) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + width); j++) batch.push(call(c, headers));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

function tally(results) {
  const t = { v1: 0, v2: 0, errors: {}, servers: new Set() };
  for (const r of results) {
    if (r.server) {
      t.servers.add(r.server);
      if (r.server.startsWith('v1')) t.v1++;
      else if (r.server.startsWith('v2')) t.v2++;
    } else {
      const k = grpc.status[r.code] || String(r.code);
      t.errors[k] = (t.errors[k] || 0) + 1;
    }
  }
  return t;
}

// Waits until the channel has its xDS configuration and a call succeeds.
async function ready(c, what) {
  const until = Date.now() + 30000;
  let last;
  while (Date.now() < until) {
    last = await call(c);
    if (last.server) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  report(`${what}_ready`, false, `no successful call in 30 s: ${grpc.status[last.code]} ${last.details}`);
  return false;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const split = client(opt.split);
  const fault = client(opt.fault);
  const hash = client(opt.hash);

  if (await ready(split, 'split')) {
    // 80/20 between subsets v1 and v2; within a subset round robin
    const n = 500;
    const t = tally(await calls(split, n));
    const frac = t.v2 / n;
    report('weighted_split_80_20', t.v1 + t.v2 === n && frac >= 0.13 && frac <= 0.27,
      `v1=${t.v1} v2=${t.v2} errors=${JSON.stringify(t.errors)}`);
    report('round_robin_within_subset', t.servers.has('v1-a') && t.servers.has('v1-b'),
      `servers seen: ${[...t.servers].sort().join(',')}`);

    // end-user: jason goes to v2 only
    const h = tally(await calls(split, 100, { 'end-user': 'jason' }));
    report('header_route_to_v2', h.v2 === 100, `v1=${h.v1} v2=${h.v2} errors=${JSON.stringify(h.errors)}`);
  }

  if (await ready(fault, 'fault')) {
    // 50% aborted with UNAVAILABLE by the client's fault filter
    const n = 400;
    const t = tally(await calls(fault, n));
    const aborted = t.errors.UNAVAILABLE || 0;
    const other = Object.entries(t.errors).filter(([k]) => k !== 'UNAVAILABLE').length;
    const frac = aborted / n;
    report('fault_abort_50_percent', other === 0 && frac >= 0.38 && frac <= 0.62,
      `aborted=${aborted}/${n} ok=${t.v1 + t.v2} errors=${JSON.stringify(t.errors)}`);
  }

  if (await ready(hash, 'hash')) {
    // consistentHash on x-user: one backend per user, users spread
    const users = [];
    for (let i = 0; i < 20; i++) users.push(`user-${i}`);
    for (const u of users) await call(hash, { 'x-user': u }); // connect the ring
    const byUser = {};
    for (let round = 0; round < 8; round++) {
      const rs = await Promise.all(users.map((u) => call(hash, { 'x-user': u })));
      rs.forEach((r, i) => {
        (byUser[users[i]] = byUser[users[i]] || []).push(r.server || `error:${grpc.status[r.code]}`);
      });
    }
    const sticky = users.filter((u) => new Set(byUser[u]).size === 1 && !byUser[u][0].startsWith('error'));
    const spread = new Set(users.map((u) => byUser[u][0]));
    report('ring_hash_affinity', sticky.length === users.length,
      `${sticky.length}/${users.length} users always on one backend` +
        (sticky.length < users.length ? `; ${JSON.stringify(byUser)}` : ''));
    report('ring_hash_spread', spread.size >= 2, `backends used: ${[...spread].sort().join(',')}`);
  }

  if (opt.mtls) {
    // the cluster's UpstreamTlsContext names the bootstrap's certificate provider
    const mtls = client(opt.mtls);
    if (await ready(mtls, 'mtls')) {
      const t = tally(await calls(mtls, 20));
      report('mtls_via_certificate_provider', t.servers.size === 1 && t.servers.has('mtls-a') &&
        Object.keys(t.errors).length === 0,
      `servers=${[...t.servers].join(',')} errors=${JSON.stringify(t.errors)}`);
    }
    mtls.close();
    // without xDS credentials the client speaks plaintext, which the backend refuses
    const plain = client(opt.mtls, grpc.credentials.createInsecure());
    const p = tally(await calls(plain, 5));
    report('mtls_backend_refuses_plaintext', p.v1 + p.v2 + p.servers.size === 0,
      `servers=${[...p.servers].join(',')} errors=${JSON.stringify(p.errors)}`);
    plain.close();
  }

  // the same channel follows an edit of the VirtualService file
  // written next to the config directory, then renamed into it: meshd never reads half a file
  const tmp = path.join(path.dirname(path.dirname(opt['vs-file'])), 'vs-echo.yaml.new');
  fs.writeFileSync(tmp, [
    'apiVersion: networking.istio.io/v1',
    'kind: VirtualService',
    'metadata:',
    '  name: echo',
    '  namespace: default',
    'spec:',
    '  hosts: [echo]',
    '  http:',
    '  - route:',
    '    - destination: {host: echo, subset: v1}',
    '      weight: 0',
    '    - destination: {host: echo, subset: v2}',
    '      weight: 100',
    '',
  ].join('\n'));
  fs.renameSync(tmp, opt['vs-file']);
  const t0 = Date.now();
  let switched = false;
  while (Date.now() - t0 < 20000) {
    const t = tally(await calls(split, 25));
    if (t.v2 === 25) {
      switched = true;
      break;
    }
    await sleep(100);
  }
  const took = Date.now() - t0;
  if (switched) {
    const t = tally(await calls(split, 200));
    report('live_reconfiguration', t.v2 === 200,
      `split 0/100 in effect after ${took} ms; then v1=${t.v1} v2=${t.v2} errors=${JSON.stringify(t.errors)}`);
  } else {
    report('live_reconfiguration', false, 'the client still reaches v1 20 s after the VirtualService edit');
  }

  split.close();
  fault.close();
  hash.close();
  return failed;
}

main().then(
  (n) => process.exit(n ? 1 : 0),
  (err) => {
    process.stdout.write(`not ok client # ${err.stack}\n`);
    process.exit(1);
  },
);
