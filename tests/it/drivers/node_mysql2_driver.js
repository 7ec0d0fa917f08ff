// mysql2 (3.x, the MySQL driver of Node.js applications: Knex, Sequelize, TypeORM and
// Drizzle use it) through switchyard. Run by tests/it/drivers.rs with `node`,
// from tests/it/drivers/, where scripts/install-deps.sh installs `mysql2` into node_modules.
// It reads the same environment as common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD,
// SY_DB, SY_SSLMODE, SY_TARGET, SY_POOL_MODE) and reports the same way: one line per check,
// exit status 1 when any failed.
//
// What mysql2 does that the other drivers do not: `query()` with values escapes them into
// the text (COM_QUERY); `execute()` is a server-side prepared statement that the connection
// caches by its text (and the options that shape rows: rowsAsArray, nestTables):
// COM_STMT_PREPARE once per text and connection (as the client
// believes: through the proxy the statement runs on whatever server connection is lent),
// then only COM_STMT_EXECUTE, with the parameter types every time; the cache is an LRU of
// `maxPreparedStatements` that sends COM_STMT_CLOSE for what it evicts, and so do
// `unprepare(sql)` (twice for the same id: once as the cache drops it, once itself),
// `changeUser()` and `reset()` (after their COM_CHANGE_USER and COM_RESET_CONNECTION, for
// every statement it had: ids the server forgot already).
//
// SY_TRACE set: mysql2's `debug` (every packet each connection sends and receives) on
// stdout.

'use strict'

const tls = require('tls')
const util = require('util')
const { Readable } = require('stream')
const mysql = require('mysql2/promise')
const MYSQL2_VERSION = require('mysql2/package.json').version

const { HOST, PORT, USER, PASSWORD, DB, SSLMODE, TARGET, THROUGH_PROXY, POOL_MODE, ONE_CONNECTION,
  TRACE, CHECK_TIMEOUT_MS, CheckFailed, expect, show, expectEq, delay, strayErrors, describeWith,
  mysqlConfig, withOpened, main } = require('./node_common')
const { transactionsAndDuplicates, killQuery, ER_DUP_ENTRY, ER_PARSE_ERROR, ER_NO_SUCH_TABLE, blob, DOC,
  TEXT } = require('./node_mysql_common')

const MARIADB_CLIENT_EXTENDED_METADATA = 0x8

// check name -> why it fails through the proxy (a defect reported, not fixed yet); see
// common.py.
const KNOWN_FAILURES = {}

const config = mysqlConfig

const COMMANDS = { 0x03: 'query', 0x16: 'prepare', 0x17: 'execute', 0x19: 'close', 0x11: 'changeUser', 0x1f: 'reset' }
const COMMAND_CLASSES = {
  query: 'Query', prepare: 'Prepare', execute: 'Execute', close: 'CloseStatement', changeUser: 'ChangeUser',
  reset: 'ResetConnection',
}

// Counts the commands a (core) connection sends, by kind: `prepare` (COM_STMT_PREPARE),
// `execute`, `close`, `query`, `changeUser`, `reset`.
function countCommands(core) {
  const sent = { prepare: 0, execute: 0, close: 0, query: 0, changeUser: 0, reset: 0 }
  const original = core.writePacket.bind(core)
  core.writePacket = (packet) => {
    // A command is the first packet of its exchange (sequence id 0): later packets of the
    // same command (an auth switch's scramble after COM_CHANGE_USER) may start with any byte.
    const kind = core.sequenceId === 0 && COMMANDS[packet.buffer[4]]
    const command = core._command && core._command.constructor.name
    if (kind && command === COMMAND_CLASSES[kind]) sent[kind]++
    return original(packet)
  }
  core.on('error', (err) => strayErrors.push(err))
  core.on('warn', (err) => strayErrors.push(err))
  return sent
}

async function connect(extra) {
  const conn = await mysql.createConnection(config(extra))
  conn.sent = countCommands(conn.connection)
  return conn
}

const withConnections = (n, fn, extra) => withOpened(connect, n, fn, extra)

const withConnection = (fn, extra) => withConnections(1, fn, extra)

// A pool of `limit` connections, each counting what it sends (in `pool.sent`, one per
// connection).
function createPool(limit, extra) {
  const pool = mysql.createPool({ ...config(extra), connectionLimit: limit })
  pool.sent = []
  pool.pool.on('connection', (core) => pool.sent.push(countCommands(core)))
  return pool
}

// The first column of the first row of `query()` (client-side escaping).
async function one(conn, sql, values) {
  const [rows] = await conn.query({ sql, rowsAsArray: true }, values)
  expect(rows.length > 0, `a row from ${sql}`)
  return rows[0][0]
}

// The first column of the first row of `execute()` (a server-side prepared statement).
async function oneExecuted(conn, sql, values) {
  const [rows] = await conn.execute({ sql, rowsAsArray: true }, values)
  expect(rows.length > 0, `a row from ${sql}`)
  return rows[0][0]
}

