// MariaDB's own Node.js connector (`mariadb` 3.x, MariaDB Corporation's) through switchyard.
// Run by tests/it/drivers.rs with `node`, from tests/it/drivers/, where
// scripts/install-deps.sh installs `mariadb` into node_modules. It reads the same environment
// as common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE, SY_TARGET,
// SY_POOL_MODE) and reports the same way: one line per check, exit status 1 when any failed.
//
// What this connector does that mysql2 does not, and that a proxy must bear:
// - It PIPELINES by default (`pipelining: true`): each command is written as soon as it is
//   issued, before the answers to the ones before it came; the answers must come back in
//   order, an error failing only its own command.
// - `execute()` of a text not in the connection's cache (`prepareCacheLength`, an LRU keyed
//   by the database and the text) writes COM_STMT_PREPARE and, right behind it, a
//   COM_STMT_EXECUTE of statement id 0xFFFFFFFF: MariaDB's "the statement this connection
//   prepared last" (10.2.4+). Once the PREPARE's answer is cached, only COM_STMT_EXECUTE with
//   its id; a statement evicted from the cache is closed (COM_STMT_CLOSE) once unused.
// - `batch()` prepares, then sends COM_STMT_BULK_EXECUTE (all the rows in one command) when
//   the greeting offers MariaDB's STMT_BULK_OPERATIONS capability, or else one
//   COM_STMT_EXECUTE per row, pipelined. The proxy offers it as its writer does.
// - It asks for MariaDB's extended metadata (MARIADB_CLIENT_EXTENDED_METADATA): a JSON column
//   is told by its format and its values parsed into objects (`autoJsonMap`).
// - A pool with `resetAfterUse` sends COM_RESET_CONNECTION when a connection is released.
//
// The checks pipeline, as the connector does by default, except where they say
// `pipelining: false`.
//
// The commands each connection writes are counted by reading the bytes it writes (the
// first bytes of every packet of sequence 0): see `commandCounter`.
//
// SY_TRACE set: the connector's `debug` (every packet each connection sends and receives) on
// stdout.

'use strict'

const path = require('path')
const tls = require('tls')
const util = require('util')
const { Readable } = require('stream')
const { pathToFileURL } = require('url')

const { HOST, PORT, USER, PASSWORD, DB, SSLMODE, TARGET, THROUGH_PROXY, POOL_MODE, ONE_CONNECTION,
  TRACE, CHECK_TIMEOUT_MS, CheckFailed, expect, show, expectEq, delay, strayErrors, describeWith,
  mysqlConfig, withOpened, main } = require('./node_common')
const { transactionsAndDuplicates, killQuery, ER_DUP_ENTRY, ER_PARSE_ERROR, ER_NO_SUCH_TABLE,
  ER_UNKNOWN_STMT_HANDLER, ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, blob, DOC, TEXT } = require('./node_mysql_common')

// MariaDB's extended capabilities, as the connector numbers them (bits 32 and up).
const MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1n << 34n
const MARIADB_CLIENT_EXTENDED_METADATA = 1n << 35n

// check name -> why it fails through the proxy (a defect reported, not fixed yet); see
// common.py.
const KNOWN_FAILURES = {}

// The connector, loaded (as ES modules, its own source rather than its minified CommonJS
// bundle) by `loadDriver`.
let mariadb
let MARIADB_VERSION = '?'

// A BigInt (BIGINT columns, CONNECTION_ID(), integer arithmetic) as a number, for values
// whose type is not the point.
const num = (v) => (typeof v === 'bigint' ? Number(v) : v)

// Pipelining is the connector's default: a pipelined execute() of a new text sends
// EXECUTE of the last prepared statement (see execute_last_prepared).
const config = (extra) => mysqlConfig({ pipelining: true, ...extra })

// The commands a connection writes, by the first byte of each packet of sequence 0 (what
// starts a command); LOAD DATA's file and continuation packets are of later sequences.
const COMMANDS = {
  0x01: 'quit', 0x03: 'query', 0x0e: 'ping', 0x11: 'changeUser', 0x16: 'prepare', 0x17: 'execute',
  0x18: 'longData', 0x19: 'close', 0x1f: 'reset', 0xfa: 'bulk',
}

function newSent() {
  const sent = { other: 0, executeLastPrepared: 0 }
  for (const name of Object.values(COMMANDS)) sent[name] = 0
  return sent
}

// A function reading the bytes a connection writes, counting into `sent`: the commands, and
// COM_STMT_EXECUTEs of statement id 0xFFFFFFFF (the last prepared) in `executeLastPrepared`.
function commandCounter(sent) {
  const header = []
  let left = 0
  let head = null
  const counted = () => {
    sent[COMMANDS[head[0]] || 'other']++
    if (head[0] === 0x17 && head.length === 5 && head.slice(1).every((b) => b === 0xff)) sent.executeLastPrepared++
    head = null
  }
  return (buf) => {
    for (let i = 0; i < buf.length;) {
      if (left === 0) {
        header.push(buf[i++])
        if (header.length === 4) {
          left = header[0] | (header[1] << 8) | (header[2] << 16)
          head = header[3] === 0 && left > 0 ? [] : null
          header.length = 0
        }
        continue
      }
      const take = Math.min(left, buf.length - i)
      if (head) for (let k = 0; k < take && head.length < 5; k++) head.push(buf[i + k])
      left -= take
      i += take
      if (head && (head.length === 5 || left === 0)) counted()
    }
  }
}

// Loads the connector (ES modules), its packet writer patched to count what every
// connection writes into `conn.info.sent`.
async function loadDriver() {
  const dir = path.resolve(path.dirname(require.resolve('mariadb')), '..')
  const module = (file) => import(pathToFileURL(path.join(dir, file)).href)
  const { default: PacketOutputStream } = await module('lib/io/packet-output-stream.js')
  const setStream = PacketOutputStream.prototype.setStream
  PacketOutputStream.prototype.setStream = function (stream) {
    const info = this.info
    if (!info.sent) {
      info.sent = newSent()
      info.countSent = commandCounter(info.sent)
    }
    const write = stream.writeBuf
    if (typeof write === 'function') {
      stream.writeBuf = (buf, cmd) => {
        info.countSent(buf)
        return write(buf, cmd)
      }
    }
    return setStream.call(this, stream)
  }
  mariadb = await module('promise.js')
  MARIADB_VERSION = mariadb.version
}

