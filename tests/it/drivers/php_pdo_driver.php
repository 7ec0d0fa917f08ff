<?php
// PHP PDO (pdo_pgsql on libpq, pdo_mysql on mysqlnd: what PHP applications, Laravel and
// Symfony use) through switchyard. Run by tests/it/drivers.rs as
// `php php_pdo_driver.php pgsql|mysql`; reads the same environment as common.py (SY_HOST,
// SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE, SY_TARGET, SY_POOL_MODE) and reports the
// same way: one line per check, exit status 1 when any failed.
//
// What PDO does that the other drivers do not: with native prepares pdo_pgsql names its
// statements pdo_stmt_00000001, 00000002 … counting from 1 in every connection (so clients
// sharing a server connection use the same names for different texts), never describes
// them, binds with a Describe of the portal, and drops each with SQL `DEALLOCATE` when the
// PDOStatement goes; pdo_mysql prepares on the server (COM_STMT_PREPARE … COM_STMT_CLOSE)
// only when emulation is off, and sends multi-statement texts when it is on.

declare(strict_types=1);

const CHECK_TIMEOUT_SECONDS = 60;

$HOST = getenv('SY_HOST') ?: '127.0.0.1';
$PORT = getenv('SY_PORT') ?: '0';
$USER = getenv('SY_USER') ?: 'app';
$PASSWORD = getenv('SY_PASSWORD') ?: 'app-secret';
$DB = getenv('SY_DB') ?: '';
$SSLMODE = getenv('SY_SSLMODE') ?: '';
$TARGET = getenv('SY_TARGET') ?: 'proxy';
$THROUGH_PROXY = $TARGET === 'proxy';
// Whether a client's statements all run on one server connection (see common.py).
$ONE_CONNECTION = !$THROUGH_PROXY || (getenv('SY_POOL_MODE') ?: 'transaction') === 'session';
$DRIVER = $argv[1] ?? 'pgsql';

final class CheckFailed extends Exception
{
}

function expect(bool $condition, string $message): void
{
    if (!$condition) {
        throw new CheckFailed($message);
    }
}

function expect_eq(mixed $got, mixed $want, string $what): void
{
    if ($got !== $want) {
        throw new CheckFailed(sprintf('%s: got %s, want %s', $what, var_export($got, true), var_export($want, true)));
    }
}

/** A new connection; `$native`: prepared statements on the server (no emulation). */
function connect(bool $native = true, array $options = []): PDO
{
    global $HOST, $PORT, $USER, $PASSWORD, $DB, $SSLMODE, $DRIVER;
    $options += [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => !$native,
        PDO::ATTR_TIMEOUT => 10,
    ];
    if ($DRIVER === 'pgsql') {
        $dsn = "pgsql:host=$HOST;port=$PORT;dbname=$DB;sslmode=" . ($SSLMODE ?: 'disable');
    } else {
        $dsn = "mysql:host=$HOST;port=$PORT;dbname=$DB;charset=utf8mb4";
        if ($SSLMODE !== '') {
            // mysqlnd turns TLS on when any TLS option is given.
            $options[PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT] = false;
            $options[PDO::MYSQL_ATTR_SSL_CIPHER] = 'HIGH';
        }
    }
    return new PDO($dsn, $USER, $PASSWORD, $options);
}

function one(PDO $conn, string $sql, array $params = []): mixed
{
    $st = $conn->prepare($sql);
    $st->execute($params);
    $value = $st->fetchColumn();
    $st->closeCursor();
    return $value;
}

/** Waits until a new session's read (on a replica, through the proxy) gives `$want`. */
function await_replicated(string $sql, mixed $want): void
{
    $deadline = microtime(true) + 30;
    $conn = connect();
    $got = one($conn, $sql);
    while ($got != $want) {
        expect(microtime(true) < $deadline, "$sql still gives " . var_export($got, true));
        usleep(20000);
        $got = one($conn, $sql);
    }
}

function error_code(PDOException $e): string
{
    return (string) $e->getCode();
}

// ---- PostgreSQL (pdo_pgsql) ----