// The error `promise` fails with; fails the check if it succeeds or fails otherwise.
async function expectError(promise, errno, what) {
  let result
  try {
    result = await promise
  } catch (err) {
    if (err.errno !== errno) throw new CheckFailed(`${what}: got ${err.errno} ${err.code} ${err.message}, want ${errno}`)
    return err
  }
  throw new CheckFailed(`${what}: succeeded (${show(result && result[0])}), want error ${errno}`)
}

// Waits until a new connection's read (on a replica, through the proxy) gives `want`: what
// another session wrote reaches the replicas a moment later.
async function awaitReplicated(sql, want) {
  const deadline = Date.now() + 30_000
  await withConnection(async (conn) => {
    let got = await one(conn, sql)
    while (!util.isDeepStrictEqual(got, want)) {
      expect(Date.now() < deadline, `${sql} still gives ${show(got)}, want ${show(want)}`)
      await delay(20)
      got = await one(conn, sql)
    }
  })
}

const tableExists = (name) =>
  `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '${name}'`

// ---------------------------------------------------------------------------------------

async function checkConnect() {
  await withConnection(async (conn) => {
    expectEq((await one(conn, 'SELECT CURRENT_USER()')).split('@')[0], USER, 'current user')
    expectEq(await one(conn, 'SELECT DATABASE()'), DB, 'default database')
    const version = await one(conn, 'SELECT VERSION()')
    expect(version.includes('MariaDB'), `a MariaDB server: ${version}`)
    const core = conn.connection
    // MariaDB's greeting prefixes its version with "5.5.5-" for old clients.
    expectEq(core._handshakePacket.serverVersion.replace(/^5\.5\.5-/, ''), version, "the greeting's version")
    expectEq(core.stream instanceof tls.TLSSocket && core.stream.encrypted === true, Boolean(SSLMODE), 'TLS in use')
    expect(Number.isInteger(core.threadId) && core.threadId > 0, `threadId ${core.threadId}`)
    await conn.beginTransaction()
    const id = await one(conn, 'SELECT CONNECTION_ID()')
    if (ONE_CONNECTION) expectEq(id, core.threadId, "the greeting's connection id is the writer's")
    await conn.rollback()
    await conn.ping()
    expectEq(conn.sent.query, 6, 'COM_QUERY sent')
  })
}

async function checkSetup() {
  await withConnection(async (conn) => {
    await conn.query('DROP TABLE IF EXISTS items, bins, docs, shapes, loaded, pooled')
    await conn.query('CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))')
    await conn.query(`CREATE TABLE bins (id INT PRIMARY KEY, i8 BIGINT, u8 BIGINT UNSIGNED, dm DECIMAL(30,10),
      t DATETIME(6), d DATE, j JSON, b LONGBLOB, s VARCHAR(50) CHARACTER SET utf8mb4, f DOUBLE, n INT)`)
    await conn.query('CREATE TABLE docs (id INT PRIMARY KEY, j JSON, u UUID)')
    await conn.query('CREATE TABLE loaded (id INT, name VARCHAR(100))')
    await conn.query('CREATE TABLE pooled (id INT PRIMARY KEY, client INT)')
  })
  await awaitReplicated(tableExists('pooled'), 1)
}

const BIG_OPTIONS = { supportBigNumbers: true, bigNumberStrings: true, timezone: 'Z' }

// A row of `bins` as it comes back with BIG_OPTIONS (from `query()` or `execute()`). The
// JSON column's value is compared as JSON here, whether mysql2 parsed it or not (see
// checkJsonColumns).
function expectBinsRow(row, data, what) {
  expect(Buffer.isBuffer(row.b) && row.b.equals(data), `${what}: the 1 MiB blob (${row.b && row.b.length} bytes)`)
  expect(row.t instanceof Date, `${what}: DATETIME(6) as a Date: ${show(row.t)}`)
  expect(row.d instanceof Date, `${what}: DATE as a Date: ${show(row.d)}`)
  const j = typeof row.j === 'string' ? JSON.parse(row.j) : row.j
  const rest = { ...row, b: undefined, t: row.t.toISOString(), d: row.d.toISOString(), j }
  expectEq(rest, {
    id: rest.id, i8: '-9223372036854775808', u8: '18446744073709551615', dm: '12345678901234567890.0123456789',
    t: '2024-02-29T12:34:56.789Z', d: '2024-02-29T00:00:00.000Z', j: DOC, b: undefined, s: TEXT, f: 1.5, n: null,
  }, `${what}: the row of many types`)
}

