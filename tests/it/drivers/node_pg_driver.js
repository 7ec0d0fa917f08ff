// node-postgres (`pg` 8, what Node.js applications, Knex, Sequelize, TypeORM and Prisma's
// pg adapter use) through switchyard. Run by tests/it/drivers.rs with `node`, from
// tests/it/drivers/, where scripts/install-deps.sh installs `pg` into node_modules. It reads
// the same environment as common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB,
// SY_SSLMODE, SY_TARGET, SY_POOL_MODE) and reports the same way: one line per check, exit
// status 1 when any failed.
//
// What node-pg does that the other drivers do not: a query with values is one unnamed
// Parse, Bind (one result format for all columns), Describe of the portal, Execute and Sync;
// a query with a `name` is parsed once per client and from then on only bound, on whatever
// server connection the pool lends, with no way to prepare it again (the client believes
// the statement lives as long as its connection); many clients (and every pg.Pool) use the
// same names, with the same or other texts; `rows` reads the unnamed portal in pieces,
// with Flush (not Sync) between the pieces; `pipeline: true` sends queries (each with its
// own Sync) without waiting for the answers of those before.
//
// SY_TRACE set: every message each client sends and receives is logged on stderr.

'use strict'

const tls = require('tls')
const util = require('util')
const pg = require('pg')
const PG_VERSION = require('pg/package.json').version

const { HOST, PORT, USER, PASSWORD, DB, SSLMODE, TARGET, THROUGH_PROXY, POOL_MODE, ONE_CONNECTION,
  TRACE, CHECK_TIMEOUT_MS, CheckFailed, expect, show, expectEq, delay, strayErrors, describeWith,
  withOpened, main } = require('./node_common')

// check name -> why it fails through the proxy (a defect reported, not fixed yet); see
// common.py.
const KNOWN_FAILURES = {}

function config(extra) {
  return {
    host: HOST,
    port: PORT,
    user: USER,
    password: PASSWORD,
    database: DB,
    connectionTimeoutMillis: 10_000,
    // sslmode=require: TLS, the certificate not verified (the proxy's is the test PKI's).
    ssl: SSLMODE ? { rejectUnauthorized: false } : false,
    ...extra,
  }
}

// Logs what `client` sends and receives, on stderr (SY_TRACE).
function trace(client, tag) {
  const con = client.connection
  for (const method of ['query', 'parse', 'bind', 'describe', 'execute', 'flush', 'sync', 'close']) {
    const original = con[method].bind(con)
    con[method] = (arg) => {
      const what = arg === undefined ? '' : typeof arg === 'string' ? arg : show({ ...arg, valueMapper: undefined })
      process.stderr.write(`[${tag} pid ${client.processID}] > ${method} ${what}\n`)
      return original(arg)
    }
  }
  con.on('message', (msg) => {
    const { name, length, ...rest } = msg
    const what = name === 'dataRow' ? `${msg.fieldCount} fields` : show(rest)
    process.stderr.write(`[${tag} pid ${client.processID}] < ${name} ${what}\n`)
  })
}

let clientCount = 0

// Counts the Parse messages a client sends, by statement name ('' for unnamed).
function countParses(client) {
  const counts = {}
  const con = client.connection
  const original = con.parse.bind(con)
  con.parse = (query) => {
    counts[query.name || ''] = (counts[query.name || ''] || 0) + 1
    return original(query)
  }
  return counts
}

function newClient(extra) {
  const client = new pg.Client(config(extra))
  client.on('error', (err) => strayErrors.push(err))
  client.serverParams = {}
  client.connection.on('parameterStatus', (msg) => {
    client.serverParams[msg.parameterName] = msg.parameterValue
  })
  client.parses = countParses(client)
  if (TRACE) trace(client, `client ${++clientCount}`)
  return client
}

async function connect(extra) {
  const client = newClient(extra)
  await client.connect()
  return client
}

const withClients = (n, fn, extra) => withOpened(connect, n, fn, extra)

const withClient = (fn, extra) => withClients(1, fn, extra)

// The first column of the first row.
async function one(client, text, values) {
  const result = await client.query({ text, values, rowMode: 'array' })
  expect(result.rows.length > 0, `a row from ${text}`)
  return result.rows[0][0]
}

// The error `promise` fails with; fails the check if it succeeds or fails otherwise.
async function expectError(promise, code, what) {
  let result
  try {
    result = await promise
  } catch (err) {
    if (err.code !== code) throw new CheckFailed(`${what}: got ${err.code} ${err.message}, want SQLSTATE ${code}`)
    return err
  }
  throw new CheckFailed(`${what}: succeeded (${show(result && result.rows)}), want SQLSTATE ${code}`)
}