// With SY_SSLMODE=require libpq connects only over TLS: connecting proves it.
function pg_connect_check(): void
{
    global $USER;
    $conn = connect();
    expect_eq(one($conn, 'SELECT current_user'), $USER, 'current_user');
    expect_eq($conn->getAttribute(PDO::ATTR_DRIVER_NAME), 'pgsql', 'the driver');
}

function pg_setup(): void
{
    $conn = connect();
    $conn->exec('DROP TABLE IF EXISTS items, shapes, copied');
    $conn->exec('CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))');
    $conn->exec('CREATE TABLE copied (id int, name text)');
    await_replicated("SELECT to_regclass('copied') IS NOT NULL", true);
}

// Named statements pdo_stmt_00000001 … in every connection, each DEALLOCATEd in SQL as its
// PDOStatement goes; through the pool many clients' same names meet on one connection.
function prepared_statements(): void
{
    $conn = connect();
    $ins = $conn->prepare('INSERT INTO items VALUES (?, ?, ?)');
    for ($i = 0; $i < 20; $i++) {
        $ins->execute([$i, "item$i", sprintf('%.2f', 1.5 * $i)]);
        expect_eq($ins->rowCount(), 1, "insert $i");
    }
    $ins = null;
    $sel = $conn->prepare('SELECT name, price FROM items WHERE id = ?');
    for ($i = 0; $i < 20; $i++) {
        $sel->execute([$i]);
        expect_eq($sel->fetch(PDO::FETCH_NUM), ["item$i", sprintf('%.2f', 1.5 * $i)], "row $i");
    }
    $sel = null;
    $names = one($conn, "/* switchyard:writer */ SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pdo_stmt_%'");
    expect(is_int($names), 'pg_prepared_statements is readable');
}

function many_clients_same_names(): void
{
    await_replicated('SELECT count(*) FROM items WHERE id < 20', 20);
    // Eight clients, each with statements of its own texts under the same names
    // (pdo_stmt_00000001, …), executed in turns.
    $clients = [];
    for ($c = 0; $c < 8; $c++) {
        $conn = connect();
        $clients[] = [
            $conn,
            $conn->prepare("SELECT name FROM items WHERE id = ? + $c"),
            $conn->prepare("SELECT ?::int * $c"),
        ];
    }
    for ($round = 0; $round < 10; $round++) {
        foreach ($clients as $c => [$conn, $byId, $times]) {
            $byId->execute([$round]);
            expect_eq($byId->fetchColumn(), 'item' . ($round + $c), "client $c round $round");
            $byId->closeCursor();
            $times->execute([$round]);
            expect_eq($times->fetchColumn(), $round * $c, "client $c product");
            $times->closeCursor();
        }
        if ($round === 4) {
            // A client drops its statements and prepares others: DEALLOCATE, new names.
            [$conn] = $clients[3];
            $clients[3][1] = $conn->prepare('SELECT name FROM items WHERE id = ? + 3');
            $clients[3][2] = $conn->prepare('SELECT ?::int * 3');
        }
    }
}

function pg_transactions(): void
{
    $conn = connect();
    $conn->beginTransaction();
    $conn->exec("INSERT INTO items VALUES (100, 'committed', 1)");
    $conn->commit();
    $conn->beginTransaction();
    $conn->exec("INSERT INTO items VALUES (101, 'rolled back', 1)");
    $conn->rollBack();
    $conn->beginTransaction();
    $ins = $conn->prepare('INSERT INTO items VALUES (?, ?, 1)');
    $ins->execute([102, 'outer']);
    $conn->exec('SAVEPOINT s');
    $ins->execute([103, 'inner']);
    $conn->exec('ROLLBACK TO SAVEPOINT s');
    $conn->commit();
    $ids = $conn->query('SELECT id FROM items WHERE id >= 100 ORDER BY id')->fetchAll(PDO::FETCH_COLUMN);
    expect_eq($ids, [100, 102], 'committed rows');
    $conn->beginTransaction();
    try {
        $ins->execute([100, 'duplicate']);
        throw new CheckFailed('a duplicate key was accepted');
    } catch (PDOException $e) {
        expect_eq(error_code($e), '23505', 'SQLSTATE of a duplicate key');
    }
    try {
        one($conn, 'SELECT 1');
        throw new CheckFailed('a query in a failed transaction ran');
    } catch (PDOException $e) {
        expect_eq(error_code($e), '25P02', 'SQLSTATE in a failed transaction');
    }
    $conn->rollBack();
    expect_eq(one($conn, 'SELECT 2'), 2, 'the session after the rollback');
}