async function connect(extra) {
  const conn = await mariadb.createConnection(config(extra))
  conn.on('error', (err) => strayErrors.push(err))
  return conn
}

// What connection `conn` wrote, counted (see `commandCounter`).
const sentBy = (conn) => conn.info.sent

const withConnections = (n, fn, extra) => withOpened(connect, n, fn, extra)

const withConnection = (fn, extra) => withConnections(1, fn, extra)

// A pool of `limit` connections; `pool.infos` holds each connection's information (and its
// commands counted, in `.sent`).
function createPool(limit, extra) {
  const pool = mariadb.createPool({ ...config(extra), connectionLimit: limit })
  pool.infos = []
  pool.on('connection', (conn) => {
    pool.infos.push(conn.info)
    conn.on('error', (err) => strayErrors.push(err))
  })
  return pool
}

// The first column of the first row of `query()` (the text protocol).
async function one(conn, sql, values) {
  const rows = await conn.query({ sql, rowsAsArray: true }, values)
  expect(Array.isArray(rows) && rows.length > 0, `a row from ${sql}: ${show(rows)}`)
  return rows[0][0]
}

// The first column of the first row of `execute()` (a prepared statement).
async function oneExecuted(conn, sql, values) {
  const rows = await conn.execute({ sql, rowsAsArray: true }, values)
  expect(Array.isArray(rows) && rows.length > 0, `a row from ${sql}: ${show(rows)}`)
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
  throw new CheckFailed(`${what}: succeeded (${show(result)}), want error ${errno}`)
}

