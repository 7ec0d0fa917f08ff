// Checks the Node.js MySQL drivers here (mysql2, mariadb) share, as mysql_common.py is for
// the Python ones: written against what both drivers' promise APIs have in common
// (`query`, `execute`, `beginTransaction`, `commit`, `rollback`), with what differs passed
// in.

'use strict'

const { delay, expect, expectEq } = require('./node_common')

// The server's error numbers the checks expect.
const ER_DUP_ENTRY = 1062
const ER_PARSE_ERROR = 1064
const ER_NO_SUCH_TABLE = 1146
const ER_UNKNOWN_STMT_HANDLER = 1243
const ER_QUERY_INTERRUPTED = 1317
const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792

// Transactions on `conn`: commit, rollback, savepoints, and a duplicate key that fails its
// statement (by `execute` and by `query`) but not the transaction. `ids()`: the ids of items
// 200 to 299 in order; `one(conn, sql)`: the first column of a query as a number;
// `expectError(promise, errno, what)`: the error the promise fails with.
async function transactionsAndDuplicates(conn, { ids, one, expectError }) {
  await conn.beginTransaction()
  await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [200, 'committed'])
  await conn.commit()
  await conn.beginTransaction()
  await conn.query('INSERT INTO items (id, name) VALUES (?, ?)', [201, 'rolled back'])
  expectEq(await ids(), [200, 201], 'rows in the transaction')
  await conn.rollback()
  await conn.beginTransaction()
  await conn.query("INSERT INTO items (id, name) VALUES (202, 'outer')")
  await conn.query('SAVEPOINT s')
  await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [203, 'inner'])
  await conn.query('ROLLBACK TO SAVEPOINT s')
  await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [204, 'kept'])
  await conn.query('RELEASE SAVEPOINT s')
  await conn.commit()
  expectEq(await ids(), [200, 202, 204], 'committed rows')
  // A duplicate key fails the statement, not the transaction.
  await conn.beginTransaction()
  await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [250, 'kept'])
  const dup = await expectError(conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [250, 'dup']), ER_DUP_ENTRY,
    'a duplicate key (execute)')
  expectEq([dup.code, dup.sqlState], ['ER_DUP_ENTRY', '23000'], 'code and SQLSTATE of the duplicate')
  await expectError(conn.query("INSERT INTO items (id, name) VALUES (250, 'dup')"), ER_DUP_ENTRY,
    'a duplicate key (query)')
  await conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [251, 'after the error'])
  expectEq(await one(conn, 'SELECT @@in_transaction'), 1, 'still in the transaction')
  await conn.commit()
  expectEq(await ids(), [200, 202, 204, 250, 251], 'the transaction went on after the errors')
}

// KILL QUERY <CONNECTION_ID()> from another connection, again and again until SLEEP(60)
// ends: in a transaction (on the writer) and outside one (a read, on a replica through the
// proxy). `withConnections(2, fn)` opens the two; `one(conn, sql)` reads a number;
// `slept(rows)`: SLEEP's result from what `query` gives.
async function killQuery({ withConnections, one, slept }) {
  for (const inTx of [true, false]) {
    await withConnections(2, async (conn, killer) => {
      if (inTx) await conn.beginTransaction()
      const id = await one(conn, 'SELECT CONNECTION_ID()')
      let settled = false
      const running = conn.query('SELECT SLEEP(60) AS slept').then(slept, (err) => err)
        .finally(() => { settled = true })
      const deadline = Date.now() + 30_000
      // A KILL QUERY every 100 ms (the first after 100 ms) until the query ends.
      while (!settled && Date.now() < deadline) {
        await Promise.race([running, delay(100)])
        if (settled) break
        await killer.query(`KILL QUERY ${id}`)
      }
      expect(settled, `SLEEP(60) still running after 30 s of KILL QUERY ${id} (in a transaction: ${inTx})`)
      const result = await running
      expect(result === 1 || (result instanceof Error && result.errno === ER_QUERY_INTERRUPTED),
        `SLEEP(60) interrupted (in a transaction: ${inTx}): got ${result instanceof Error ? `${result.errno} ${result.message}` : result}`)
      if (inTx) await conn.rollback()
      expectEq(await one(conn, 'SELECT 3'), 3, 'the connection after KILL QUERY')
      expectEq(await one(killer, 'SELECT 4'), 4, 'the killer after KILL QUERY')
    })
  }
}

// Values the checks round-trip. A 1 MiB Buffer with every byte value:
function blob() {
  const b = Buffer.alloc(1 << 20)
  for (let i = 0; i < b.length; i++) b[i] = i % 256
  return b
}

// a JSON document, and text beyond Latin-1.
const DOC = { k: [1, null, 'é'], nested: { t: true }, big: 12345678901234 }
const TEXT = 'héllo wörld ✓ 🎉'

module.exports = {
  transactionsAndDuplicates, killQuery, ER_DUP_ENTRY, ER_PARSE_ERROR, ER_NO_SUCH_TABLE,
  ER_UNKNOWN_STMT_HANDLER, ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, blob, DOC, TEXT
}