// Waits until a new session's read (on a replica, through the proxy) gives `want`: what
// another session wrote reaches the replicas a moment later.
async function awaitReplicated(text, want) {
  const deadline = Date.now() + 30_000
  await withClient(async (client) => {
    let got = await one(client, text)
    while (!util.isDeepStrictEqual(got, want)) {
      expect(Date.now() < deadline, `${text} still gives ${show(got)}, want ${show(want)}`)
      await delay(20)
      got = await one(client, text)
    }
  })
}

// The transaction status the last ReadyForQuery told ('I', 'T' or 'E'): reliable after a
// query that succeeded only (node-pg rejects a query at its ErrorResponse, before the
// ReadyForQuery after it).
function txStatus(client) {
  return client.getTransactionStatus()
}

// ---------------------------------------------------------------------------------------

async function checkConnect() {
  await withClient(async (client) => {
    expectEq(await one(client, 'SELECT current_user'), USER, 'current_user')
    expectEq(client.serverParams.server_encoding, 'UTF8', 'server_encoding')
    expectEq(client.serverParams.client_encoding, 'UTF8', 'client_encoding')
    const version = Number(await one(client, 'SHOW server_version_num'))
    expect(version >= 150000, `server_version_num ${version}`)
    const stream = client.connection.stream
    expectEq(stream instanceof tls.TLSSocket && stream.encrypted === true, Boolean(SSLMODE), 'TLS in use')
    expect(Number.isInteger(client.processID) && client.processID > 0, `processID ${client.processID}`)
    expect(Number.isInteger(client.secretKey), `secretKey ${client.secretKey}`)
    const pid = await one(client, '/* switchyard:writer */ SELECT pg_backend_pid()')
    if (ONE_CONNECTION) expectEq(pid, client.processID, "the pid the client was told is its writer connection's")
    expectEq(txStatus(client), 'I', 'transaction status')
  })
}

async function checkSetup() {
  await withClient(async (client) => {
    const results = await client.query(`
      DROP TABLE IF EXISTS items, bins, shapes, pooled;
      CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2));
      CREATE TABLE bins (id int PRIMARY KEY, i8 int8, n numeric, b bytea, j json, jb jsonb, a int[],
                         ta text[], t timestamptz, u uuid, f float8, ok bool, s text);
      CREATE TABLE pooled (id int PRIMARY KEY, client int)`)
    expectEq(results.map((r) => r.command), ['DROP', 'CREATE', 'CREATE', 'CREATE'], 'commands of the setup')
  })
  await awaitReplicated("SELECT to_regclass('pooled') IS NOT NULL", true)
}

// Queries with values: each an unnamed Parse, Bind, Describe (portal), Execute, Sync.
async function checkParameterizedQueries() {
  await withClient(async (client) => {
    expectEq(await one(client, 'SELECT $1::int + 1', [41]), 42, 'int4 (a number)')
    expectEq(await one(client, 'SELECT $1::int8', [9223372036854775807n]), '9223372036854775807', 'int8 (a string)')
    expectEq(await one(client, 'SELECT $1::numeric * 2', ['12345678901234567890.123456789']),
      '24691357802469135780.246913578', 'numeric (a string)')
    expectEq(await one(client, 'SELECT $1::text || $2::text', ['a\'b', '"c"\\']), 'a\'b"c"\\', 'quotes in text')
    const blob = Buffer.alloc(256 * 64)
    for (let i = 0; i < blob.length; i++) blob[i] = i % 256
    const doc = { k: [1, null, 'é'], nested: { t: true } }
    const when = new Date(Date.UTC(2026, 11, 5, 12, 34, 56, 789))
    const uuid = '00000000-0000-0000-0000-000000003039'
    const insert = await client.query(
      'INSERT INTO bins VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)',
      [1, '-9223372036854775808', '0.000000001', blob, doc, doc, [1, null, 3], ['a', 'b "c"', 'd,e', null, 'é'],
        when, uuid, Infinity, true, null])
    expectEq([insert.command, insert.rowCount], ['INSERT', 1], 'the insert')
    const result = await client.query('SELECT * FROM bins WHERE id = $1', [1])
    expectEq(result.fields.map((f) => f.name), ['id', 'i8', 'n', 'b', 'j', 'jb', 'a', 'ta', 't', 'u', 'f', 'ok', 's'],
      'columns')
    const row = result.rows[0]
    expect(Buffer.isBuffer(row.b) && row.b.equals(blob), `bytea (a Buffer of ${row.b && row.b.length} bytes)`)
    expectEq(row.t instanceof Date && row.t.getTime(), when.getTime(), 'timestamptz (a Date)')
    delete row.b
    delete row.t
    expectEq(row, {
      id: 1, i8: '-9223372036854775808', n: '0.000000001', j: doc, jb: doc, a: [1, null, 3],
      ta: ['a', 'b "c"', 'd,e', null, 'é'], u: uuid, f: Infinity, ok: true, s: null,
    }, 'the row of many types')
    const nulls = await client.query({
      text: 'SELECT NULL::int, NULL::text, NULL::bytea, $1::text, $2::int', values: [null, undefined], rowMode: 'array',
    })
    expectEq(nulls.rows, [[null, null, null, null, null]], 'NULLs')
    const text = 'héllo wörld ✓ 🐘'
    expectEq(await one(client, 'SELECT $1::text', [text]), text, 'UTF-8 as a parameter')
    expectEq(await one(client, `SELECT '${text}'::text`), text, 'UTF-8 in a simple query')
    expectEq(await one(client, 'SELECT length($1::text)', [text]), 15, 'characters of UTF-8 text')
    // Results in binary (one format for every column).
    const binary = await client.query({
      text: 'SELECT $1::int4 AS i, $2::int8 AS l, $3::text AS t, $4::bool AS b, $5::float8 AS f',
      values: [7, '9007199254740993', text, false, 2.5], binary: true,
    })
    expectEq(binary.rows, [{ i: 7, l: '9007199254740993', t: text, b: false, f: 2.5 }], 'binary results')
    expectEq(client.parses[''], 10, 'unnamed statements parsed (one per query with values)')
  })
}