// Waits until a new connection's read (on a replica, through the proxy) gives `want`: what
// another session wrote reaches the replicas a moment later.
async function awaitReplicated(sql, want) {
  const deadline = Date.now() + 30_000
  await withConnection(async (conn) => {
    let got = num(await one(conn, sql))
    while (!util.isDeepStrictEqual(got, want)) {
      expect(Date.now() < deadline, `${sql} still gives ${show(got)}, want ${show(want)}`)
      await delay(20)
      got = num(await one(conn, sql))
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
    // MariaDB's greeting prefixes its version with "5.5.5-" for old clients.
    expectEq(conn.serverVersion().replace(/^5\.5\.5-/, ''), version, "the greeting's version")
    const socket = conn.__tests.getSocket()
    expectEq(socket instanceof tls.TLSSocket && socket.encrypted === true, Boolean(SSLMODE), 'TLS in use')
    expect(Number.isInteger(conn.threadId) && conn.threadId > 0, `threadId ${conn.threadId}`)
    await conn.beginTransaction()
    const id = num(await one(conn, 'SELECT CONNECTION_ID()'))
    if (ONE_CONNECTION) expectEq(id, conn.threadId, "the greeting's connection id is the writer's")
    await conn.rollback()
    await conn.ping()
    const offered = conn.info.serverCapabilities
    expectEq({
      extendedMetadata: (offered & MARIADB_CLIENT_EXTENDED_METADATA) !== 0n,
      bulk: (offered & MARIADB_CLIENT_STMT_BULK_OPERATIONS) !== 0n,
    }, { extendedMetadata: true, bulk: true },
    `MariaDB's capabilities in the greeting (0x${offered.toString(16)}): extended metadata and bulk operations`)
    expectEq([sentBy(conn).ping, sentBy(conn).other], [1, 0], 'COM_PING sent, and nothing unknown')
  })
}

async function checkSetup() {
  await withConnection(async (conn) => {
    await conn.query('DROP TABLE IF EXISTS items, bins, docs, loaded, batched, pooled')
    await conn.query('CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))')
    await conn.query(`CREATE TABLE bins (id INT PRIMARY KEY, i8 BIGINT, u8 BIGINT UNSIGNED, dm DECIMAL(30,10),
      t DATETIME(6), d DATE, j JSON, b LONGBLOB, s VARCHAR(50) CHARACTER SET utf8mb4, f DOUBLE, n INT)`)
    await conn.query('CREATE TABLE docs (id INT PRIMARY KEY, j JSON, u UUID)')
    await conn.query('CREATE TABLE loaded (id INT, name VARCHAR(100))')
    await conn.query(`CREATE TABLE batched (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4,
      amount DECIMAL(10,2), at DATETIME(3), data VARBINARY(64))`)
    await conn.query('CREATE TABLE pooled (id INT PRIMARY KEY, client INT)')
  })
  await awaitReplicated(tableExists('pooled'), 1)
}

// 2024-02-29 12:34:56.789, in the connection's time zone (the connector's default: the
// process's own).
const WHEN = new Date(2024, 1, 29, 12, 34, 56, 789)

// A row of `bins` as it comes back by default, from `query()` or `execute()`: BIGINT as
// BigInt, DECIMAL as a string, dates as Dates, the JSON parsed.
function expectBinsRow(row, data, what) {
  expect(Buffer.isBuffer(row.b) && row.b.equals(data), `${what}: the 1 MiB blob (${row.b && row.b.length} bytes)`)
  expect(row.t instanceof Date && row.d instanceof Date, `${what}: DATETIME(6) and DATE as Dates: ${show([row.t, row.d])}`)
  const rest = { ...row, b: undefined, t: row.t.getTime(), d: row.d.getTime() }
  expectEq(rest, {
    id: rest.id, i8: -9223372036854775808n, u8: 18446744073709551615n, dm: '12345678901234567890.0123456789',
    t: WHEN.getTime(), d: new Date(2024, 1, 29).getTime(), j: DOC, b: undefined, s: TEXT, f: 1.5, n: null,
  }, `${what}: the row of many types`)
}

// query() with placeholders (the connector escapes the values into the text: one COM_QUERY),
// and named placeholders; the types as they come back.
async function checkQueryPlaceholdersAndTypes() {
  await withConnection(async (conn) => {
    expectEq(await one(conn, 'SELECT ? + 1', [41]), 42, 'integer arithmetic')
    expectEq(await one(conn, 'SELECT CAST(? AS SIGNED)', ['9223372036854775807']), 9223372036854775807n,
      'a BIGINT as a BigInt')
    const tricky = 'it\'s "quoted" \\ ✓ \0 end'
    expectEq(await one(conn, 'SELECT ?', [tricky]), tricky, 'escaping')
    expectEq(await one(conn, 'SELECT ?', [TEXT]), TEXT, 'utf8mb4 text with an emoji')
    expectEq(await one(conn, 'SELECT CHAR_LENGTH(?)', [TEXT]), 15, 'characters of utf8mb4 text')
    expectEq(await one(conn, 'SELECT ?', [9223372036854775807n]), 9223372036854775807n, 'a BigInt as a BIGINT')
    expectEq(await one(conn, `SELECT '${TEXT}'`), TEXT, 'utf8mb4 in the text itself')
    const ins = await conn.query('INSERT INTO items (id, name, price) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)',
      [1, 'one', '1.50', 2, 'two', 2, 3, null, null])
    expectEq([ins.affectedRows, ins.insertId, ins.warningStatus], [3, 0n, 0], 'a multi-row INSERT')
    const rows = await conn.query('SELECT id, name, price FROM items WHERE id IN (?, ?) ORDER BY id', [1, 3])
    expectEq(rows.meta.map((c) => c.name()), ['id', 'name', 'price'], 'column names')
    expectEq([...rows], [{ id: 1, name: 'one', price: '1.50' }, { id: 3, name: null, price: null }],
      'rows (DECIMAL as strings, NULLs)')
    const data = blob()
    const values = [1, -9223372036854775808n, 18446744073709551615n, '12345678901234567890.0123456789', WHEN,
      '2024-02-29', DOC, data, TEXT, 1.5, null]
    const insert = await conn.query('INSERT INTO bins VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', values)
    expectEq(insert.affectedRows, 1, 'the insert of many types (a 2 MiB statement)')
    const [row] = await conn.query('SELECT * FROM bins WHERE id = ?', [1])
    expectBinsRow(row, data, 'query()')
    const [strings] = await conn.query({ sql: 'SELECT t, d, i8, dm FROM bins WHERE id = 1', dateStrings: true })
    expectEq(strings, { t: '2024-02-29 12:34:56.789000', d: '2024-02-29', i8: -9223372036854775808n,
      dm: '12345678901234567890.0123456789' }, 'dates as strings')
    await conn.query("UPDATE bins SET t = '2024-02-29 12:34:56.789012' WHERE id = 1")
    expectEq(await one(conn, 'SELECT CAST(t AS CHAR) FROM bins WHERE id = 1'),
      '2024-02-29 12:34:56.789012', 'DATETIME(6) keeps microseconds')
    const [nulls] = await conn.query({ sql: 'SELECT NULL, ?, NULL + 1', rowsAsArray: true }, [null])
    expectEq(nulls, [null, null, null], 'NULLs')
    const [numbers] = await conn.query({
      sql: 'SELECT CAST(? AS SIGNED) AS big, i8, dm, price FROM bins, items WHERE bins.id = 1 AND items.id = 1',
      bigIntAsNumber: true, decimalAsNumber: true,
    }, ['9007199254740991'])
    expectEq(numbers, { big: 9007199254740991, i8: -9223372036854775808, dm: 12345678901234567000, price: 1.5 },
      'BIGINT and DECIMAL as numbers (bigIntAsNumber, decimalAsNumber)')
  })
  // Named placeholders: `:name` in the text, an object of values.
  await withConnection(async (conn) => {
    const [row] = await conn.query('SELECT :a + :b AS sum, :s AS s, :a AS a', { a: 40, b: 2, s: TEXT })
    expectEq(row, { sum: 42, s: TEXT, a: 40 }, 'named placeholders (query)')
    const [executed] = await conn.execute('SELECT :a * 2 AS twice, :s AS s', { a: 21, s: TEXT })
    expectEq([num(executed.twice), executed.s], [42, TEXT], 'named placeholders (execute)')
    const r = await conn.query('INSERT INTO items (id, name, price) VALUES (:id, :name, :price)',
      { id: 4, name: 'named', price: '4.00' })
    expectEq(r.affectedRows, 1, 'an INSERT with named placeholders')
    expectEq(await oneExecuted(conn, 'SELECT name FROM items WHERE id = :id', { id: 4 }), 'named', 'its row')
  }, { namedPlaceholders: true })
  // bigIntAsNumber for the connection.
  await withConnection(async (conn) => {
    expectEq(await one(conn, 'SELECT CAST(? AS SIGNED)', ['9007199254740991']), 9007199254740991, 'a BIGINT as a number')
    expectEq(await oneExecuted(conn, 'SELECT CAST(? AS SIGNED)', ['9007199254740991']), 9007199254740991,
      'a BIGINT as a number (execute)')
  }, { bigIntAsNumber: true })
}

// Many commands written on one connection before any answer came: the answers in order,
// an error failing only its own command. The statements executed are prepared first (what
// a pipelined execute() of a new text does is execute_last_prepared's).
async function checkPipelining() {
  await withConnection(async (conn) => {
    for (const sql of ['SELECT ? + 1', 'INSERT INTO items (id, name) VALUES (?, ?)']) (await conn.prepare(sql)).close()
    const sent = { ...sentBy(conn) }
    const issued = []
    for (let i = 0; i < 200; i++) {
      if (i === 100) {
        issued.push(conn.query('SELECT * FROM no_such_table').then(() => 'succeeded', (err) => `error ${err.errno}`))
      } else {
        issued.push(conn.query({ sql: 'SELECT ? AS i, REPEAT(?, ?) AS s', rowsAsArray: true }, [i, 'x', i * 37])
          .then((rows) => rows[0], (err) => `error ${err.errno} ${err.message}`))
      }
    }
    // Written as issued: pipelining writes each command at once.
    const written = sentBy(conn).query - sent.query
    const results = await Promise.all(issued)
    expectEq(written, 200, 'queries written before any answer was read')
    const want = Array.from({ length: 200 }, (_, i) => (i === 100 ? `error ${ER_NO_SUCH_TABLE}` : [i, 'x'.repeat(i * 37)]))
    expectEq(results, want, 'the answers of 200 pipelined queries, in order, the 101st an error')

    // Reads and writes interleaved (through the proxy: on replicas and on the writer).
    const mixed = []
    for (let i = 0; i < 100; i++) {
      if (i % 3 === 0) mixed.push(conn.query('INSERT INTO items (id, name) VALUES (?, ?)', [1000 + i, `p${i}`]).then((r) => r.affectedRows))
      else if (i % 3 === 1) mixed.push(conn.query({ sql: 'SELECT ? * 2', rowsAsArray: true }, [i]).then((r) => num(r[0][0])))
      else mixed.push(conn.execute({ sql: 'SELECT ? + 1', rowsAsArray: true }, [i]).then((r) => num(r[0][0])))
    }
    expectEq(await Promise.all(mixed), Array.from({ length: 100 }, (_, i) => (i % 3 === 0 ? 1 : i % 3 === 1 ? i * 2 : i + 1)),
      'pipelined writes, reads and executes, in order')
    expectEq([sentBy(conn).prepare, sentBy(conn).execute - sent.execute], [2, 33], 'prepares, and executes pipelined')
    expectEq(num(await one(conn, 'SELECT COUNT(*) FROM items WHERE id >= 1000 AND id < 1100')), 34, 'the pipelined writes')

    // A whole transaction pipelined, a duplicate key in the middle.
    const tx = await Promise.all([
      conn.beginTransaction().then(() => 'begun'),
      conn.query("INSERT INTO items (id, name) VALUES (1200, 'tx')").then((r) => r.affectedRows),
      conn.query({ sql: 'SELECT @@in_transaction', rowsAsArray: true }).then((r) => num(r[0][0])),
      conn.query("INSERT INTO items (id, name) VALUES (1200, 'dup')").then(() => 'succeeded', (err) => err.errno),
      conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [1201, 'tx']).then((r) => r.affectedRows),
      conn.commit().then(() => 'committed'),
      conn.query({ sql: 'SELECT @@in_transaction', rowsAsArray: true }).then((r) => num(r[0][0])),
    ])
    expectEq(tx, ['begun', 1, 1, ER_DUP_ENTRY, 1, 'committed', 0], 'a pipelined transaction')
    expectEq((await conn.query({ sql: 'SELECT id FROM items WHERE id IN (1200, 1201) ORDER BY id', rowsAsArray: true })).flat(),
      [1200, 1201], 'its rows')

    // Without pipelining: one command at a time.
    await withConnection(async (plain) => {
      const before = sentBy(plain).query
      const issuedPlain = Array.from({ length: 20 }, (_, i) => one(plain, 'SELECT ?', [i]))
      const writtenPlain = sentBy(plain).query - before
      expectEq((await Promise.all(issuedPlain)).map(num), Array.from({ length: 20 }, (_, i) => i), 'queued queries')
      expectEq(writtenPlain, 1, 'queries written before the first answer, without pipelining')
    }, { pipelining: false })
    expectEq(await one(conn, 'SELECT 1'), 1, 'the connection after them')
  }, { pipelining: true })
}