// DDL between executions of a statement PDO never described: the same outcome as from
// the server (on the writer, where the DDL is at once).
function pg_ddl_between_executions(): void
{
    $conn = connect();
    $ddl = connect();
    $ddl->exec('CREATE TABLE shapes (id int PRIMARY KEY, a int)');
    $ddl->exec('INSERT INTO shapes VALUES (1, 10)');
    $st = $conn->prepare('SELECT /* switchyard:writer */ * FROM shapes WHERE id = ?');
    $st->execute([1]);
    expect_eq($st->fetch(PDO::FETCH_NUM), [1, 10], 'the row before');
    $ddl->exec("ALTER TABLE shapes ADD COLUMN b text DEFAULT 'new'");
    try {
        $st->execute([1]);
        $outcome = 'ran: ' . json_encode($st->fetch(PDO::FETCH_NUM));
    } catch (PDOException $e) {
        $outcome = 'failed: ' . error_code($e);
    }
    expect_eq($outcome, 'failed: 0A000', 'the statement prepared before the DDL');
    $st = $conn->prepare('SELECT /* switchyard:writer */ * FROM shapes WHERE id = ?');
    $st->execute([1]);
    expect_eq($st->fetch(PDO::FETCH_NUM), [1, 10, 'new'], 'prepared again after the DDL');
    // In a transaction: the same error, and the transaction fails.
    $ddl->exec('ALTER TABLE shapes ADD COLUMN c int DEFAULT 7');
    $conn->beginTransaction();
    try {
        $st->execute([1]);
        throw new CheckFailed('a stale statement ran in a transaction');
    } catch (PDOException $e) {
        expect_eq(error_code($e), '0A000', 'the error in a transaction');
    }
    $conn->rollBack();
}

function pg_copy(): void
{
    $conn = connect();
    $rows = [];
    for ($i = 0; $i < 2000; $i++) {
        $rows[] = "$i\tname $i";
    }
    expect($conn->pgsqlCopyFromArray('copied', $rows), 'COPY FROM');
    expect_eq(one($conn, 'SELECT count(*) FROM copied'), 2000, 'rows copied in');
    $out = $conn->pgsqlCopyToArray('copied');
    expect_eq(count($out), 2000, 'rows copied out');
    expect_eq($out[1999], "1999\tname 1999\n", 'the last row out');
}

function pg_listen_notify(): void
{
    $listener = connect();
    $notifier = connect();
    $listener->exec('LISTEN chan');
    $notifier->exec("NOTIFY chan, 'hello'");
    $got = $listener->pgsqlGetNotify(PDO::FETCH_ASSOC, 10000);
    expect($got !== false, 'a notification');
    expect_eq([$got['message'], $got['payload']], ['chan', 'hello'], 'the notification');
    $listener->exec('UNLISTEN *');
}

function pg_errors_and_types(): void
{
    $conn = connect();
    try {
        $conn->exec('SELECT * FROM no_such_table');
        throw new CheckFailed('a missing table was accepted');
    } catch (PDOException $e) {
        expect_eq(error_code($e), '42P01', 'SQLSTATE of a missing table');
    }
    $st = $conn->prepare('SELECT ?::bytea, ?::text, ?::int8, ?::jsonb, ?::text');
    $blob = random_bytes(65536);
    $st->bindValue(1, $blob, PDO::PARAM_LOB);
    $st->bindValue(2, 'héllo wörld ✓');
    $st->bindValue(3, PHP_INT_MAX, PDO::PARAM_INT);
    $st->bindValue(4, '{"k": [1, null]}');
    $st->bindValue(5, null, PDO::PARAM_NULL);
    $st->execute();
    $row = $st->fetch(PDO::FETCH_NUM);
    expect_eq(stream_get_contents($row[0]), $blob, 'bytea');
    expect_eq(array_slice($row, 1), ['héllo wörld ✓', PHP_INT_MAX, '{"k": [1, null]}', null], 'types');
    $big = $conn->query('SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i')->fetchAll();
    expect_eq(count($big), 20000, 'rows of a ~20 MB result');
}