// Named statements: parsed once per client (its first use), then only bound.
async function checkNamedStatements() {
  await withClient(async (client) => {
    for (let i = 0; i < 20; i++) {
      const r = await client.query({
        name: 'ins-item', text: 'INSERT INTO items (id, name, price) VALUES ($1, $2, $3)', values: [i, `item${i}`, i * 1.5],
      })
      expectEq(r.rowCount, 1, `insert ${i}`)
    }
    for (let i = 0; i < 20; i++) {
      const r = await client.query({ name: 'by-id', text: 'SELECT name, price FROM items WHERE id = $1', values: [i] })
      expectEq(r.rows, [{ name: `item${i}`, price: (i * 1.5).toFixed(2) }], `read of ${i} by a named statement`)
    }
    // By name alone, once parsed.
    const r = await client.query({ name: 'by-id', values: [3] })
    expectEq(r.rows[0].name, 'item3', 'a named statement by its name alone')
    // Parsed in a transaction that rolls back: a prepared statement outlives it.
    await client.query('BEGIN')
    expectEq(await oneNamed(client, 'in-tx', 'SELECT $1::int * 3', [5]), 15, 'in the transaction')
    await client.query('ROLLBACK')
    for (let i = 0; i < 3; i++) {
      expectEq(await oneNamed(client, 'in-tx', 'SELECT $1::int * 3', [i]), i * 3, 'after the rollback')
    }
    // A value its Bind refuses: the statement stays; node-pg binds it again.
    await expectError(client.query({ name: 'as-int', text: 'SELECT $1::int', values: ['x'] }), '22P02',
      'a bad value for a named statement')
    expectEq(await oneNamed(client, 'as-int', 'SELECT $1::int', ['12']), 12, 'the named statement after a bad value')
    // A Parse the server refuses: not kept, so the name is free for another text.
    await expectError(client.query({ name: 'bad', text: 'SELEC $1', values: [1] }), '42601', 'a syntax error')
    expectEq(await oneNamed(client, 'bad', 'SELECT $1::int - 1', [1]), 0, 'the name parsed again with its fix')
    // A statement whose execution fails: it stays prepared.
    await expectError(client.query({ name: 'div', text: 'SELECT 10 / $1::int', values: [0] }), '22012', 'division by zero')
    expectEq(await oneNamed(client, 'div', 'SELECT 10 / $1::int', [5]), 2, 'the named statement after its error')
    expectEq(client.parses,
      { 'ins-item': 1, 'by-id': 1, 'in-tx': 1, 'as-int': 1, bad: 2, div: 1 },
      'Parse messages sent, by statement name')
  })
}

async function oneNamed(client, name, text, values) {
  const result = await client.query({ name, text, values, rowMode: 'array' })
  expect(result.rows.length > 0, `a row from ${name}`)
  return result.rows[0][0]
}

// What matters most through a transaction-mode pool: many clients, each with the same
// statement names (some with the same text, one with a text of its own), all at once, on a
// few server connections; each client parses a name once and then only binds it, wherever
// its statements run.
async function checkManyClientsNamedStatements() {
  await awaitReplicated('SELECT count(*) FROM items WHERE id < 20', '20')
  const clients = 16
  await withClients(clients, async (...all) => {
    await Promise.all(all.map(async (client, k) => {
      for (let i = 0; i < 40; i++) {
        const inTx = i % 10 === 9
        if (inTx) await client.query('BEGIN')
        const r = await client.query({ name: 'by-id', text: 'SELECT name FROM items WHERE id = $1', values: [i % 20] })
        expectEq(r.rows, [{ name: `item${i % 20}` }], `client ${k} read ${i}`)
        // The same name, a text of each client's own.
        expectEq(await oneNamed(client, 'times', `SELECT $1::int * ${k}`, [i]), i * k, `client ${k} product ${i}`)
        expectEq(await oneNamed(client, 'plus', 'SELECT $1::int + $2::int', [i, k]), i + k, `client ${k} sum ${i}`)
        if (inTx) {
          expectEq(txStatus(client), 'T', `client ${k} in its transaction`)
          await client.query('COMMIT')
        }
      }
      expectEq(client.parses, { 'by-id': 1, times: 1, plus: 1 }, `client ${k}: Parse messages sent`)
    }))
  })
  // A pg.Pool of 16: its clients live on and keep their statements.
  const pool = new pg.Pool({ ...config(), max: 16 })
  pool.on('error', (err) => strayErrors.push(err))
  try {
    const results = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      pool.query({ name: 'by-id', text: 'SELECT name FROM items WHERE id = $1', values: [i % 20], rowMode: 'array' })))
    expectEq(results.map((r) => r.rows[0][0]), Array.from({ length: 400 }, (_, i) => `item${i % 20}`),
      'pooled reads by a named statement')
    expect(pool.totalCount <= 16, `pool clients ${pool.totalCount}`)
  } finally {
    await pool.end()
  }
}