// query() with placeholders: mysql2 escapes the values into the text (one COM_QUERY).
async function checkQueryPlaceholdersAndTypes() {
  await withConnection(async (conn) => {
    expectEq(await one(conn, 'SELECT ? + 1', [41]), 42, 'a number')
    const tricky = 'it\'s "quoted" \\ ✓ \0 end'
    expectEq(await one(conn, 'SELECT ?', [tricky]), tricky, 'escaping')
    expectEq(await one(conn, 'SELECT ?', [TEXT]), TEXT, 'utf8mb4 text with an emoji')
    expectEq(await one(conn, 'SELECT CHAR_LENGTH(?)', [TEXT]), 15, 'characters of utf8mb4 text')
    expectEq(await one(conn, 'SELECT ?', [9223372036854775807n]), '9223372036854775807', 'a BigInt as a BIGINT string')
    expectEq(await one(conn, 'SELECT ?? FROM ?? WHERE 1 = 0 UNION ALL SELECT 5', ['id', 'items']), 5,
      'identifiers by ??')
    const [ins] = await conn.query('INSERT INTO items SET ?', { id: 1, name: 'one', price: '1.50' })
    expectEq([ins.affectedRows, ins.insertId], [1, 0], 'INSERT … SET ? of an object')
    const [multi] = await conn.query('INSERT INTO items (id, name, price) VALUES ?',
      [[[2, 'two', 2], [3, 'three', '3.25'], [4, null, null]]])
    expectEq(multi.affectedRows, 3, 'a multi-row INSERT … VALUES ? of arrays')
    const [rows, fields] = await conn.query('SELECT id, name, price FROM items WHERE id IN (?) ORDER BY id', [[1, 3, 4]])
    expectEq(fields.map((f) => f.name), ['id', 'name', 'price'], 'field names')
    expectEq(rows, [{ id: 1, name: 'one', price: '1.50' }, { id: 3, name: 'three', price: '3.25' },
      { id: 4, name: null, price: null }], 'rows (DECIMAL as strings, NULLs)')
    const data = blob()
    const when = new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789))
    const values = [1, '-9223372036854775808', '18446744073709551615', '12345678901234567890.0123456789', when,
      '2024-02-29', JSON.stringify(DOC), data, TEXT, 1.5, null]
    const [insert] = await conn.query('INSERT INTO bins VALUES (?)', [values])
    expectEq(insert.affectedRows, 1, 'the insert of many types (a 2 MiB statement)')
    const [[row]] = await conn.query('SELECT * FROM bins WHERE id = ?', [1])
    expectBinsRow(row, data, 'query()')
    const [[strings]] = await conn.query({ sql: 'SELECT t, d, i8, dm FROM bins WHERE id = 1', dateStrings: true })
    expectEq(strings, { t: '2024-02-29 12:34:56.789000', d: '2024-02-29', i8: '-9223372036854775808',
      dm: '12345678901234567890.0123456789' }, 'dates as strings')
    const [[nulls]] = await conn.query({ sql: 'SELECT NULL, ?, ?, NULL + 1', rowsAsArray: true }, [null, undefined])
    expectEq(nulls, [null, null, null, null], 'NULLs')
    expectEq(await one(conn, `SELECT '${TEXT}'`), TEXT, 'utf8mb4 in the text itself')
  }, BIG_OPTIONS)
  // Without supportBigNumbers: a BIGINT that a double holds is a number.
  await withConnection(async (conn) => {
    expectEq(await one(conn, 'SELECT CAST(? AS SIGNED)', ['9007199254740991']), 9007199254740991, 'a BIGINT as a number')
  })
}

// execute(): COM_STMT_PREPARE once per text and connection, then COM_STMT_EXECUTE only.
async function checkExecute() {
  await withConnection(async (conn) => {
    const insert = 'INSERT INTO items (id, name, price) VALUES (?, ?, ?)'
    for (let i = 100; i < 120; i++) {
      const [r] = await conn.execute(insert, [i, `item${i}`, (i * 1.5).toFixed(2)])
      expectEq(r.affectedRows, 1, `insert ${i}`)
    }
    const select = 'SELECT name, price FROM items WHERE id = ?'
    for (let i = 100; i < 120; i++) {
      const [rows] = await conn.execute(select, [i])
      expectEq(rows, [{ name: `item${i}`, price: (i * 1.5).toFixed(2) }], `read of ${i}`)
    }
    expectEq([conn.sent.prepare, conn.sent.execute, conn.sent.close], [2, 40, 0], 'prepares, executes, closes sent')
    // The types in the binary protocol: the row query() wrote, and the same values bound.
    const data = blob()
    const [[row]] = await conn.execute('SELECT * FROM bins WHERE id = ?', [1])
    expectBinsRow(row, data, 'execute()')
    const when = new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789))
    await conn.execute('INSERT INTO bins VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', [2, '-9223372036854775808',
      '18446744073709551615', '12345678901234567890.0123456789', when, '2024-02-29', JSON.stringify(DOC), data, TEXT,
      1.5, null])
    const [[bound]] = await conn.execute('SELECT * FROM bins WHERE id = ?', [2])
    expectBinsRow(bound, data, 'execute() of values bound by execute()')
    expectEq(await oneExecuted(conn, 'SELECT ?', [TEXT]), TEXT, 'utf8mb4 bound')
    expectEq(await oneExecuted(conn, 'SELECT ?', [9223372036854775807n]), '9223372036854775807', 'a BigInt bound')
    expectEq(await oneExecuted(conn, 'SELECT ?', [null]), null, 'NULL bound')
    // unprepare(): COM_STMT_CLOSE (twice, of the same id), then the next execute() prepares
    // the text again.
    const sent = { ...conn.sent }
    expect(conn.unprepare(select), 'unprepare() found the statement')
    for (let i = 100; i < 103; i++) {
      expectEq((await conn.execute(select, [i]))[0], [{ name: `item${i}`, price: (i * 1.5).toFixed(2) }],
        `read of ${i} after unprepare()`)
    }
    expectEq([conn.sent.prepare - sent.prepare, conn.sent.execute - sent.execute, conn.sent.close - sent.close],
      [1, 3, 2], 'prepares, executes, closes sent around unprepare()')
    // prepare(): a statement of the application's own (not cached), executed, closed.
    const stmt = await conn.prepare('SELECT ? * 2 AS n')
    for (let i = 0; i < 5; i++) expectEq((await stmt.execute([i]))[0], [{ n: i * 2 }], `prepare()d statement ${i}`)
    await stmt.close()
    const stmt2 = await conn.prepare('SELECT ? * 2 AS n')
    expectEq((await stmt2.execute([21]))[0], [{ n: 42 }], 'the same text prepare()d again')
    await stmt2.close()
    // A text the server refuses to prepare: not cached, so prepared again (and refused).
    const refused = conn.sent.prepare
    for (let i = 0; i < 2; i++) {
      await expectError(conn.execute('SELEC ?', [1]), ER_PARSE_ERROR, `a syntax error (${i})`)
    }
    expectEq(conn.sent.prepare - refused, 2, 'prepares of a text the server refuses')
    // An execution that fails: the statement stays prepared.
    const before = conn.sent.prepare
    await expectError(conn.execute(insert, [100, 'dup', 1]), ER_DUP_ENTRY, 'a duplicate key')
    const [again] = await conn.execute(insert, [120, 'item120', 1])
    expectEq(again.affectedRows, 1, 'the statement after its error')
    expectEq(conn.sent.prepare, before, 'no prepare after the failed execution')
    expectEq(await one(conn, 'SELECT 4'), 4, 'the connection after them')
  }, BIG_OPTIONS)
}