// execute() of a text the connection has not prepared yet (not in its cache), pipelining
// (the connector's default): the connector writes COM_STMT_PREPARE and, right behind it
// without waiting for its answer, COM_STMT_EXECUTE of statement id 0xFFFFFFFF, which MariaDB
// (10.2.4+) runs as the statement the connection prepared last. Whatever runs the PREPARE
// must run that EXECUTE: through the proxy, the server connection the PREPARE ran on (a
// replica's, for a read). What every step gave is compared at the end, all at once.
async function checkExecuteLastPrepared() {
  const outcome = (promise) => promise.then(
    (res) => (Array.isArray(res) ? res.map((r) => r.map(num)) : `ok: ${res.affectedRows} affected`),
    (err) => `error ${err.errno}: ${err.sqlMessage}`)
  const seen = {}
  await withConnection(async (conn) => {
    await conn.query("INSERT INTO items (id, name) VALUES (900, 'last prepared')")
  })
  await withConnection(async (conn) => {
    const read = { sql: 'SELECT @@read_only AS ro, ? AS n', rowsAsArray: true }
    seen.read = await outcome(conn.execute(read, [7]))
    const s = sentBy(conn)
    seen.sent = [s.prepare, s.execute, s.executeLastPrepared]
    seen.readAgain = await outcome(conn.execute(read, [8]))
    seen.write = await outcome(conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [901, 'executed']))
    // Many at once, none prepared yet: each a PREPARE and an EXECUTE of the last prepared.
    const many = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      outcome(conn.execute({ sql: `SELECT ? * ${i} AS n`, rowsAsArray: true }, [i]))))
    seen.many = many.filter((got, i) => !util.isDeepStrictEqual(got, [[i * i]])).length
  }, { pipelining: true })
  // Right after another session's statement ran in its transaction (on the writer).
  await withConnections(2, async (other, conn) => {
    await other.beginTransaction()
    seen.other = await outcome(other.execute('DELETE FROM items WHERE id = ?', [-1]))
    await other.commit()
    seen.afterOther = await outcome(conn.execute({ sql: 'SELECT name FROM items WHERE id = ?', rowsAsArray: true }, [900]))
  }, { pipelining: true })
  await withConnection(async (conn) => {
    seen.row900 = num(await one(conn, '/* switchyard:writer */ SELECT COUNT(*) FROM items WHERE id = 900'))
    // An id the server forgot: the connector keeps its statements cached across
    // changeUser() (COM_CHANGE_USER), and executes the one it had with its old id.
    const select = { sql: 'SELECT name FROM items WHERE id = ?', rowsAsArray: true }
    await conn.query("INSERT INTO items (id, name) VALUES (902, 'before changeUser')")
    seen.beforeChangeUser = await outcome(conn.execute(select, [902]))
    await conn.changeUser({ user: USER, password: PASSWORD, database: DB })
    seen.forgotten = (await outcome(conn.execute(select, [902]))).toString().replace(/\(\d+\)/, '(id)')
  })
  expectEq(seen, {
    read: [[THROUGH_PROXY ? 1 : 0, 7]], sent: [1, 1, 1], readAgain: [[THROUGH_PROXY ? 1 : 0, 8]], write: 'ok: 1 affected',
    many: 0, other: 'ok: 0 affected', afterOther: [['last prepared']], row900: 1,
    beforeChangeUser: [['before changeUser']],
    forgotten: `error ${ER_UNKNOWN_STMT_HANDLER}: Unknown prepared statement handler (id) given to mysqld_stmt_execute`,
  }, 'execute() of new texts, pipelined: a read on a fresh connection (PREPARE, then EXECUTE of statement ' +
    '0xFFFFFFFF: sent), again (its own id), a write, 10 at once (how many wrong), and a read right after ' +
    "another session's DELETE in its transaction (and row 900, which it reads, after it); then, not pipelined, " +
    'a statement executed again after changeUser() (an id the server forgot)')
}