function pg_routing(): void
{
    global $THROUGH_PROXY;
    $conn = connect();
    expect_eq(one($conn, 'SELECT pg_is_in_recovery()'), $THROUGH_PROXY, 'a read runs on a replica');
    $conn->beginTransaction();
    expect_eq(one($conn, 'SELECT pg_is_in_recovery()'), false, 'a transaction runs on the primary');
    $conn->commit();
    $conn->exec("INSERT INTO items VALUES (6000, 'routed', 1)");
    expect_eq(one($conn, 'SELECT name FROM items WHERE id = 6000'), 'routed', 'read your write');
}

// ---- MySQL (pdo_mysql) ----

function my_connect_check(): void
{
    global $USER, $DB;
    $conn = connect();
    expect_eq(explode('@', one($conn, 'SELECT CURRENT_USER()'))[0], $USER, 'current user');
    expect_eq(one($conn, 'SELECT DATABASE()'), $DB, 'default database');
}

function my_setup(): void
{
    $conn = connect();
    $conn->exec('DROP TABLE IF EXISTS items, shapes, loaded');
    $conn->exec('CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))');
    $conn->exec('CREATE TABLE loaded (id INT, name VARCHAR(100))');
    await_replicated("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'loaded'", 1);
}

function my_prepared_statements(): void
{
    foreach ([true, false] as $native) {
        $conn = connect($native);
        $base = $native ? 0 : 100;
        $ins = $conn->prepare('INSERT INTO items VALUES (?, ?, ?)');
        for ($i = 0; $i < 20; $i++) {
            $ins->execute([$base + $i, "item$i", sprintf('%.2f', 1.5 * $i)]);
        }
        $ins = null; // COM_STMT_CLOSE
        $sel = $conn->prepare('SELECT name, price FROM items WHERE id = ?');
        for ($i = 0; $i < 20; $i++) {
            $sel->execute([$base + $i]);
            expect_eq($sel->fetch(PDO::FETCH_NUM), ["item$i", sprintf('%.2f', 1.5 * $i)], "row $i (native $native)");
            $sel->closeCursor();
        }
    }
}

function my_many_clients(): void
{
    await_replicated('SELECT COUNT(*) FROM items WHERE id < 20', 20);
    $clients = [];
    for ($c = 0; $c < 8; $c++) {
        $conn = connect();
        $clients[] = [$conn->prepare("SELECT name FROM items WHERE id = ? + $c"), $conn->prepare("SELECT ? * $c")];
    }
    for ($round = 0; $round < 10; $round++) {
        foreach ($clients as $c => [$byId, $times]) {
            $byId->execute([$round]);
            expect_eq($byId->fetchColumn(), 'item' . ($round + $c), "client $c round $round");
            $byId->closeCursor();
            $times->execute([$round]);
            expect_eq((int) $times->fetchColumn(), $round * $c, "client $c product");
            $times->closeCursor();
        }
    }
}

function my_transactions(): void
{
    $conn = connect();
    $conn->exec('DELETE FROM items WHERE id BETWEEN 200 AND 299');
    $conn->beginTransaction();
    $conn->exec("INSERT INTO items VALUES (200, 'committed', 1)");
    $conn->commit();
    $conn->beginTransaction();
    $conn->exec("INSERT INTO items VALUES (201, 'rolled back', 1)");
    $conn->rollBack();
    $conn->beginTransaction();
    $conn->exec("INSERT INTO items VALUES (202, 'kept', 1)");
    try {
        $conn->exec("INSERT INTO items VALUES (200, 'duplicate', 1)");
        throw new CheckFailed('a duplicate key was accepted');
    } catch (PDOException $e) {
        expect_eq($e->errorInfo[1], 1062, 'errno of a duplicate key');
    }
    $conn->commit();
    $ids = $conn->query('SELECT id FROM items WHERE id BETWEEN 200 AND 299 ORDER BY id')->fetchAll(PDO::FETCH_COLUMN);
    expect_eq(array_map('intval', $ids), [200, 202], 'committed rows');
}