// DDL between executions of a named statement: what the server does (the statement,
// parsed before, fails from then on with "cached plan must not change result type"; a new
// client parses it anew) is what the client gets through the proxy, where the statement
// may be parsed again on other server connections after the DDL.
async function checkNamedStatementAfterDdl() {
  await withClients(2, async (client, ddl) => {
    await ddl.query('DROP TABLE IF EXISTS shapes')
    await ddl.query('CREATE TABLE shapes (id int PRIMARY KEY, a int)')
    await ddl.query('INSERT INTO shapes VALUES (1, 10)')
    // On the writer, where the DDL is at once (a replica applies it a moment later).
    const shape = { name: 'shape', text: 'SELECT /* switchyard:writer */ * FROM shapes WHERE id = $1', values: [1] }
    const outcome = async (c) => {
      try {
        const r = await c.query(shape)
        return `${r.fields.map((f) => f.name).join(',')}: ${r.rows.map((row) => show(row)).join(' ')}`
      } catch (err) {
        return `${err.code} ${err.message}`
      }
    }
    for (let i = 0; i < 6; i++) expectEq(await outcome(client), "id,a: { id: 1, a: 10 }", `before the DDL (${i})`)
    await ddl.query("ALTER TABLE shapes ADD COLUMN b text DEFAULT 'new'")
    const stale = '0A000 cached plan must not change result type'
    const after = []
    for (let i = 0; i < 3; i++) after.push(await outcome(client))
    // Through a transaction-mode pool, the connections newest in the pool (the one the
    // statement was parsed on among them) held by other clients' transactions: the
    // statement runs on a connection it was never parsed on before, where the proxy parses
    // it (after the DDL) for the client.
    await withClients(3, async (...holders) => {
      for (const holder of holders) {
        await holder.query('BEGIN')
        await holder.query('/* switchyard:writer */ SELECT 1')
      }
      for (let i = 0; i < 3; i++) after.push(await outcome(client))
      for (const holder of holders) await holder.query('ROLLBACK')
    })
    for (let i = 0; i < 3; i++) after.push(await outcome(client))
    expectEq(after, Array(9).fill(stale), 'the statement parsed before the DDL, outside a transaction')
    await client.query('BEGIN')
    expectEq(await outcome(client), stale, 'the stale statement in a transaction')
    await expectError(client.query('SELECT 1'), '25P02', 'a query after the error')
    await client.query('ROLLBACK')
    expectEq(await outcome(client), stale, 'the stale statement after the rollback')
    // Without a name the text is parsed anew at each query.
    const r = await client.query('SELECT /* switchyard:writer */ * FROM shapes WHERE id = $1', [1])
    expectEq(r.rows, [{ id: 1, a: 10, b: 'new' }], 'an unnamed statement after the DDL')
    expectEq(client.parses, { shape: 1, '': 1 }, 'Parse messages sent')
    // A new client parses the name anew.
    await withClient(async (fresh) => {
      for (let i = 0; i < 3; i++) {
        expectEq(await outcome(fresh), "id,a,b: { id: 1, a: 10, b: 'new' }", `a new client's statement (${i})`)
      }
    })
  })
}