// More distinct statements than the connection's cache holds: its LRU closes the least
// recently used (COM_STMT_CLOSE) and prepares them again when they come back.
async function checkPreparedCacheEviction() {
  await withConnection(async (conn) => {
    const texts = Array.from({ length: 30 }, (_, k) => `SELECT ? + ${k} AS n`)
    for (let round = 0; round < 4; round++) {
      for (let k = 0; k < texts.length; k++) {
        expectEq((await conn.execute(texts[k], [round]))[0], [{ n: round + k }], `statement ${k} round ${round}`)
      }
    }
    // Round-robin over 30 with room for 8: every execute() prepares, every prepare past the
    // 8th closes one.
    expectEq([conn.sent.prepare, conn.sent.execute, conn.sent.close], [120, 120, 112],
      'prepares, executes, closes of 30 statements in a cache of 8')
    const sent = { ...conn.sent }
    for (let round = 0; round < 10; round++) {
      for (let k = 0; k < 8; k++) {
        expectEq(await oneExecuted(conn, texts[k], [round]), round + k, `statement ${k} of 8, round ${round}`)
      }
    }
    expectEq([conn.sent.prepare - sent.prepare, conn.sent.close - sent.close], [8, 8],
      '8 statements kept in a cache of 8 once prepared')
    // Interleaved with transactions and with query().
    await conn.beginTransaction()
    for (let k = 0; k < 12; k++) expectEq(await oneExecuted(conn, texts[k], [1]), 1 + k, `in a transaction ${k}`)
    await conn.commit()
    expectEq(await one(conn, 'SELECT 5'), 5, 'the connection after them')
  }, { maxPreparedStatements: 8 })
}

