'use strict';

// Called once per request. Return context.status(...).succeed(body), or just a value.
module.exports = async (event, context) => {
  const said = typeof event.body === 'string' ? event.body : JSON.stringify(event.body);
  return context
    .status(200)
    .headers({ 'Content-Type': 'text/plain; charset=utf-8' })
    .succeed(`Hello from Node.js! You said: ${said}`);
};