async function checkTransactions() {
  await withClient(async (client) => {
    await client.query('BEGIN')
    expectEq(txStatus(client), 'T', 'status after BEGIN')
    await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [100, 'committed'])
    await client.query('COMMIT')
    expectEq(txStatus(client), 'I', 'status after COMMIT')
    await client.query('BEGIN')
    await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [101, 'rolled back'])
    await client.query('ROLLBACK')
    await client.query('BEGIN')
    await client.query('INSERT INTO items (id, name) VALUES (102, \'outer\')')
    await client.query('SAVEPOINT s')
    await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [103, 'inner'])
    await expectError(client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [103, 'again']), '23505',
      'a duplicate in the savepoint')
    await client.query('ROLLBACK TO SAVEPOINT s')
    expectEq(txStatus(client), 'T', 'status after ROLLBACK TO SAVEPOINT')
    await client.query({ name: 'ins-named', text: 'INSERT INTO items (id, name) VALUES ($1, $2)', values: [104, 'kept'] })
    await client.query('RELEASE SAVEPOINT s')
    await client.query('COMMIT')
    const ids = await client.query({ text: 'SELECT id FROM items WHERE id >= 100 AND id < 200 ORDER BY id', rowMode: 'array' })
    expectEq(ids.rows.flat(), [100, 102, 104], 'committed rows')
    // An error aborts the transaction: 25P02 until ROLLBACK, for named statements too.
    await client.query('BEGIN')
    await client.query('INSERT INTO items (id, name) VALUES (300, \'x\')')
    const dup = await expectError(client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [300, 'x']), '23505',
      'a duplicate key')
    expectEq(dup.constraint, 'items_pkey', 'constraint of the duplicate')
    await expectError(client.query('SELECT 1'), '25P02', 'a simple query in the failed transaction')
    await expectError(client.query({ name: 'ins-named', values: [301, 'y'] }), '25P02',
      'a named statement in the failed transaction')
    // COMMIT of a failed transaction rolls it back, and says so.
    expectEq((await client.query('COMMIT')).command, 'ROLLBACK', 'COMMIT of the failed transaction')
    expectEq(txStatus(client), 'I', 'status after it')
    expectEq(await one(client, 'SELECT count(*) FROM items WHERE id IN (300, 301)'), '0', 'nothing of it kept')
    // A read-only transaction refuses a write.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    expectEq(await one(client, 'SELECT name FROM items WHERE id = $1', [100]), 'committed', 'a read-only read')
    await expectError(client.query('INSERT INTO items (id, name) VALUES (302, \'no\')'), '25006',
      'a write in a read-only transaction')
    await client.query('ROLLBACK')
    expectEq(await one(client, 'SELECT 7'), 7, 'the session after the transactions')
  })
}

async function checkRowModeArray() {
  await withClient(async (client) => {
    const r = await client.query({ text: 'SELECT 1 AS a, 2 AS a, $1::text AS c', values: ['x'], rowMode: 'array' })
    expectEq(r.rows, [[1, 2, 'x']], 'rows as arrays (both columns named a kept)')
    expectEq(r.fields.map((f) => f.name), ['a', 'a', 'c'], 'field names')
    const simple = await client.query({ text: 'SELECT 3 AS a, NULL AS b UNION ALL SELECT 4, \'y\'', rowMode: 'array' })
    expectEq(simple.rows, [[3, null], [4, 'y']], 'a simple query in rowMode array')
    const named = await client.query({ name: 'arr', text: 'SELECT $1::int, $1::int * 2', values: [4], rowMode: 'array' })
    expectEq(named.rows, [[4, 8]], 'a named statement in rowMode array')
    const again = await client.query({ name: 'arr', text: 'SELECT $1::int, $1::int * 2', values: [5] })
    expectEq(again.rows, [{ int4: 5, '?column?': 10 }], 'the same statement in rowMode object')
  })
}

// A query without values is one simple Query: several statements in it give an array of
// results, and it runs as one implicit transaction.
async function checkMultiStatementQuery() {
  await withClient(async (client) => {
    const results = await client.query('SELECT 1 AS one; SELECT 2 AS two, 3 AS three')
    expect(Array.isArray(results), `an array of results, got ${show(results)}`)
    expectEq(results.map((r) => r.rows), [[{ one: 1 }], [{ two: 2, three: 3 }]], 'the results')
    const mixed = await client.query(
      "BEGIN; INSERT INTO items (id, name) VALUES (400, 'multi'); UPDATE items SET name = 'multi!' WHERE id = 400; " +
      'SELECT name FROM items WHERE id = 400; COMMIT')
    expectEq(mixed.map((r) => [r.command, r.rowCount]),
      [['BEGIN', null], ['INSERT', 1], ['UPDATE', 1], ['SELECT', 1], ['COMMIT', null]], 'commands and row counts')
    expectEq(mixed[3].rows, [{ name: 'multi!' }], 'a read in the string')
    // One implicit transaction: the duplicate undoes the insert before it.
    await expectError(client.query("INSERT INTO items (id, name) VALUES (401, 'a'); INSERT INTO items (id, name) VALUES (400, 'dup')"),
      '23505', 'a duplicate in a multi-statement query')
    await expectError(client.query('SELECT 1; SELECT 1 / 0; SELECT 3'), '22012', 'an error in the middle')
    expectEq(await one(client, 'SELECT count(*) FROM items WHERE id = 401'), '0', 'the implicit transaction undone')
    expectEq(txStatus(client), 'I', 'no transaction left open')
    const empty = await client.query('')
    expectEq([empty.command, empty.rows], [null, []], 'an empty query')
    expectEq(await one(client, 'SELECT 8'), 8, 'the session after them')
  })
}

