// The web UI's call wrapper (webui/static/app.js RC.api) rides out a busy OpenWhisk namespace.
// app.js runs in a vm context with a stub DOM and a scripted fetch; no server, no sockets.
// Run by tests/integration/local/test_webui_js.py (node --test).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import vm from 'node:vm'

const APP = readFileSync(new URL('../../webui/static/app.js', import.meta.url), 'utf8')

function load (answers) {
  const calls = []
  const storage = () => { const m = new Map(); return { getItem: k => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v)), removeItem: k => m.delete(k) } }
  const window = {}
  const ctx = {
    window, console, URLSearchParams, Response, Headers, DOMException, Date, Math, JSON, setTimeout, clearTimeout,
    atob: s => Buffer.from(s, 'base64').toString('binary'),
    document: { querySelector: () => null, querySelectorAll: () => [], addEventListener () {} },
    localStorage: storage(), sessionStorage: storage(),
    location: { search: '', replace () {} },
    fetch: async (url, init) => {
      calls.push({ url, method: init.method, body: init.body })
      const next = answers.shift()
      return typeof next === 'function' ? next() : next
    }
  }
  window.localStorage = ctx.localStorage  // app.js reads window.sessionStorage, as a browser offers both
  window.sessionStorage = ctx.sessionStorage
  vm.runInNewContext(APP, ctx)
  const RC = window.RC
  const slept = []
  RC.retry.sleep = async ms => { slept.push(ms) }
  return { RC, calls, slept }
}

const json = (status, body, headers = {}) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } })
const BUSY = { error: 'Too many concurrent requests in flight (count: 3, allowed: 3).', code: 'tx' }

test('a 429 from OpenWhisk is retried, even for a POST, until the answer comes', async () => {
  const { RC, calls, slept } = load([json(429, BUSY), json(429, BUSY), json(200, { job_id: 'j1' })])
  const answer = await RC.api('dispatch', { body: { plugin: 'copy' } })
  assert.deepEqual(answer, { job_id: 'j1' })
  assert.equal(calls.length, 3)
  assert.ok(calls.every(c => c.method === 'POST' && c.body === '{"plugin":"copy"}'))
  assert.equal(slept.length, 2)
  assert.ok(slept.every(ms => ms >= 0 && ms <= 8000))
})

test('Retry-After is honoured', async () => {
  const { RC, slept } = load([json(429, BUSY, { 'retry-after': '3' }), json(200, { ok: 1 })])
  await RC.api('status', { method: 'GET' })
  assert.deepEqual(slept, [3000])
})

test("OpenWhisk's 503 is retried for a GET but not for a POST (it may follow a forwarded request)", async () => {
  const over = () => json(503, { error: 'System is overloaded, try again later.', code: 'tx' })
  const get = load([over(), json(200, { ok: 1 })])
  assert.deepEqual(await get.RC.api('status', { method: 'GET' }), { ok: 1 })
  const post = load([over(), json(200, { ok: 1 })])
  await assert.rejects(post.RC.api('dispatch', { body: {} }), e => e.status === 503 && /overloaded/.test(e.message))
  assert.equal(post.calls.length, 1)
})

test("an action's own 503 is its answer, shown as it is", async () => {
  const down = json(503, { error: { code: 'unavailable', message: 'the job store (Redis) is unreachable' } },
    { 'x-openwhisk-activation-id': 'b'.repeat(32) })
  const { RC, calls } = load([down])
  await assert.rejects(RC.api('status', { method: 'GET' }), e => e.status === 503 && /job store/.test(e.message))
  assert.equal(calls.length, 1)
})

test("an action's own 429 (the login lockout) is its answer, not a busy namespace", async () => {
  const lockout = json(429, { error: { code: 'too_many_requests', message: 'too many failed logins' } },
    { 'x-openwhisk-activation-id': 'a'.repeat(32) })
  const { RC, calls } = load([lockout])
  await assert.rejects(RC.api('login', { body: {}, noRedirect: true }), e => e.status === 429 && /failed logins/.test(e.message))
  assert.equal(calls.length, 1)
})

test('the retries stop at the budget and the last answer stands', async () => {
  const { RC, calls } = load(Array.from({ length: 100 }, () => json(429, BUSY)))
  let t = 0
  RC.retry.now = () => t
  RC.retry.sleep = async ms => { t += Math.max(ms, 1000) }
  RC.retry.busyBudgetMs = 10000
  await assert.rejects(RC.api('status', { method: 'GET' }), e => e.status === 429 && /Too many concurrent/.test(e.message))
  assert.ok(calls.length >= 2 && calls.length <= 11, String(calls.length))
})