// execute() (not pipelined): PREPARE, its answer, then EXECUTE of its id, once per text and
// connection, then EXECUTE only; by one connection, and by many at once.
async function checkExecute() {
  await withConnection(async (conn) => {
    const insert = 'INSERT INTO items (id, name, price) VALUES (?, ?, ?)'
    for (let i = 100; i < 120; i++) {
      const r = await conn.execute(insert, [i, `item${i}`, (i * 1.5).toFixed(2)])
      expectEq(r.affectedRows, 1, `insert ${i}`)
    }
    const select = 'SELECT name, price FROM items WHERE id = ?'
    for (let i = 100; i < 120; i++) {
      const rows = await conn.execute(select, [i])
      expectEq([...rows], [{ name: `item${i}`, price: (i * 1.5).toFixed(2) }], `read of ${i}`)
    }
    const s = sentBy(conn)
    expectEq([s.prepare, s.execute, s.executeLastPrepared, s.close], [2, 40, 0, 0],
      'prepares, executes (of them, of the last prepared statement), closes sent')
    // The types in the binary protocol: the row query() wrote, and the same values bound (a
    // blob of 16 KiB or more by COM_STMT_SEND_LONG_DATA, the statement prepared first).
    const data = blob()
    const [row] = await conn.execute('SELECT * FROM bins WHERE id = ?', [1])
    expectBinsRow(row, data, 'execute()')
    const insertBins = 'INSERT INTO bins VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
    const values = (id) => [id, -9223372036854775808n, 18446744073709551615n, '12345678901234567890.0123456789', WHEN,
      '2024-02-29', JSON.stringify(DOC), data, TEXT, 1.5, null]
    await conn.execute(insertBins, values(2))
    await conn.execute(insertBins, values(3))
    expectEq(sentBy(conn).longData, 2, 'the blob sent as long data (COM_STMT_SEND_LONG_DATA) by each')
    for (const id of [2, 3]) {
      const [bound] = await conn.execute('SELECT * FROM bins WHERE id = ?', [id])
      expectBinsRow(bound, data, `execute() of values bound by execute() (${id})`)
    }
    expectEq(await oneExecuted(conn, 'SELECT ?', [TEXT]), TEXT, 'utf8mb4 bound')
    expectEq(await oneExecuted(conn, 'SELECT ?', [9223372036854775807n]), 9223372036854775807n, 'a BigInt bound')
    expectEq(await oneExecuted(conn, 'SELECT ?', [null]), null, 'NULL bound')
    // prepare(): a statement of the application's own, executed, closed.
    const stmt = await conn.prepare('SELECT ? * 2 AS n')
    for (let i = 0; i < 5; i++) expectEq(num((await stmt.execute([i]))[0].n), i * 2, `prepare()d statement ${i}`)
    stmt.close()
    // A text the server refuses to prepare: not cached, so prepared again (and refused).
    const refused = sentBy(conn).prepare
    for (let i = 0; i < 2; i++) await expectError(conn.execute('SELEC ?', [1]), ER_PARSE_ERROR, `a syntax error (${i})`)
    expectEq(sentBy(conn).prepare - refused, 2, 'prepares of a text the server refuses')
    // An execution that fails: the statement stays prepared.
    const before = sentBy(conn).prepare
    await expectError(conn.execute(insert, [100, 'dup', 1]), ER_DUP_ENTRY, 'a duplicate key')
    expectEq((await conn.execute(insert, [120, 'item120', 1])).affectedRows, 1, 'the statement after its error')
    expectEq(sentBy(conn).prepare, before, 'no prepare after the failed execution')
    expectEq(await one(conn, 'SELECT 4'), 4, 'the connection after them')
  }, { pipelining: false })
  // More distinct texts than the cache holds: the least recently used closed and prepared
  // again when they come back.
  await withConnection(async (conn) => {
    const texts = Array.from({ length: 12 }, (_, k) => `SELECT ? + ${k} AS n`)
    for (let round = 0; round < 3; round++) {
      for (let k = 0; k < texts.length; k++) {
        expectEq(num(await oneExecuted(conn, texts[k], [round])), round + k, `statement ${k} round ${round}`)
      }
    }
    const s = sentBy(conn)
    expectEq([s.prepare, s.execute, s.close], [36, 36, 32], 'prepares, executes, closes of 12 statements in a cache of 4')
    expect(conn.prepareCache.toString().split('[').length - 1 === 4, `the cache: ${conn.prepareCache}`)
  }, { prepareCacheLength: 4 })
  // 16 connections at once, with the same texts (some the same for all, some each
  // connection's own).
  await awaitReplicated('SELECT COUNT(*) FROM items WHERE id >= 100 AND id < 121', 21)
  const byId = 'SELECT name FROM items WHERE id = ?'
  await withConnections(16, async (...all) => {
    await Promise.all(all.map(async (conn, k) => {
      const product = `SELECT ? * ${k} AS n`
      for (let i = 0; i < 40; i++) {
        const inTx = i % 10 === 9
        if (inTx) await conn.beginTransaction()
        expectEq(await oneExecuted(conn, byId, [100 + (i % 20)]), `item${100 + (i % 20)}`, `connection ${k} read ${i}`)
        expectEq(num(await oneExecuted(conn, product, [i])), i * k, `connection ${k} product ${i}`)
        expectEq(num(await oneExecuted(conn, 'SELECT ? + ?', [i, k])), i + k, `connection ${k} sum ${i}`)
        if (inTx) await conn.commit()
      }
      const s = sentBy(conn)
      expectEq([s.prepare, s.execute, s.close], [3, 120, 0], `connection ${k}: prepares, executes, closes sent`)
    }))
  })
  // A pool of 16: its connections live on and keep their statements.
  const pool = createPool(16)
  try {
    const results = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      pool.execute({ sql: byId, rowsAsArray: true }, [100 + (i % 20)])))
    expectEq(results.map((rows) => rows[0][0]), Array.from({ length: 400 }, (_, i) => `item${100 + (i % 20)}`),
      'pooled reads by execute()')
    expect(pool.infos.length >= 1 && pool.infos.length <= 16, `pool connections ${pool.infos.length}`)
    expect(pool.infos.every((info) => info.sent.prepare <= 1), `each pool connection prepared at most once: ${
      show(pool.infos.map((info) => info.sent.prepare))}`)
    // Transactions on connections taken from the pool, 32 at once on 16.
    await Promise.all(Array.from({ length: 32 }, async (_, i) => {
      const conn = await pool.getConnection()
      try {
        await conn.beginTransaction()
        await conn.execute('INSERT INTO pooled VALUES (?, ?)', [i, i % 16])
        expectEq(num(await oneExecuted(conn, 'SELECT COUNT(*) FROM pooled WHERE id = ?', [i])), 1, 'read in the transaction')
        if (i % 4 === 3) await conn.rollback()
        else await conn.commit()
      } finally {
        await conn.release()
      }
    }))
    expect(pool.infos.length <= 16, `pool connections ${pool.infos.length}`)
    // The pool may still be opening a connection it asked for under the load (counted in
    // its total before its 'connection' event): compare against the limit, not the events.
    expect(pool.totalConnections() <= 16, `pool connections in all ${pool.totalConnections()}`)
    expectEq(pool.activeConnections(), 0, 'the pool\'s connections, all idle again')
  } finally {
    await pool.end()
  }
  await awaitReplicated('SELECT COUNT(*) FROM pooled', 24)
}

