// JDBC drivers through switchyard: pgjdbc (the PostgreSQL JDBC driver, which Java
// applications, Hibernate and Spring use) and MariaDB Connector/J. Run by
// tests/it/drivers.rs as `java -cp <Debian's jars> JdbcDrivers.java postgres|mariadb`
// (source-file mode: one file, compiled as it starts). Reads the same environment as
// common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE, SY_TARGET,
// SY_POOL_MODE) and reports the same way: one line per check, exit status 1 when any
// failed. SY_TRACE set: pgjdbc logs every message it sends and receives (on stderr).
//
// What pgjdbc does that the Python drivers do not: a PreparedStatement becomes a named
// server statement (S_1, S_2, …) at its fifth execution and is then only bound, never
// parsed again; `autocommit=false` puts BEGIN in the same batch as the first statement;
// executeBatch pipelines many Bind/Execute pairs before one Sync; a fetch size in a
// transaction reads a named portal in pieces; Statement.cancel and setQueryTimeout send a
// CancelRequest with the key from BackendKeyData.
//
// What Connector/J does: `useServerPrepStmts` prepares with COM_STMT_PREPARE and keeps the
// statement per connection (it believes); executeBatch sends MariaDB's
// COM_STMT_BULK_EXECUTE to a server that offers it (the proxy does, as its writer does);
// Statement.cancel opens a connection of its own to send KILL QUERY
// with the connection id of the greeting; setQueryTimeout prefixes the query with
// `SET STATEMENT max_statement_time=… FOR`; setAutoCommit(false) sends `SET autocommit=0`.

import java.math.BigDecimal;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PSQLException;

public class JdbcDrivers {
    static final String HOST = env("SY_HOST", "127.0.0.1");
    static final String PORT = env("SY_PORT", "0");
    static final String USER = env("SY_USER", "app");
    static final String PASSWORD = env("SY_PASSWORD", "app-secret");
    static final String DB = env("SY_DB", "");
    static final String SSLMODE = env("SY_SSLMODE", "");
    static final String TARGET = env("SY_TARGET", "proxy");
    static final boolean THROUGH_PROXY = TARGET.equals("proxy");
    // Whether a client's statements all run on one server connection (see common.py).
    static final boolean ONE_CONNECTION =
            !THROUGH_PROXY || env("SY_POOL_MODE", "transaction").equals("session");
    static final long CHECK_TIMEOUT_SECONDS = 60;

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    static class CheckFailed extends RuntimeException {
        CheckFailed(String message) {
            super(message);
        }
    }

    static void expect(boolean condition, String message) {
        if (!condition) throw new CheckFailed(message);
    }

