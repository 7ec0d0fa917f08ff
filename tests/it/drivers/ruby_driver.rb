# frozen_string_literal: true

# Ruby's database drivers as Rails applications use them, through switchyard: the `pg` gem
# (ruby-pg, on libpq: ActiveRecord's PostgreSQL adapter) and the `mysql2` gem (on MariaDB
# Connector/C: ActiveRecord's Mysql2 adapter), Debian's packages of both. Run by
# tests/it/drivers.rs as `ruby ruby_driver.rb pg|mysql2`; reads the same environment as
# common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE, SY_TARGET,
# SY_POOL_MODE) and reports the same way: one line per check, exit status 1 when any failed.
# SY_TRACE set to a check's name (or to `all`): each pg gem connection that check opens
# writes libpq's protocol trace (conn.trace) to a file of its own in the temporary
# directory, named on stderr.
#
# What ActiveRecord does that other clients do not. On PostgreSQL: every connection runs
# the adapter's configure_connection (client encoding, client_min_messages,
# standard_conforming_strings, intervalstyle, timezone) as separate SET statements;
# prepared statements are named a1, a2 … counted from 1 in every connection (so clients
# sharing a server connection use the same names for different texts), prepared with
# Parse/Sync only and executed with exec_prepared; a "cached plan must not change result
# type" failure (0A000 from RevalidateCachedQuery) outside a transaction makes it send SQL
# `DEALLOCATE aN` and prepare the text again under a new name, and in a transaction it is
# raised; savepoints are SQL `SAVEPOINT active_record_1`; `reset!` sends DISCARD ALL. On
# MySQL: the client logs in with CLIENT_FOUND_ROWS (affected rows count matched rows) and
# runs one `SET NAMES …, @@SESSION.sql_mode = CONCAT(@@sql_mode, …), …` statement;
# transactions and savepoints are SQL; fixtures load through multi-statements switched on
# with COM_SET_OPTION for the batch.

require "bigdecimal"
require "date"
require "io/wait"
require "json"
require "tmpdir"

$stdout.sync = true
Thread.report_on_exception = false

def env(name, fallback)
  value = ENV[name]
  value.nil? || value.empty? ? fallback : value
end

HOST = env("SY_HOST", "127.0.0.1")
PORT = Integer(env("SY_PORT", "0"))
USER = env("SY_USER", "app")
PASSWORD = env("SY_PASSWORD", "app-secret")
DB = env("SY_DB", "")
SSLMODE = env("SY_SSLMODE", "")
# "proxy": through switchyard (reads go to replicas); "server": the primary itself.
TARGET = env("SY_TARGET", "proxy")
THROUGH_PROXY = TARGET == "proxy"
# Whether a client's statements all run on one server connection (see common.py).
ONE_CONNECTION = !THROUGH_PROXY || env("SY_POOL_MODE", "transaction") == "session"
# A check still running after this long prints every thread's stack and ends the script.
CHECK_TIMEOUT = 60
TRACE = env("SY_TRACE", "")

# Check name -> why it fails through the proxy: a defect reported, not fixed yet. Such a
# check still runs; through the proxy its failure is printed with the reason and does not
# fail the script, and once it passes the script fails, asking for the entry to be removed
# (as in common.py).
KNOWN_FAILURES = {}.freeze

class CheckFailed < StandardError; end

def expect(condition, message)
  raise CheckFailed, message unless condition
end

# Runs the block, which must raise `klass`; returns the error. `message` says what was
# accepted when nothing is raised.
def expect_raise(klass, message)
  yield
rescue klass => e
  e
else
  raise CheckFailed, message
end

def expect_eq(got, want, what)
  raise CheckFailed, "#{what}: got #{got.inspect}, want #{want.inspect}" unless got == want
end