// MariaDB's JSON is a LONGTEXT with a check; the connector tells a JSON column by its
// extended metadata (format 'json') and parses its values, by query() and execute() alike;
// a UUID column is told by its type name.
async function checkJsonColumns() {
  await withConnection(async (conn) => {
    const uuid = '123e4567-e89b-12d3-a456-426614174000'
    await conn.query('INSERT INTO docs VALUES (?, ?, ?)', [1, JSON.stringify(DOC), uuid])
    const q = await conn.query('SELECT j, u FROM docs WHERE id = 1')
    const e = await conn.execute('SELECT j, u FROM docs WHERE id = ?', [1])
    const seen = {
      byQuery: q[0],
      byExecute: e[0],
      json: [...q.meta, ...e.meta].map((c) => c.isDataTypeFormatJson()),
      typeNames: [...q.meta, ...e.meta].map((c) => c.dataTypeName || null),
    }
    expectEq(seen, {
      byQuery: { j: DOC, u: uuid }, byExecute: { j: DOC, u: uuid }, json: [true, false, true, false],
      typeNames: [null, 'uuid', null, 'uuid'],
    }, 'JSON columns parsed, as the column definitions\' extended metadata tells')
    const [strings] = await conn.query({ sql: 'SELECT j FROM docs WHERE id = 1', jsonStrings: true, autoJsonMap: false })
    expectEq(JSON.parse(strings.j), DOC, 'the JSON as a string when asked')
  })
}

// batch(): prepared once (and waited for: not EXECUTE of the last prepared), then
// COM_STMT_BULK_EXECUTE, which the greeting offers (the proxy runs it where the statement is
// prepared, as an EXECUTE); with `bulk: false`, one COM_STMT_EXECUTE per row, pipelined.
async function checkBatch() {
  const rows = (from, n) => Array.from({ length: n }, (_, k) => {
    const i = from + k
    return [i, `row ${i} é 🎉`, (i / 4).toFixed(2), new Date(2024, 0, 1, 0, 0, 0, i % 1000), Buffer.from([i % 256, 0, 255])]
  })
  const insert = 'INSERT INTO batched VALUES (?, ?, ?, ?, ?)'
  const count = async (conn, from, to) =>
    num(await one(conn, 'SELECT COUNT(*) FROM batched WHERE id >= ? AND id < ?', [from, to]))
  await withConnection(async (conn) => {
    let before = { ...sentBy(conn) }
    const r = await conn.batch({ sql: insert, fullResult: false }, rows(0, 1000))
    expectEq(r.affectedRows, 1000, `rows a batch of 1,000 inserted: ${show(r)}`)
    let s = sentBy(conn)
    expectEq({ prepare: s.prepare - before.prepare, bulk: s.bulk - before.bulk > 0, execute: s.execute - before.execute },
      { prepare: 1, bulk: true, execute: 0 }, 'what the batch sent')
    expectEq(await count(conn, 0, 1000), 1000, 'the rows in the table')
    const [last] = await conn.query('SELECT * FROM batched WHERE id = 999')
    expectEq({ ...last, at: last.at.getTime() }, { id: 999, name: 'row 999 é 🎉', amount: '249.75',
      at: new Date(2024, 0, 1, 0, 0, 0, 999).getTime(), data: Buffer.from([999 % 256, 0, 255]) }, 'the last row')
    // One COM_STMT_EXECUTE per row.
    before = { ...sentBy(conn) }
    const single = await conn.batch({ sql: insert, bulk: false }, rows(1000, 1000))
    expectEq([single.length, single.every((ok) => ok.affectedRows === 1)], [1000, true],
      `a result for each of 1,000 rows a batch without bulk inserted: ${show(single.slice(0, 3))}`)
    s = sentBy(conn)
    expectEq([s.prepare - before.prepare, s.bulk - before.bulk, s.execute - before.execute], [0, 0, 1000],
      'prepares (the statement cached by the first batch), bulks, executes of the batch without bulk')
    expectEq(await count(conn, 1000, 2000), 1000, 'its rows in the table')
    // Named placeholders, objects as rows.
    await withConnection(async (named) => {
      const objects = Array.from({ length: 50 }, (_, k) => ({ id: 3000 + k, name: `named ${k}`, amount: k, at: null, data: null }))
      const n = await named.batch({ sql: 'INSERT INTO batched VALUES (:id, :name, :amount, :at, :data)', fullResult: false },
        objects)
      expectEq(n.affectedRows, 50, `a batch with named placeholders: ${show(n)}`)
    }, { namedPlaceholders: true, pipelining: true })
    expectEq(await count(conn, 3000, 3050), 50, 'its rows')
    // A failing batch: a duplicate key in its middle.
    const failing = [...rows(4000, 10), [5, 'duplicate', 0, null, null], ...rows(4010, 10)]
    await conn.beginTransaction()
    await expectError(conn.batch(insert, failing), ER_DUP_ENTRY, 'a batch with a duplicate key')
    await conn.rollback()
    expectEq(await count(conn, 4000, 4020), 0, 'nothing of the failed batch after a rollback')
    // One execute per row, each in autocommit: every other row is in.
    await expectError(conn.batch({ sql: insert, bulk: false }, failing), ER_DUP_ENTRY, 'a batch without bulk with a duplicate key')
    expectEq(await count(conn, 4000, 4020), 20, 'the rows of the batch without bulk but the duplicate')
    expectEq(await one(conn, "SELECT name FROM batched WHERE id = 5"), 'row 5 é 🎉', 'the row the duplicate did not replace')
    // A batch the server refuses to prepare.
    await expectError(conn.batch('INSERT INTO no_such_table VALUES (?)', [[1], [2]]), ER_NO_SUCH_TABLE, 'a batch of a missing table')
    expectEq(await one(conn, 'SELECT 5'), 5, 'the connection after the batches')
  }, { pipelining: true })
}

