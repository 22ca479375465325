// HTTP-mode entry point: a long-running server on Node's built-in `http` module.
//
// fwatchdog starts this once and proxies every request to it. It listens where
// fwatchdog proxies to (the `upstream_url` setting, which fwatchdog passes on in the
// environment) and calls function/handler.js for each request:
//
//   module.exports = async (event, context) => context.status(200).succeed("hi");
//
// event: { body, headers, method, query, path } (body is parsed when it is JSON);
// context.status(code), context.headers({...}), context.succeed(value), context.fail(err).
// A returned value that is not the context is sent as the body with status 200.
'use strict';

const http = require('http');
const handler = require('./function/handler');

// Same precedence as fwatchdog: the last alias listed wins.
const upstream = new URL(
  process.env.http_upstream_url || process.env.upstream_url || 'http://127.0.0.1:3000'
);

class Context {
  constructor() {
    this.statusCode = 200;
    this.headerValues = {};
    this.value = undefined;
    this.error = undefined;
  }
  status(code) {
    if (code === undefined) return this.statusCode;
    this.statusCode = code;
    return this;
  }
  headers(values) {
    if (values === undefined) return this.headerValues;
    this.headerValues = values;
    return this;
  }
  succeed(value) {
    this.value = value;
    return this;
  }
  fail(error) {
    this.statusCode = 500;
    this.error = error;
    return this;
  }
}

function parseBody(raw, contentType) {
  const text = raw.toString('utf8');
  if (/\bjson\b/i.test(contentType || '') && text.length > 0) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return text;
    }
  }
  return text;
}

function send(res, status, headers, value) {
  let body = value === undefined || value === null ? '' : value;
  const out = Object.assign({}, headers);
  if (typeof body === 'object' && !Buffer.isBuffer(body)) {
    body = JSON.stringify(body);
    if (!Object.keys(out).some((k) => k.toLowerCase() === 'content-type')) {
      out['Content-Type'] = 'application/json';
    }
  }
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(String(body));
  out['Content-Length'] = payload.length;
  res.writeHead(status, out);
  res.end(payload);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://localhost');
    const event = {
      body: parseBody(Buffer.concat(chunks), req.headers['content-type']),
      headers: req.headers,
      method: req.method,
      query: Object.fromEntries(url.searchParams),
      path: url.pathname,
    };
    const context = new Context();
    try {
      const result = await handler(event, context);
      if (context.error !== undefined) {
        console.error(context.error);
        send(res, context.statusCode, { 'Content-Type': 'text/plain' }, String(context.error) + '\n');
      } else if (result === context || result === undefined) {
        send(res, context.statusCode, context.headerValues, context.value);
      } else {
        send(res, context.statusCode, context.headerValues, result);
      }
    } catch (err) {
      // The function's bug: report it, keep serving.
      console.error(err);
      send(res, 500, { 'Content-Type': 'text/plain' }, String(err) + '\n');
    }
  });
});

// Longer than fwatchdog's pooled connections live, so it never reuses a closed one.
server.keepAliveTimeout = 65000;
server.listen(Number(upstream.port || 3000), upstream.hostname || '127.0.0.1', () => {
  console.error(`node: listening on ${upstream.hostname}:${upstream.port || 3000}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