def monotonic
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Calls the block until it gives `want` (a read of what another session wrote: the replicas
# apply it a moment later), for up to 30 seconds.
def poll_until(want, what)
  deadline = monotonic + 30
  loop do
    got = yield
    return if got == want
    raise CheckFailed, "#{what} still gives #{got.inspect}, want #{want.inspect}" if monotonic > deadline

    sleep 0.02
  end
end

# Runs the block in `n` threads (given 0…n-1) and raises the first failure of any.
def in_threads(n, &block)
  threads = Array.new(n) { |i| Thread.new(i, &block) }
  errors = threads.each_with_index.filter_map do |t, i|
    t.join
    nil
  rescue StandardError => e
    "thread #{i}: #{e.class}: #{e.message}"
  end
  raise CheckFailed, errors.join("; ") unless errors.empty?
end

# Runs `block` while another thread calls `interrupt` every 100 ms until the block ends;
# gives the block's error (or nil) and raises when `interrupt` itself failed.
def interrupting(interrupt)
  done = false
  failures = []
  thread = Thread.new do
    until done
      sleep 0.1
      break if done

      begin
        interrupt.call
      rescue StandardError => e
        failures << e
        break
      end
    end
  end
  error = nil
  begin
    yield
  rescue StandardError => e
    error = e
  ensure
    done = true
    thread.join
  end
  raise CheckFailed, "the interrupting call failed: #{failures[0].class}: #{failures[0].message}" unless failures.empty?

  error
end

def run_checks(driver, checks)
  puts "#{driver}: target=#{TARGET} #{HOST}:#{PORT} db=#{DB}"
  failed = []
  checks.each do |name, check|
    $check = name
    started = monotonic
    watchdog = Thread.new do
      sleep CHECK_TIMEOUT
      puts "  FAIL #{name}: still running after #{CHECK_TIMEOUT}s; threads:"
      Thread.list.each do |t|
        puts "    #{t.inspect}"
        (t.backtrace || []).each { |line| puts "      at #{line}" }
      end
      $stdout.flush
      exit!(1)
    end
    known = THROUGH_PROXY ? KNOWN_FAILURES[name] : nil
    begin
      method(check).call
      if known
        failed << name
        puts "  FAIL #{name}: listed as a known failure (#{known}) but passes now: remove it from KNOWN_FAILURES"
      else
        puts format("  ok   %s (%.2fs)", name, monotonic - started)
      end
    rescue StandardError => e
      if known
        puts "  KNOWN FAILURE #{name}: #{e.class}: #{e.message}\n    (not counted: #{known})"
      else
        failed << name
        puts "  FAIL #{name}: #{e.class}: #{e.message}"
        (e.backtrace || []).first(12).each { |line| puts "    #{line}" }
      end
    ensure
      watchdog.kill
      watchdog.join
    end
  end
  unless failed.empty?
    puts "#{driver}: #{failed.size} of #{checks.size} checks FAILED: #{failed.join(', ')}"
    return 1
  end
  puts "#{driver}: all #{checks.size} checks passed"
  0
end

# ---- PostgreSQL: the pg gem ----

# A connection as ActiveRecord's PostgreSQL adapter opens it (`encoding: unicode` as in the
# database.yml Rails generates), with its configure_connection.
def pg_connect(rails: true)
  params = { host: HOST, port: PORT, user: USER, password: PASSWORD, dbname: DB, connect_timeout: 10 }
  params[:sslmode] = SSLMODE unless SSLMODE.empty?
  conn = PG.connect(params)
  if TRACE == "all" || TRACE == $check
    $traces = ($traces || 0) + 1
    path = File.join(Dir.tmpdir, "ruby_pg_trace_#{Process.pid}_#{$traces}.log")
    warn "#{$check}: connection #{$traces} (backend pid #{conn.backend_pid}) traced to #{path}"
    conn.trace(File.open(path, "w"))
  end
  if rails
    conn.set_client_encoding("unicode")
    conn.exec("SET client_min_messages TO 'warning'")
    conn.exec("SET standard_conforming_strings = on")
    conn.exec("SET intervalstyle = iso_8601")
    conn.exec("SET SESSION timezone TO 'UTC'")
  end
  conn
end

# Opens `n` connections (a plain call: one), yields them and closes them.
def with_pg(n = nil, rails: true)
  conns = Array.new(n || 1) { pg_connect(rails: rails) }
  yield(n ? conns : conns[0])
ensure
  conns&.each(&:close)
end

def pg_one(conn, sql, params = nil)
  result = params ? conn.exec_params(sql, params) : conn.exec(sql)
  result.ntuples.zero? ? nil : result.getvalue(0, 0)
end

class Rollback < StandardError; end

# conn.transaction (BEGIN … ROLLBACK when the block raises) of a block that is rolled back.
def rolled_back(conn)
  conn.transaction do
    yield
    raise Rollback
  end
rescue Rollback
  expect_eq(conn.transaction_status, PG::PQTRANS_IDLE, "the status after the rollback")
end

def sqlstate(error)
  error.respond_to?(:result) && error.result ? error.result.error_field(PG::PG_DIAG_SQLSTATE) : nil
end

# What a statement did, as a comparable string: its rows, or its error's SQLSTATE (and for
# 0A000 the server routine that raised it, which ActiveRecord reads).
def pg_outcome
  "rows #{yield.values.inspect}"
rescue PG::Error => e
  code = sqlstate(e)
  code += " #{e.result.error_field(PG::PG_DIAG_SOURCE_FUNCTION)}" if code == "0A000"
  "error #{code}"
end

# Waits until a fresh session's read (on a replica, through the proxy) of `sql` gives `want`.
def pg_await_replicated(sql, want)
  with_pg(rails: false) { |conn| poll_until(want, sql) { pg_one(conn, sql) } }
end

# ActiveRecord's statement pool for PostgreSQL: one named statement per text and
# connection, named a1, a2 … from a counter of the connection's; exec_cache's retry after a
# cached-plan failure outside a transaction (DEALLOCATE, then prepare again under the next
# name); in a transaction the failure is raised (PreparedStatementCacheExpired).
class RailsStatements
  attr_reader :names

  def initialize(conn)
    @conn = conn
    @counter = 0
    @names = {}
  end

  def exec(sql, binds = [])
    name = (@names[sql] ||= prepare(sql))
    @conn.exec_prepared(name, binds)
  rescue PG::FeatureNotSupported => e
    raise unless e.result.error_field(PG::PG_DIAG_SOURCE_FUNCTION) == "RevalidateCachedQuery"
    raise unless @conn.transaction_status == PG::PQTRANS_IDLE

    @conn.exec("DEALLOCATE #{@names.delete(sql)}")
    retry
  end

  def prepare(sql)
    @counter += 1
    name = "a#{@counter}"
    @conn.prepare(name, sql)
    name
  end
end

def pg_check_connect
  with_pg do |conn|
    expect_eq(pg_one(conn, "SELECT current_user"), USER, "current_user")
    expect(conn.server_version >= 150_000, "server version #{conn.server_version}")
    expect_eq(conn.parameter_status("server_encoding"), "UTF8", "server_encoding")
    # What configure_connection set, as the server reported it (ParameterStatus).
    expect_eq(%w[client_encoding TimeZone IntervalStyle standard_conforming_strings].map { |p| conn.parameter_status(p) },
              %w[UTF8 UTC iso_8601 on], "the reported settings")
    expect(conn.ssl_in_use?, "TLS is in use") unless SSLMODE.empty?
    pid = pg_one(conn, "/* switchyard:writer */ SELECT pg_backend_pid()").to_i
    expect(!ONE_CONNECTION || pid == conn.backend_pid,
           "the pid the client was told (#{conn.backend_pid}) is its writer connection's (#{pid})")
    expect_eq(conn.transaction_status, PG::PQTRANS_IDLE, "transaction status")
  end
end

def pg_check_setup
  with_pg do |conn|
    conn.exec("DROP TABLE IF EXISTS items, bins, copied, shapes, posts")
    conn.exec("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))")
    conn.exec("CREATE TABLE bins (id int PRIMARY KEY, b bytea, n text)")
    conn.exec("CREATE TABLE copied (id int, name text, data bytea)")
    conn.exec("CREATE TABLE posts (id bigserial PRIMARY KEY, title character varying NOT NULL, " \
              "created_at timestamp(6) NOT NULL)")
  end
  pg_await_replicated("SELECT to_regclass('posts') IS NOT NULL", "t")
end

# ActiveRecord without prepared statements (`prepared_statements: false`) and for every
# statement it does not cache: exec_params, the unnamed statement.
def pg_check_exec_params
  with_pg do |conn|
    conn.type_map_for_results = PG::BasicTypeMapForResults.new(conn)
    id = conn.exec_params('INSERT INTO "posts" ("title", "created_at") VALUES ($1, $2) RETURNING "id"',
                          ["héllo wörld ✓", "2024-02-29 12:34:56.789012"]).getvalue(0, 0)
    expect_eq(id, 1, "INSERT … RETURNING id")
    row = conn.exec_params('SELECT "posts".* FROM "posts" WHERE "posts"."id" = $1 LIMIT $2', [id, 1]).values
    expect_eq(row, [[1, "héllo wörld ✓", Time.utc(2024, 2, 29, 12, 34, 56.789012r)]], "the post")
    expect_eq(row[0][1].encoding, Encoding::UTF_8, "the encoding of text")
    row = conn.exec_params("SELECT $1::int + 1, $2::numeric(10,2), $3::bool, $4::float8, $5::int[], $6::date, " \
                           "$7::jsonb, $8::text, NULL::int, $9::timestamptz",
                           [41, "1.50", true, 1.5, "{1,NULL,3}", "2024-02-29", '{"k": [1, null, "é"]}', nil,
                            "2024-02-29 12:34:56+01"]).values[0]
    expect_eq(row, [42, BigDecimal("1.50"), true, 1.5, [1, nil, 3], Date.new(2024, 2, 29), { "k" => [1, nil, "é"] },
                    nil, nil, Time.utc(2024, 2, 29, 11, 34, 56)], "decoded types")
    # bytea as a binary parameter, read back in text and in binary format.
    blob = (0..255).map(&:chr).join.b * 64
    conn.exec_params("INSERT INTO bins VALUES ($1, $2, $3)", [1, { value: blob, format: 1 }, nil])
    [0, 1].each do |format|
      got = conn.exec_params("SELECT b, n FROM bins WHERE id = $1", [1], format)
      expect_eq(got.getvalue(0, 0), blob, "bytea read in format #{format}")
      expect(got.getisnull(0, 1), "a NULL read in format #{format}")
    end
    expect_eq(conn.exec_params("SELECT $1::text, $2::int, NULL::bytea", [nil, nil]).values, [[nil, nil, nil]], "NULLs")
    # Errors of unnamed statements, and the session after them.
    e = expect_raise(PG::DivisionByZero, "division by zero accepted") do
      conn.exec_params("SELECT 1 / $1::int", [0])
    end
    expect_eq(sqlstate(e), "22012", "SQLSTATE of a division by zero")
    e = expect_raise(PG::UndefinedTable, "a missing table accepted") do
      conn.exec_params("SELECT * FROM no_such_table WHERE id = $1", [1])
    end
    expect_eq(sqlstate(e), "42P01", "SQLSTATE of a missing table")
    expect_eq(conn.exec_params("SELECT $1::text || 'x'", ["a'b"]).getvalue(0, 0), "a'bx", "the session after errors")
  end
end

# A client's named statements a1, a2 …: prepared once, executed many times, many alive at
# once.
def pg_check_prepared_statements
  with_pg do |conn|
    statements = RailsStatements.new(conn)
    20.times do |i|
      r = statements.exec('INSERT INTO "items" ("id", "name", "price") VALUES ($1, $2, $3)',
                          [i, "item#{i}", format("%.2f", 1.5 * i)])
      expect_eq(r.cmd_tuples, 1, "insert #{i}")
    end
    20.times do |i|
      row = statements.exec('SELECT "items"."name", "items"."price" FROM "items" WHERE "items"."id" = $1', [i]).values
      expect_eq(row, [["item#{i}", format("%.2f", 1.5 * i)]], "row #{i}")
    end
    texts = Array.new(30) { |k| "SELECT $1::int + #{k}" }
    6.times do |round|
      texts.each_with_index do |sql, k|
        expect_eq(statements.exec(sql, [round]).getvalue(0, 0), (round + k).to_s, "statement #{k} round #{round}")
      end
    end
    expect_eq(statements.names.values.first(3), %w[a1 a2 a3], "the names ActiveRecord gave")
  end
end

# Preparing a name the connection has already: 42P05, and the statement stays as it was.
def pg_check_name_prepared_twice
  with_pg do |conn|
    conn.prepare("a1", "SELECT $1::int + 1")
    expect_eq(conn.exec_prepared("a1", [1]).getvalue(0, 0), "2", "a1")
    outcome = pg_outcome { conn.prepare("a1", "SELECT 'another text'") }
    after = pg_outcome { conn.exec_prepared("a1", [1]) }
    expect_eq([outcome, after], ["error 42P05", 'rows [["2"]]'],
              "Parse of a name the connection has (a1), then a1 executed")
  end
end

# A Parse the server failed (a syntax error; any Parse in a failed transaction) prepares
# nothing: executing the name fails with 26000, and the name can be prepared afterwards.
# (ActiveRecord caches no name whose prepare failed, and never uses it again.)
def pg_check_failed_parse_prepares_nothing
  with_pg do |conn|
    outcomes = [pg_outcome { conn.prepare("a1", "SELEC 1") }]
    outcomes << pg_outcome { conn.exec_prepared("a1") }
    conn.exec("BEGIN")
    outcomes << pg_outcome { conn.exec("SELECT 1/0") }
    outcomes << pg_outcome { conn.prepare("a2", "SELECT 'in a failed transaction'") }
    conn.exec("ROLLBACK")
    outcomes << pg_outcome { conn.exec_prepared("a2") }
    expect_eq(outcomes, ["error 42601", "error 26000", "error 22012", "error 25P02", "error 26000"],
              "Parse a1 'SELEC 1', execute a1; BEGIN, SELECT 1/0, Parse a2, ROLLBACK, execute a2")
    conn.prepare("a1", "SELECT 'a1 at last'")
    conn.prepare("a2", "SELECT 'a2 at last'")
    expect_eq([conn.exec_prepared("a1").getvalue(0, 0), conn.exec_prepared("a2").getvalue(0, 0)],
              ["a1 at last", "a2 at last"], "a1 and a2 prepared after their failed Parses")
  end
end

# Eight connections, each with ActiveRecord's names a1, a2 for texts of its own (of other
# shapes: one column or two, text or int), executed in turns from one thread, then from a
# thread each at once.
def pg_check_many_clients_same_names
  pg_await_replicated("SELECT count(*) FROM items WHERE id < 20", "20")
  with_pg(8) do |conns|
    texts = Array.new(8) do |c|
      by_id = "SELECT name, #{c} AS client FROM items WHERE id = $1::int + #{c}"
      times = "SELECT $1::int * #{c}"
      c.even? ? [by_id, times] : [times, by_id]
    end
    pools = conns.map { |conn| RailsStatements.new(conn) }
    check = lambda do |c, round|
      texts[c].each do |sql|
        got = pools[c].exec(sql, [round]).values
        want = sql.start_with?("SELECT name") ? [["item#{round + c}", c.to_s]] : [[(round * c).to_s]]
        expect_eq(got, want, "client #{c} round #{round}: #{sql}")
      end
    end
    12.times { |round| 8.times { |c| check.call(c, round) } }
    expect_eq(pools.map { |p| p.names.values }.uniq, [%w[a1 a2]], "every client's names")
    in_threads(8) { |c| 40.times { |i| check.call(c, i % 12) } }
  end
end

# SQL DEALLOCATE of a1, then a1 prepared again with another text; a statement prepared in a
# transaction that rolls back (prepared statements are not transactional).
def pg_check_deallocate_and_prepare_again
  with_pg(3) do |(a, b, c)|
    [a, b, c].each_with_index { |conn, i| conn.prepare("a1", "SELECT $1::int + #{i * 100}") }
    expect_eq(a.exec_prepared("a1", [1]).getvalue(0, 0), "1", "a's a1")
    a.exec("DEALLOCATE a1")
    e = expect_raise(PG::InvalidSqlStatementName, "a deallocated statement ran") do
      a.exec_prepared("a1", [1])
    end
    expect_eq(sqlstate(e), "26000", "SQLSTATE of a deallocated statement")
    expect_eq(b.exec_prepared("a1", [1]).getvalue(0, 0), "101", "b's a1 after a's DEALLOCATE")
    a.prepare("a1", "SELECT 'again: ' || $1::text, 2 AS two")
    5.times do |i|
      expect_eq(a.exec_prepared("a1", [i]).values, [["again: #{i}", "2"]], "a's new a1")
      expect_eq(b.exec_prepared("a1", [i]).getvalue(0, 0), (i + 100).to_s, "b's a1")
      expect_eq(c.exec_prepared("a1", [i]).getvalue(0, 0), (i + 200).to_s, "c's a1")
    end
    # Prepared in a transaction that rolls back: the statement stays.
    rolled_back(b) do
      b.prepare("a2", "SELECT $1::text || ' from b''s a2'")
      expect_eq(b.exec_prepared("a2", ["in"]).getvalue(0, 0), "in from b's a2", "a2 in the transaction")
    end
    5.times do |i|
      expect_eq(b.exec_prepared("a2", [i]).getvalue(0, 0), "#{i} from b's a2", "a2 after the rollback")
      expect_eq(c.exec_prepared("a1", [i]).getvalue(0, 0), (i + 200).to_s, "c's a1")
    end
  end
end

# SQL DEALLOCATE in a transaction, of a statement prepared and run (a read) before it: what
# ActiveRecord's statement pool sends when it evicts its oldest statement (past
# `statement_limit`, 1000 by default) while caching a new one in a transaction. The server
# drops it (and keeps it dropped when the transaction rolls back: prepared statements are
# not transactional). Names no other check uses (a41, a42 …), so that no connection of the
# proxy's holds them from another client.
def pg_check_deallocate_in_transaction
  with_pg do |conn|
    conn.prepare("a41", "SELECT $1::int * 41")
    3.times { |i| expect_eq(conn.exec_prepared("a41", [i]).getvalue(0, 0), (i * 41).to_s, "a41 before") }
    outcomes = []
    conn.exec("BEGIN")
    conn.exec("INSERT INTO items VALUES (500, 'before the eviction', 1)")
    outcomes << pg_outcome { conn.exec("DEALLOCATE a41") }
    outcomes << pg_outcome { conn.prepare("a42", "SELECT name FROM items WHERE id = $1") }
    outcomes << pg_outcome { conn.exec_prepared("a42", [500]) }
    outcomes << pg_outcome { conn.exec("COMMIT") }
    outcomes << pg_outcome { conn.exec_prepared("a41", [1]) }
    expect_eq(outcomes, ["rows []", "rows []", 'rows [["before the eviction"]]', "rows []", "error 26000"],
              "BEGIN; INSERT; DEALLOCATE a41 (a41 prepared and run before the transaction); " \
              "Parse a42; execute a42; COMMIT; then execute a41")
    # In a transaction that rolls back: the statement is gone all the same.
    conn.prepare("a43", "SELECT $1::int * 43")
    3.times { |i| expect_eq(conn.exec_prepared("a43", [i]).getvalue(0, 0), (i * 43).to_s, "a43 before") }
    conn.exec("BEGIN")
    outcomes = [pg_outcome { conn.exec("DEALLOCATE a43") }]
    conn.exec("ROLLBACK")
    outcomes << pg_outcome { conn.exec_prepared("a43", [1]) }
    expect_eq(outcomes, ["rows []", "error 26000"],
              "BEGIN; DEALLOCATE a43 (prepared and run before); ROLLBACK; then execute a43")
  end
end

# DDL between executions of a prepared `SELECT *` (on the writer, where the DDL is at once):
# what the server does (0A000 from RevalidateCachedQuery, for good: the statement's result
# type was fixed when it was prepared), and ActiveRecord's answer to it.
def pg_check_ddl_between_executions
  with_pg(2) do |(conn, ddl)|
    ddl.exec("CREATE TABLE shapes (id int PRIMARY KEY, a int)")
    ddl.exec("INSERT INTO shapes VALUES (1, 10)")
    sql = "SELECT /* switchyard:writer */ * FROM shapes WHERE id = $1"
    conn.prepare("a1", sql)
    outcomes = []
    3.times { outcomes << pg_outcome { conn.exec_prepared("a1", [1]) } }
    ddl.exec("ALTER TABLE shapes ADD COLUMN b text DEFAULT 'new'")
    2.times { outcomes << pg_outcome { conn.exec_prepared("a1", [1]) } }
    # In a transaction: the error, then 25P02 until the rollback.
    conn.exec("BEGIN")
    outcomes << pg_outcome { conn.exec_prepared("a1", [1]) }
    outcomes << pg_outcome { conn.exec("SELECT 1") }
    conn.exec("ROLLBACK")
    # Prepared again after the DDL: the new shape.
    conn.exec("DEALLOCATE a1")
    conn.prepare("a1", sql)
    outcomes << pg_outcome { conn.exec_prepared("a1", [1]) }
    expect_eq(outcomes, ["rows [[\"1\", \"10\"]]"] * 3 + ["error 0A000 RevalidateCachedQuery"] * 3 +
                        ["error 25P02", "rows [[\"1\", \"10\", \"new\"]]"], "what the statement did")
    # ActiveRecord's exec_cache: outside a transaction it prepares again by itself and
    # retries; in a transaction it raises, and the statement works after the rollback.
    conn.exec("DEALLOCATE a1")
    statements = RailsStatements.new(conn)
    expect_eq(statements.exec(sql, [1]).values, [%w[1 10 new]], "ActiveRecord's first execution")
    ddl.exec("ALTER TABLE shapes ADD COLUMN c int DEFAULT 7")
    expect_eq(statements.exec(sql, [1]).values, [%w[1 10 new 7]], "ActiveRecord's execution after DDL")
    expect_eq(statements.names[sql], "a2", "the name ActiveRecord prepared again under")
    ddl.exec("ALTER TABLE shapes ADD COLUMN d int DEFAULT 8")
    e = expect_raise(PG::FeatureNotSupported, "a stale statement ran in a transaction") do
      conn.transaction { statements.exec(sql, [1]) }
    end
    expect_eq(e.result.error_field(PG::PG_DIAG_MESSAGE_PRIMARY), "cached plan must not change result type",
              "the error in a transaction")
    expect_eq(conn.transaction_status, PG::PQTRANS_IDLE, "rolled back")
    expect_eq(statements.exec(sql, [1]).values, [%w[1 10 new 7 8]], "ActiveRecord's execution after the rollback")
    expect_eq(statements.names[sql], "a3", "the name after the rollback")
  end
end

# ActiveRecord's transactions: BEGIN/COMMIT/ROLLBACK and SAVEPOINT active_record_1 as SQL;
# an error fails the transaction (25P02) until the rollback.
def pg_check_transactions
  with_pg do |conn|
    conn.transaction { conn.exec_params("INSERT INTO items VALUES ($1, 'committed', 1)", [100]) }
    rolled_back(conn) { conn.exec_params("INSERT INTO items VALUES ($1, 'rolled back', 1)", [101]) }
    conn.transaction do
      expect_eq(conn.transaction_status, PG::PQTRANS_INTRANS, "status in a transaction")
      conn.exec("INSERT INTO items VALUES (102, 'outer', 1)")
      conn.exec("SAVEPOINT active_record_1")
      conn.exec("INSERT INTO items VALUES (103, 'inner', 1)")
      conn.exec("ROLLBACK TO SAVEPOINT active_record_1")
      conn.exec("SAVEPOINT active_record_1")
      conn.exec("INSERT INTO items VALUES (104, 'inner kept', 1)")
      conn.exec("RELEASE SAVEPOINT active_record_1")
    end
    ids = conn.exec("SELECT id FROM items WHERE id BETWEEN 100 AND 199 ORDER BY id").column_values(0)
    expect_eq(ids, %w[100 102 104], "committed rows")
    # A failed statement inside a savepoint: rolled back to it, the transaction goes on.
    conn.transaction do
      conn.exec("SAVEPOINT active_record_1")
      expect_raise(PG::UniqueViolation, "a duplicate key accepted") do
        conn.exec("INSERT INTO items VALUES (100, 'duplicate', 1)")
      end
      conn.exec("ROLLBACK TO SAVEPOINT active_record_1")
      conn.exec("INSERT INTO items VALUES (105, 'after the savepoint', 1)")
    end
    expect_eq(pg_one(conn, "SELECT name FROM items WHERE id = 105"), "after the savepoint", "the savepoint's transaction")
    conn.exec("BEGIN")
    conn.exec("INSERT INTO items VALUES (300, 'x', 1)")
    e = expect_raise(PG::UniqueViolation, "a duplicate key accepted") do
      conn.exec("INSERT INTO items VALUES (300, 'x', 1)")
    end
    expect_eq(sqlstate(e), "23505", "SQLSTATE of a duplicate key")
    expect_eq(e.result.error_field(PG::PG_DIAG_CONSTRAINT_NAME), "items_pkey", "constraint name")
    expect_eq(conn.transaction_status, PG::PQTRANS_INERROR, "status in a failed transaction")
    e = expect_raise(PG::InFailedSqlTransaction, "a query in a failed transaction ran") do
      conn.exec("SELECT 1")
    end
    expect_eq(sqlstate(e), "25P02", "SQLSTATE in a failed transaction")
    conn.exec("ROLLBACK")
    expect_eq(conn.transaction_status, PG::PQTRANS_IDLE, "status after the rollback")
    expect_eq(pg_one(conn, "SELECT count(*) FROM items WHERE id = 300"), "0", "rolled back")
  end
end

def pg_check_copy
  with_pg do |conn|
    rows = Array.new(2000) { |i| [i, "name #{i}\t\\ \n", i.zero? ? nil : (0...(i % 256)).map(&:chr).join.b] }
    encoder = PG::TextEncoder::CopyRow.new(type_map: PG::TypeMapByColumn.new([nil, nil, PG::TextEncoder::Bytea.new]))
    result = conn.copy_data("COPY copied (id, name, data) FROM STDIN", encoder) do
      rows.each { |row| conn.put_copy_data(row) }
    end
    expect_eq(result.cmd_tuples, 2000, "rows copied in")
    decoder = PG::TextDecoder::CopyRow.new(type_map: PG::TypeMapByColumn.new(
      [PG::TextDecoder::Integer.new, nil, PG::TextDecoder::Bytea.new]
    ))
    out = []
    conn.copy_data("COPY (SELECT id, name, data FROM copied ORDER BY id) TO STDOUT", decoder) do
      while (row = conn.get_copy_data)
        out << row
      end
    end
    expect_eq(out.size, 2000, "rows copied out")
    expect_eq(out, rows, "the rows copied out")
    # An error in the middle of COPY FROM: the server's error, and the session goes on.
    e = expect_raise(PG::UniqueViolation, "a duplicate in COPY accepted") do
      conn.copy_data("COPY items (id, name, price) FROM STDIN") do
        conn.put_copy_data("900\ta\t1\n900\tdup\t1\n")
      end
    end
    expect_eq(sqlstate(e), "23505", "SQLSTATE of a failed COPY")
    expect_eq(pg_one(conn, "SELECT count(*) FROM items WHERE id = 900"), "0", "the failed COPY left nothing")
  end
end

# LISTEN and wait_for_notify, as ActionCable's PostgreSQL adapter uses them.
def pg_check_listen_notify
  with_pg(2) do |(listener, notifier)|
    listener.exec("LISTEN chan")
    notifier.exec("NOTIFY chan, 'hello'")
    notifier.exec_params("SELECT pg_notify('chan', $1)", ["second"])
    got = []
    deadline = monotonic + 10
    while got.size < 2 && monotonic < deadline
      listener.wait_for_notify(1) { |channel, pid, payload| got << [channel, payload, pid] }
    end
    expect_eq(got.map { |n| n[0, 2] }, [%w[chan hello], %w[chan second]], "notifications")
    expect(!ONE_CONNECTION || got[0][2] == notifier.backend_pid,
           "the notifying pid #{got[0][2]} is the pid the notifier was told (#{notifier.backend_pid})")
    # From a thread waiting while another thread notifies.
    waiter = Thread.new do
      seen = nil
      listener.wait_for_notify(10) { |channel, _, payload| seen = [channel, payload] }
      seen
    end
    notifier.exec("NOTIFY chan, 'threaded'")
    expect_eq(waiter.value, %w[chan threaded], "a notification to a waiting thread")
    listener.exec("UNLISTEN *")
    expect_eq(pg_one(listener, "SELECT 1"), "1", "the listener after UNLISTEN")
  end
end

# conn.cancel (a CancelRequest with the key from BackendKeyData) from another thread.
def pg_check_cancel
  [["a read (on a replica)", false], ["a transaction (on the writer)", true]].each do |name, in_transaction|
    with_pg do |conn|
      conn.exec("BEGIN") if in_transaction
      started = monotonic
      error = interrupting(-> { (why = conn.cancel) && raise(CheckFailed, "cancel: #{why}") }) do
        conn.exec("SELECT pg_sleep(60)")
      end
      expect(error.is_a?(PG::QueryCanceled),
             "pg_sleep(60) in #{name} was not cancelled (#{(monotonic - started).round(1)}s): #{error.inspect}")
      expect_eq(sqlstate(error), "57014", "SQLSTATE of a cancelled query")
      conn.exec("ROLLBACK") if in_transaction
      expect_eq(pg_one(conn, "SELECT 7"), "7", "the session after a cancel in #{name}")
    end
  end
end

# The asynchronous API: send_query/get_result (several results of one query),
# send_query_params, send_prepare/send_query_prepared.
def pg_check_async
  with_pg do |conn|
    conn.send_query("SELECT 1; SELECT 2, 3; INSERT INTO items VALUES (400, 'async', 1)")
    results = []
    while (r = conn.get_result)
      r.check
      results << [r.result_status, r.values]
    end
    expect_eq(results, [[PG::PGRES_TUPLES_OK, [["1"]]], [PG::PGRES_TUPLES_OK, [%w[2 3]]], [PG::PGRES_COMMAND_OK, []]],
              "every result")
    conn.send_query_params("SELECT $1::int * 2", [21])
    expect_eq(conn.get_last_result.getvalue(0, 0), "42", "send_query_params")
    conn.send_prepare("a1", "SELECT name FROM items WHERE id = $1")
    conn.get_last_result.check
    conn.send_query_prepared("a1", [400])
    until conn.is_busy == false
      conn.socket_io.wait_readable(10)
      conn.consume_input
    end
    expect_eq(conn.get_last_result.values, [["async"]], "send_query_prepared")
    conn.send_query("SELECT * FROM no_such_table")
    e = expect_raise(PG::UndefinedTable, "a missing table accepted") do
      conn.get_last_result
    end
    expect_eq(sqlstate(e), "42P01", "SQLSTATE of an async error")
    expect_eq(pg_one(conn, "SELECT 8"), "8", "the session after the async API")
  end
end

def pg_check_single_row_mode
  with_pg do |conn|
    conn.send_query("SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i")
    conn.set_single_row_mode
    n = 0
    sum = 0
    bytes = 0
    while (r = conn.get_result)
      r.check
      case r.result_status
      when PG::PGRES_SINGLE_TUPLE
        n += 1
        sum += r.getvalue(0, 0).to_i
        bytes += r.getvalue(0, 1).bytesize
      when PG::PGRES_TUPLES_OK
        expect_eq(r.ntuples, 0, "rows of the final result")
      else
        raise CheckFailed, "result status #{r.res_status(r.result_status)}"
      end
    end
    expect_eq([n, sum, bytes], [20_000, 200_010_000, 20_000 * 1024], "rows, sum and bytes in single-row mode")
    # The same through Result#stream_each.
    conn.send_query("SELECT i FROM generate_series(1, 20000) i")
    conn.set_single_row_mode
    streamed = 0
    conn.get_result.stream_each { |_row| streamed += 1 }
    expect_eq(streamed, 20_000, "rows of stream_each")
    expect_eq(pg_one(conn, "SELECT 9"), "9", "the session after single-row mode")
  end
end

# The settings of configure_connection hold wherever the session's statements run: on
# replicas, in transactions, in every session, after many transactions.
def pg_check_rails_settings
  # On a reader (the hint: reads right after a COMMIT would go to the writer, for
  # read-your-writes), and on the writer in a transaction.
  settings = "SELECT /* switchyard:reader */ current_setting('IntervalStyle'), current_setting('TimeZone'), " \
             "current_setting('client_min_messages'), current_setting('client_encoding'), " \
             "interval '1 day 2 hours'::text, pg_is_in_recovery()"
  with_pg(4) do |conns|
    5.times do |round|
      conns.each_with_index do |conn, c|
        want = ["iso_8601", "UTC", "warning", "UTF8", "P1DT2H"]
        expect_eq(conn.exec(settings).values[0], want + [THROUGH_PROXY ? "t" : "f"], "client #{c} round #{round}")
        conn.transaction do
          expect_eq(conn.exec(settings).values[0], want + ["f"], "client #{c} round #{round} in a transaction")
        end
        conn.exec_params("SELECT $1::int", [round])
      end
    end
    expect_eq(pg_one(conns[0], "SELECT '2024-02-29 12:00:00+00'::timestamptz::text"), "2024-02-29 12:00:00+00",
              "timestamptz shown in UTC")
  end
end

# ActiveRecord's reset!: ROLLBACK when in a transaction, DISCARD ALL, then
# configure_connection again; the statement pool starts over.
def pg_check_rails_reset
  with_pg do |conn|
    conn.prepare("a1", "SELECT 'before reset'")
    expect_eq(conn.exec_prepared("a1").getvalue(0, 0), "before reset", "a1 before reset")
    settings = "SELECT current_setting('IntervalStyle'), current_setting('client_min_messages')"
    expect_eq(conn.exec(settings).values, [%w[iso_8601 warning]], "the settings before reset")
    conn.exec("BEGIN")
    conn.exec("ROLLBACK") unless conn.transaction_status == PG::PQTRANS_IDLE
    conn.exec("DISCARD ALL")
    expect_eq(pg_outcome { conn.exec_prepared("a1") }, "error 26000", "a1 after DISCARD ALL")
    expect_eq(conn.exec(settings).values, [%w[postgres notice]], "the settings after DISCARD ALL")
    conn.exec("SET client_min_messages TO 'warning'")
    conn.exec("SET standard_conforming_strings = on")
    conn.exec("SET intervalstyle = iso_8601")
    conn.exec("SET SESSION timezone TO 'UTC'")
    conn.prepare("a1", "SELECT 'after reset', current_setting('IntervalStyle'), current_setting('TimeZone')")
    3.times do
      expect_eq(conn.exec_prepared("a1").values, [%w[after\ reset iso_8601 UTC]], "a1 prepared again after reset")
    end
  end
end

def pg_check_routing
  with_pg do |conn|
    expect_eq(pg_one(conn, "SELECT pg_is_in_recovery()"), THROUGH_PROXY ? "t" : "f", "a fresh session's read")
    conn.transaction do
      expect_eq(pg_one(conn, "SELECT pg_is_in_recovery()"), "f", "a transaction runs on the primary")
    end
    conn.exec_params('INSERT INTO "items" ("id", "name", "price") VALUES ($1, $2, $3)', [6000, "routed", 1])
    expect_eq(pg_one(conn, 'SELECT "items"."name" FROM "items" WHERE "items"."id" = $1', [6000]), "routed",
              "read your write")
    conn.prepare("a1", 'SELECT "items"."name" FROM "items" WHERE "items"."id" = $1')
    conn.exec_params("UPDATE items SET name = 'updated' WHERE id = $1", [6000])
    expect_eq(conn.exec_prepared("a1", [6000]).getvalue(0, 0), "updated", "read your write with a named statement")
  end
end

PG_CHECKS = [
  ["connect", :pg_check_connect],
  ["setup", :pg_check_setup],
  ["exec_params", :pg_check_exec_params],
  ["prepared_statements", :pg_check_prepared_statements],
  ["name_prepared_twice", :pg_check_name_prepared_twice],
  ["failed_parse_prepares_nothing", :pg_check_failed_parse_prepares_nothing],
  ["many_clients_same_names", :pg_check_many_clients_same_names],
  ["deallocate_and_prepare_again", :pg_check_deallocate_and_prepare_again],
  ["deallocate_in_transaction", :pg_check_deallocate_in_transaction],
  ["ddl_between_executions", :pg_check_ddl_between_executions],
  ["transactions", :pg_check_transactions],
  ["copy", :pg_check_copy],
  ["listen_notify", :pg_check_listen_notify],
  ["cancel", :pg_check_cancel],
  ["async", :pg_check_async],
  ["single_row_mode", :pg_check_single_row_mode],
  ["rails_settings", :pg_check_rails_settings],
  ["rails_reset", :pg_check_rails_reset],
  ["routing", :pg_check_routing],
].freeze

# ---- MySQL: the mysql2 gem ----

ER_DUP_ENTRY = 1062
ER_QUERY_INTERRUPTED = 1317
ER_PARSE_ERROR = 1064

# The statement ActiveRecord's Mysql2 adapter runs on every new connection
# (configure_connection, with `encoding: utf8mb4` and the default strict mode).
RAILS_MYSQL_SET = "SET NAMES utf8mb4,  @@SESSION.sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'),  " \
                  "@@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483"

# A client as ActiveRecord's Mysql2 adapter opens it: FOUND_ROWS among the flags, then
# configure_connection's SET.
def my_connect(flags: 0, rails: true)
  opts = { host: HOST, port: PORT, username: USER, password: PASSWORD, database: DB, connect_timeout: 10,
           encoding: "utf8mb4", flags: Mysql2::Client::FOUND_ROWS | flags }
  # TLS, unverified. mysql2 0.5.3 on Connector/C ignores `ssl_mode: :required` (it warns that
  # the library cannot set it); any TLS option makes it call mysql_ssl_set, with which
  # Connector/C insists on TLS.
  opts[:sslverify] = false unless SSLMODE.empty?
  client = Mysql2::Client.new(opts)
  client.query(RAILS_MYSQL_SET) if rails
  client
end

def with_mysql(n = nil, **opts)
  clients = Array.new(n || 1) { my_connect(**opts) }
  yield(n ? clients : clients[0])
ensure
  clients&.each(&:close)
end

def my_one(client, sql)
  row = client.query(sql, as: :array).first
  row && row[0]
end

def my_await_replicated(sql, want)
  with_mysql(rails: false) { |client| poll_until(want, sql) { my_one(client, sql) } }
end

def my_check_connect
  with_mysql do |client|
    expect_eq(my_one(client, "SELECT CURRENT_USER()").split("@")[0], USER, "current user")
    expect_eq(my_one(client, "SELECT DATABASE()"), DB, "default database")
    version = my_one(client, "SELECT VERSION()")
    expect(version.include?("MariaDB"), "a MariaDB server: #{version}")
    expect_eq(client.server_info[:version].delete_prefix("5.5.5-"), version, "the greeting's version")
    expect(!client.ssl_cipher.to_s.empty?, "TLS is in use (cipher #{client.ssl_cipher.inspect})") unless SSLMODE.empty?
    expect(client.ping, "ping")
    client.query("BEGIN")
    id = my_one(client, "SELECT CONNECTION_ID()")
    expect(!ONE_CONNECTION || id == client.thread_id,
           "the greeting's connection id (#{client.thread_id}) is the writer's (#{id})")
    client.query("ROLLBACK")
  end
end

def my_check_setup
  with_mysql do |client|
    client.query("DROP TABLE IF EXISTS items, shapes, posts")
    client.query("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2)) ENGINE=InnoDB")
    client.query("CREATE TABLE `posts` (`id` bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, `title` varchar(10) NOT NULL, " \
                 "`body` longblob, `created_at` datetime(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
  end
  my_await_replicated("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() " \
                      "AND table_name = 'posts'", 1)
end

# ActiveRecord's default for mysql2: no server-side statements, values quoted with
# Mysql2::Client#escape into the text.
def my_check_queries
  with_mysql do |client|
    text = "it's \"quoted\" \\ ✓ 🎉\n\0end"
    expect_eq(client.query("SELECT '#{client.escape(text)}' AS s").to_a, [{ "s" => text }], "escaping")
    blob = (0..255).map(&:chr).join.b * 4096
    client.query("INSERT INTO `posts` (`title`, `body`, `created_at`) VALUES ('#{client.escape('héllo 🎉')}', " \
                 "x'#{blob.unpack1('H*')}', '2024-02-29 12:34:56.789012')")
    expect_eq([client.last_id, client.affected_rows], [1, 1], "last_id and affected_rows of an INSERT")
    row = client.query("SELECT `posts`.* FROM `posts` WHERE `posts`.`id` = 1 LIMIT 1").first
    expect_eq(row["title"], "héllo 🎉", "utf8mb4 text")
    expect_eq(row["title"].encoding, Encoding::UTF_8, "the encoding of text")
    expect_eq(row["body"].bytesize, blob.bytesize, "the size of a 1 MiB blob")
    expect_eq(row["body"] == blob, true, "a 1 MiB blob")
    expect_eq(row["created_at"].strftime("%F %T.%6N"), "2024-02-29 12:34:56.789012", "DATETIME(6)")
    # CLIENT_FOUND_ROWS (ActiveRecord's flag): an UPDATE counts the rows it matched.
    client.query("UPDATE `posts` SET `title` = 'héllo 🎉' WHERE `posts`.`id` = 1")
    expect_eq(client.affected_rows, 1, "affected rows of an UPDATE that changed nothing (FOUND_ROWS)")
    expect_eq(client.query("SELECT NULL AS n, 1.5 AS d, 42 AS i", as: :array).to_a, [[nil, BigDecimal("1.5"), 42]],
              "NULL and numbers")
    e = expect_raise(Mysql2::Error, "a title too long accepted (strict mode)") do
      client.query("INSERT INTO `posts` (`title`, `created_at`) VALUES ('#{'x' * 11}', NOW())")
    end
    expect_eq(e.error_number, 1406, "error of a value too long")
    e = expect_raise(Mysql2::Error, "a missing table accepted") do
      client.query("SELECT * FROM no_such_table")
    end
    expect_eq([e.error_number, e.sql_state], [1146, "42S02"], "error of a missing table")
    expect_eq(my_one(client, "SELECT 2"), 2, "the session after errors")
  end
end

# Server-side statements (COM_STMT_PREPARE, EXECUTE, CLOSE): `prepared_statements: true`.
def my_check_prepared_statements
  with_mysql do |client|
    ins = client.prepare("INSERT INTO items VALUES (?, ?, ?)")
    20.times do |i|
      ins.execute(i, "item#{i}", BigDecimal("1.5") * i)
      expect_eq(ins.affected_rows, 1, "insert #{i}")
    end
    ins.close
    sel = client.prepare("SELECT name, price FROM items WHERE id = ?")
    expect_eq([sel.param_count, sel.field_count, sel.fields], [1, 2, %w[name price]], "the statement's description")
    20.times do |i|
      expect_eq(sel.execute(i).to_a, [{ "name" => "item#{i}", "price" => BigDecimal("1.5") * i }], "row #{i}")
    end
    sel.close
    expect_raise(Mysql2::Error, "a closed statement ran") do
      sel.execute(1)
    end
    nil
    many = Array.new(30) { |k| client.prepare("SELECT ? + #{k}") }
    4.times do |round|
      many.each_with_index do |st, k|
        expect_eq(st.execute(round, as: :array).first, [round + k], "statement #{k} round #{round}")
      end
    end
    many.each(&:close)
    blob = (0..255).map(&:chr).join.b * 4096
    st = client.prepare("SELECT ?, ?, ?, ?, ?, ?")
    3.times do |round|
      row = st.execute(blob, "héllo 🎉", 2**62, 1.5, nil, Time.new(2024, 2, 29, 12, 34, 56), as: :array).first
      expect(row[0].b == blob, "a 1 MiB blob, round #{round}")
      expect_eq(row[1..4], ["héllo 🎉", 2**62, 1.5, nil], "types, round #{round}")
    end
    st.close
    expect_eq(my_one(client, "SELECT 3"), 3, "the session after the statements")
  end
end

# Eight clients, each with statements of its own texts, executed in turns, one client
# closing its statements and preparing others midway; then a thread each at once.
def my_check_prepared_many_clients
  my_await_replicated("SELECT COUNT(*) FROM items WHERE id < 20", 20)
  with_mysql(8) do |clients|
    prepare = lambda do |c|
      [clients[c].prepare("SELECT name, #{c} AS client FROM items WHERE id = ? + #{c}"),
       clients[c].prepare("SELECT ? * #{c}")]
    end
    statements = Array.new(8) { |c| prepare.call(c) }
    check = lambda do |c, round|
      by_id, times = statements[c]
      expect_eq(by_id.execute(round, as: :array).to_a, [["item#{round + c}", c]], "client #{c} round #{round}")
      expect_eq(times.execute(round, as: :array).first, [round * c], "client #{c} product, round #{round}")
    end
    10.times do |round|
      8.times { |c| check.call(c, round) }
      next unless round == 4

      statements[3].each(&:close)
      statements[3] = prepare.call(3)
    end
    in_threads(8) { |c| 30.times { |i| check.call(c, i % 10) } }
    statements.flatten.each(&:close)
  end
end

# ActiveRecord's transactions: BEGIN, COMMIT, ROLLBACK and savepoints as SQL; a duplicate
# key fails the statement, not the transaction.
def my_check_transactions
  with_mysql do |client|
    client.query("BEGIN")
    client.query("INSERT INTO items VALUES (100, 'committed', 1)")
    client.query("COMMIT")
    client.query("BEGIN")
    client.query("INSERT INTO items VALUES (101, 'rolled back', 1)")
    client.query("ROLLBACK")
    client.query("BEGIN")
    client.query("INSERT INTO items VALUES (102, 'outer', 1)")
    client.query("SAVEPOINT active_record_1")
    client.query("INSERT INTO items VALUES (103, 'inner', 1)")
    client.query("ROLLBACK TO SAVEPOINT active_record_1")
    client.query("SAVEPOINT active_record_1")
    client.query("INSERT INTO items VALUES (104, 'inner kept', 1)")
    client.query("RELEASE SAVEPOINT active_record_1")
    client.query("COMMIT")
    ids = client.query("SELECT id FROM items WHERE id BETWEEN 100 AND 199 ORDER BY id", as: :array).map(&:first)
    expect_eq(ids, [100, 102, 104], "committed rows")
    client.query("BEGIN")
    client.query("INSERT INTO items VALUES (200, 'kept', 1)")
    e = expect_raise(Mysql2::Error, "a duplicate key accepted") do
      client.query("INSERT INTO items VALUES (200, 'duplicate', 1)")
    end
    expect_eq([e.error_number, e.sql_state], [ER_DUP_ENTRY, "23000"], "error of a duplicate key")
    st = client.prepare("INSERT INTO items VALUES (?, ?, 1)")
    st.execute(201, "prepared in the transaction")
    st.close
    expect_eq(my_one(client, "SELECT @@in_transaction"), 1, "still in the transaction after the error")
    client.query("COMMIT")
    ids = client.query("SELECT id FROM items WHERE id BETWEEN 200 AND 299 ORDER BY id", as: :array).map(&:first)
    expect_eq(ids, [200, 201], "the transaction went on after the duplicate key")
  end
end

def my_multi_results(client, sql)
  results = [client.query(sql, as: :array)&.to_a]
  while client.next_result
    r = client.store_result
    results << (r ? r.to_a : nil)
  end
  results
end

def my_check_multi_statements
  with_mysql(flags: Mysql2::Client::MULTI_STATEMENTS) do |client|
    got = my_multi_results(client, "SELECT 1; SELECT 2, 3; INSERT INTO items VALUES (7000, 'multi', 1); SELECT 4")
    expect_eq(got, [[[1]], [[2, 3]], nil, [[4]]], "every result")
    expect_eq(client.more_results?, false, "no more results")
    # An error in the middle ends the batch; the session goes on.
    client.query("SELECT 1; SELECT * FROM no_such_table; SELECT 3")
    e = expect_raise(Mysql2::Error, "a missing table in a batch accepted") do
      client.next_result
    end
    expect_eq(e.error_number, 1146, "error in a batch")
    expect_eq(my_one(client, "SELECT 5"), 5, "the session after a failed batch")
  end
end

# ActiveRecord's fixtures load: multi-statements switched on with COM_SET_OPTION for the
# batch (the client logged in without them), foreign key checks off, one transaction.
def my_check_set_server_option
  with_mysql do |client|
    e = expect_raise(Mysql2::Error, "a multi-statement text ran without multi-statements") do
      client.query("SELECT 1; SELECT 2")
    end
    expect_eq(e.error_number, ER_PARSE_ERROR, "error of a multi-statement text without the option")
    client.set_server_option(Mysql2::Client::OPTION_MULTI_STATEMENTS_ON)
    client.query("BEGIN")
    old = my_one(client, "SELECT @@FOREIGN_KEY_CHECKS")
    client.query("SET FOREIGN_KEY_CHECKS = 0")
    rows = (7100...7150).map { |i| "(#{i}, 'fixture #{i}', 1)" }
    got = my_multi_results(client, "DELETE FROM items WHERE id BETWEEN 7100 AND 7199; " \
                                   "INSERT INTO items VALUES #{rows[0, 25].join(', ')}; " \
                                   "INSERT INTO items VALUES #{rows[25, 25].join(', ')}")
    expect_eq(got, [nil, nil, nil], "the fixtures batch")
    client.query("SET FOREIGN_KEY_CHECKS = #{old}")
    client.query("COMMIT")
    expect_eq(my_multi_results(client, "SELECT COUNT(*) FROM items WHERE id BETWEEN 7100 AND 7199; SELECT 6"),
              [[[50]], [[6]]], "multi-statements on")
    client.set_server_option(Mysql2::Client::OPTION_MULTI_STATEMENTS_OFF)
    3.times do |i|
      e = expect_raise(Mysql2::Error, "a multi-statement text ran after the option was switched off") do
        client.query("SELECT 1; SELECT 2")
      end
      expect_eq(e.error_number, ER_PARSE_ERROR, "error of a multi-statement text, option off (#{i})")
      client.query("BEGIN")
      client.query("COMMIT")
    end
    expect_eq(my_one(client, "SELECT @@FOREIGN_KEY_CHECKS"), 1, "foreign key checks back on")
  end
end

def my_check_streaming
  with_mysql do |client|
    n = 0
    sum = 0
    bytes = 0
    client.query("SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000", stream: true, cache_rows: false,
                                                                          as: :array).each do |row|
      n += 1
      sum += row[0]
      bytes += row[1].bytesize
    end
    expect_eq([n, sum, bytes], [20_000, 200_010_000, 20_000 * 1024], "rows, sum and bytes streamed")
    expect_eq(my_one(client, "SELECT 5"), 5, "the session after streaming")
  end
end

# KILL QUERY <own CONNECTION_ID()> from another client ends SELECT SLEEP(60).
def my_check_kill_query
  [["a read", false], ["a transaction", true]].each do |name, in_transaction|
    with_mysql(2) do |(client, killer)|
      client.query("BEGIN") if in_transaction
      own = my_one(client, "SELECT CONNECTION_ID()")
      started = monotonic
      result = nil
      error = interrupting(-> { killer.query("KILL QUERY #{own}") }) do
        result = my_one(client, "SELECT SLEEP(60)")
      end
      interrupted = error ? error.is_a?(Mysql2::Error) && error.error_number == ER_QUERY_INTERRUPTED : result == 1
      expect(interrupted, "SLEEP(60) in #{name} was not interrupted (#{(monotonic - started).round(1)}s): " \
                          "#{error ? "#{error.class}: #{error.message}" : "returned #{result.inspect}"}")
      client.query("ROLLBACK") if in_transaction
      expect_eq(my_one(client, "SELECT 3"), 3, "the session after KILL QUERY in #{name}")
    end
  end
end

# configure_connection's SET holds wherever the session's statements run: on replicas, in
# transactions, in every session, after many transactions.
def my_check_rails_settings
  # On a reader (the hint: reads right after a COMMIT would go to the writer, for
  # read-your-writes), and on the writer in a transaction.
  settings = "SELECT /* switchyard:reader */ FIND_IN_SET('STRICT_ALL_TABLES', @@SESSION.sql_mode) > 0, " \
             "@@SESSION.sql_auto_is_null, " \
             "@@SESSION.wait_timeout, @@character_set_client, @@character_set_results, @@read_only"
  with_mysql(4) do |clients|
    5.times do |round|
      clients.each_with_index do |client, c|
        want = [1, 0, 2_147_483, "utf8mb4", "utf8mb4"]
        expect_eq(client.query(settings, as: :array).first, want + [THROUGH_PROXY ? 1 : 0],
                  "client #{c} round #{round}")
        client.query("BEGIN")
        expect_eq(client.query(settings, as: :array).first, want + [0], "client #{c} round #{round} in a transaction")
        client.query("COMMIT")
      end
    end
  end
end

def my_check_routing
  with_mysql do |client|
    expect_eq(my_one(client, "SELECT @@read_only"), THROUGH_PROXY ? 1 : 0, "a fresh session's read on a replica")
    client.query("BEGIN")
    expect_eq(my_one(client, "SELECT @@read_only"), 0, "a transaction on the primary")
    client.query("COMMIT")
    client.query("INSERT INTO items VALUES (6000, 'routed', 1)")
    expect_eq(my_one(client, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write")
    st = client.prepare("SELECT name FROM items WHERE id = ?")
    client.query("UPDATE items SET name = 'updated' WHERE id = 6000")
    expect_eq(st.execute(6000, as: :array).first, ["updated"], "read your write with a server-side statement")
    st.close
  end
end

MYSQL_CHECKS = [
  ["connect", :my_check_connect],
  ["setup", :my_check_setup],
  ["queries", :my_check_queries],
  ["prepared_statements", :my_check_prepared_statements],
  ["prepared_many_clients", :my_check_prepared_many_clients],
  ["transactions", :my_check_transactions],
  ["multi_statements", :my_check_multi_statements],
  ["set_server_option", :my_check_set_server_option],
  ["streaming", :my_check_streaming],
  ["kill_query", :my_check_kill_query],
  ["rails_settings", :my_check_rails_settings],
  ["routing", :my_check_routing],
].freeze

case ARGV[0]
when "pg"
  require "pg"
  exit run_checks("ruby #{RUBY_VERSION} pg #{PG::VERSION} (libpq #{PG.library_version})", PG_CHECKS)
when "mysql2"
  require "mysql2"
  exit run_checks("ruby #{RUBY_VERSION} mysql2 #{Mysql2::VERSION} (Connector/C #{Mysql2::Client.info[:version]})",
                  MYSQL_CHECKS)
else
  warn "usage: ruby ruby_driver.rb pg|mysql2"
  exit 2
end