async function checkTransactions() {
  await withConnection(async (conn) => {
    const ids = async () => (await conn.query({
      sql: 'SELECT id FROM items WHERE id >= 200 AND id < 300 ORDER BY id', rowsAsArray: true,
    })).flat()
    await transactionsAndDuplicates(conn, { ids, one: async (c, sql) => num(await one(c, sql)), expectError })
    // commit() and rollback() with no transaction open send nothing.
    const queries = sentBy(conn).query
    await conn.commit()
    await conn.rollback()
    expectEq(sentBy(conn).query, queries, 'commit() and rollback() outside a transaction')
    // A read-only transaction refuses a write.
    await conn.query('START TRANSACTION READ ONLY')
    expectEq(await oneExecuted(conn, 'SELECT name FROM items WHERE id = ?', [200]), 'committed', 'a read-only read')
    await expectError(conn.query("INSERT INTO items (id, name) VALUES (260, 'no')"), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
      'a write in a read-only transaction')
    await conn.rollback()
    expectEq(await one(conn, 'SELECT 7'), 7, 'the connection after the transactions')
  })
}

// queryStream(): a 20,000-row result read as it comes, the socket paused when the consumer
// falls behind.
async function checkQueryStream() {
  await withConnection(async (conn) => {
    const sql = 'SELECT seq, REPEAT(MD5(seq), 32) AS s FROM seq_1_to_20000'
    let n = 0
    let sum = 0
    let chars = 0
    for await (const row of conn.queryStream(sql)) {
      n++
      sum += num(row.seq)
      chars += row.s.length
      if (n % 5000 === 0) await delay(50)
    }
    expectEq([n, sum, chars], [20000, 200010000, 20000 * 1024], 'rows, their sum and characters streamed')
    const events = await new Promise((resolve, reject) => {
      let rows = 0
      let seqs = 0
      let fields = null
      const stream = conn.queryStream('SELECT seq FROM seq_1_to_20000 WHERE seq > ?', [0])
      stream.on('error', reject)
        .on('fields', (meta) => { fields = meta.map((c) => c.name()) })
        .on('data', (row) => {
          rows++
          seqs += num(row.seq)
          if (rows % 1000 === 0) {
            stream.pause()
            setTimeout(() => stream.resume(), 5)
          }
        })
        .on('end', () => resolve({ rows, seqs, fields }))
    })
    expectEq(events, { rows: 20000, seqs: 200010000, fields: ['seq'] }, 'rows by events, the stream paused')
    const all = await conn.query(sql)
    expectEq([all.length, all[19999].s.length], [20000, 1024], 'rows of a ~20 MB result read whole, the last row')
    // A stream that fails: the error, and the connection goes on.
    const err = await new Promise((resolve) => {
      conn.queryStream('SELECT * FROM no_such_table').on('error', resolve).on('end', () => resolve(null)).resume()
    })
    expectEq(err && err.errno, ER_NO_SUCH_TABLE, 'a stream of a missing table')
    expectEq(await one(conn, 'SELECT 6'), 6, 'the connection after the streamed results')
  })
}

// A pool whose connections are reset when released (COM_RESET_CONNECTION) and one whose are
// not: what the next user of the same connection sees of the last one's session.
async function checkPoolResetAfterUse() {
  const defaults = await withConnection(async (conn) => num(await one(conn, 'SELECT @@group_concat_max_len')))
  for (const resetAfterUse of [true, false]) {
    const pool = createPool(1, { resetAfterUse, initSql: "SET @init = 'yes'", minimumIdle: 1 })
    try {
      const first = await pool.getConnection()
      const threadId = first.threadId
      await first.query("SET @leak = 'from the first user'")
      await first.query('SET SESSION group_concat_max_len = 12345')
      expectEq(num(await oneExecuted(first, 'SELECT ? + 1 AS n', [1])), 2, 'a statement of the first user')
      await first.release()
      const second = await pool.getConnection()
      try {
        expectEq(second.threadId, threadId, 'the pool\'s only connection again')
        const seen = [await one(second, 'SELECT @leak'), num(await one(second, 'SELECT @@group_concat_max_len')),
          await one(second, 'SELECT @init')]
        expectEq(seen, resetAfterUse ? [null, defaults, 'yes'] : ['from the first user', 12345, 'yes'],
          `what the second user sees of the first one's session (resetAfterUse: ${resetAfterUse})`)
        expectEq(num(await oneExecuted(second, 'SELECT ? + 1 AS n', [2])), 3, 'the statement after the release')
        expectEq(num(await one(second, 'SELECT @@in_transaction')), 0, 'no transaction')
      } finally {
        await second.release()
      }
      const info = pool.infos[0]
      expectEq([pool.infos.length, info.sent.reset, info.sent.other], [1, resetAfterUse ? 2 : 0, 0],
        `connections, COM_RESET_CONNECTION and unknown commands sent (resetAfterUse: ${resetAfterUse})`)
    } finally {
      await pool.end()
    }
  }
  // A transaction left open by a user is rolled back when released (resetAfterUse off).
  const pool = createPool(1, { minimumIdle: 1 })
  try {
    const first = await pool.getConnection()
    await first.beginTransaction()
    await first.query("INSERT INTO items (id, name) VALUES (700, 'left open')")
    await first.release()
    const second = await pool.getConnection()
    try {
      expectEq(num(await one(second, '/* switchyard:writer */ SELECT COUNT(*) FROM items WHERE id = 700')), 0,
        'the open transaction rolled back on release')
      expectEq(num(await one(second, 'SELECT @@in_transaction')), 0, 'no transaction')
    } finally {
      await second.release()
    }
  } finally {
    await pool.end()
  }
}