async function checkErrors() {
  await withClient(async (client) => {
    const notices = []
    client.on('notice', (msg) => notices.push(`${msg.severity} ${msg.code} ${msg.message}`))
    await client.query("INSERT INTO items (id, name) VALUES (5000, 'x')")
    const err = await expectError(client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [5000, 'again']), '23505',
      'a duplicate key')
    expectEq({ severity: err.severity, constraint: err.constraint, table: err.table, schema: err.schema, detail: err.detail },
      { severity: 'ERROR', constraint: 'items_pkey', table: 'items', schema: 'public', detail: 'Key (id)=(5000) already exists.' },
      'fields of the error')
    expect(err instanceof pg.DatabaseError, 'a pg.DatabaseError')
    expectEq(await one(client, 'SELECT 1'), 1, 'the session after an error')
    const missing = await expectError(client.query('SELECT * FROM no_such_table'), '42P01', 'a missing table')
    expectEq(missing.position, '15', 'position of the error')
    const raised = await expectError(client.query(
      "DO $$ BEGIN RAISE NOTICE 'a notice'; RAISE EXCEPTION 'custom' USING ERRCODE = 'P0001', HINT = 'a hint'; END $$"),
    'P0001', 'a raised exception')
    expectEq([raised.message, raised.hint], ['custom', 'a hint'], 'message and hint')
    expectEq(notices, ['NOTICE 00000 a notice'], 'the notice before the error')
    expectEq(await one(client, 'SELECT $1::int', [2]), 2, 'the session after the errors')
  })
}

async function checkListenNotify() {
  await withClients(2, async (listener, notifier) => {
    const got = []
    let wake = () => {}
    listener.on('notification', (msg) => {
      got.push(msg)
      wake()
    })
    const waitFor = async (n) => {
      const deadline = Date.now() + 10_000
      while (got.length < n && Date.now() < deadline) {
        let timer
        await new Promise((resolve) => {
          wake = resolve
          timer = setTimeout(resolve, deadline - Date.now())
        })
        clearTimeout(timer)
      }
      expect(got.length >= n, `${n} notifications, got ${show(got)}`)
    }
    await listener.query('LISTEN chan')
    await notifier.query("NOTIFY chan, 'hello'")
    await notifier.query('SELECT pg_notify($1, $2)', ['chan', 'second'])
    await waitFor(2)
    expectEq(got.map((m) => [m.channel, m.payload]), [['chan', 'hello'], ['chan', 'second']], 'notifications')
    if (ONE_CONNECTION) {
      expectEq(got[0].processId, notifier.processID, 'the notifying pid is the pid the notifier was told')
    }
    // Sent at COMMIT only.
    await notifier.query('BEGIN')
    await notifier.query("NOTIFY chan, 'in a transaction'")
    await notifier.query('COMMIT')
    await waitFor(3)
    expectEq([got[2].channel, got[2].payload], ['chan', 'in a transaction'], 'a notification at COMMIT')
    expectEq(await one(listener, 'SELECT 1'), 1, 'the listener runs queries')
    await listener.query('UNLISTEN *')
  })
}

// Runs `text` on `victim` while `cancel()` is called every 100 ms until the query ends;
// returns its error (or null) and what cancel() answered.
async function cancelUntilDone(victim, text, cancel) {
  let settled = false
  const running = victim.query(text).then(() => null, (err) => err).finally(() => { settled = true })
  const answers = []
  const deadline = Date.now() + 30_000
  while (!settled && Date.now() < deadline) {
    answers.push(await cancel())
    await Promise.race([running, delay(100)])
  }
  expect(settled, `${text} still running after 30 s of cancels`)
  return { err: await running, answers }
}

// pg_cancel_backend(pid) of the pid a client was told (BackendKeyData), from another client:
// what applications (Knex's query timeouts among them) do to stop a query. The told pid is
// the connection running the client's statements when ONE_CONNECTION holds and the victim
// is in a transaction (on the writer); through a transaction-mode pool it is the proxy's,
// which cancels wherever the client's statement runs, a read on a replica too; through a
// session-mode pool a read runs on a replica connection, whose pid the client was not told.
async function checkCancelByPgCancelBackend() {
  const rounds = [
    { name: 'a transaction (on the writer)', inTx: true },
    { name: 'a read (on a replica)', inTx: false, skip: THROUGH_PROXY && POOL_MODE === 'session' },
  ]
  for (const round of rounds) {
    if (round.skip) continue
    await withClients(2, async (victim, killer) => {
      if (round.inTx) {
        await victim.query('BEGIN')
        // The signaller in a transaction of its own, which goes on.
        await killer.query('BEGIN')
        await killer.query("INSERT INTO items (id, name) VALUES (6100, 'signaller')")
      }
      const { err, answers } = await cancelUntilDone(victim, 'SELECT pg_sleep(60)',
        () => one(killer, 'SELECT pg_cancel_backend($1)', [victim.processID]))
      expect(err, `pg_sleep(60) in ${round.name} was not cancelled`)
      expectEq(`${err.code} ${err.message}`, '57014 canceling statement due to user request', `the cancel of ${round.name}`)
      expect(answers.length > 0 && answers.every((a) => a === true), `pg_cancel_backend() answered ${show(answers)}`)
      if (round.inTx) {
        await victim.query('ROLLBACK')
        expectEq(txStatus(killer), 'T', "the signaller's transaction after pg_cancel_backend()")
        await killer.query('COMMIT')
        expectEq(await one(victim, '/* switchyard:writer */ SELECT name FROM items WHERE id = 6100'), 'signaller',
          "the signaller's transaction committed")
        await victim.query('DELETE FROM items WHERE id = 6100')
      }
      expectEq(await one(victim, 'SELECT 7'), 7, `the victim after a cancel in ${round.name}`)
    })
  }
}

