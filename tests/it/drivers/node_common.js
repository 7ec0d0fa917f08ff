// What every Node.js driver script shares (node_pg_driver.js, node_mysql2_driver.js,
// node_mariadb_driver.js), as common.py is for the Python ones: where to connect, how checks
// run and report.
//
// A script is run by tests/it/drivers.rs twice: first straight against the primary
// (SY_TARGET=server, proving the script right), then through switchyard (SY_TARGET=proxy).
// Connection settings come from the environment: SY_HOST, SY_PORT, SY_USER, SY_PASSWORD,
// SY_DB, SY_SSLMODE, SY_POOL_MODE; SY_TRACE set asks a script for its driver's own trace.
// Each check prints one line; a failure prints what went wrong and the script exits 1 after
// running the rest. A check listed in a script's known failures (a defect reported, not
// fixed yet) still runs through the proxy: its failure is printed with the reason and does
// not fail the script, and once it passes the script fails, asking for the entry to go.

'use strict'

const util = require('util')

const env = (name, fallback) => process.env[name] || fallback
const HOST = env('SY_HOST', '127.0.0.1')
const PORT = Number(env('SY_PORT', '0'))
const USER = env('SY_USER', 'app')
const PASSWORD = env('SY_PASSWORD', 'app-secret')
const DB = env('SY_DB', '')
const SSLMODE = env('SY_SSLMODE', '')
// "proxy": through switchyard (reads go to replicas); "server": the primary itself.
const TARGET = env('SY_TARGET', 'proxy')
const THROUGH_PROXY = TARGET === 'proxy'
const POOL_MODE = env('SY_POOL_MODE', 'transaction')
// Whether a client's statements all run on one server connection (see common.py).
const ONE_CONNECTION = !THROUGH_PROXY || POOL_MODE === 'session'
const TRACE = Boolean(process.env.SY_TRACE)
// A check still running after this long fails and ends the script.
const CHECK_TIMEOUT_MS = 60_000

class CheckFailed extends Error {}

function expect(condition, message) {
  if (!condition) throw new CheckFailed(message)
}

function show(value) {
  return util.inspect(value, { depth: 6, breakLength: Infinity, maxArrayLength: 20, maxStringLength: 200 })
}

function expectEq(got, want, what) {
  if (!util.isDeepStrictEqual(got, want)) throw new CheckFailed(`${what}: got ${show(got)}, want ${show(want)}`)
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// The settings every MySQL driver here (mysql2, mariadb) connects with, and `extra`.
function mysqlConfig(extra) {
  return {
    host: HOST,
    port: PORT,
    user: USER,
    password: PASSWORD,
    database: DB,
    connectTimeout: 10_000,
    // TLS when asked for, the certificate not verified (the proxy's is the test PKI's).
    ...(SSLMODE ? { ssl: { rejectUnauthorized: false } } : {}),
    ...(TRACE ? { debug: true } : {}),
    ...extra,
  }
}

// Runs fn(conn...) with `n` new connections opened by `connect(extra)`, ending them after
// (`end()`, or else `destroy()` when the driver has one).
async function withOpened(connect, n, fn, extra) {
  const conns = []
  try {
    for (let i = 0; i < n; i++) conns.push(await connect(extra))
    return await fn(...conns)
  } finally {
    await Promise.all(conns.map((c) => c.end().catch(() => c.destroy && c.destroy())))
  }
}

// Errors and warnings a client or connection emitted outside any query: a check that ends
// with some fails. Scripts push to it from their drivers' event handlers.
const strayErrors = []

// An error as one line: its class, message and the `fields` (names) it has.
function describeWith(fields) {
  return (err) => {
    if (!(err instanceof Error)) return show(err)
    const present = fields.filter((k) => err[k] !== undefined && err[k] !== null && err[k] !== '')
    const detail = present.length ? ` [${present.map((k) => `${k}=${err[k]}`).join(' ')}]` : ''
    return `${err.constructor.name}: ${err.message}${detail}`
  }
}

// Runs each [name, check] in order; the exit status. `knownFailures`: check name -> why it
// fails through the proxy; `describeError`: an error as one line.
async function runChecks(driver, checks, { knownFailures = {}, describeError = describeWith([]) } = {}) {
  console.log(`${driver}: target=${TARGET} ${HOST}:${PORT} db=${DB} pool_mode=${POOL_MODE}`)
  const failed = []
  for (const [name, check] of checks) {
    const known = THROUGH_PROXY ? knownFailures[name] : undefined
    const started = process.hrtime.bigint()
    strayErrors.length = 0
    let timer
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), CHECK_TIMEOUT_MS)
    })
    let error = null
    try {
      const outcome = await Promise.race([check().then(() => 'done'), timeout])
      if (outcome === 'timeout') {
        // Like faulthandler in common.py: say what is still open, and end the script.
        console.log(`  FAIL ${name}: still running after ${CHECK_TIMEOUT_MS / 1000}s; open handles:`)
        for (const h of process._getActiveHandles()) {
          console.log(`    ${h.constructor.name} ${h.remoteAddress ? `${h.remoteAddress}:${h.remotePort}` : ''}`)
        }
        process.exit(1)
      }
      if (strayErrors.length) throw new CheckFailed(`emitted outside a query: ${strayErrors.map(describeError).join('; ')}`)
    } catch (err) {
      error = err
    } finally {
      clearTimeout(timer)
    }
    const took = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(2)
    if (error) {
      if (known) {
        console.log(`  KNOWN FAILURE ${name}: ${describeError(error)}\n    (not counted: ${known})`)
        continue
      }
      failed.push(name)
      console.log(`  FAIL ${name}: ${describeError(error)}`)
      console.log(String(error.stack).split('\n').slice(1).join('\n'))
    } else if (known) {
      failed.push(name)
      console.log(`  FAIL ${name}: listed as a known failure (${known}) but passes now: remove it from KNOWN_FAILURES`)
    } else {
      console.log(`  ok   ${name} (${took}s)`)
    }
  }
  if (failed.length) {
    console.log(`${driver}: ${failed.length} of ${checks.length} checks FAILED: ${failed.join(', ')}`)
    return 1
  }
  console.log(`${driver}: all ${checks.length} checks passed`)
  return 0
}

// Runs the checks (see runChecks) and exits with their status once stdout is flushed,
// whatever a check left open.
async function main(driver, checks, options) {
  const status = await runChecks(driver, checks, options)
  process.stdout.write('', () => process.exit(status))
}

process.on('unhandledRejection', (err) => {
  console.log(`unhandled rejection: ${show(err)}\n${err && err.stack}`)
  process.exit(1)
})

module.exports = {
  HOST,
  PORT,
  USER,
  PASSWORD,
  DB,
  SSLMODE,
  TARGET,
  THROUGH_PROXY,
  POOL_MODE,
  ONE_CONNECTION,
  TRACE,
  CHECK_TIMEOUT_MS,
  CheckFailed,
  expect,
  show,
  expectEq,
  delay,
  strayErrors,
  describeWith,
  mysqlConfig,
  withOpened,
  main,
}
