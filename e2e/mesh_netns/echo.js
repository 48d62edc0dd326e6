// A pod's application for the network-namespace end-to-end test: answers
// every request with 200 and a JSON body holding the method, the path and
// the request headers as received (what httpbin's /headers shows).
'use strict';
const http = require('http');

const [addr, name] = process.argv.slice(2);
const [host, port] = addr.split(':');
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.stringify({ name, method: req.method, path: req.url, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}).listen(Number(port), host, () => console.log('ready'));