// Many connections at once, with the same texts (some the same for all, some each
// connection's own): each prepares a text once and then only executes it, on whatever
// server connection runs it.
async function checkManyClientsExecute() {
  await awaitReplicated('SELECT COUNT(*) FROM items WHERE id >= 100 AND id < 121', 21)
  const byId = 'SELECT name FROM items WHERE id = ?'
  await withConnections(16, async (...all) => {
    await Promise.all(all.map(async (conn, k) => {
      const product = `SELECT ? * ${k} AS n`
      for (let i = 0; i < 40; i++) {
        const inTx = i % 10 === 9
        if (inTx) await conn.beginTransaction()
        expectEq(await oneExecuted(conn, byId, [100 + (i % 20)]), `item${100 + (i % 20)}`, `connection ${k} read ${i}`)
        expectEq(await oneExecuted(conn, product, [i]), i * k, `connection ${k} product ${i}`)
        expectEq(await oneExecuted(conn, 'SELECT ? + ?', [i, k]), i + k, `connection ${k} sum ${i}`)
        if (inTx) await conn.commit()
        if (i === 20) {
          // Closed and prepared again, halfway (the cache's key is the text and the options
          // that shape the rows).
          expect(conn.unprepare({ sql: byId, rowsAsArray: true }), `connection ${k}: unprepare() found the statement`)
        }
      }
      expectEq([conn.sent.prepare, conn.sent.execute, conn.sent.close], [4, 120, 2],
        `connection ${k}: prepares, executes, closes sent`)
    }))
  })
  // A pool of 16: its connections live on and keep their statements.
  const pool = createPool(16)
  try {
    const results = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      pool.execute({ sql: byId, rowsAsArray: true }, [100 + (i % 20)])))
    expectEq(results.map(([rows]) => rows[0][0]), Array.from({ length: 400 }, (_, i) => `item${100 + (i % 20)}`),
      'pooled reads by execute()')
    expect(pool.sent.length >= 1 && pool.sent.length <= 16, `pool connections ${pool.sent.length}`)
    expect(pool.sent.every((s) => s.prepare === 1), `each pool connection prepared once: ${show(pool.sent)}`)
    // Transactions on connections taken from the pool, 32 at once on 16.
    await Promise.all(Array.from({ length: 32 }, async (_, i) => {
      const conn = await pool.getConnection()
      try {
        await conn.beginTransaction()
        await conn.execute('INSERT INTO pooled VALUES (?, ?)', [i, i % 16])
        expectEq(await oneExecuted(conn, 'SELECT COUNT(*) FROM pooled WHERE id = ?', [i]), 1, 'read in the transaction')
        if (i % 4 === 3) await conn.rollback()
        else await conn.commit()
      } finally {
        conn.release()
      }
    }))
    expect(pool.sent.length <= 16, `pool connections ${pool.sent.length}`)
  } finally {
    await pool.end()
  }
  await awaitReplicated('SELECT COUNT(*) FROM pooled', 24)
}

// MariaDB's JSON is a LONGTEXT with a check; mysql2 tells a JSON column by its extended
// type info (format 'json' in the column definition), which it asks for when the greeting
// offers MARIADB_CLIENT_EXTENDED_METADATA (MariaDB's extended capability 0x8), and parses
// its values (query() and execute() alike); UUID and INET6 columns are told the same way.
async function checkJsonColumns() {
  await withConnection(async (conn) => {
    const core = conn.connection
    const offered = core._handshakePacket.mariadbExtendedCapabilityFlags
    const uuid = '123e4567-e89b-12d3-a456-426614174000'
    await conn.query('INSERT INTO docs VALUES (?, ?, ?)', [1, JSON.stringify(DOC), uuid])
    const [[q], qFields] = await conn.query('SELECT j, u FROM docs WHERE id = 1')
    const [[e], eFields] = await conn.execute('SELECT j, u FROM docs WHERE id = ?', [1])
    expectEq([q.u, e.u], [uuid, uuid], 'a UUID column')
    const seen = {
      extendedMetadata: (offered & MARIADB_CLIENT_EXTENDED_METADATA) !== 0,
      formats: [...qFields, ...eFields].map((f) => f.extendedFormat || f.extendedTypeName || null),
      byQuery: q.j,
      byExecute: e.j,
    }
    expectEq(seen, { extendedMetadata: true, formats: ['json', 'uuid', 'json', 'uuid'], byQuery: DOC, byExecute: DOC },
      'JSON columns parsed, as the column definitions\' extended type info tells ' +
      `(the greeting's MariaDB extended capabilities: 0x${(offered >>> 0).toString(16)})`)
  })
}

// DDL between executions of a cached `SELECT *`: MariaDB prepares the statement again by
// itself and answers with the new columns; the same through the proxy, where the statement
// may run on server connections it was prepared on before the DDL or never.
async function checkDdlBetweenExecutes() {
  await withConnections(2, async (conn, ddl) => {
    await ddl.query('DROP TABLE IF EXISTS shapes')
    await ddl.query('CREATE TABLE shapes (id INT PRIMARY KEY, a INT)')
    await ddl.query('INSERT INTO shapes VALUES (1, 10)')
    // On the writer, where the DDL is at once (a replica applies it a moment later).
    const sql = 'SELECT /* switchyard:writer */ * FROM shapes WHERE id = ?'
    const outcome = async () => {
      try {
        const [rows, fields] = await conn.execute(sql, [1])
        return `${fields.map((f) => f.name).join(',')}: ${rows.map((row) => show(row)).join(' ')}`
      } catch (err) {
        return `${err.errno} ${err.message}`
      }
    }
    // Runs `n` executions, then `n` more with 3 other connections in transactions on the
    // writer (through a transaction-mode pool, they hold the server connections the
    // statement ran on, so it runs on one it may never have been prepared on), then `n`
    // more.
    const executions = async (n) => {
      const got = []
      for (let i = 0; i < n; i++) got.push(await outcome())
      await withConnections(3, async (...holders) => {
        for (const holder of holders) {
          await holder.beginTransaction()
          await holder.query('SELECT /* switchyard:writer */ 1')
        }
        for (let i = 0; i < n; i++) got.push(await outcome())
        for (const holder of holders) await holder.rollback()
      })
      for (let i = 0; i < n; i++) got.push(await outcome())
      return got
    }
    expectEq(await executions(2), Array(6).fill('id,a: { id: 1, a: 10 }'), 'before the DDL')
    await ddl.query("ALTER TABLE shapes ADD COLUMN b VARCHAR(10) DEFAULT 'new'")
    expectEq(await executions(2), Array(6).fill("id,a,b: { id: 1, a: 10, b: 'new' }"), 'after ADD COLUMN')
    await ddl.query('ALTER TABLE shapes DROP COLUMN a')
    expectEq(await executions(2), Array(6).fill("id,b: { id: 1, b: 'new' }"), 'after DROP COLUMN')
    await conn.beginTransaction()
    expectEq(await outcome(), "id,b: { id: 1, b: 'new' }", 'in a transaction')
    await conn.commit()
    await ddl.query('DROP TABLE shapes')
    const missing = `${ER_NO_SUCH_TABLE} Table '${DB}.shapes' doesn't exist`
    expectEq(await executions(1), Array(3).fill(missing), 'after DROP TABLE')
    await ddl.query('CREATE TABLE shapes (id INT PRIMARY KEY, c DATE)')
    await ddl.query("INSERT INTO shapes VALUES (1, '2026-12-05')")
    const [[row]] = await conn.execute({ sql, dateStrings: true }, [1])
    expectEq(row, { id: 1, c: '2026-12-05' }, 'the table created again')
    expectEq([conn.sent.prepare, conn.sent.close], [1, 0], 'the statement prepared once by the client')
  })
}

