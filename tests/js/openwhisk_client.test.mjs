// The official OpenWhisk JavaScript client (npm `openwhisk`) against a running localwhisk.
// Needs LOCALWHISK_APIHOST and LOCALWHISK_AUTH; run by tests/integration/localwhisk/test_js_client.py.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import openwhisk from 'openwhisk'

const ow = openwhisk({ apihost: process.env.LOCALWHISK_APIHOST, api_key: process.env.LOCALWHISK_AUTH })
const ECHO = 'def main(args):\n    print("echo", sorted(args))\n    return {"echo": args}\n'
const PLUS = 'def main(args):\n    return {"n": args.get("n", 0) + 1}\n'

async function completed (id) {
  for (let i = 0; i < 200; i++) { // bounded: ~10 s
    try {
      return await ow.activations.get({ name: id })
    } catch (err) {
      if (err.statusCode !== 404) throw err
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  throw new Error(`activation ${id} did not complete`)
}

test('create, update, get, list, delete an action', async () => {
  const created = await ow.actions.create({ name: 'js_echo', action: ECHO, kind: 'python:3.11' })
  assert.equal(created.name, 'js_echo')
  assert.equal(created.exec.kind, 'python:3.11')
  await assert.rejects(ow.actions.create({ name: 'js_echo', action: ECHO, kind: 'python:3.11' }),
    err => err.statusCode === 409)
  const updated = await ow.actions.update({ name: 'js_echo', action: ECHO, kind: 'python:3.12', params: { p: 1 } })
  assert.equal(updated.version, '0.0.2')
  const got = await ow.actions.get({ name: 'js_echo' })
  assert.equal(got.exec.kind, 'python:3.12')
  assert.deepEqual(got.parameters, [{ key: 'p', value: 1 }])
  const listed = await ow.actions.list()
  assert.ok(listed.some(a => a.name === 'js_echo'))
  const deleted = await ow.actions.delete({ name: 'js_echo' })
  assert.equal(deleted.name, 'js_echo')
  await assert.rejects(ow.actions.get({ name: 'js_echo' }), err => err.statusCode === 404)
})

test('invoke blocking and non-blocking, then activations get/result/logs', async () => {
  await ow.actions.update({ name: 'js_inv', action: ECHO, kind: 'python:3.11' })
  const result = await ow.actions.invoke({ name: 'js_inv', blocking: true, result: true, params: { x: 'ü' } })
  assert.deepEqual(result, { echo: { x: 'ü' } })
  const blocking = await ow.actions.invoke({ name: 'js_inv', blocking: true, params: { y: 2 } })
  assert.equal(blocking.response.status, 'success')
  assert.match(blocking.activationId, /^[0-9a-f]{32}$/)

  const started = await ow.actions.invoke({ name: 'js_inv', params: { z: 3 } })
  assert.match(started.activationId, /^[0-9a-f]{32}$/)
  const activation = await completed(started.activationId)
  assert.equal(activation.name, 'js_inv')
  assert.deepEqual(activation.response.result, { echo: { z: 3 } })
  const res = await ow.activations.result({ name: started.activationId })
  assert.deepEqual(res.result, { echo: { z: 3 } })
  assert.equal(res.success, true)
  const logs = await ow.activations.logs({ name: started.activationId })
  assert.ok(logs.logs.some(line => line.includes("stdout: echo ['z']")), JSON.stringify(logs))
  const listed = await ow.activations.list({ name: 'js_inv', limit: 5 })
  assert.ok(listed.some(a => a.activationId === started.activationId))
})

test('a failing action rejects with 502 and the activation', async () => {
  await ow.actions.update({ name: 'js_fail', action: 'def main(a):\n    raise ValueError("nope")\n', kind: 'python:3.11' })
  await assert.rejects(ow.actions.invoke({ name: 'js_fail', blocking: true, result: true }), err => {
    assert.equal(err.statusCode, 502)
    return true
  })
})

test('a sequence', async () => {
  await ow.actions.update({ name: 'js_plus', action: PLUS, kind: 'python:3.11' })
  const seq = await ow.actions.update({ name: 'js_seq', sequence: ['/_/js_plus', 'js_plus', '/_/js_plus'] })
  assert.equal(seq.exec.kind, 'sequence')
  const result = await ow.actions.invoke({ name: 'js_seq', blocking: true, result: true, params: { n: 10 } })
  assert.deepEqual(result, { n: 13 })
})

async function triggerFires (trigger, atLeast) {
  for (let i = 0; i < 100; i++) { // bounded: ~10 s
    const fires = await ow.activations.list({ name: trigger, limit: 50 })
    if (fires.length >= atLeast) return fires
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`trigger ${trigger} did not fire ${atLeast} time(s)`)
}

test('triggers and rules: create, fire, disable, enable, list, delete', async () => {
  await ow.actions.update({ name: 'js_ruled', action: ECHO, kind: 'python:3.11' })
  const trigger = await ow.triggers.create({ name: 'js_trig', trigger: { parameters: [{ key: 'a', value: 1 }] } })
  assert.equal(trigger.name, 'js_trig')
  await assert.rejects(ow.triggers.create({ name: 'js_trig' }), err => err.statusCode === 409)
  assert.ok((await ow.triggers.list()).some(t => t.name === 'js_trig'))
  const rule = await ow.rules.create({ name: 'js_rule', trigger: 'js_trig', action: 'js_ruled' })
  assert.equal(rule.status, 'active')
  assert.deepEqual(rule.action, { name: 'js_ruled', path: 'guest' })

  const fired = await ow.triggers.invoke({ name: 'js_trig', params: { b: 2 } })
  assert.match(fired.activationId, /^[0-9a-f]{32}$/)
  const record = await completed(fired.activationId)
  assert.deepEqual(record.response.result, { a: 1, b: 2 })
  const ruleRun = JSON.parse(record.logs[0])
  assert.equal(ruleRun.rule, 'guest/js_rule')
  const action = await completed(ruleRun.activationId)
  assert.equal(action.cause, fired.activationId)
  assert.deepEqual(action.response.result, { echo: { a: 1, b: 2 } })

  await ow.rules.disable({ name: 'js_rule' })
  assert.equal((await ow.rules.get({ name: 'js_rule' })).status, 'inactive')
  const none = await ow.triggers.invoke({ name: 'js_trig' }) // 204: no active rule, nothing recorded
  assert.equal(none.activationId, undefined)
  await ow.rules.enable({ name: 'js_rule' })
  assert.ok((await ow.rules.list()).some(r => r.name === 'js_rule' && r.status === 'active'))
  await ow.rules.delete({ name: 'js_rule' })
  await ow.triggers.delete({ name: 'js_trig' })
  await assert.rejects(ow.triggers.get({ name: 'js_trig' }), err => err.statusCode === 404)
})

test('feeds: the alarms feed fires its trigger and reads, pauses, deletes', async () => {
  await ow.actions.update({ name: 'js_alarmed', action: ECHO, kind: 'python:3.11' })
  await ow.triggers.update({ name: 'js_alarm', trigger: { annotations: [{ key: 'feed', value: '/whisk.system/alarms/alarm' }] } })
  await ow.rules.update({ name: 'js_alarm_rule', trigger: 'js_alarm', action: 'js_alarmed' })
  const feed = '/whisk.system/alarms/alarm'
  const created = await ow.feeds.create({ name: feed, trigger: 'js_alarm', params: { cron: '* * * * * *', trigger_payload: { tick: true } } })
  assert.equal(created.response.result.status, 'created')
  const fires = await triggerFires('js_alarm', 1)
  const fire = await completed(fires[0].activationId)
  assert.deepEqual(fire.response.result, { tick: true })
  const read = await ow.feeds.get({ name: feed, trigger: 'js_alarm' })
  assert.equal(read.response.result.config.cron, '* * * * * *')
  await ow.feeds.update({ name: feed, trigger: 'js_alarm', params: { lifecycleEvent: 'PAUSE' } })
  assert.equal((await ow.feeds.get({ name: feed, trigger: 'js_alarm' })).response.result.status.active, false)
  await ow.feeds.delete({ name: feed, trigger: 'js_alarm' })
  await assert.rejects(ow.feeds.get({ name: feed, trigger: 'js_alarm' }), err => err.statusCode === 502)
  await ow.rules.delete({ name: 'js_alarm_rule' })
  await ow.triggers.delete({ name: 'js_alarm' })
})