// node-pg's Client#cancel(client, query): a CancelRequest with the key the victim was told,
// on a connection of its own.
async function checkCancelRequest() {
  for (const inTx of [true, false]) {
    await withClient(async (victim) => {
      if (inTx) await victim.query('BEGIN')
      const query = new pg.Query('SELECT pg_sleep(60)')
      let settled = false
      const running = new Promise((resolve) => {
        query.on('end', () => resolve(null))
        query.on('error', (err) => resolve(err))
      }).finally(() => { settled = true })
      victim.query(query)
      const deadline = Date.now() + 30_000
      while (!settled && Date.now() < deadline) {
        const canceller = newClient()
        canceller.connection.on('error', (err) => strayErrors.push(err))
        canceller.cancel(victim, query)
        await Promise.race([running, delay(100)])
      }
      const err = await running
      expect(err, `pg_sleep(60) was not cancelled (in a transaction: ${inTx})`)
      expectEq(`${err.code} ${err.message}`, '57014 canceling statement due to user request', 'the cancelled query')
      if (inTx) await victim.query('ROLLBACK')
      expectEq(await one(victim, 'SELECT 8'), 8, 'the session after the cancel')
    })
  }
}

async function checkLargeResult() {
  await withClient(async (client) => {
    const text = 'SELECT i, repeat(md5(i::text), 32) AS s FROM generate_series(1, $1::int) i'
    const r = await client.query(text, [20000])
    expectEq(r.rows.length, 20000, 'rows of a ~20 MB result')
    expectEq(r.rows.reduce((n, row) => n + row.s.length, 0), 20000 * 1024, 'characters of a ~20 MB result')
    expectEq(r.rows[19999].i, 20000, 'the last row')
    const simple = await client.query('SELECT i, repeat(md5(i::text), 32) AS s FROM generate_series(1, 20000) i')
    expectEq(simple.rows.length, 20000, 'rows of a ~20 MB simple query')
    // `rows`: the unnamed portal read 1000 rows at a time (Execute, Flush, PortalSuspended,
    // ... and one Sync at the end), outside and inside a transaction.
    for (const inTx of [false, true]) {
      if (inTx) await client.query('BEGIN')
      const pieces = await client.query({ text: 'SELECT i FROM generate_series(1, 20000) i', rows: 1000, rowMode: 'array' })
      expectEq(pieces.rows.length, 20000, `rows read 1000 at a time (in a transaction: ${inTx})`)
      expectEq(pieces.rows.reduce((n, row) => n + row[0], 0), 200010000, 'their sum')
      if (inTx) await client.query('COMMIT')
    }
    expectEq(await one(client, 'SELECT 9'), 9, 'the session after the large results')
  })
}

// A pg.Pool of 16 with many queries and transactions at once.
async function checkPool() {
  const pool = new pg.Pool({ ...config(), max: 16 })
  pool.on('error', (err) => strayErrors.push(err))
  try {
    const reads = await Promise.all(Array.from({ length: 300 }, (_, i) =>
      i % 3 === 0
        ? pool.query({ name: 'double', text: 'SELECT $1::int * 2 AS n', values: [i] })
        : pool.query('SELECT $1::int * 2 AS n', [i])))
    expectEq(reads.map((r) => r.rows[0].n), Array.from({ length: 300 }, (_, i) => i * 2), 'pooled queries')
    await Promise.all(Array.from({ length: 32 }, async (_, i) => {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query({ name: 'ins-pooled', text: 'INSERT INTO pooled VALUES ($1, $2)', values: [i, i % 16] })
        expectEq(await one(client, 'SELECT count(*) FROM pooled WHERE id = $1', [i]), '1', 'read in the transaction')
        if (i % 4 === 3) {
          await client.query('ROLLBACK')
        } else {
          await client.query('COMMIT')
        }
      } finally {
        client.release()
      }
    }))
    expect(pool.totalCount <= 16, `pool clients ${pool.totalCount}`)
  } finally {
    await pool.end()
  }
  await awaitReplicated('SELECT count(*) FROM pooled', '24')
}