async function checkTransactions() {
  await withConnection(async (conn) => {
    const ids = async () => (await conn.query({
      sql: 'SELECT id FROM items WHERE id >= 200 AND id < 300 ORDER BY id', rowsAsArray: true,
    }))[0].flat()
    await transactionsAndDuplicates(conn, { ids, one, expectError })
    // A read-only transaction refuses a write.
    await conn.query('START TRANSACTION READ ONLY')
    expectEq(await oneExecuted(conn, 'SELECT name FROM items WHERE id = ?', [200]), 'committed', 'a read-only read')
    await expectError(conn.query("INSERT INTO items (id, name) VALUES (260, 'no')"), 1792,
      'a write in a read-only transaction')
    await conn.rollback()
    expectEq(await one(conn, 'SELECT 7'), 7, 'the connection after the transactions')
  })
}

async function checkErrors() {
  await withConnection(async (conn) => {
    const missing = await expectError(conn.query('SELECT * FROM no_such_table'), ER_NO_SUCH_TABLE, 'a missing table')
    expectEq([missing.code, missing.sqlState, missing.sqlMessage],
      ['ER_NO_SUCH_TABLE', '42S02', `Table '${DB}.no_such_table' doesn't exist`], 'fields of the error')
    await expectError(conn.execute('SELECT * FROM no_such_table WHERE id = ?', [1]), ER_NO_SUCH_TABLE,
      'a missing table (execute)')
    await expectError(conn.query('SELEC 1'), ER_PARSE_ERROR, 'a syntax error')
    const signal = await expectError(conn.query("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom', MYSQL_ERRNO = 3999"),
      3999, 'a signal')
    expectEq([signal.sqlState, signal.sqlMessage], ['45000', 'custom'], 'fields of the signal')
    const [r] = await conn.query("INSERT INTO items (id, name) VALUES (500, 'a'), (501, 'b') " +
      'ON DUPLICATE KEY UPDATE name = VALUES(name)')
    expectEq([r.affectedRows, r.warningStatus], [2, 0], 'an INSERT … ON DUPLICATE KEY UPDATE')
    const [w] = await conn.query("INSERT IGNORE INTO items (id, name) VALUES (500, 'ignored')")
    expectEq([w.affectedRows, w.warningStatus], [0, 1], 'a warning counted')
    const [[warning]] = await conn.query('SHOW WARNINGS')
    expectEq(warning.Code, ER_DUP_ENTRY, 'SHOW WARNINGS')
    expectEq(await oneExecuted(conn, 'SELECT ?', [2]), 2, 'the connection after the errors')
  })
}