    static void expectEq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new CheckFailed(what + ": got " + got + ", want " + want);
    }

    interface Check {
        void run() throws Exception;
    }

    /** "postgres" or "mariadb": which driver connects (the first argument). */
    static String driver = "postgres";

    static Connection connect(Properties extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", USER);
        p.setProperty("password", PASSWORD);
        String url;
        if (driver.equals("postgres")) {
            p.setProperty("connectTimeout", "10");
            p.setProperty("sslmode", SSLMODE.isEmpty() ? "disable" : SSLMODE);
            url = "jdbc:postgresql://" + HOST + ":" + PORT + "/" + DB;
        } else {
            p.setProperty("connectTimeout", "10000");
            if (!SSLMODE.isEmpty()) {
                p.setProperty("useSsl", "true");
                p.setProperty("trustServerCertificate", "true");
            }
            url = "jdbc:mariadb://" + HOST + ":" + PORT + "/" + DB;
        }
        if (extra != null) p.putAll(extra);
        return DriverManager.getConnection(url, p);
    }

    static Connection connect() throws SQLException {
        return connect(null);
    }

    static Object one(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            expect(rs.next(), "a row from " + sql);
            return rs.getObject(1);
        }
    }

    static void exec(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute(sql);
        }
    }

    // Waits until a new session's read (on a replica, through the proxy) gives `want`:
    // what another session wrote reaches the replicas a moment later.
    static void awaitReplicated(String sql, Object want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        try (Connection conn = connect()) {
            Object got = one(conn, sql);
            while (!Objects.equals(got, want)) {
                expect(System.nanoTime() < deadline, sql + " still gives " + got + ", want " + want);
                Thread.sleep(20);
                got = one(conn, sql);
            }
        }
    }

    // Items 0..19 written with one PreparedStatement and read back with another.
    static void itemsWrittenAndRead(Connection conn) throws SQLException {
        try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, ?, ?)")) {
            for (int i = 0; i < 20; i++) {
                ins.setInt(1, i);
                ins.setString(2, "item" + i);
                ins.setBigDecimal(3, new BigDecimal("1.50").multiply(BigDecimal.valueOf(i)));
                expectEq(ins.executeUpdate(), 1, "insert " + i);
            }
        }
        try (PreparedStatement sel = conn.prepareStatement("SELECT name, price FROM items WHERE id = ?")) {
            for (int i = 0; i < 20; i++) {
                sel.setInt(1, i);
                try (ResultSet rs = sel.executeQuery()) {
                    expect(rs.next(), "row " + i);
                    expectEq(rs.getString(1), "item" + i, "name " + i);
                    expectEq(rs.getBigDecimal(2), new BigDecimal("1.50").multiply(BigDecimal.valueOf(i)),
                            "price " + i);
                }
            }
        }
    }

    // Thirty statements (`prefix` and a number) alive at once, executed in turns.
    static void manyStatementsAlive(Connection conn, String prefix, int rounds) throws SQLException {
        List<PreparedStatement> many = new ArrayList<>();
        for (int k = 0; k < 30; k++) many.add(conn.prepareStatement(prefix + k));
        for (int round = 0; round < rounds; round++) {
            for (int k = 0; k < many.size(); k++) {
                PreparedStatement ps = many.get(k);
                ps.setInt(1, round);
                try (ResultSet rs = ps.executeQuery()) {
                    expect(rs.next(), "a row");
                    expectEq(rs.getLong(1), (long) (round + k), "statement " + k + " round " + round);
                }
            }
        }
        for (PreparedStatement ps : many) ps.close();
    }

    // Sixteen clients at once sharing the pool's few connections, each with the same
    // statement and one of its own (`product` and the client's number).
    static void manyClientsSharingStatements(Properties props, String product) throws Exception {
        awaitReplicated("SELECT count(*) FROM items WHERE id < 20", 20L);
        ExecutorService pool = Executors.newFixedThreadPool(16);
        try {
            List<Future<?>> done = new ArrayList<>();
            for (int c = 0; c < 16; c++) {
                final int client = c;
                done.add(pool.submit(() -> {
                    try (Connection conn = connect(props);
                         PreparedStatement ps = conn.prepareStatement("SELECT name FROM items WHERE id = ?");
                         PreparedStatement times = conn.prepareStatement(product + client)) {
                        for (int i = 0; i < 40; i++) {
                            ps.setInt(1, i % 20);
                            try (ResultSet rs = ps.executeQuery()) {
                                expect(rs.next(), "a row");
                                expectEq(rs.getString(1), "item" + (i % 20), "client " + client);
                            }
                            times.setInt(1, i);
                            try (ResultSet rs = times.executeQuery()) {
                                expect(rs.next(), "a row");
                                expectEq(rs.getLong(1), (long) i * client, "client " + client + " product");
                            }
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : done) {
                try {
                    f.get(CHECK_TIMEOUT_SECONDS, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    throw new CheckFailed("a client failed: " + e.getCause());
                }
            }
        } finally {
            pool.shutdownNow();
        }
    }

    // A new table `shapes` (made on `ddl`) and `SELECT *` of it prepared on `conn`, executed
    // `executions` times: on the writer, where DDL is at once (a replica applies it a moment
    // later).
    static PreparedStatement shapesRead(Connection conn, Connection ddl, int executions) throws SQLException {
        exec(ddl, "DROP TABLE IF EXISTS shapes");
        exec(ddl, "CREATE TABLE shapes (id int PRIMARY KEY, a int)");
        exec(ddl, "INSERT INTO shapes VALUES (1, 10)");
        PreparedStatement ps = conn.prepareStatement("SELECT /* switchyard:writer */ * FROM shapes WHERE id = ?");
        for (int i = 0; i < executions; i++) {
            ps.setInt(1, 1);
            try (ResultSet rs = ps.executeQuery()) {
                expect(rs.next(), "a row");
                expectEq(rs.getInt(2), 10, "column a");
            }
        }
        return ps;
    }

    // Runs `sql` on `conn` while Statement.cancel() is called every 200 ms until it ends:
    // the first column of its answer, or the error it ended with.
    static Object runCancelled(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement()) {
            ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();
            timer.scheduleAtFixedRate(() -> {
                try {
                    st.cancel();
                } catch (SQLException ignored) {
                    // the next round tries again
                }
            }, 200, 200, TimeUnit.MILLISECONDS);
            try (ResultSet rs = st.executeQuery(sql)) {
                return rs.next() ? rs.getObject(1) : null;
            } catch (SQLException e) {
                return e;
            } finally {
                timer.shutdownNow();
            }
        }
    }

    static Properties props(String key, String value) {
        Properties p = new Properties();
        p.setProperty(key, value);
        return p;
    }

    public static void main(String[] args) throws Exception {
        driver = args.length > 0 ? args[0] : "postgres";
        if (System.getenv("SY_TRACE") != null) {
            java.util.logging.Logger l = java.util.logging.Logger.getLogger("org.postgresql");
            l.setLevel(java.util.logging.Level.FINEST);
            java.util.logging.ConsoleHandler h = new java.util.logging.ConsoleHandler();
            h.setLevel(java.util.logging.Level.FINEST);
            l.addHandler(h);
        }
        int status = driver.equals("postgres")
                ? runChecks("pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION, Postgres.checks())
                : runChecks("MariaDB Connector/J " + new org.mariadb.jdbc.Driver().getMajorVersion() + "."
                        + new org.mariadb.jdbc.Driver().getMinorVersion(), MariaDb.checks());
        System.exit(status);
    }

    static int runChecks(String driver, Map<String, Check> checks) {
        System.out.println(driver + ": target=" + TARGET + " " + HOST + ":" + PORT + " db=" + DB);
        List<String> failed = new ArrayList<>();
        ExecutorService runner = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true);
            return t;
        });
        for (Map.Entry<String, Check> c : checks.entrySet()) {
            long started = System.nanoTime();
            Future<?> f = runner.submit(() -> {
                c.getValue().run();
                return null;
            });
            try {
                f.get(CHECK_TIMEOUT_SECONDS, TimeUnit.SECONDS);
                System.out.printf("  ok   %s (%.2fs)%n", c.getKey(), (System.nanoTime() - started) / 1e9);
            } catch (TimeoutException e) {
                failed.add(c.getKey());
                System.out.println("  FAIL " + c.getKey() + ": still running after " + CHECK_TIMEOUT_SECONDS
                        + "s; threads:");
                for (Map.Entry<Thread, StackTraceElement[]> t : Thread.getAllStackTraces().entrySet()) {
                    System.out.println("    " + t.getKey().getName());
                    for (StackTraceElement e2 : t.getValue()) System.out.println("      at " + e2);
                }
                System.out.flush();
                System.exit(1);
            } catch (ExecutionException e) {
                failed.add(c.getKey());
                Throwable cause = e.getCause();
                System.out.println("  FAIL " + c.getKey() + ": " + cause);
                cause.printStackTrace(System.out);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return 1;
            }
        }
        if (!failed.isEmpty()) {
            System.out.println(driver + ": " + failed.size() + " of " + checks.size() + " checks FAILED: "
                    + String.join(", ", failed));
            return 1;
        }
        System.out.println(driver + ": all " + checks.size() + " checks passed");
        return 0;
    }

    /** pgjdbc's checks. */
    static class Postgres {
        static int serverPid(Connection conn) throws SQLException {
            return conn.unwrap(PGConnection.class).getBackendPID();
        }

        static void checkConnect() throws Exception {
            try (Connection conn = connect()) {
                expectEq(one(conn, "SELECT current_user"), USER, "current_user");
                DatabaseMetaData md = conn.getMetaData();
                expect(md.getDatabaseMajorVersion() >= 15, "server version " + md.getDatabaseProductVersion());
                expect(conn.isValid(5), "isValid");
                Object pid = one(conn, "/* switchyard:writer */ SELECT pg_backend_pid()");
                expect(!ONE_CONNECTION || pid.equals(serverPid(conn)),
                        "the pid the client was told is its writer connection's");
            }
        }

        static void checkSetup() throws Exception {
            try (Connection conn = connect()) {
                exec(conn, "DROP TABLE IF EXISTS items, copied");
                exec(conn, "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))");
                exec(conn, "CREATE TABLE copied (id int, name text)");
            }
            awaitReplicated("SELECT to_regclass('copied') IS NOT NULL", true);
        }

        // The fifth execution of a PreparedStatement makes it a named server statement (S_n):
        // from then on only Bind/Execute are sent for it, on whatever connection the pool lends.
        static void checkServerPreparedStatements() throws Exception {
            try (Connection conn = connect()) {
                itemsWrittenAndRead(conn);
                try (PreparedStatement sel = conn.prepareStatement("SELECT name FROM items WHERE id = ?")) {
                    for (int i = 0; i < 6; i++) {
                        sel.setInt(1, i);
                        sel.executeQuery().close();
                    }
                    expect(sel.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(),
                            "the statement is server-prepared by now");
                }
                manyStatementsAlive(conn, "SELECT ?::int + ", 6);
            }
        }

        static void checkManyClientsSharingStatements() throws Exception {
            manyClientsSharingStatements(new Properties(), "SELECT ?::int * ");
        }

        // autocommit=false: BEGIN rides in the batch of the transaction's first statement.
        static void checkTransactions() throws Exception {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, ?, 1)")) {
                    for (int i = 100; i < 110; i++) {
                        ins.setInt(1, i);
                        ins.setString(2, "tx");
                        ins.executeUpdate();
                        if (i % 2 == 0) conn.commit();
                        else conn.rollback();
                    }
                }
                Savepoint sp = null;
                exec(conn, "INSERT INTO items VALUES (200, 'outer', 1)");
                sp = conn.setSavepoint();
                exec(conn, "INSERT INTO items VALUES (201, 'inner', 1)");
                conn.rollback(sp);
                conn.commit();
                List<Integer> ids = new ArrayList<>();
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery("SELECT id FROM items WHERE id >= 100 ORDER BY id")) {
                    while (rs.next()) ids.add(rs.getInt(1));
                }
                expectEq(ids, List.of(100, 102, 104, 106, 108, 200), "committed rows");
                conn.commit();
                // An error aborts the transaction; rollback brings the connection back.
                exec(conn, "INSERT INTO items VALUES (300, 'x', 1)");
                try {
                    exec(conn, "INSERT INTO items VALUES (300, 'x', 1)");
                    throw new CheckFailed("a duplicate key was accepted");
                } catch (PSQLException e) {
                    expectEq(e.getSQLState(), "23505", "SQLSTATE of a duplicate key");
                }
                try {
                    one(conn, "SELECT 1");
                    throw new CheckFailed("a query in a failed transaction ran");
                } catch (PSQLException e) {
                    expectEq(e.getSQLState(), "25P02", "SQLSTATE in a failed transaction");
                }
                conn.rollback();
                expectEq(((Number) one(conn, "SELECT count(*) FROM items WHERE id = 300")).intValue(), 0,
                        "rolled back");
                conn.commit();
            }
        }

        // executeBatch: many Bind/Execute pairs of one statement before a single Sync.
        static void checkBatch() throws Exception {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, ?, ?)")) {
                    for (int i = 1000; i < 1500; i++) {
                        ins.setInt(1, i);
                        ins.setString(2, "batch" + i);
                        ins.setBigDecimal(3, BigDecimal.ONE);
                        ins.addBatch();
                    }
                    int[] counts = ins.executeBatch();
                    expectEq(counts.length, 500, "batch results");
                }
                conn.commit();
                // A failing batch: the server's error, nothing of it kept, the connection goes on.
                try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, 'dup', 1)")) {
                    for (int i : new int[] {1600, 1601, 1000, 1602}) {
                        ins.setInt(1, i);
                        ins.addBatch();
                    }
                    ins.executeBatch();
                    throw new CheckFailed("a batch with a duplicate key was accepted");
                } catch (BatchUpdateException e) {
                    expectEq(e.getSQLState(), "23505", "SQLSTATE of the failed batch");
                }
                conn.rollback();
                expectEq(((Number) one(conn, "SELECT count(*) FROM items WHERE id >= 1000")).intValue(), 500,
                        "rows after the batches");
                conn.commit();
                conn.setAutoCommit(true);
                // The same, rewritten into multi-row INSERTs by the driver.
                try (Connection rw = connect(props("reWriteBatchedInserts", "true"));
                     PreparedStatement ins = rw.prepareStatement("INSERT INTO items VALUES (?, ?, ?)")) {
                    for (int i = 2000; i < 2300; i++) {
                        ins.setInt(1, i);
                        ins.setString(2, "rewritten");
                        ins.setBigDecimal(3, BigDecimal.TEN);
                        ins.addBatch();
                    }
                    ins.executeBatch();
                    expectEq(((Number) one(rw, "SELECT count(*) FROM items WHERE name = 'rewritten'")).intValue(), 300,
                            "rows of a rewritten batch");
                }
            }
        }

        // A fetch size in a transaction: a named portal read a few rows at a time.
        static void checkCursorFetch() throws Exception {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                try (PreparedStatement ps = conn.prepareStatement(
                        "SELECT i, repeat('x', 100) FROM generate_series(1, 10000) i")) {
                    ps.setFetchSize(100);
                    long sum = 0;
                    int n = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            sum += rs.getInt(1);
                            n++;
                        }
                    }
                    expectEq(n, 10000, "rows fetched 100 at a time");
                    expectEq(sum, 50005000L, "sum of the rows");
                }
                conn.commit();
            }
        }

        // DDL between executions of a server-prepared statement (which many clients share on
        // few connections through the proxy): the client gets "cached plan must not change
        // result type" exactly as from its own server, then pgjdbc prepares it again.
        static void checkDdlBetweenExecutions() throws Exception {
            try (Connection conn = connect(); Connection ddl = connect()) {
                try (PreparedStatement ps = shapesRead(conn, ddl, 6)) {
                    exec(ddl, "ALTER TABLE shapes ADD COLUMN b text DEFAULT 'new'");
                    // Its server fails the statement prepared before the DDL; outside a
                    // transaction pgjdbc prepares it again and retries by itself.
                    String b;
                    ps.setInt(1, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        expect(rs.next(), "a row after the DDL");
                        expectEq(rs.getMetaData().getColumnCount(), 3, "columns after the DDL");
                        b = rs.getString(3);
                    }
                    expectEq(b, "new", "the new column through the statement prepared before");
                    for (int i = 0; i < 6; i++) {
                        ps.setInt(1, 1);
                        ps.executeQuery().close();
                    }
                    // In a transaction no retry is possible: the error, as from the server, and
                    // the statement works again after the rollback.
                    exec(ddl, "ALTER TABLE shapes ADD COLUMN c int DEFAULT 7");
                    conn.setAutoCommit(false);
                    ps.setInt(1, 1);
                    try {
                        ps.executeQuery().close();
                        throw new CheckFailed("a stale statement ran in a transaction");
                    } catch (PSQLException e) {
                        expectEq(e.getSQLState() + " " + e.getServerErrorMessage().getMessage(),
                                "0A000 cached plan must not change result type", "the error in a transaction");
                    }
                    conn.rollback();
                    try (ResultSet rs = ps.executeQuery()) {
                        expect(rs.next(), "a row after the rollback");
                        expectEq(rs.getInt(4), 7, "the column added in the transaction's place");
                    }
                    conn.commit();
                }
            }
        }

        static void checkCopy() throws Exception {
            try (Connection conn = connect()) {
                CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
                StringBuilder in = new StringBuilder();
                for (int i = 0; i < 2000; i++) in.append(i).append("\tname ").append(i).append("\n");
                long copied = copy.copyIn("COPY copied (id, name) FROM STDIN",
                        new java.io.StringReader(in.toString()));
                expectEq(copied, 2000L, "rows copied in");
                java.io.StringWriter out = new java.io.StringWriter();
                long back = copy.copyOut("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT", out);
                expectEq(back, 2000L, "rows copied out");
                expectEq(out.toString(), in.toString(), "bytes copied out");
                try {
                    copy.copyIn("COPY items (id, name, price) FROM STDIN",
                            new java.io.StringReader("5000\ta\t1\n5000\tdup\t1\n"));
                    throw new CheckFailed("a duplicate in COPY was accepted");
                } catch (PSQLException e) {
                    expectEq(e.getSQLState(), "23505", "SQLSTATE of a failed COPY");
                }
                expectEq(((Number) one(conn, "SELECT count(*) FROM items WHERE id = 5000")).intValue(), 0,
                        "the failed COPY left nothing");
            }
        }

        static void checkListenNotify() throws Exception {
            try (Connection listener = connect(); Connection notifier = connect()) {
                exec(listener, "LISTEN chan");
                exec(notifier, "NOTIFY chan, 'hello'");
                try (PreparedStatement ps = notifier.prepareStatement("SELECT pg_notify('chan', ?)")) {
                    ps.setString(1, "second");
                    ps.executeQuery().close();
                }
                List<String> got = new ArrayList<>();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (got.size() < 2 && System.nanoTime() < deadline) {
                    PGNotification[] ns = listener.unwrap(PGConnection.class).getNotifications(500);
                    if (ns != null) for (PGNotification n : ns) got.add(n.getName() + ":" + n.getParameter());
                }
                expectEq(got, List.of("chan:hello", "chan:second"), "notifications");
                exec(listener, "UNLISTEN *");
            }
        }

        // Statement.cancel() and setQueryTimeout (which cancels too) end the statement running
        // for this client, with 57014, and the connection goes on.
        static void checkCancel() throws Exception {
            for (boolean inTransaction : new boolean[] {false, true}) {
                try (Connection conn = connect()) {
                    conn.setAutoCommit(!inTransaction);
                    Object ended = runCancelled(conn, "SELECT pg_sleep(60)");
                    expect(ended instanceof SQLException, "pg_sleep(60) was not cancelled: " + ended);
                    expectEq(((SQLException) ended).getSQLState(), "57014", "SQLSTATE of a cancelled statement");
                    if (inTransaction) conn.rollback();
                    expectEq(one(conn, "SELECT 7"), 7, "the connection after a cancel");
                    try (Statement st = conn.createStatement()) {
                        st.setQueryTimeout(1);
                        try {
                            st.executeQuery("SELECT pg_sleep(60)");
                            throw new CheckFailed("pg_sleep(60) outlived its query timeout");
                        } catch (PSQLException e) {
                            expectEq(e.getSQLState(), "57014", "SQLSTATE of a timed-out statement");
                        }
                    }
                    if (inTransaction) conn.rollback();
                    expectEq(one(conn, "SELECT 8"), 8, "the connection after a query timeout");
                    if (inTransaction) conn.commit();
                }
            }
        }

        static void checkTypes() throws Exception {
            try (Connection conn = connect(props("prepareThreshold", "1"))) {
                try (PreparedStatement ps = conn.prepareStatement(
                        "SELECT ?::bytea, ?::text, ?::int8, ?::float8, ?::timestamptz, ?::uuid, ?::int[], ?::text")) {
                    byte[] blob = new byte[65536];
                    for (int i = 0; i < blob.length; i++) blob[i] = (byte) i;
                    UUID u = UUID.randomUUID();
                    java.sql.Timestamp ts = java.sql.Timestamp.valueOf("2026-12-05 12:34:56.789");
                    for (int round = 0; round < 3; round++) {
                        ps.setBytes(1, blob);
                        ps.setString(2, "héllo wörld ✓");
                        ps.setLong(3, Long.MAX_VALUE);
                        ps.setDouble(4, Double.POSITIVE_INFINITY);
                        ps.setTimestamp(5, ts);
                        ps.setObject(6, u);
                        ps.setArray(7, conn.createArrayOf("int4", new Integer[] {1, null, 3}));
                        ps.setNull(8, Types.VARCHAR);
                        try (ResultSet rs = ps.executeQuery()) {
                            expect(rs.next(), "a row");
                            expect(Arrays.equals(rs.getBytes(1), blob), "bytea round " + round);
                            expectEq(rs.getString(2), "héllo wörld ✓", "UTF-8 text");
                            expectEq(rs.getLong(3), Long.MAX_VALUE, "int8");
                            expectEq(rs.getDouble(4), Double.POSITIVE_INFINITY, "float8");
                            expectEq(rs.getTimestamp(5), ts, "timestamptz");
                            expectEq(rs.getObject(6), u, "uuid");
                            expectEq(Arrays.asList((Object[]) rs.getArray(7).getArray()), Arrays.asList(1, null, 3),
                                    "int[]");
                            expectEq(rs.getString(8), null, "NULL");
                        }
                    }
                }
            }
        }

        static void checkMetadata() throws Exception {
            try (Connection conn = connect()) {
                DatabaseMetaData md = conn.getMetaData();
                List<String> columns = new ArrayList<>();
                try (ResultSet rs = md.getColumns(null, "public", "items", null)) {
                    while (rs.next()) columns.add(rs.getString("COLUMN_NAME"));
                }
                expectEq(columns, List.of("id", "name", "price"), "columns of items");
                try (ResultSet rs = md.getPrimaryKeys(null, "public", "items")) {
                    expect(rs.next(), "a primary key");
                    expectEq(rs.getString("COLUMN_NAME"), "id", "primary key column");
                }
                try (PreparedStatement ps = conn.prepareStatement("SELECT id, name FROM items WHERE id = ?")) {
                    ResultSetMetaData rmd = ps.getMetaData();
                    expectEq(rmd.getColumnCount(), 2, "columns described before execution");
                    expectEq(rmd.getColumnName(2), "name", "a described column");
                    expectEq(ps.getParameterMetaData().getParameterCount(), 1, "parameters described");
                }
            }
        }

        static void checkRouting() throws Exception {
            try (Connection conn = connect()) {
                expectEq(one(conn, "SELECT pg_is_in_recovery()"), THROUGH_PROXY, "a read runs on a replica");
                conn.setAutoCommit(false);
                expectEq(one(conn, "SELECT pg_is_in_recovery()"), false, "a transaction runs on the primary");
                conn.commit();
                conn.setAutoCommit(true);
                exec(conn, "INSERT INTO items VALUES (6000, 'routed', 1)");
                expectEq(one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write");
                // readOnly with autocommit off: pgjdbc opens each transaction with BEGIN READ ONLY.
                conn.setAutoCommit(false);
                conn.setReadOnly(true);
                expectEq(one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "a read-only transaction");
                try {
                    exec(conn, "INSERT INTO items VALUES (6001, 'refused', 1)");
                    throw new CheckFailed("a write in a read-only transaction was accepted");
                } catch (PSQLException e) {
                    expectEq(e.getSQLState(), "25006", "SQLSTATE of a write in a read-only transaction");
                }
                conn.rollback();
            }
        }

        static Map<String, Check> checks() {
            Map<String, Check> checks = new LinkedHashMap<>();
            checks.put("connect", Postgres::checkConnect);
            checks.put("setup", Postgres::checkSetup);
            checks.put("server_prepared_statements", Postgres::checkServerPreparedStatements);
            checks.put("many_clients_sharing_statements", Postgres::checkManyClientsSharingStatements);
            checks.put("transactions", Postgres::checkTransactions);
            checks.put("batch", Postgres::checkBatch);
            checks.put("cursor_fetch", Postgres::checkCursorFetch);
            checks.put("ddl_between_executions", Postgres::checkDdlBetweenExecutions);
            checks.put("copy", Postgres::checkCopy);
            checks.put("listen_notify", Postgres::checkListenNotify);
            checks.put("cancel", Postgres::checkCancel);
            checks.put("types", Postgres::checkTypes);
            checks.put("metadata", Postgres::checkMetadata);
            checks.put("routing", Postgres::checkRouting);
            return checks;
        }
    }

    /** MariaDB Connector/J's checks. */
    static class MariaDb {
        static final int ER_DUP_ENTRY = 1062;
        static final int ER_QUERY_INTERRUPTED = 1317;
        static final int ER_STATEMENT_TIMEOUT = 1969;

        static Properties serverPrepared() {
            return props("useServerPrepStmts", "true");
        }

        static long threadId(Connection conn) throws SQLException {
            return conn.unwrap(org.mariadb.jdbc.MariaDbConnection.class).getServerThreadId();
        }

        static long count(Connection conn, String where) throws SQLException {
            return ((Number) one(conn, "SELECT COUNT(*) FROM items WHERE " + where)).longValue();
        }

        static void checkConnect() throws Exception {
            try (Connection conn = connect()) {
                expectEq(((String) one(conn, "SELECT CURRENT_USER()")).split("@")[0], USER, "current user");
                expectEq(one(conn, "SELECT DATABASE()"), DB, "default database");
                expect(conn.isValid(5), "isValid");
                String version = conn.getMetaData().getDatabaseProductVersion();
                expect(version.contains("MariaDB"), "a MariaDB server: " + version);
                conn.setAutoCommit(false);
                Object id = one(conn, "SELECT CONNECTION_ID()");
                expect(!ONE_CONNECTION || ((Number) id).longValue() == threadId(conn),
                        "the greeting's connection id is the writer's (" + id + ", " + threadId(conn) + ")");
                conn.rollback();
            }
        }

        static void checkSetup() throws Exception {
            try (Connection conn = connect()) {
                exec(conn, "DROP TABLE IF EXISTS items, shapes, loaded");
                exec(conn, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))");
                exec(conn, "CREATE TABLE loaded (id INT, name VARCHAR(100))");
            }
            awaitReplicated("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                    + "AND table_name = 'loaded'", 1L);
        }

        // COM_STMT_PREPARE once per statement and connection (as the driver believes), then
        // COM_STMT_EXECUTE: through the pool on whatever connection is lent.
        static void checkServerPreparedStatements() throws Exception {
            try (Connection conn = connect(serverPrepared())) {
                itemsWrittenAndRead(conn);
                manyStatementsAlive(conn, "SELECT ? + ", 4);
            }
        }

        static void checkManyClientsSharingStatements() throws Exception {
            manyClientsSharingStatements(serverPrepared(), "SELECT ? * ");
        }

        // setAutoCommit(false) sends SET autocommit=0: every statement then runs in a
        // transaction that COMMIT or ROLLBACK ends.
        static void checkTransactions() throws Exception {
            for (Properties mode : List.of(new Properties(), serverPrepared())) {
                try (Connection conn = connect(mode)) {
                    exec(conn, "DELETE FROM items WHERE id BETWEEN 100 AND 299");
                    conn.setAutoCommit(false);
                    try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, 'tx', 1)")) {
                        for (int i = 100; i < 110; i++) {
                            ins.setInt(1, i);
                            ins.executeUpdate();
                            if (i % 2 == 0) conn.commit();
                            else conn.rollback();
                        }
                    }
                    exec(conn, "INSERT INTO items VALUES (200, 'outer', 1)");
                    Savepoint sp = conn.setSavepoint();
                    exec(conn, "INSERT INTO items VALUES (201, 'inner', 1)");
                    conn.rollback(sp);
                    conn.commit();
                    List<Integer> ids = new ArrayList<>();
                    try (Statement st = conn.createStatement();
                         ResultSet rs = st.executeQuery("SELECT id FROM items WHERE id >= 100 AND id < 300 ORDER BY id")) {
                        while (rs.next()) ids.add(rs.getInt(1));
                    }
                    expectEq(ids, List.of(100, 102, 104, 106, 108, 200), "committed rows");
                    // A duplicate key fails the statement, not the transaction.
                    exec(conn, "INSERT INTO items VALUES (250, 'kept', 1)");
                    try {
                        exec(conn, "INSERT INTO items VALUES (250, 'dup', 1)");
                        throw new CheckFailed("a duplicate key was accepted");
                    } catch (SQLException e) {
                        expectEq(e.getErrorCode(), ER_DUP_ENTRY, "error of a duplicate key");
                    }
                    conn.commit();
                    expectEq(count(conn, "id = 250"), 1L, "the transaction went on after the error");
                    conn.commit();
                    conn.setAutoCommit(true);
                }
            }
        }

        // executeBatch: text statements (rewritten into multi-row INSERTs with
        // rewriteBatchedStatements), or server-side ones (COM_STMT_BULK_EXECUTE).
        static void checkBatch() throws Exception {
            List<Properties> modes = List.of(new Properties(), serverPrepared(), props("rewriteBatchedStatements", "true"));
            int base = 1000;
            for (Properties mode : modes) {
                try (Connection conn = connect(mode)) {
                    try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, ?, ?)")) {
                        for (int i = base; i < base + 500; i++) {
                            ins.setInt(1, i);
                            ins.setString(2, "batch" + i);
                            ins.setBigDecimal(3, BigDecimal.ONE);
                            ins.addBatch();
                        }
                        ins.executeBatch();
                    }
                    expectEq(count(conn, "id >= " + base + " AND id < " + (base + 500)), 500L,
                            "rows of a batch " + mode);
                    try (PreparedStatement ins = conn.prepareStatement("INSERT INTO items VALUES (?, 'dup', 1)")) {
                        for (int i : new int[] {base + 600, base}) {
                            ins.setInt(1, i);
                            ins.addBatch();
                        }
                        ins.executeBatch();
                        throw new CheckFailed("a batch with a duplicate key was accepted " + mode);
                    } catch (BatchUpdateException e) {
                        expectEq(e.getErrorCode(), ER_DUP_ENTRY, "error of the failed batch " + mode);
                    }
                    expectEq(one(conn, "SELECT 5"), 5, "the connection after a failed batch " + mode);
                }
                base += 1000;
            }
        }

        // DDL between executions of a server-side statement: MariaDB prepares it again
        // by itself and answers with the new columns.
        static void checkDdlBetweenExecutions() throws Exception {
            try (Connection conn = connect(serverPrepared()); Connection ddl = connect()) {
                try (PreparedStatement ps = shapesRead(conn, ddl, 3)) {
                    exec(ddl, "ALTER TABLE shapes ADD COLUMN b VARCHAR(10) DEFAULT 'new'");
                    ps.setInt(1, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        expect(rs.next(), "a row after the DDL");
                        expectEq(rs.getMetaData().getColumnCount(), 3, "columns after the DDL");
                        expectEq(rs.getString(3), "new", "the new column");
                    }
                }
            }
        }

        // A fetch size streams the result: rows are read as the application asks.
        static void checkStreaming() throws Exception {
            try (Connection conn = connect(); Statement st = conn.createStatement()) {
                st.setFetchSize(100);
                long sum = 0;
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT seq, REPEAT('x', 100) FROM seq_1_to_20000")) {
                    while (rs.next()) {
                        sum += rs.getLong(1);
                        n++;
                    }
                }
                expectEq(n, 20000, "rows streamed");
                expectEq(sum, 200010000L, "sum of the rows");
                expectEq(one(conn, "SELECT 6"), 6, "the connection after a streamed result");
            }
        }

        // Statement.cancel: Connector/J sends KILL QUERY <greeting's id> on a connection of
        // its own; setQueryTimeout: SET STATEMENT max_statement_time=… FOR the query.
        static void checkCancelAndTimeout() throws Exception {
            for (boolean inTransaction : new boolean[] {false, true}) {
                try (Connection conn = connect()) {
                    conn.setAutoCommit(!inTransaction);
                    long started = System.nanoTime();
                    Object ended = runCancelled(conn, "SELECT SLEEP(60)");
                    // An interrupted SLEEP returns 1.
                    expect(Objects.equals(ended, 1L) || ended instanceof SQLException
                                    && ((SQLException) ended).getErrorCode() == ER_QUERY_INTERRUPTED,
                            "SLEEP(60) was interrupted: " + ended);
                    expect(System.nanoTime() - started < TimeUnit.SECONDS.toNanos(30), "cancelled in time");
                    expectEq(one(conn, "SELECT 7"), 7, "the connection after a cancel");
                    try (Statement st = conn.createStatement()) {
                        st.setQueryTimeout(1);
                        try (ResultSet rs = st.executeQuery("SELECT SLEEP(60)")) {
                            expect(rs.next() && rs.getInt(1) == 1, "SLEEP(60) outlived its query timeout");
                        } catch (SQLException e) {
                            expect(e.getErrorCode() == ER_STATEMENT_TIMEOUT || e.getErrorCode() == ER_QUERY_INTERRUPTED,
                                    "error of a timed-out statement: " + e.getErrorCode() + " " + e.getMessage());
                        }
                    }
                    expectEq(one(conn, "SELECT 8"), 8, "the connection after a query timeout");
                    if (inTransaction) conn.rollback();
                }
            }
        }

        // KILL <id> of another client's connection id ends that client.
        static void checkKillConnection() throws Exception {
            try (Connection victim = connect(); Connection killer = connect()) {
                long id = threadId(victim);
                expectEq(one(victim, "SELECT 1"), 1, "the victim before");
                exec(killer, "KILL " + id);
                try {
                    one(victim, "SELECT 2");
                    throw new CheckFailed("a killed connection ran a query");
                } catch (SQLException e) {
                    expect(e.getSQLState() != null && e.getSQLState().startsWith("08")
                                    || e.getErrorCode() == 1927 || e.getErrorCode() == 2013 || e.getErrorCode() == 2006,
                            "the error of a killed connection: " + e.getSQLState() + " " + e.getErrorCode() + " " + e);
                }
                expectEq(one(killer, "SELECT 3"), 3, "the killer goes on");
            }
        }

        static void checkLoadDataLocal() throws Exception {
            try (Connection conn = connect(props("allowLocalInfile", "true")); Statement st = conn.createStatement()) {
                StringBuilder data = new StringBuilder();
                for (int i = 0; i < 5000; i++) data.append(i).append('\t').append("row ").append(i).append('\n');
                st.unwrap(org.mariadb.jdbc.MariaDbStatement.class).setLocalInfileInputStream(
                        new java.io.ByteArrayInputStream(data.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8)));
                int loaded = st.executeUpdate("LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE loaded");
                expectEq(loaded, 5000, "rows loaded");
                expectEq(((Number) one(conn, "SELECT COUNT(*) FROM loaded")).longValue(), 5000L, "rows in the table");
            }
        }

        static void checkTypes() throws Exception {
            for (Properties mode : List.of(new Properties(), serverPrepared())) {
                try (Connection conn = connect(mode);
                     PreparedStatement ps = conn.prepareStatement("SELECT ?, ?, ?, ?, ?, ?")) {
                    byte[] blob = new byte[1 << 20];
                    for (int i = 0; i < blob.length; i++) blob[i] = (byte) i;
                    java.sql.Timestamp ts = java.sql.Timestamp.valueOf("2026-12-05 12:34:56.789012");
                    ps.setBytes(1, blob);
                    ps.setString(2, "héllo 🎉");
                    ps.setLong(3, Long.MAX_VALUE);
                    ps.setDouble(4, 1.5);
                    ps.setTimestamp(5, ts);
                    ps.setNull(6, Types.INTEGER);
                    try (ResultSet rs = ps.executeQuery()) {
                        expect(rs.next(), "a row");
                        expect(Arrays.equals(rs.getBytes(1), blob), "1 MiB blob " + mode);
                        expectEq(rs.getString(2), "héllo 🎉", "utf8mb4 text " + mode);
                        expectEq(rs.getLong(3), Long.MAX_VALUE, "BIGINT " + mode);
                        expectEq(rs.getDouble(4), 1.5, "DOUBLE " + mode);
                        expectEq(rs.getTimestamp(5), ts, "DATETIME(6) " + mode);
                        expectEq(rs.getObject(6), null, "NULL " + mode);
                    }
                }
            }
        }

        static void checkRouting() throws Exception {
            try (Connection conn = connect()) {
                // The driver's first statement (`set autocommit=1, sql_mode = concat(@@sql_mode,
                // ',STRICT_TRANS_TABLES')`) holds wherever the session's statements run.
                expectEq(((Number) one(conn, "SELECT @@read_only")).intValue(), THROUGH_PROXY ? 1 : 0,
                        "a fresh session's read on a replica");
                expectEq(((Number) one(conn, "SELECT FIND_IN_SET('STRICT_TRANS_TABLES', @@sql_mode) > 0")).intValue(),
                        1, "the driver's sql_mode on a replica");
                conn.setAutoCommit(false);
                expectEq(((Number) one(conn, "SELECT @@read_only")).intValue(), 0, "a transaction on the primary");
                expectEq(((Number) one(conn, "SELECT FIND_IN_SET('STRICT_TRANS_TABLES', @@sql_mode) > 0")).intValue(),
                        1, "the driver's sql_mode on the primary");
                conn.commit();
                conn.setAutoCommit(true);
                exec(conn, "INSERT INTO items VALUES (6000, 'routed', 1)");
                expectEq(one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write");
                exec(conn, "START TRANSACTION READ ONLY");
                try {
                    exec(conn, "INSERT INTO items VALUES (6001, 'refused', 1)");
                    throw new CheckFailed("a write in a read-only transaction was accepted");
                } catch (SQLException e) {
                    expectEq(e.getErrorCode(), 1792, "error of a write in a read-only transaction");
                }
                exec(conn, "ROLLBACK");
            }
        }

        static Map<String, Check> checks() {
            Map<String, Check> checks = new LinkedHashMap<>();
            checks.put("connect", MariaDb::checkConnect);
            checks.put("setup", MariaDb::checkSetup);
            checks.put("server_prepared_statements", MariaDb::checkServerPreparedStatements);
            checks.put("many_clients_sharing_statements", MariaDb::checkManyClientsSharingStatements);
            checks.put("transactions", MariaDb::checkTransactions);
            checks.put("batch", MariaDb::checkBatch);
            checks.put("ddl_between_executions", MariaDb::checkDdlBetweenExecutions);
            checks.put("streaming", MariaDb::checkStreaming);
            checks.put("cancel_and_timeout", MariaDb::checkCancelAndTimeout);
            checks.put("kill_connection", MariaDb::checkKillConnection);
            checks.put("load_data_local", MariaDb::checkLoadDataLocal);
            checks.put("types", MariaDb::checkTypes);
            checks.put("routing", MariaDb::checkRouting);
            return checks;
        }
    }
}