// pipeline: true sends each query (with its own Sync) without waiting for those before.
async function checkPipeline() {
  await withClient(async (client) => {
    expect(client.pipeline === true, `pg ${PG_VERSION} has pipeline mode`)
    const queries = []
    queries.push(client.query("INSERT INTO items (id, name) VALUES (7000, 'piped') RETURNING id"))
    for (let i = 0; i < 30; i++) {
      queries.push(i % 2
        ? client.query({ name: 'pipe-named', text: 'SELECT $1::int + 100 AS n', values: [i] })
        : client.query('SELECT $1::int + 100 AS n', [i]))
    }
    queries.push(client.query('SELECT name FROM items WHERE id = $1', [7000]))
    const results = await Promise.all(queries)
    expectEq(results[0].rows, [{ id: 7000 }], 'a pipelined insert')
    expectEq(results.slice(1, 31).map((r) => r.rows[0].n), Array.from({ length: 30 }, (_, i) => i + 100),
      'pipelined reads')
    expectEq(results[31].rows, [{ name: 'piped' }], 'a pipelined read of the write before it')
    // An error fails its own query only (each has its Sync).
    const mixed = await Promise.allSettled([
      client.query('SELECT 1 AS n'),
      client.query('SELECT 1 / $1::int AS n', [0]),
      client.query({ name: 'pipe-named', text: 'SELECT $1::int + 100 AS n', values: [1] }),
    ])
    expectEq(mixed.map((s) => (s.status === 'fulfilled' ? s.value.rows[0].n : s.reason.code)), [1, '22012', 101],
      'an error in a pipeline')
    // A transaction in a pipeline: the error aborts the statements after it up to ROLLBACK.
    const tx = await Promise.allSettled([
      client.query('BEGIN'),
      client.query("INSERT INTO items (id, name) VALUES (7001, 'tx')"),
      client.query("INSERT INTO items (id, name) VALUES (7000, 'dup')"),
      client.query('SELECT 1'),
      client.query('ROLLBACK'),
      client.query('SELECT count(*) FROM items WHERE id = 7001'),
    ])
    expectEq(tx.map((s) => (s.status === 'fulfilled' ? s.value.command : s.reason.code)),
      ['BEGIN', 'INSERT', '23505', '25P02', 'ROLLBACK', 'SELECT'], 'a transaction in a pipeline')
    expectEq(tx[5].value.rows, [{ count: '0' }], 'nothing of it kept')
    expectEq(client.parses['pipe-named'], 1, 'the named statement parsed once')
  }, { pipeline: true })
}

async function checkRouting() {
  await withClient(async (client) => {
    expectEq(await one(client, 'SELECT pg_is_in_recovery()'), THROUGH_PROXY, "a fresh client's read runs on a replica")
    expectEq(await oneNamed(client, 'recovery', 'SELECT pg_is_in_recovery()', []), THROUGH_PROXY,
      'so does a named statement')
    await client.query('BEGIN')
    expectEq(await one(client, 'SELECT pg_is_in_recovery()'), false, 'a transaction runs on the primary')
    expectEq(await oneNamed(client, 'recovery', 'SELECT pg_is_in_recovery()', []), false,
      'a named statement in a transaction runs on the primary')
    await client.query('COMMIT')
    await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [6000, 'routed'])
    expectEq(await one(client, 'SELECT name FROM items WHERE id = $1', [6000]), 'routed', 'read your write')
    expectEq(await oneNamed(client, 'routed', 'SELECT name FROM items WHERE id = $1', [6000]), 'routed',
      'read your write by a named statement')
    expectEq(await one(client, "SELECT name FROM items WHERE id = 6000"), 'routed', 'read your write (simple query)')
  })
}

const CHECKS = [
  ['connect', checkConnect],
  ['setup', checkSetup],
  ['parameterized_queries', checkParameterizedQueries],
  ['named_statements', checkNamedStatements],
  ['many_clients_named_statements', checkManyClientsNamedStatements],
  ['named_statement_after_ddl', checkNamedStatementAfterDdl],
  ['transactions', checkTransactions],
  ['row_mode_array', checkRowModeArray],
  ['multi_statement_query', checkMultiStatementQuery],
  ['errors', checkErrors],
  ['listen_notify', checkListenNotify],
  ['cancel_by_pg_cancel_backend', checkCancelByPgCancelBackend],
  ['cancel_request', checkCancelRequest],
  ['large_result', checkLargeResult],
  ['pool', checkPool],
  ['pipeline', checkPipeline],
  ['routing', checkRouting],
]

const describeError = describeWith(['severity', 'code', 'detail', 'hint', 'where', 'routine'])

main(`node-pg ${PG_VERSION} (node ${process.version})`, CHECKS, { knownFailures: KNOWN_FAILURES, describeError })