function my_multi_statements_and_unbuffered(): void
{
    $conn = connect(false);
    $st = $conn->query('SELECT 1; SELECT 2');
    expect_eq((int) $st->fetchColumn(), 1, 'first result');
    expect($st->nextRowset(), 'a second result');
    expect_eq((int) $st->fetchColumn(), 2, 'second result');
    $st->closeCursor();
    $conn->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, false);
    $n = 0;
    foreach ($conn->query('SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000', PDO::FETCH_NUM) as $row) {
        $n++;
    }
    expect_eq($n, 20000, 'rows of an unbuffered result');
    $conn->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, true);
    expect_eq((int) one($conn, 'SELECT 3'), 3, 'the session after an unbuffered result');
}

function my_load_data_local(): void
{
    $file = tempnam(sys_get_temp_dir(), 'pdo');
    $lines = '';
    for ($i = 0; $i < 5000; $i++) {
        $lines .= "$i\trow $i\n";
    }
    file_put_contents($file, $lines);
    try {
        $conn = connect(false, [PDO::MYSQL_ATTR_LOCAL_INFILE => true]);
        $loaded = $conn->exec("LOAD DATA LOCAL INFILE " . $conn->quote($file) . " INTO TABLE loaded");
        expect_eq($loaded, 5000, 'rows loaded');
    } finally {
        unlink($file);
    }
}

function my_routing(): void
{
    global $THROUGH_PROXY;
    $conn = connect();
    expect_eq((int) one($conn, 'SELECT @@read_only'), $THROUGH_PROXY ? 1 : 0, 'a read runs on a replica');
    $conn->beginTransaction();
    expect_eq((int) one($conn, 'SELECT @@read_only'), 0, 'a transaction runs on the primary');
    $conn->commit();
    $conn->exec("INSERT INTO items VALUES (6000, 'routed', 1)");
    expect_eq(one($conn, 'SELECT name FROM items WHERE id = 6000'), 'routed', 'read your write');
}

$checks = $DRIVER === 'pgsql' ? [
    'connect' => 'pg_connect_check',
    'setup' => 'pg_setup',
    'prepared_statements' => 'prepared_statements',
    'many_clients_same_names' => 'many_clients_same_names',
    'transactions' => 'pg_transactions',
    'ddl_between_executions' => 'pg_ddl_between_executions',
    'copy' => 'pg_copy',
    'listen_notify' => 'pg_listen_notify',
    'errors_and_types' => 'pg_errors_and_types',
    'routing' => 'pg_routing',
] : [
    'connect' => 'my_connect_check',
    'setup' => 'my_setup',
    'prepared_statements' => 'my_prepared_statements',
    'many_clients' => 'my_many_clients',
    'transactions' => 'my_transactions',
    'multi_statements_and_unbuffered' => 'my_multi_statements_and_unbuffered',
    'load_data_local' => 'my_load_data_local',
    'routing' => 'my_routing',
];

// A check still running after CHECK_TIMEOUT_SECONDS ends the script (SIGALRM's default).
printf("PHP %s PDO %s: target=%s %s:%s db=%s\n", PHP_VERSION, $DRIVER, $TARGET, $HOST, $PORT, $DB);
$failed = [];
foreach ($checks as $name => $check) {
    $started = microtime(true);
    if (function_exists('pcntl_alarm')) {
        pcntl_alarm(CHECK_TIMEOUT_SECONDS);
    }
    try {
        $check();
        printf("  ok   %s (%.2fs)\n", $name, microtime(true) - $started);
    } catch (Throwable $e) {
        $failed[] = $name;
        printf("  FAIL %s: %s: %s\n%s\n", $name, get_class($e), $e->getMessage(), $e->getTraceAsString());
    }
}
if ($failed) {
    printf("PDO %s: %d of %d checks FAILED: %s\n", $DRIVER, count($failed), count($checks), implode(', ', $failed));
    exit(1);
}
printf("PDO %s: all %d checks passed\n", $DRIVER, count($checks));
exit(0);