// multipleStatements: several statements in one COM_QUERY, several results.
async function checkMultipleStatements() {
  await withConnection(async (conn) => {
    const [results] = await conn.query('SELECT 1 AS one; SELECT 2 AS two, 3 AS three')
    expectEq(results, [[{ one: 1 }], [{ two: 2, three: 3 }]], 'two result sets')
    const [mixed] = await conn.query("INSERT INTO items (id, name) VALUES (400, 'multi'); " +
      "UPDATE items SET name = 'multi!' WHERE id = 400; SELECT name FROM items WHERE id = ?; SET @m = 1", [400])
    expectEq(mixed.map((r) => (Array.isArray(r) ? r : r.affectedRows)), [1, 1, [{ name: 'multi!' }], 0],
      'an insert, an update, a read of them and a SET')
    expectEq(await one(conn, 'SELECT @m'), 1, 'the variable the SET of a multi-statement query set')
    const [tx] = await conn.query("START TRANSACTION; INSERT INTO items (id, name) VALUES (401, 'tx'); " +
      'SELECT @@in_transaction AS t; COMMIT; SELECT @@in_transaction AS t')
    expectEq([tx[2], tx[4]], [[{ t: 1 }], [{ t: 0 }]], 'a transaction in one query')
    // An error ends the query there: what came before stays (autocommit).
    await expectError(conn.query("INSERT INTO items (id, name) VALUES (402, 'a'); SELECT * FROM no_such_table; " +
      "INSERT INTO items (id, name) VALUES (403, 'b')"), ER_NO_SUCH_TABLE, 'an error in the middle')
    expectEq((await conn.query({ sql: 'SELECT id FROM items WHERE id BETWEEN 400 AND 403 ORDER BY id', rowsAsArray: true }))[0],
      [[400], [401], [402]], 'rows of the statements before the error')
    // A procedure's result sets, then its status.
    await conn.query('DROP PROCEDURE IF EXISTS two_results')
    await conn.query('CREATE PROCEDURE two_results(IN x INT) BEGIN SELECT x AS a; SELECT x * 2 AS b, NULL AS c; END')
    const [call] = await conn.query('CALL two_results(?)', [21])
    expectEq(call.slice(0, 2), [[{ a: 21 }], [{ b: 42, c: null }]], 'a procedure\'s result sets')
    expectEq(call.length, 3, 'its results and its status')
    const [called] = await conn.execute('CALL two_results(?)', [5])
    expectEq(called.slice(0, 2), [[{ a: 5 }], [{ b: 10, c: null }]], 'a procedure\'s result sets (execute)')
    expectEq(await one(conn, 'SELECT 8'), 8, 'the connection after them')
  }, { multipleStatements: true })
}

// A 20,000-row result read as it comes: query().stream() and the row events, with the
// connection paused now and then (the socket stops being read; TCP holds the rest back).
async function checkStreaming() {
  await withConnection(async (conn) => {
    const core = conn.connection
    const sql = 'SELECT seq, REPEAT(MD5(seq), 32) AS s FROM seq_1_to_20000'
    let n = 0
    let sum = 0
    let chars = 0
    for await (const row of core.query(sql).stream({ highWaterMark: 100 })) {
      n++
      sum += row.seq
      chars += row.s.length
      if (n % 5000 === 0) await delay(50)
    }
    expectEq([n, sum, chars], [20000, 200010000, 20000 * 1024], 'rows, their sum and characters streamed')
    const events = await new Promise((resolve, reject) => {
      let rows = 0
      let seqs = 0
      let fields = null
      core.query('SELECT seq FROM seq_1_to_20000')
        .on('error', reject)
        .on('fields', (f) => { fields = f.map((x) => x.name) })
        .on('result', (row) => {
          rows++
          seqs += row.seq
          if (rows % 1000 === 0) {
            core.pause()
            setTimeout(() => core.resume(), 5)
          }
        })
        .on('end', () => resolve({ rows, seqs, fields }))
    })
    expectEq(events, { rows: 20000, seqs: 200010000, fields: ['seq'] }, 'rows by events, the connection paused')
    const [all] = await conn.query(sql)
    expectEq(all.length, 20000, 'rows of a ~20 MB result read whole')
    expectEq(all[19999].s.length, 1024, 'the last row')
    expectEq(await one(conn, 'SELECT 6'), 6, 'the connection after the streamed results')
  })
}

// COM_CHANGE_USER to the same user and database (what mysql2 pools' changeUser and some
// ORMs do to reset a connection), and COM_RESET_CONNECTION (connection.reset()): the
// session's state is gone, the connection goes on; mysql2 forgets its statements, and
// closes each after the command (ids the server forgot already).
async function checkChangeUserAndReset() {
  await awaitReplicated('SELECT COUNT(*) FROM items WHERE id IN (200, 202)', 2)
  await withConnection(async (conn) => {
    const select = 'SELECT name FROM items WHERE id = ?'
    const readOnly = THROUGH_PROXY ? 1 : 0
    await conn.query('SET @marker = 42')
    expectEq(await one(conn, 'SELECT @marker'), 42, 'the variable before')
    expectEq(await oneExecuted(conn, select, [200]), 'committed', 'a statement before')
    expectEq(await oneExecuted(conn, 'SELECT ? + 1', [1]), 2, 'another statement before')
    await conn.changeUser({ user: USER, password: PASSWORD, database: DB })
    expectEq(await one(conn, 'SELECT @marker'), null, 'the variable after changeUser()')
    expectEq((await one(conn, 'SELECT CURRENT_USER()')).split('@')[0], USER, 'the user after changeUser()')
    expectEq(await one(conn, 'SELECT DATABASE()'), DB, 'the database after changeUser()')
    expectEq(await oneExecuted(conn, select, [200]), 'committed', 'the statement after changeUser()')
    expectEq([conn.sent.changeUser, conn.sent.prepare, conn.sent.close], [1, 3, 2],
      'COM_CHANGE_USER, prepares and closes sent')
    expectEq(await one(conn, 'SELECT @@read_only'), readOnly, 'a read after changeUser() on a replica')
    await conn.query('SET @marker = 43')
    await conn.reset()
    expectEq(await one(conn, 'SELECT @marker'), null, 'the variable after reset()')
    expectEq(await oneExecuted(conn, select, [202]), 'outer', 'the statement after reset()')
    expectEq([conn.sent.reset, conn.sent.prepare, conn.sent.close], [1, 4, 3], 'COM_RESET_CONNECTION, prepares, closes')
    expectEq(await one(conn, 'SELECT @@read_only'), readOnly, 'a read after reset() on a replica')
    // Last, as its COMMIT starts the session's read-your-writes window (its reads on the
    // writer for a while, through the proxy).
    await conn.beginTransaction()
    expectEq(await oneExecuted(conn, select, [200]), 'committed', 'the statement in a transaction')
    expectEq(await one(conn, 'SELECT @@read_only'), 0, 'a transaction on the primary')
    await conn.commit()
  })
}