// COM_CHANGE_USER to the same user and database, and COM_RESET_CONNECTION (reset()): the
// session's state is gone, the connection goes on. reset() empties the connector's statement
// cache (closing the ids the server forgot); changeUser() does not (see
// execute_last_prepared).
async function checkChangeUserAndReset() {
  await awaitReplicated('SELECT COUNT(*) FROM items WHERE id IN (200, 202)', 2)
  await withConnection(async (conn) => {
    const select = 'SELECT name FROM items WHERE id = ?'
    const readOnly = THROUGH_PROXY ? 1 : 0
    await conn.query('SET @marker = 42')
    expectEq(await one(conn, 'SELECT @marker'), 42n, 'the variable before (an integer user variable: a BIGINT)')
    expectEq(await oneExecuted(conn, select, [200]), 'committed', 'a statement before')
    await conn.changeUser({ user: USER, password: PASSWORD, database: DB })
    expectEq(await one(conn, 'SELECT @marker'), null, 'the variable after changeUser()')
    expectEq((await one(conn, 'SELECT CURRENT_USER()')).split('@')[0], USER, 'the user after changeUser()')
    expectEq(await one(conn, 'SELECT DATABASE()'), DB, 'the database after changeUser()')
    expectEq(sentBy(conn).changeUser, 1, 'COM_CHANGE_USER sent')
    expectEq(num(await one(conn, 'SELECT @@read_only')), readOnly, 'a read after changeUser() on a replica')
    await conn.query('SET @marker = 43')
    await conn.reset()
    expectEq(await one(conn, 'SELECT @marker'), null, 'the variable after reset()')
    const prepares = sentBy(conn).prepare
    expectEq(await oneExecuted(conn, select, [202]), 'outer', 'the statement after reset()')
    expectEq([sentBy(conn).reset, sentBy(conn).prepare - prepares], [1, 1], 'COM_RESET_CONNECTION, then a prepare again')
    expectEq(num(await one(conn, 'SELECT @@read_only')), readOnly, 'a read after reset() on a replica')
    // Last, as its COMMIT starts the session's read-your-writes window (its reads on the
    // writer for a while, through the proxy).
    await conn.beginTransaction()
    expectEq(await oneExecuted(conn, select, [200]), 'committed', 'the statement in a transaction')
    expectEq(num(await one(conn, 'SELECT @@read_only')), 0, 'a transaction on the primary')
    await conn.commit()
  })
}

async function checkKillQuery() {
  await killQuery({ withConnections, one: async (c, sql) => num(await one(c, sql)), slept: (rows) => num(rows[0].slept) })
}

// LOAD DATA LOCAL INFILE: the server asks for the file, the connector sends what
// infileStreamFactory gives, then an empty packet (permitLocalInfile, which pipelining
// excludes).
async function checkLoadDataLocal() {
  let nextFile = null
  const asked = []
  const infileStreamFactory = (name) => {
    asked.push(name)
    return nextFile()
  }
  await withConnection(async (conn) => {
    const lines = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i} é\n`).join('')
    nextFile = () => Readable.from([Buffer.from(lines.slice(0, 40_000)), Buffer.from(lines.slice(40_000))])
    const r = await conn.query("LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE loaded CHARACTER SET utf8mb4")
    expectEq(asked, ['rows.tsv'], 'the file the server asked for')
    expectEq(r.affectedRows, 5000, 'rows loaded')
    expectEq(num(await one(conn, 'SELECT COUNT(*) FROM loaded')), 5000, 'rows in the table')
    expectEq(await oneExecuted(conn, 'SELECT name FROM loaded WHERE id = ?', [4999]), 'row 4999 é', 'the last row')
    // A stream that fails: the server is sent an empty file, the query fails with its error.
    nextFile = () => new Readable({ read() { this.destroy(new Error('no such file here')) } })
    const err = await conn.query("LOAD DATA LOCAL INFILE 'fails.tsv' INTO TABLE loaded").then(() => null, (e) => e)
    expect(err && /no such file here/.test(err.message), `a failing stream's error: ${err && err.message}`)
    expectEq(num(await one(conn, 'SELECT COUNT(*) FROM loaded')), 5000, 'nothing more loaded')
    expectEq(await one(conn, 'SELECT 9'), 9, 'the connection after them')
  }, { permitLocalInfile: true, pipelining: false, infileStreamFactory })
}

async function checkRouting() {
  await withConnection(async (conn) => {
    expectEq(num(await one(conn, 'SELECT @@read_only')), THROUGH_PROXY ? 1 : 0, "a fresh connection's read on a replica")
    expectEq(num(await oneExecuted(conn, 'SELECT @@read_only')), THROUGH_PROXY ? 1 : 0, 'so does execute()')
    await conn.beginTransaction()
    expectEq(num(await one(conn, 'SELECT @@read_only')), 0, 'a transaction on the primary')
    expectEq(num(await oneExecuted(conn, 'SELECT @@read_only')), 0, 'execute() in a transaction on the primary')
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
    expectEq(num(await one(conn, '/* switchyard:writer */ SELECT @@read_only')), 0, 'the writer hint')
    expectEq(num(await one(conn, 'SELECT @@read_only')), THROUGH_PROXY ? 1 : 0, 'a read after the hint on a replica')
  })
}

const CHECKS = [
  ['connect', checkConnect],
  ['setup', checkSetup],
  ['query_placeholders_and_types', checkQueryPlaceholdersAndTypes],
  ['pipelining', checkPipelining],
  ['execute_last_prepared', checkExecuteLastPrepared],
  ['execute', checkExecute],
  ['json_columns', checkJsonColumns],
  ['batch', checkBatch],
  ['transactions', checkTransactions],
  ['query_stream', checkQueryStream],
  ['pool_reset_after_use', checkPoolResetAfterUse],
  ['change_user_and_reset', checkChangeUserAndReset],
  ['kill_query', checkKillQuery],
  ['load_data_local', checkLoadDataLocal],
  ['routing', checkRouting],
]

const describeError = describeWith(['errno', 'code', 'sqlState', 'fatal'])

loadDriver().then(() =>
  main(`mariadb ${MARIADB_VERSION} (node ${process.version})`, CHECKS, { knownFailures: KNOWN_FAILURES, describeError }))