async function checkKillQuery() {
  await killQuery({ withConnections, one, slept: ([rows]) => rows[0].slept })
}

// LOAD DATA LOCAL INFILE: the server asks for the file, mysql2 sends what
// infileStreamFactory gives (mysql2 3.x), then an empty packet.
async function checkLoadDataLocal() {
  await withConnection(async (conn) => {
    const lines = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i} é\n`).join('')
    const asked = []
    const [r] = await conn.query({
      sql: "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE loaded CHARACTER SET utf8mb4",
      infileStreamFactory: (path) => {
        asked.push(path)
        return Readable.from([Buffer.from(lines.slice(0, 40_000)), Buffer.from(lines.slice(40_000))])
      },
    })
    expectEq(asked, ['rows.tsv'], 'the file the server asked for')
    expectEq(r.affectedRows, 5000, 'rows loaded')
    expectEq(await one(conn, 'SELECT COUNT(*) FROM loaded'), 5000, 'rows in the table')
    expectEq(await oneExecuted(conn, 'SELECT name FROM loaded WHERE id = ?', [4999]), 'row 4999 é', 'the last row')
    // A stream that fails: the server is sent an empty file, the query fails with its error.
    const err = await conn.query({
      sql: "LOAD DATA LOCAL INFILE 'fails.tsv' INTO TABLE loaded",
      infileStreamFactory: () => new Readable({ read() { this.destroy(new Error('no such file here')) } }),
    }).then(() => null, (e) => e)
    expect(err && /no such file here/.test(err.message), `a failing stream's error: ${err && err.message}`)
    expectEq(await one(conn, 'SELECT COUNT(*) FROM loaded'), 5000, 'nothing more loaded')
    expectEq(await one(conn, 'SELECT 9'), 9, 'the connection after them')
  })
}

async function checkRouting() {
  await withConnection(async (conn) => {
    expectEq(await one(conn, 'SELECT @@read_only'), THROUGH_PROXY ? 1 : 0, "a fresh connection's read on a replica")
    expectEq(await oneExecuted(conn, 'SELECT @@read_only'), THROUGH_PROXY ? 1 : 0, 'so does execute()')
    await conn.beginTransaction()
    expectEq(await one(conn, 'SELECT @@read_only'), 0, 'a transaction on the primary')
    expectEq(await oneExecuted(conn, 'SELECT @@read_only'), 0, 'execute() in a transaction on the primary')
    await conn.commit()
    await conn.query('INSERT INTO items (id, name) VALUES (?, ?)', [6000, 'routed'])
    expectEq(await one(conn, 'SELECT name FROM items WHERE id = ?', [6000]), 'routed', 'read your write')
    expectEq(await oneExecuted(conn, 'SELECT name FROM items WHERE id = ?', [6000]), 'routed',
      'read your write by execute()')
    await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [6001, 'executed'])
    expectEq(await oneExecuted(conn, 'SELECT name FROM items WHERE id = ?', [6001]), 'executed',
      'read your write by execute() of a write by execute()')
  })
  await withConnection(async (conn) => {
    expectEq(await one(conn, '/* switchyard:writer */ SELECT @@read_only'), 0, 'the writer hint')
    expectEq(await one(conn, 'SELECT @@read_only'), THROUGH_PROXY ? 1 : 0, 'a read after the hint on a replica')
  })
}

const CHECKS = [
  ['connect', checkConnect],
  ['setup', checkSetup],
  ['query_placeholders_and_types', checkQueryPlaceholdersAndTypes],
  ['execute', checkExecute],
  ['prepared_cache_eviction', checkPreparedCacheEviction],
  ['many_clients_execute', checkManyClientsExecute],
  ['json_columns', checkJsonColumns],
  ['ddl_between_executes', checkDdlBetweenExecutes],
  ['transactions', checkTransactions],
  ['errors', checkErrors],
  ['multiple_statements', checkMultipleStatements],
  ['streaming', checkStreaming],
  ['change_user_and_reset', checkChangeUserAndReset],
  ['kill_query', checkKillQuery],
  ['load_data_local', checkLoadDataLocal],
  ['routing', checkRouting],
]

const describeError = describeWith(['errno', 'code', 'sqlState', 'fatal'])

main(`mysql2 ${MYSQL2_VERSION} (node ${process.version})`, CHECKS, { knownFailures: KNOWN_FAILURES, describeError })
