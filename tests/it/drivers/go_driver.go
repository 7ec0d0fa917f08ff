// Go's database drivers through switchyard: pgx v4 (github.com/jackc/pgx/v4, with pgconn and
// pgxpool) and go-sql-driver/mysql 1.5 through database/sql, Debian's packages of both
// (golang-github-jackc-pgx-v4-dev, golang-github-go-sql-driver-mysql-dev), built by Debian's
// Go in GOPATH mode. Run by tests/it/drivers.rs as `go run go_driver.go pgx|mysql`; reads the
// same environment as common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE,
// SY_TARGET, SY_POOL_MODE) and reports the same way: one line per check, exit status 1 when
// any failed.
//
// What Go applications do that other clients do not. pgx: its statement cache (a connection's
// default, statement_cache_mode=prepare) prepares every text it runs as `lrupsc_<n>_<m>`
// (n counts the connections of the process, m the statements of the connection, so every
// process of an application uses the same names, for other texts) with Parse, Describe and
// Sync, then only binds it; statement_cache_mode=describe describes the text once and sends
// it unnamed every time with the result formats it learned; SendBatch binds and executes
// several statements before one Sync; CopyFrom is binary COPY; the end of a query's context
// makes pgconn send a CancelRequest and close the connection; a "cached plan must not change
// result type" error (0A000) makes the cache deallocate the statement and prepare it again
// at its next use outside a failed transaction. go-sql-driver/mysql: with interpolateParams
// off (its default) every query with parameters is COM_STMT_PREPARE, COM_STMT_EXECUTE and
// COM_STMT_CLOSE; database/sql prepares a db.Prepare'd statement again on each connection
// that runs it; the end of a query's context closes the connection.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgconn"
	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

var (
	host     = env("SY_HOST", "127.0.0.1")
	port, _  = strconv.Atoi(env("SY_PORT", "0"))
	user     = env("SY_USER", "app")
	password = env("SY_PASSWORD", "app-secret")
	dbName   = env("SY_DB", "")
	sslmode  = env("SY_SSLMODE", "")
	// "proxy": through switchyard (reads go to replicas); "server": the primary itself.
	target       = env("SY_TARGET", "proxy")
	throughProxy = target == "proxy"
	// Whether a client's statements all run on one server connection (see common.py).
	oneConnection = !throughProxy || env("SY_POOL_MODE", "transaction") == "session"
)

// A check still running after this long prints every goroutine's stack and ends the script.
const checkTimeout = 60 * time.Second

// Check name -> why it fails through the proxy: a defect reported, not fixed yet. Such a
// check still runs; through the proxy its failure is printed with the reason and does not
// fail the script, and once it passes the script fails, asking for the entry to be removed
// (as in common.py).
var knownFailures = map[string]string{}

var bg = context.Background()

// ---- checks and their report ----

type checkFailed struct{ msg string }

// fail ends the check (or the goroutine running part of it) with a message and the line of
// the script that failed.
func fail(format string, args ...interface{}) {
	panic(checkFailed{fmt.Sprintf(format, args...) + " (at " + callerLine() + ")"})
}

// callerLine: the first line of the script on the stack outside these helpers.
func callerLine() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	helpers := map[string]bool{"main.fail": true, "main.expect": true, "main.expectEq": true, "main.must": true,
		"main.callerLine": true, "main.pgExec": true, "main.pgInt": true, "main.pgText": true, "main.myInt": true,
		"main.myText": true, "main.myExec": true, "main.pgErr": true, "main.myErr": true}
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.File, "go_driver.go") && !helpers[f.Function] {
			return fmt.Sprintf("line %d in %s", f.Line, strings.TrimPrefix(f.Function, "main."))
		}
		if !more {
			return "?"
		}
	}
}

func expect(cond bool, format string, args ...interface{}) {
	if !cond {
		fail(format, args...)
	}
}

func expectEq(got, want interface{}, what string) {
	if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
		fail("%s: got %#v, want %#v", what, got, want)
	}
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %T: %v", what, err, err)
	}
}

// describePanic: a check's failure as reported, with the stack of an unexpected panic.
func describePanic(r interface{}) string {
	if f, ok := r.(checkFailed); ok {
		return f.msg
	}
	return fmt.Sprintf("panic: %v\n%s", r, debug.Stack())
}

// inGoroutines runs fn(0) … fn(n-1) at once and fails with every goroutine's failure.
func inGoroutines(n int, fn func(i int)) {
	failures := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					failures[i] = fmt.Sprintf("goroutine %d: %s", i, describePanic(r))
				}
			}()
			fn(i)
		}(i)
	}
	wg.Wait()
	var all []string
	for _, f := range failures {
		if f != "" {
			all = append(all, f)
		}
	}
	if len(all) > 0 {
		fail("%s", strings.Join(all, "; "))
	}
}

// interrupting runs body while another goroutine calls interrupt every 100 ms until body
// ends; fails when interrupt itself failed.
func interrupting(interrupt func() error, body func()) {
	done := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(failed)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if err := interrupt(); err != nil {
				failed <- err
				return
			}
		}
	}()
	func() {
		defer close(done)
		body()
	}()
	if err := <-failed; err != nil {
		fail("the interrupting call failed: %T: %v", err, err)
	}
}

// pollUntil calls get until it gives want (a read of what another session wrote: the
// replicas apply it a moment later), for up to 30 seconds.
func pollUntil(want string, what string, get func() string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := get()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			fail("%s still gives %q, want %q", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type check struct {
	name string
	run  func()
}

func runChecks(driver string, checks []check) int {
	fmt.Printf("%s: target=%s %s:%d db=%s\n", driver, target, host, port, dbName)
	var failed []string
	for _, c := range checks {
		known := ""
		if throughProxy {
			known = knownFailures[c.name]
		}
		started := time.Now()
		result := make(chan string, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					result <- describePanic(r)
				}
			}()
			c.run()
			result <- ""
		}()
		var failure string
		select {
		case failure = <-result:
		case <-time.After(checkTimeout):
			fmt.Printf("  FAIL %s: still running after %s; goroutines:\n", c.name, checkTimeout)
			pprof.Lookup("goroutine").WriteTo(os.Stdout, 2)
			os.Exit(1)
		}
		switch {
		case failure != "" && known != "":
			fmt.Printf("  KNOWN FAILURE %s: %s\n    (not counted: %s)\n", c.name, failure, known)
		case failure != "":
			failed = append(failed, c.name)
			fmt.Printf("  FAIL %s: %s\n", c.name, failure)
		case known != "":
			failed = append(failed, c.name)
			fmt.Printf("  FAIL %s: listed as a known failure (%s) but passes now: remove it from knownFailures\n",
				c.name, known)
		default:
			fmt.Printf("  ok   %s (%.2fs)\n", c.name, time.Since(started).Seconds())
		}
	}
	if len(failed) > 0 {
		fmt.Printf("%s: %d of %d checks FAILED: %s\n", driver, len(failed), len(checks), strings.Join(failed, ", "))
		return 1
	}
	fmt.Printf("%s: all %d checks passed\n", driver, len(checks))
	return 0
}

// ---- PostgreSQL: pgx ----

// pgConnString: the connection string of a client, with `extra` settings (pgx's own, such as
// statement_cache_mode, or pgxpool's).
func pgConnString(extra string) string {
	mode := sslmode
	if mode == "" {
		mode = "disable"
	}
	s := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=%s connect_timeout=10",
		host, port, user, password, dbName, mode)
	if extra != "" {
		s += " " + extra
	}
	return s
}

func pgConnect(extra string) *pgx.Conn {
	conn, err := pgx.Connect(bg, pgConnString(extra))
	must(err, "connect")
	return conn
}

// withPg opens n connections with `extra` settings, calls fn with them and closes them.
func withPg(n int, extra string, fn func(conns []*pgx.Conn)) {
	conns := make([]*pgx.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close(bg)
		}
	}()
	for i := 0; i < n; i++ {
		conns = append(conns, pgConnect(extra))
	}
	fn(conns)
}

// The querying methods pgx.Conn, pgx.Tx and pgxpool.Pool share.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...interface{}) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...interface{}) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...interface{}) pgx.Row
}

func pgExec(q pgQuerier, sql string, args ...interface{}) pgconn.CommandTag {
	tag, err := q.Exec(bg, sql, args...)
	must(err, sql)
	return tag
}

func pgInt(q pgQuerier, sql string, args ...interface{}) int64 {
	var n int64
	must(q.QueryRow(bg, sql, args...).Scan(&n), sql)
	return n
}

func pgText(q pgQuerier, sql string, args ...interface{}) string {
	var s string
	must(q.QueryRow(bg, sql, args...).Scan(&s), sql)
	return s
}

// pgErr: err as a server's error, failing when it is another kind of error (or none).
func pgErr(err error, what string) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		fail("%s: want a server error, got %T: %v", what, err, err)
	}
	return pgErr
}

func outcomeOfErr(err error) string {
	if err == nil {
		return "ok"
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return "error " + pgErr.Code
	}
	return fmt.Sprintf("error %T: %v", err, err)
}

// pgOutcome: what a query did, as a comparable string: its rows, or its error's SQLSTATE.
func pgOutcome(q pgQuerier, sql string, args ...interface{}) string {
	return rowsOutcome(q.Query(bg, sql, args...))
}

func rowsOutcome(rows pgx.Rows, err error) string {
	if err != nil {
		return outcomeOfErr(err)
	}
	var all [][]interface{}
	for rows.Next() {
		values, err := rows.Values()
		if err != nil {
			rows.Close()
			return outcomeOfErr(err)
		}
		all = append(all, values)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return outcomeOfErr(err)
	}
	return fmt.Sprintf("rows %v", all)
}

// pgAwaitReplicated waits until a fresh session's read (on a replica, through the proxy) of
// sql gives want.
func pgAwaitReplicated(sql, want string) {
	withPg(1, "", func(c []*pgx.Conn) {
		pollUntil(want, sql, func() string {
			var s string
			err := c[0].QueryRow(bg, sql).Scan(&s)
			if errors.Is(err, pgx.ErrNoRows) {
				// A replica that has not replayed the row yet has none: not there yet.
				return ""
			}
			must(err, sql)
			return s
		})
	})
}

// numericText: a numeric as PostgreSQL prints it.
func numericText(n pgtype.Numeric) string {
	if n.Status != pgtype.Present {
		return "NULL"
	}
	if n.NaN {
		return "NaN"
	}
	digits := new(big.Int).Abs(n.Int).String()
	sign := ""
	if n.Int.Sign() < 0 {
		sign = "-"
	}
	if n.Exp >= 0 {
		return sign + digits + strings.Repeat("0", int(n.Exp))
	}
	scale := int(-n.Exp)
	for len(digits) <= scale {
		digits = "0" + digits
	}
	return sign + digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
}

func pgCheckConnect() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		expectEq(pgText(conn, "SELECT current_user"), user, "current_user")
		major, _ := strconv.Atoi(strings.SplitN(conn.PgConn().ParameterStatus("server_version"), ".", 2)[0])
		expect(major >= 15, "server_version %q", conn.PgConn().ParameterStatus("server_version"))
		expectEq(conn.PgConn().ParameterStatus("server_encoding"), "UTF8", "server_encoding")
		expectEq(conn.PgConn().ParameterStatus("client_encoding"), "UTF8", "client_encoding")
		tlsConn, isTLS := conn.PgConn().Conn().(*tls.Conn)
		expectEq(isTLS, sslmode != "", "the connection is a *tls.Conn")
		if isTLS {
			state := tlsConn.ConnectionState()
			expect(state.HandshakeComplete && state.Version >= tls.VersionTLS12, "TLS state %+v", state)
		}
		pid := pgInt(conn, "/* switchyard:writer */ SELECT pg_backend_pid()")
		expect(!oneConnection || uint32(pid) == conn.PgConn().PID(),
			"the pid the client was told (%d) is its writer connection's (%d)", conn.PgConn().PID(), pid)
		must(conn.Ping(bg), "ping")
		expectEq(string(conn.PgConn().TxStatus()), "I", "transaction status")
	})
}

func pgCheckSetup() {
	withPg(1, "", func(c []*pgx.Conn) {
		pgExec(c[0], "DROP TABLE IF EXISTS items, typed, copied, batched, pooled, shapes_prepare, shapes_describe")
		pgExec(c[0], "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2))")
		pgExec(c[0], "CREATE TABLE typed (id int PRIMARY KEY, n numeric(20,6), b bytea, j jsonb, a int[], "+
			"t text[], u uuid, ts timestamptz, s text)")
		pgExec(c[0], "CREATE TABLE copied (id int PRIMARY KEY, name text, data bytea)")
		pgExec(c[0], "CREATE TABLE batched (id int PRIMARY KEY, n int NOT NULL)")
		pgExec(c[0], "CREATE TABLE pooled (worker int, i int, n int, PRIMARY KEY (worker, i))")
	})
	pgAwaitReplicated("SELECT (to_regclass('pooled') IS NOT NULL)::text", "true")
}

var lrupscName = regexp.MustCompile(`^lrupsc_[0-9]+_[0-9]+$`)

// Queries with parameters through the statement cache in `mode`: inserts, reads of them,
// 30 texts alive at once, and errors at Parse and at execution.
func pgQueries(mode string, base int) {
	withPg(1, "statement_cache_mode="+mode, func(c []*pgx.Conn) {
		conn := c[0]
		insert := "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)"
		for i := 0; i < 20; i++ {
			tag := pgExec(conn, insert, base+i, fmt.Sprintf("%s item %d ✓", mode, i), fmt.Sprintf("%d.50", i))
			expectEq(tag.RowsAffected(), int64(1), fmt.Sprintf("rows inserted by insert %d", i))
		}
		byID := "SELECT name, price FROM items WHERE id = $1"
		for i := 0; i < 20; i++ {
			var name string
			var price pgtype.Numeric
			must(conn.QueryRow(bg, byID, base+i).Scan(&name, &price), "row "+strconv.Itoa(i))
			expectEq([]string{name, numericText(price)}, []string{fmt.Sprintf("%s item %d ✓", mode, i),
				fmt.Sprintf("%d.50", i)}, fmt.Sprintf("row %d", i))
		}
		var texts []string
		for k := 0; k < 30; k++ {
			texts = append(texts, fmt.Sprintf("SELECT $1::int + %d", k))
		}
		for round := 0; round < 5; round++ {
			for k, text := range texts {
				expectEq(pgInt(conn, text, round), int64(round+k), fmt.Sprintf("statement %d round %d", k, round))
			}
		}
		expectEq(conn.StatementCache().Len(), 32, "statements in the cache")
		// What the cache holds for each text: a name lrupsc_<n>_<m> in prepare mode, the unnamed
		// statement's description in describe mode.
		var names []string
		for _, text := range append([]string{insert, byID}, texts...) {
			sd, err := conn.StatementCache().Get(bg, text)
			must(err, "the cache's statement")
			if mode == "prepare" {
				expect(lrupscName.MatchString(sd.Name), "the name of %q: %q", text, sd.Name)
				names = append(names, sd.Name)
			} else {
				expectEq(sd.Name, "", "the name in describe mode")
			}
		}
		if mode == "prepare" {
			prefix := strings.TrimSuffix(names[0], "_0")
			for m, name := range names {
				expectEq(name, fmt.Sprintf("%s_%d", prefix, m), "the name of statement "+strconv.Itoa(m))
			}
			if !throughProxy {
				// The names are the server's: what the premise of this script rests on.
				var server []string
				rows, err := conn.Query(bg, "SELECT name FROM pg_prepared_statements", pgx.QuerySimpleProtocol(true))
				must(err, "pg_prepared_statements")
				for rows.Next() {
					var name string
					must(rows.Scan(&name), "a name")
					server = append(server, name)
				}
				must(rows.Err(), "pg_prepared_statements")
				sort.Strings(server)
				sorted := append([]string(nil), names...)
				sort.Strings(sorted)
				expectEq(server, sorted, "the server's prepared statements")
			}
		}
		// A text the server cannot parse is cached by nothing: the same error every time.
		for i := 0; i < 2; i++ {
			_, err := conn.Exec(bg, "SELEC $1::int", 1)
			expectEq(pgErr(err, "a syntax error").Code, "42601", "SQLSTATE of a syntax error")
		}
		// An error at execution: the statement stays and runs again.
		var n int64
		err := conn.QueryRow(bg, "SELECT 10 / $1::int", 0).Scan(&n)
		expectEq(pgErr(err, "a division by zero").Code, "22012", "SQLSTATE of a division by zero")
		expectEq(pgInt(conn, "SELECT 10 / $1::int", 5), int64(2), "the statement after its error")
		_, err = conn.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, $2)", base, "duplicate")
		e := pgErr(err, "a duplicate key")
		expectEq([]string{e.Code, e.ConstraintName}, []string{"23505", "items_pkey"}, "a duplicate key")
		expectEq(pgText(conn, "SELECT $1::text || 'x'", "a'b"), "a'bx", "the session after errors")
	})
}

func pgCheckQueriesPrepare()  { pgQueries("prepare", 0) }
func pgCheckQueriesDescribe() { pgQueries("describe", 1000) }

// Types in binary format both ways: parameters and results, and a row written and read back.
func pgCheckTypes() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		blob := make([]byte, 1<<20)
		for i := range blob {
			blob[i] = byte(i)
		}
		one, three := int32(1), int32(3)
		ts := time.Date(2024, 2, 29, 12, 34, 56, 789012000, time.FixedZone("+01", 3600))
		text := "héllo wörld ✓ 🎉 \"quoted\" \\ 'single'"
		args := []interface{}{"12345678901234.123456", blob, map[string]interface{}{"k": []interface{}{1, nil, "é"}},
			[]*int32{&one, nil, &three}, []string{"a", "b,c", "\"q\"", "é ✓", ""}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
			ts, nil, text}
		var (
			n      pgtype.Numeric
			b      []byte
			j      map[string]interface{}
			ints   []*int32
			texts  []string
			u      string
			stamp  time.Time
			null   *string
			s      string
			i8     int64
			f8     float64
			yes    bool
			nulls  pgtype.Int4
			intrvl pgtype.Interval
		)
		scan := func(row pgx.Row, what string) {
			must(row.Scan(&n, &b, &j, &ints, &texts, &u, &stamp, &null, &s), what)
			expectEq(numericText(n), "12345678901234.123456", what+": numeric")
			expect(bytes.Equal(b, blob), "%s: a 1 MiB bytea with every byte value (%d bytes)", what, len(b))
			expectEq(fmt.Sprint(j), "map[k:[1 <nil> é]]", what+": jsonb")
			expectEq(len(ints) == 3 && *ints[0] == 1 && ints[1] == nil && *ints[2] == 3, true, what+": int[] with a NULL")
			expectEq(texts, []string{"a", "b,c", "\"q\"", "é ✓", ""}, what+": text[]")
			expectEq(u, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", what+": uuid")
			expect(stamp.Equal(ts), "%s: timestamptz %v, want %v", what, stamp, ts)
			expect(null == nil, "%s: NULL read as %v", what, null)
			expectEq(s, text, what+": UTF-8 text")
		}
		scan(conn.QueryRow(bg, "SELECT $1::numeric(20,6), $2::bytea, $3::jsonb, $4::int[], $5::text[], $6::uuid, "+
			"$7::timestamptz, $8::text, $9::text", args...), "parameters read back")
		tag := pgExec(conn, "INSERT INTO typed (id, n, b, j, a, t, u, ts, s) VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8)",
			args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[8])
		expectEq(tag.String(), "INSERT 0 1", "the command tag")
		// Read back on the writer (this session wrote it, and reads it back at once).
		scan(conn.QueryRow(bg, "SELECT n, b, j, a, t, u, ts, NULL::text, s FROM typed WHERE id = $1", 1), "a row")
		must(conn.QueryRow(bg, "SELECT $1::int8, $2::float8, $3::bool, NULL::int4, '1 day 02:03:04'::interval",
			int64(1)<<62, 1.5, true).Scan(&i8, &f8, &yes, &nulls, &intrvl), "int8, float8, bool, NULL, interval")
		expectEq([]interface{}{i8, f8, yes, nulls.Status == pgtype.Null, intrvl.Days, intrvl.Microseconds},
			[]interface{}{int64(1) << 62, 1.5, true, true, int32(1), int64(7384000000)}, "int8, float8, bool, NULL, interval")
		// Text format of the same: the simple protocol (pgx's QuerySimpleProtocol).
		var sText string
		var nText pgtype.Numeric
		must(conn.QueryRow(bg, "SELECT $1::text, $2::numeric", pgx.QuerySimpleProtocol(true), text, "1.50").Scan(&sText, &nText),
			"the simple protocol")
		expectEq([]string{sText, numericText(nText)}, []string{text, "1.50"}, "text and numeric in text format")
	})
}

// pgxpool's 16 connections, shared by 16 goroutines: each its own reads, writes and
// transactions on whatever connection the pool lends, the statements cached per connection.
func pgCheckPool() {
	cfg, err := pgxpool.ParseConfig(pgConnString("pool_max_conns=16"))
	must(err, "the pool's config")
	pool, err := pgxpool.ConnectConfig(bg, cfg)
	must(err, "the pool")
	defer pool.Close()
	const rounds = 25
	inGoroutines(16, func(g int) {
		for i := 0; i < rounds; i++ {
			expectEq(pgInt(pool, "SELECT $1::int * $2::int", g, i), int64(g*i), "a read")
			tag := pgExec(pool, "INSERT INTO pooled (worker, i, n) VALUES ($1, $2, $3)", g, i, i)
			expectEq(tag.RowsAffected(), int64(1), "an insert")
			must(pool.BeginFunc(bg, func(tx pgx.Tx) error {
				pgExec(tx, "UPDATE pooled SET n = n + 1 WHERE worker = $1 AND i = $2", g, i)
				expectEq(pgInt(tx, "SELECT n FROM pooled WHERE worker = $1 AND i = $2", g, i), int64(i+1),
					"a read in the transaction")
				expectEq(pgText(tx, "SELECT pg_is_in_recovery()::text"), "false", "a transaction on the primary")
				return nil
			}), "a transaction")
		}
	})
	stat := pool.Stat()
	expect(stat.TotalConns() <= 16 && stat.MaxConns() == 16, "the pool's connections: %d of %d",
		stat.TotalConns(), stat.MaxConns())
	// All 16 held at once, each in a transaction.
	var held []*pgxpool.Conn
	for i := 0; i < 16; i++ {
		c, err := pool.Acquire(bg)
		must(err, "acquire")
		held = append(held, c)
	}
	inGoroutines(16, func(g int) {
		tx, err := held[g].Begin(bg)
		must(err, "begin")
		expectEq(pgInt(tx, "SELECT count(*) FROM pooled WHERE worker = $1", g), int64(rounds), "the goroutine's rows")
		must(tx.Commit(bg), "commit")
	})
	for _, c := range held {
		c.Release()
	}
	pollUntil(strconv.Itoa(16*rounds*(rounds+1)/2*1), "the sum over the pool's rows", func() string {
		return strconv.FormatInt(pgInt(pool, "SELECT sum(n)::int8 FROM pooled"), 10)
	})
}

// Several processes of one application (this program, started again), each with its first
// connection's statement names, lrupsc_1_0 and lrupsc_1_1, for texts of its own (of other
// shapes: one column or two, text or int), each in turns and in batches.
func pgCheckSameNamesAcrossProcesses() {
	pgAwaitReplicated("SELECT count(*)::text FROM items WHERE id < 20", "20")
	exe, err := os.Executable()
	must(err, "this program")
	const workers = 6
	inGoroutines(workers, func(w int) {
		out, err := exec.Command(exe, "pgx-worker", strconv.Itoa(w)).CombinedOutput()
		if err != nil {
			fail("worker %d: %v:\n%s", w, err, out)
		}
	})
}

// pgWorker: one process of pgCheckSameNamesAcrossProcesses.
func pgWorker(w int) {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		byID := fmt.Sprintf("SELECT name, %d AS worker FROM items WHERE id = $1::int + %d", w, w)
		times := fmt.Sprintf("SELECT $1::int * %d", w)
		texts := []string{byID, times}
		if w%2 == 1 {
			texts = []string{times, byID}
		}
		run := func(round int) {
			var name string
			var worker int32
			must(conn.QueryRow(bg, byID, round).Scan(&name, &worker), "by id")
			expectEq([]interface{}{name, worker}, []interface{}{fmt.Sprintf("prepare item %d ✓", round+w), int32(w)},
				fmt.Sprintf("round %d: %s", round, byID))
			expectEq(pgInt(conn, times, round), int64(round*w), fmt.Sprintf("round %d: %s", round, times))
		}
		for _, text := range texts {
			pgOutcome(conn, text, 0)
		}
		for m, text := range texts {
			sd, err := conn.StatementCache().Get(bg, text)
			must(err, "the cache")
			expectEq(sd.Name, fmt.Sprintf("lrupsc_1_%d", m), "the name of "+text)
		}
		for i := 0; i < 60; i++ {
			round := i % 12
			if i%3 != 2 {
				run(round)
				continue
			}
			// Both statements bound before one Sync.
			batch := &pgx.Batch{}
			batch.Queue(byID, round)
			batch.Queue(times, round)
			batch.Queue(byID, round+1)
			br := conn.SendBatch(bg, batch)
			var name string
			var worker int32
			must(br.QueryRow().Scan(&name, &worker), "the batch's first")
			expectEq(name, fmt.Sprintf("prepare item %d ✓", round+w), "the batch's first")
			var product int64
			must(br.QueryRow().Scan(&product), "the batch's second")
			expectEq(product, int64(round*w), "the batch's second")
			must(br.QueryRow().Scan(&name, &worker), "the batch's third")
			expectEq(name, fmt.Sprintf("prepare item %d ✓", round+1+w), "the batch's third")
			must(br.Close(), "the batch")
		}
	})
}

// SendBatch: several statements (insert, select, update) bound and executed before one Sync,
// in both cache modes; an error in the middle fails the rest and undoes the batch (one
// implicit transaction); a batch in a transaction.
func pgCheckBatch() {
	for m, mode := range []string{"prepare", "describe"} {
		withPg(1, "statement_cache_mode="+mode, func(c []*pgx.Conn) {
			conn := c[0]
			base := 100 * m
			insert := "INSERT INTO batched (id, n) VALUES ($1, $2)"
			batch := &pgx.Batch{}
			batch.Queue(insert, base+1, 10)
			batch.Queue(insert, base+2, 20)
			batch.Queue("SELECT id, n FROM batched WHERE id BETWEEN $1 AND $2 ORDER BY id", base, base+99)
			batch.Queue("UPDATE batched SET n = n + $1 WHERE id = $2", 5, base+1)
			batch.Queue("SELECT n FROM batched WHERE id = $1", base+1)
			br := conn.SendBatch(bg, batch)
			for i := 0; i < 2; i++ {
				tag, err := br.Exec()
				must(err, "an insert in the batch")
				expectEq(tag.String(), "INSERT 0 1", "an insert's tag")
			}
			rows, err := br.Query()
			must(err, "the select in the batch")
			var got [][2]int32
			for rows.Next() {
				var r [2]int32
				must(rows.Scan(&r[0], &r[1]), "a row")
				got = append(got, r)
			}
			must(rows.Err(), "the select in the batch")
			expectEq(got, [][2]int32{{int32(base + 1), 10}, {int32(base + 2), 20}}, mode+": the rows the batch inserted")
			tag, err := br.Exec()
			must(err, "the update in the batch")
			expectEq(tag.String(), "UPDATE 1", "the update's tag")
			var n int32
			must(br.QueryRow().Scan(&n), "the last select")
			expectEq(n, int32(15), mode+": the updated row")
			must(br.Close(), "the batch")

			// An error in the middle: a duplicate key.
			batch = &pgx.Batch{}
			batch.Queue(insert, base+3, 30)
			batch.Queue(insert, base+1, 99)
			batch.Queue("SELECT n FROM batched WHERE id = $1", base+3)
			batch.Queue("UPDATE batched SET n = 0 WHERE id = $1", base+2)
			br = conn.SendBatch(bg, batch)
			var outcomes []string
			_, err = br.Exec()
			outcomes = append(outcomes, outcomeOfErr(err))
			_, err = br.Exec()
			e := pgErr(err, "the duplicate in the batch")
			outcomes = append(outcomes, "error "+e.Code+" "+e.ConstraintName)
			err = br.QueryRow().Scan(&n)
			outcomes = append(outcomes, outcomeOfErr(err))
			_, err = br.Exec()
			outcomes = append(outcomes, outcomeOfErr(err))
			outcomes = append(outcomes, outcomeOfErr(br.Close()))
			expectEq(outcomes, []string{"ok", "error 23505 batched_pkey", "error 23505", "error 23505",
				"error 23505"}, mode+": the outcomes of insert, duplicate insert, select, update, Close")
			expectEq(pgText(conn, "/* switchyard:writer */ SELECT string_agg(id || '=' || n, ',' ORDER BY id) "+
				"FROM batched WHERE id BETWEEN $1 AND $2", base, base+99),
				fmt.Sprintf("%d=15,%d=20", base+1, base+2), mode+": what the failed batch left")

			// A batch in a transaction, rolled back.
			tx, err := conn.Begin(bg)
			must(err, "begin")
			batch = &pgx.Batch{}
			batch.Queue(insert, base+4, 40)
			batch.Queue("SELECT count(*) FROM batched WHERE id BETWEEN $1 AND $2", base, base+99)
			br = tx.SendBatch(bg, batch)
			_, err = br.Exec()
			must(err, "the insert in the transaction's batch")
			var count int64
			must(br.QueryRow().Scan(&count), "the count")
			expectEq(count, int64(3), "the rows the transaction's batch sees")
			must(br.Close(), "the transaction's batch")
			must(tx.Rollback(bg), "rollback")
			expectEq(pgInt(conn, "/* switchyard:writer */ SELECT count(*) FROM batched WHERE id BETWEEN $1 AND $2",
				base, base+99), int64(2), "rows after the rollback")
		})
	}
}

// failingSource: rows for CopyFrom that fail after `n`.
type failingSource struct{ i, n int }

func (s *failingSource) Next() bool { s.i++; return true }
func (s *failingSource) Values() ([]interface{}, error) {
	if s.i > s.n {
		return nil, errors.New("the source failed")
	}
	return []interface{}{int32(10000 + s.i), "doomed", nil}, nil
}
func (s *failingSource) Err() error { return nil }

// copyText: a value as COPY's text format writes it.
func copyText(s string) string {
	return strings.NewReplacer("\\", "\\\\", "\t", "\\t", "\n", "\\n", "\r", "\\r").Replace(s)
}

// CopyFrom (binary COPY) of 5,000 rows, COPY … TO STDOUT (text) through PgConn().CopyTo, and
// errors inside COPY: a duplicate key, and a source that fails (CopyFail).
func pgCheckCopy() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		const count = 5000
		rows := make([][]interface{}, count)
		var want strings.Builder
		for i := range rows {
			name := fmt.Sprintf("name %d\t\\ \n é", i)
			data := []byte{}
			for b := 0; b < i%256; b++ {
				data = append(data, byte(b))
			}
			if i == 0 {
				rows[i] = []interface{}{int32(i), name, nil}
				fmt.Fprintf(&want, "%d\t%s\t\\N\n", i, copyText(name))
				continue
			}
			rows[i] = []interface{}{int32(i), name, data}
			fmt.Fprintf(&want, "%d\t%s\t\\\\x%x\n", i, copyText(name), data)
		}
		n, err := conn.CopyFrom(bg, pgx.Identifier{"copied"}, []string{"id", "name", "data"}, pgx.CopyFromRows(rows))
		must(err, "CopyFrom")
		expectEq(n, int64(count), "rows copied in")
		var out bytes.Buffer
		tag, err := conn.PgConn().CopyTo(bg, &out, "COPY (SELECT id, name, data FROM copied ORDER BY id) TO STDOUT")
		must(err, "CopyTo")
		expectEq(tag.RowsAffected(), int64(count), "rows copied out")
		if out.String() != want.String() {
			got := strings.Split(out.String(), "\n")
			wanted := strings.Split(want.String(), "\n")
			for i := range wanted {
				if i >= len(got) || got[i] != wanted[i] {
					fail("the text copied out differs at line %d: %q, want %q", i, got[i], wanted[i])
				}
			}
			fail("the text copied out: %d bytes, want %d", out.Len(), want.Len())
		}
		// A duplicate key inside COPY: the server's error, and the session goes on.
		_, err = conn.CopyFrom(bg, pgx.Identifier{"copied"}, []string{"id", "name", "data"},
			pgx.CopyFromRows([][]interface{}{{int32(9000), "new", nil}, {int32(1), "duplicate", nil}}))
		e := pgErr(err, "a duplicate key in COPY")
		expectEq([]string{e.Code, e.ConstraintName}, []string{"23505", "copied_pkey"}, "a duplicate key in COPY")
		// A source that fails: pgx sends CopyFail.
		_, err = conn.CopyFrom(bg, pgx.Identifier{"copied"}, []string{"id", "name", "data"}, &failingSource{n: 100})
		expect(err != nil && strings.Contains(err.Error(), "the source failed"), "a failed source's COPY: %v", err)
		expectEq(pgInt(conn, "/* switchyard:writer */ SELECT count(*) FROM copied WHERE id >= 9000"), int64(0),
			"rows the failed COPYs left")
		// In a transaction, rolled back.
		tx, err := conn.Begin(bg)
		must(err, "begin")
		n, err = tx.CopyFrom(bg, pgx.Identifier{"copied"}, []string{"id", "name"},
			pgx.CopyFromRows([][]interface{}{{int32(9001), "in a transaction"}}))
		must(err, "CopyFrom in a transaction")
		expectEq(pgInt(tx, "SELECT count(*) FROM copied"), int64(count+1), "rows in the transaction")
		must(tx.Rollback(bg), "rollback")
		expectEq(pgInt(conn, "/* switchyard:writer */ SELECT count(*) FROM copied"), int64(count), "rows after the rollback")
		expectEq(pgInt(conn, "SELECT $1::int + 1", 6), int64(7), "the session after COPY")
	})
}

// BeginTx with each isolation level and access mode; a write in a read-only transaction
// (25006); savepoints through nested Begin; BeginFunc.
func pgCheckTransactions() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		settings := "SELECT current_setting('transaction_isolation') || ' ' || current_setting('transaction_read_only') " +
			"|| ' ' || current_setting('transaction_deferrable')"
		id := 2000
		for _, level := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.RepeatableRead, pgx.Serializable} {
			for _, access := range []pgx.TxAccessMode{pgx.ReadWrite, pgx.ReadOnly} {
				deferrable := []pgx.TxDeferrableMode{pgx.NotDeferrable}
				if level == pgx.Serializable && access == pgx.ReadOnly {
					deferrable = append(deferrable, pgx.Deferrable)
				}
				for _, d := range deferrable {
					what := fmt.Sprintf("%s %s %s", level, access, d)
					tx, err := conn.BeginTx(bg, pgx.TxOptions{IsoLevel: level, AccessMode: access, DeferrableMode: d})
					must(err, "BeginTx "+what)
					readOnly := map[pgx.TxAccessMode]string{pgx.ReadWrite: "off", pgx.ReadOnly: "on"}[access]
					deferred := map[pgx.TxDeferrableMode]string{pgx.NotDeferrable: "off", pgx.Deferrable: "on"}[d]
					expectEq(pgText(tx, settings), fmt.Sprintf("%s %s %s", level, readOnly, deferred), what)
					id++
					_, err = tx.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, $2)", id, what)
					if access == pgx.ReadOnly {
						expectEq(pgErr(err, "a write in "+what).Code, "25006", "SQLSTATE of a write in "+what)
						_, err = tx.Exec(bg, "SELECT 1")
						expectEq(pgErr(err, "a statement after the error").Code, "25P02", "SQLSTATE in "+what+" after the error")
						must(tx.Rollback(bg), "rollback")
						continue
					}
					must(err, "a write in "+what)
					must(tx.Commit(bg), "commit "+what)
					expectEq(pgText(conn, "SELECT name FROM items WHERE id = $1", id), what, "read your write after "+what)
				}
			}
		}
		// Savepoints: nested Begin is SAVEPOINT sp_<n>, its Rollback ROLLBACK TO SAVEPOINT, its
		// Commit RELEASE SAVEPOINT.
		tx, err := conn.Begin(bg)
		must(err, "begin")
		pgExec(tx, "INSERT INTO items (id, name) VALUES ($1, 'outer')", 2100)
		sp, err := tx.Begin(bg)
		must(err, "savepoint")
		pgExec(sp, "INSERT INTO items (id, name) VALUES ($1, 'rolled back')", 2101)
		must(sp.Rollback(bg), "rollback to savepoint")
		sp, err = tx.Begin(bg)
		must(err, "savepoint")
		pgExec(sp, "INSERT INTO items (id, name) VALUES ($1, 'kept')", 2102)
		inner, err := sp.Begin(bg)
		must(err, "a savepoint in a savepoint")
		_, err = inner.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, 'duplicate')", 2100)
		expectEq(pgErr(err, "a duplicate key").Code, "23505", "SQLSTATE of a duplicate key")
		must(inner.Rollback(bg), "rollback to the inner savepoint")
		must(sp.Commit(bg), "release savepoint")
		pgExec(tx, "INSERT INTO items (id, name) VALUES ($1, 'after the savepoints')", 2103)
		must(tx.Commit(bg), "commit")
		expectEq(pgText(conn, "SELECT string_agg(id::text, ',' ORDER BY id) FROM items WHERE id BETWEEN 2100 AND 2199"),
			"2100,2102,2103", "committed rows")
		// BeginFunc: rolled back when the function fails, committed otherwise.
		err = conn.BeginFunc(bg, func(tx pgx.Tx) error {
			pgExec(tx, "INSERT INTO items (id, name) VALUES ($1, 'undone')", 2104)
			return errors.New("undo")
		})
		expect(err != nil && err.Error() == "undo", "BeginFunc's error: %v", err)
		expectEq(string(conn.PgConn().TxStatus()), "I", "the status after BeginFunc")
		expectEq(pgInt(conn, "SELECT count(*) FROM items WHERE id = $1", 2104), int64(0), "a row BeginFunc rolled back")
	})
}

// Server errors as *pgconn.PgError, with their fields; a failed transaction (25P02) until
// the rollback.
func pgCheckErrors() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		pgExec(conn, "INSERT INTO items (id, name) VALUES ($1, 'first')", 3000)
		_, err := conn.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, 'again')", 3000)
		e := pgErr(err, "a duplicate key")
		expectEq([]string{e.Severity, e.Code, e.ConstraintName, e.TableName, e.SchemaName, e.Detail},
			[]string{"ERROR", "23505", "items_pkey", "items", "public", "Key (id)=(3000) already exists."}, "a duplicate key")
		_, err = conn.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, $2)", 3001, nil)
		e = pgErr(err, "a NULL in a NOT NULL column")
		expectEq([]string{e.Code, e.ColumnName, e.TableName}, []string{"23502", "name", "items"}, "a not-null violation")
		_, err = conn.Exec(bg, "SELECT * FROM no_such_table WHERE id = $1", 1)
		e = pgErr(err, "a missing table")
		expectEq([]interface{}{e.Code, e.Position}, []interface{}{"42P01", int32(15)}, "a missing table")
		_, err = conn.Exec(bg, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'custom é', "+
			"DETAIL = 'the detail', HINT = 'the hint'; END $$")
		e = pgErr(err, "RAISE EXCEPTION")
		expectEq([]string{e.Code, e.Message, e.Detail, e.Hint}, []string{"P0001", "custom é", "the detail", "the hint"},
			"a raised exception")
		// In a transaction: 25P02 until the rollback.
		tx, err := conn.Begin(bg)
		must(err, "begin")
		_, err = tx.Exec(bg, "INSERT INTO items (id, name) VALUES ($1, 'again')", 3000)
		expectEq(pgErr(err, "a duplicate key in a transaction").Code, "23505", "a duplicate key in a transaction")
		expectEq(string(conn.PgConn().TxStatus()), "E", "the status of a failed transaction")
		_, err = tx.Exec(bg, "SELECT $1::int", 1)
		expectEq(pgErr(err, "a query in a failed transaction").Code, "25P02", "a query in a failed transaction")
		must(tx.Rollback(bg), "rollback")
		expectEq(string(conn.PgConn().TxStatus()), "I", "the status after the rollback")
		// A commit of a failed transaction is a rollback.
		tx, err = conn.Begin(bg)
		must(err, "begin")
		_, err = tx.Exec(bg, "SELECT 1 / 0")
		expectEq(pgErr(err, "a division by zero").Code, "22012", "a division by zero")
		expect(errors.Is(tx.Commit(bg), pgx.ErrTxCommitRollback), "the commit of a failed transaction")
		expectEq(pgInt(conn, "SELECT $1::int", 8), int64(8), "the session after errors")
	})
}

// LISTEN and WaitForNotification: another session's notifications (in order, none of a
// rolled-back transaction), one waited for by a goroutine, the session's own.
func pgCheckListenNotify() {
	withPg(2, "", func(c []*pgx.Conn) {
		listener, notifier := c[0], c[1]
		pgExec(listener, "LISTEN chan")
		pgExec(notifier, "NOTIFY chan, 'hello'")
		pgExec(notifier, "SELECT pg_notify('chan', $1)", "second ✓")
		tx, err := notifier.Begin(bg)
		must(err, "begin")
		pgExec(tx, "NOTIFY chan, 'rolled back'")
		must(tx.Rollback(bg), "rollback")
		pgExec(notifier, "NOTIFY chan, 'third'")
		wait := func() *pgconn.Notification {
			ctx, cancel := context.WithTimeout(bg, 20*time.Second)
			defer cancel()
			n, err := listener.WaitForNotification(ctx)
			must(err, "WaitForNotification")
			return n
		}
		var got []string
		for i := 0; i < 3; i++ {
			n := wait()
			got = append(got, n.Channel+" "+n.Payload)
			expect(!oneConnection || n.PID == notifier.PgConn().PID(),
				"the notifying pid %d is the pid the notifier was told (%d)", n.PID, notifier.PgConn().PID())
		}
		expectEq(got, []string{"chan hello", "chan second ✓", "chan third"}, "notifications")
		// A goroutine waiting while the notifier notifies.
		waited := make(chan string, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					waited <- describePanic(r)
				}
			}()
			n := wait()
			waited <- n.Channel + " " + n.Payload
		}()
		pgExec(notifier, "NOTIFY chan, 'waited for'")
		expectEq(<-waited, "chan waited for", "a notification to a waiting goroutine")
		// The session's own: the pid it was told.
		pgExec(listener, "NOTIFY chan, 'own'")
		n := wait()
		expectEq([]interface{}{n.Payload, n.PID}, []interface{}{"own", listener.PgConn().PID()}, "the session's own notification")
		pgExec(listener, "UNLISTEN *")
		expectEq(pgInt(listener, "SELECT $1::int", 9), int64(9), "the listener after UNLISTEN")
	})
}

// recordingDialer dials as pgconn does and keeps what each connection's first write was (a
// CancelRequest is 16 bytes: length 16, code 80877102) and whether it then read EOF.
type recordingDialer struct {
	mu    sync.Mutex
	conns []*recordedConn
}

type recordedConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte
	eof   bool
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.first == nil {
		c.first = append([]byte{}, p...)
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n == 0 && errors.Is(err, io.EOF) {
		c.mu.Lock()
		c.eof = true
		c.mu.Unlock()
	}
	return n, err
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 5 * time.Minute}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := &recordedConn{Conn: conn}
	d.mu.Lock()
	d.conns = append(d.conns, rc)
	d.mu.Unlock()
	return rc, nil
}

// cancelRequests: how many connections sent a CancelRequest with `pid` and read EOF after it
// (the server's answer: it closes the connection once it has signalled the backend).
func (d *recordingDialer) cancelRequests(pid uint32) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.conns {
		c.mu.Lock()
		if len(c.first) == 16 && binary.BigEndian.Uint32(c.first[4:8]) == 80877102 &&
			binary.BigEndian.Uint32(c.first[8:12]) == pid && c.eof {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// Cancelling pg_sleep(60), on a replica and in a transaction: PgConn().CancelRequest from
// another goroutine (57014, the session goes on), and the end of the query's context. At the
// context's end pgconn 1.11 gives the caller the context's error, not the server's 57014: it
// sends a CancelRequest (seen here on its way out, answered by the closing of that
// connection) and closes the session; where the query ran on the writer, it is seen gone
// from pg_stat_activity. A pool drops such a connection and lends another.
func pgCheckCancel() {
	for _, inTx := range []bool{false, true} {
		where := map[bool]string{false: "a read (on a replica)", true: "a transaction (on the writer)"}[inTx]
		withPg(1, "", func(c []*pgx.Conn) {
			conn := c[0]
			var q pgQuerier = conn
			var tx pgx.Tx
			if inTx {
				var err error
				tx, err = conn.Begin(bg)
				must(err, "begin")
				q = tx
			}
			var err error
			interrupting(func() error { return conn.PgConn().CancelRequest(bg) }, func() {
				_, err = q.Exec(bg, "SELECT pg_sleep(60)")
			})
			e := pgErr(err, "pg_sleep(60) in "+where+" after CancelRequest")
			expectEq(e.Code, "57014", "SQLSTATE of a cancelled query in "+where)
			if inTx {
				must(tx.Rollback(bg), "rollback")
			}
			expectEq(pgInt(conn, "SELECT $1::int", 7), int64(7), "the session after a cancel in "+where)
		})
		// The end of the context.
		config, err := pgx.ParseConfig(pgConnString(""))
		must(err, "config")
		dialer := &recordingDialer{}
		config.DialFunc = dialer.dial
		conn, err := pgx.ConnectConfig(bg, config)
		must(err, "connect")
		marker := fmt.Sprintf("go-ctx-cancel-%d-%t", os.Getpid(), inTx)
		q := pgQuerier(conn)
		if inTx {
			tx, err := conn.Begin(bg)
			must(err, "begin")
			q = tx
		}
		ctx, cancel := context.WithTimeout(bg, 500*time.Millisecond)
		_, err = q.Exec(ctx, "SELECT pg_sleep(60) /* "+marker+" */")
		cancel()
		expect(pgconn.Timeout(err) && errors.Is(err, context.DeadlineExceeded),
			"pg_sleep(60) in %s at the context's end: %T: %v", where, err, err)
		expect(conn.IsClosed(), "the connection is closed after the context's end")
		<-conn.PgConn().CleanupDone()
		expectEq(dialer.cancelRequests(conn.PgConn().PID()), 1, "CancelRequests sent and answered at the context's end")
		if inTx || !throughProxy {
			// The backend ran it on the writer: it stops there.
			withPg(1, "", func(c []*pgx.Conn) {
				pollUntil("0", "the backends still running "+marker, func() string {
					return strconv.FormatInt(pgInt(c[0], "/* switchyard:writer */ SELECT count(*) FROM pg_stat_activity "+
						"WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'", marker), 10)
				})
			})
		}
	}
	// In a pool: the connection is dropped, and the next query gets another.
	pool, err := pgxpool.Connect(bg, pgConnString("pool_max_conns=1"))
	must(err, "the pool")
	defer pool.Close()
	ctx, cancel := context.WithTimeout(bg, 500*time.Millisecond)
	_, err = pool.Exec(ctx, "SELECT pg_sleep(60)")
	cancel()
	expect(pgconn.Timeout(err), "pg_sleep(60) in a pool at the context's end: %T: %v", err, err)
	expectEq(pgInt(pool, "SELECT $1::int", 8), int64(8), "the pool's next query")
}

// DDL between executions of cached `SELECT *`s (on the writer, where the DDL is at once), in
// both cache modes: what the server does, and pgx's answer to it. In prepare mode the 0A000 of
// a statement whose result columns changed makes the cache deallocate it and prepare the text
// again at its next use outside a failed transaction, and (pgx 4.15 never empties its list of
// such texts) at every use after that: DEALLOCATE, Parse and Describe under a new name, Bind.
// In describe mode the text is sent unnamed with the result formats of the columns described
// first, which the server refuses (08P01) once the columns are more.
func pgCheckDDLBetweenExecutions() {
	want := map[string][]string{
		"prepare": {"rows [[1 10]]", "rows [[1 10]]", "rows [[1 10]]",
			"error 0A000", "rows [[1 10 new]]", "rows [[1 10 new]]", "rows [[1 10 new]]",
			"rows [[1 10 new 7]]", "error 0A000", "error 25P02",
			"rows [[1 10 new 7]]", "rows [[1 10 new 7]]", "rows [[1 10 new 7]]", "rows [[1 10 new 7]]"},
		"describe": {"rows [[1 10]]", "rows [[1 10]]", "rows [[1 10]]",
			"error 08P01", "error 08P01", "error 08P01", "rows [[1 10 new]]",
			"error 08P01", "error 25P02", "error 25P02",
			"error 08P01", "error 08P01", "error 08P01", "error 08P01"},
	}
	for _, mode := range []string{"prepare", "describe"} {
		withPg(2, "statement_cache_mode="+mode, func(c []*pgx.Conn) {
			conn, ddl := c[0], c[1]
			table := "shapes_" + mode
			pgExec(ddl, "CREATE TABLE "+table+" (id int PRIMARY KEY, a int)")
			pgExec(ddl, "INSERT INTO "+table+" VALUES (1, 10)")
			first := "SELECT /* switchyard:writer */ * FROM " + table + " WHERE id = $1"
			second := "SELECT /* switchyard:writer */ * FROM " + table + " WHERE id = $1 AND true"
			var outcomes []string
			for i := 0; i < 3; i++ {
				outcomes = append(outcomes, pgOutcome(conn, first, 1))
			}
			pgExec(ddl, "ALTER TABLE "+table+" ADD COLUMN b text DEFAULT 'new'")
			for i := 0; i < 3; i++ {
				outcomes = append(outcomes, pgOutcome(conn, first, 1))
			}
			outcomes = append(outcomes, pgOutcome(conn, second, 1))
			pgExec(ddl, "ALTER TABLE "+table+" ADD COLUMN c int DEFAULT 7")
			tx, err := conn.Begin(bg)
			must(err, "begin")
			outcomes = append(outcomes, pgOutcome(tx, first, 1))
			outcomes = append(outcomes, pgOutcome(tx, second, 1))
			outcomes = append(outcomes, pgOutcome(tx, "SELECT $1::int", 1))
			must(tx.Rollback(bg), "rollback")
			for i := 0; i < 2; i++ {
				outcomes = append(outcomes, pgOutcome(conn, first, 1))
				outcomes = append(outcomes, pgOutcome(conn, second, 1))
			}
			expectEq(outcomes, want[mode], mode+": the first text 3 times; ADD COLUMN; the first 3 times, the second; "+
				"ADD COLUMN; in a transaction the first, the second and SELECT $1; ROLLBACK; the first and the second twice")
			if mode != "prepare" {
				return
			}
			// A batch that binds a statement whose columns changed between two others, before one
			// Sync: the batch fails from there, every time (pgx 4.15 learns nothing from a batch's
			// error), until a query of the text fails with 0A000. After that, pgx deallocates the
			// text's statement (SQL DEALLOCATE) at every use of its cache, and so, preparing a batch,
			// prepares it again and deallocates it at the next item: the batch binds a name the
			// session no longer has (26000), which no connection of a proxy may hold for it.
			third := "SELECT /* switchyard:writer */ * FROM " + table + " WHERE id = $1 AND 1 = 1"
			outcomes = []string{pgOutcome(conn, third, 1)}
			pgExec(ddl, "ALTER TABLE "+table+" ADD COLUMN d int DEFAULT 8")
			for round := 0; round < 3; round++ {
				if round == 2 {
					outcomes = append(outcomes, pgOutcome(conn, third, 1))
				}
				batch := &pgx.Batch{}
				batch.Queue("SELECT $1::int", 1)
				batch.Queue(third, 1)
				batch.Queue("SELECT $1::int", 2)
				br := conn.SendBatch(bg, batch)
				for i := 0; i < 3; i++ {
					outcomes = append(outcomes, rowsOutcome(br.Query()))
				}
				outcomes = append(outcomes, outcomeOfErr(br.Close()))
			}
			failed := []string{"rows [[1]]", "error 0A000", "error 0A000", "error 0A000"}
			expectEq(outcomes, append(append(append([]string{"rows [[1 10 new 7]]"}, failed...), failed...),
				"error 0A000", "rows [[1]]", "error 26000", "error 26000", "error 26000"),
				"a third text; ADD COLUMN; twice a batch of SELECT $1, the third, SELECT $1 and its Close; "+
					"the third; the batch again")
		})
	}
}

// Where statements run: an autocommit read on a fresh connection on a replica, a transaction
// on the primary; a read right after a write sees it.
func pgCheckRouting() {
	withPg(1, "", func(c []*pgx.Conn) {
		conn := c[0]
		expectEq(pgText(conn, "SELECT pg_is_in_recovery()::text"), strconv.FormatBool(throughProxy), "a fresh session's read")
		must(conn.BeginFunc(bg, func(tx pgx.Tx) error {
			expectEq(pgText(tx, "SELECT pg_is_in_recovery()::text"), "false", "a transaction runs on the primary")
			return nil
		}), "a transaction")
		byID := "SELECT name FROM items WHERE id = $1"
		pgExec(conn, "INSERT INTO items (id, name) VALUES ($1, $2)", 6000, "routed")
		expectEq(pgText(conn, byID, 6000), "routed", "read your write")
		pgExec(conn, "UPDATE items SET name = 'updated' WHERE id = $1", 6000)
		expectEq(pgText(conn, byID, 6000), "updated", "read your write with the cached statement")
		pgAwaitReplicated("SELECT name FROM items WHERE id = 6000", "updated")
	})
}

var pgChecks = []check{
	{"connect", pgCheckConnect},
	{"setup", pgCheckSetup},
	{"queries_prepare", pgCheckQueriesPrepare},
	{"queries_describe", pgCheckQueriesDescribe},
	{"types", pgCheckTypes},
	{"pool", pgCheckPool},
	{"same_names_across_processes", pgCheckSameNamesAcrossProcesses},
	{"batch", pgCheckBatch},
	{"copy", pgCheckCopy},
	{"transactions", pgCheckTransactions},
	{"errors", pgCheckErrors},
	{"listen_notify", pgCheckListenNotify},
	{"cancel", pgCheckCancel},
	{"ddl_between_executions", pgCheckDDLBetweenExecutions},
	{"routing", pgCheckRouting},
}

// ---- MySQL: go-sql-driver/mysql through database/sql ----

const (
	erDupEntry         = 1062
	erNoSuchTable      = 1146
	erParseError       = 1064
	erQueryInterrupted = 1317
	erReadOnlyTx       = 1792
)

// The connections the driver dialed (through myDialer), with the first bytes each read (the
// server's greeting) and the first bytes of its first writes.
var (
	dialedMu sync.Mutex
	dialed   []*myRecordedConn
)

type myRecordedConn struct {
	net.Conn
	mu     sync.Mutex
	read   []byte
	writes [][]byte
}

func (c *myRecordedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if room := 512 - len(c.read); room > 0 && n > 0 {
		if n < room {
			room = n
		}
		c.read = append(c.read, p[:room]...)
	}
	c.mu.Unlock()
	return n, err
}

func (c *myRecordedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.writes) < 4 {
		head := p
		if len(head) > 16 {
			head = head[:16]
		}
		c.writes = append(c.writes, append([]byte{}, head...))
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// greeting: the connection id and server version of the greeting the connection read.
func (c *myRecordedConn) greeting() (uint32, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.read) < 5 || c.read[4] != 10 {
		fail("no protocol 10 greeting: %x", c.read)
	}
	payload := c.read[5:]
	end := bytes.IndexByte(payload, 0)
	if end < 0 || len(payload) < end+5 {
		fail("a short greeting: %x", c.read)
	}
	return binary.LittleEndian.Uint32(payload[end+1 : end+5]), string(payload[:end])
}

// usedTLS: the client's first packet was an SSLRequest (32 bytes, sequence 1), its next write
// a TLS handshake record.
func (c *myRecordedConn) usedTLS() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.writes) >= 2 && len(c.writes[0]) >= 4 && c.writes[0][0] == 32 && c.writes[0][1] == 0 &&
		c.writes[0][2] == 0 && c.writes[0][3] == 1 && len(c.writes[1]) >= 2 && c.writes[1][0] == 0x16 &&
		c.writes[1][1] == 3
}

func init() {
	mysql.RegisterDialContext("sytcp", func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 5 * time.Minute}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		rc := &myRecordedConn{Conn: conn}
		dialedMu.Lock()
		dialed = append(dialed, rc)
		dialedMu.Unlock()
		return rc, nil
	})
}

// myDSN: the data source name of a client, TLS unverified when SY_SSLMODE is set,
// interpolateParams off (the default, said here as what the checks rest on), with `extra`
// parameters.
func myDSN(extra string) string {
	params := "parseTime=true&timeout=10s&interpolateParams=false"
	if sslmode != "" {
		params += "&tls=skip-verify"
	}
	if extra != "" {
		params += "&" + extra
	}
	return fmt.Sprintf("%s:%s@sytcp(%s:%d)/%s?%s", user, password, host, port, dbName, params)
}

// myOpen: a database/sql handle of at most `conns` connections (all kept when idle).
func myOpen(conns int, extra string) *sql.DB {
	db, err := sql.Open("mysql", myDSN(extra))
	must(err, "open")
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db
}

// The querying methods *sql.DB, *sql.Conn and *sql.Tx share.
type myQuerier interface {
	ExecContext(ctx context.Context, query string, args ...interface{}) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...interface{}) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...interface{}) *sql.Row
}

func myExec(q myQuerier, query string, args ...interface{}) sql.Result {
	r, err := q.ExecContext(bg, query, args...)
	must(err, query)
	return r
}

func myInt(q myQuerier, query string, args ...interface{}) int64 {
	var n int64
	must(q.QueryRowContext(bg, query, args...).Scan(&n), query)
	return n
}

func myText(q myQuerier, query string, args ...interface{}) string {
	var s string
	must(q.QueryRowContext(bg, query, args...).Scan(&s), query)
	return s
}

// myErr: err as a server's error, failing when it is another kind of error (or none).
func myErr(err error, what string) *mysql.MySQLError {
	var e *mysql.MySQLError
	if !errors.As(err, &e) {
		fail("%s: want a server error, got %T: %v", what, err, err)
	}
	return e
}

func myConn(db *sql.DB) *sql.Conn {
	c, err := db.Conn(bg)
	must(err, "a connection")
	return c
}

func myAwaitReplicated(query, want string) {
	db := myOpen(1, "")
	defer db.Close()
	pollUntil(want, query, func() string {
		var s string
		err := db.QueryRowContext(bg, query).Scan(&s)
		if errors.Is(err, sql.ErrNoRows) {
			// A replica that has not applied the row yet has none: not there yet.
			return ""
		}
		must(err, query)
		return s
	})
}

func myCheckConnect() {
	db := myOpen(1, "")
	defer db.Close()
	dialedMu.Lock()
	before := len(dialed)
	dialedMu.Unlock()
	c := myConn(db)
	defer c.Close()
	dialedMu.Lock()
	ours := dialed[before:]
	dialedMu.Unlock()
	expectEq(len(ours), 1, "connections dialed")
	greetingID, greetingVersion := ours[0].greeting()
	expectEq(ours[0].usedTLS(), sslmode != "", "TLS in use (an SSLRequest, then a TLS handshake)")
	expectEq(strings.SplitN(myText(c, "SELECT CURRENT_USER()"), "@", 2)[0], user, "the current user")
	expectEq(myText(c, "SELECT DATABASE()"), dbName, "the default database")
	version := myText(c, "SELECT VERSION()")
	expect(strings.Contains(version, "MariaDB"), "a MariaDB server: %s", version)
	expectEq(strings.TrimPrefix(greetingVersion, "5.5.5-"), version, "the greeting's version")
	tx, err := c.BeginTx(bg, nil)
	must(err, "begin")
	id := myInt(tx, "SELECT CONNECTION_ID()")
	must(tx.Rollback(), "rollback")
	expect(!oneConnection || uint32(id) == greetingID,
		"the greeting's connection id (%d) is the writer's (%d)", greetingID, id)
	must(c.PingContext(bg), "ping")
	expectEq(myText(c, "SELECT @@character_set_client"), "utf8mb4", "the client's character set")
}

func myCheckSetup() {
	db := myOpen(1, "")
	defer db.Close()
	myExec(db, "DROP TABLE IF EXISTS items, typed, pooled, shapes")
	myExec(db, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, price DECIMAL(10,2)) "+
		"ENGINE=InnoDB")
	myExec(db, "CREATE TABLE typed (id INT PRIMARY KEY, d DECIMAL(20,6), dt DATETIME(6), b LONGBLOB, j JSON, "+
		"s VARCHAR(100) CHARACTER SET utf8mb4, n VARCHAR(10)) ENGINE=InnoDB")
	myExec(db, "CREATE TABLE pooled (worker INT, i INT, n INT, PRIMARY KEY (worker, i)) ENGINE=InnoDB")
	myAwaitReplicated("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "+
		"AND table_name = 'pooled'", "1")
}

// Queries with parameters: each a server-side statement (COM_STMT_PREPARE, EXECUTE, CLOSE),
// and queries without (COM_QUERY); errors of both.
func myCheckQueries() {
	db := myOpen(4, "")
	defer db.Close()
	for i := 0; i < 20; i++ {
		r := myExec(db, "INSERT INTO items (id, name, price) VALUES (?, ?, ?)", i, fmt.Sprintf("item %d ✓", i),
			fmt.Sprintf("%d.50", i))
		n, err := r.RowsAffected()
		must(err, "rows affected")
		expectEq(n, int64(1), "rows affected by an insert")
	}
	c := myConn(db)
	defer c.Close()
	statements := func() [3]int64 {
		var got [3]int64
		for i, name := range []string{"Com_stmt_prepare", "Com_stmt_execute", "Com_stmt_close"} {
			var n string
			must(c.QueryRowContext(bg, "SHOW SESSION STATUS LIKE '"+name+"'").Scan(&n, &got[i]), name)
		}
		return got
	}
	before := statements()
	for i := 0; i < 20; i++ {
		var name, price string
		// Written by other connections: read on the writer.
		must(c.QueryRowContext(bg, "SELECT /* switchyard:writer */ name, price FROM items WHERE id = ?", i).Scan(&name, &price),
			"row "+strconv.Itoa(i))
		expectEq([]string{name, price}, []string{fmt.Sprintf("item %d ✓", i), fmt.Sprintf("%d.50", i)}, "row "+strconv.Itoa(i))
	}
	if !throughProxy {
		// What the premise of this script rests on: each query with parameters is a server-side
		// statement prepared, executed and closed.
		after := statements()
		expectEq([3]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}, [3]int64{20, 20, 20},
			"COM_STMT_PREPARE, EXECUTE and CLOSE of 20 queries with parameters")
	}
	expectEq(myText(c, "SELECT CONCAT(?, ?)", "a'b", "\"✓\""), "a'b\"✓\"", "text parameters")
	expectEq(myInt(c, "SELECT ? + 1", int64(1)<<40), int64(1)<<40+1, "an integer parameter")
	_, err := c.ExecContext(bg, "INSERT INTO items (id, name) VALUES (?, ?)", 1, "duplicate")
	expectEq(myErr(err, "a duplicate key").Number, uint16(erDupEntry), "error of a duplicate key")
	_, err = c.QueryContext(bg, "SELECT * FROM no_such_table WHERE id = ?", 1)
	expectEq(myErr(err, "a missing table (at prepare)").Number, uint16(erNoSuchTable), "error of a missing table")
	_, err = c.QueryContext(bg, "SELEC ?", 1)
	expectEq(myErr(err, "a syntax error (at prepare)").Number, uint16(erParseError), "error of a syntax error")
	_, err = c.QueryContext(bg, "SELECT * FROM no_such_table")
	expectEq(myErr(err, "a missing table (a text query)").Number, uint16(erNoSuchTable), "error of a missing table")
	expectEq(myInt(c, "SELECT ? * 2", 21), int64(42), "the session after errors")
}

// database/sql with 16 connections shared by 16 goroutines: reads, writes and transactions
// on whatever connection it lends; then 16 held at once, each in a transaction.
func myCheckPool() {
	db := myOpen(16, "")
	defer db.Close()
	const rounds = 25
	inGoroutines(16, func(g int) {
		for i := 0; i < rounds; i++ {
			expectEq(myInt(db, "SELECT ? * ?", g, i), int64(g*i), "a read")
			myExec(db, "INSERT INTO pooled (worker, i, n) VALUES (?, ?, ?)", g, i, i)
			tx, err := db.BeginTx(bg, nil)
			must(err, "begin")
			myExec(tx, "UPDATE pooled SET n = n + 1 WHERE worker = ? AND i = ?", g, i)
			expectEq(myInt(tx, "SELECT n FROM pooled WHERE worker = ? AND i = ?", g, i), int64(i+1), "a read in the transaction")
			expectEq(myInt(tx, "SELECT @@read_only"), int64(0), "a transaction on the primary")
			must(tx.Commit(), "commit")
		}
	})
	stats := db.Stats()
	expect(stats.OpenConnections <= 16 && stats.MaxOpenConnections == 16, "the pool's connections: %+v", stats)
	var held []*sql.Conn
	for i := 0; i < 16; i++ {
		held = append(held, myConn(db))
	}
	inGoroutines(16, func(g int) {
		tx, err := held[g].BeginTx(bg, nil)
		must(err, "begin")
		expectEq(myInt(tx, "SELECT COUNT(*) FROM pooled WHERE worker = ?", g), int64(rounds), "the goroutine's rows")
		must(tx.Commit(), "commit")
	})
	for _, c := range held {
		c.Close()
	}
	pollUntil(strconv.Itoa(16*rounds*(rounds+1)/2), "the sum over the pool's rows", func() string {
		return strconv.FormatInt(myInt(db, "SELECT CAST(SUM(n) AS SIGNED) FROM pooled"), 10)
	})
}

// Statements of db.Prepare used by 16 goroutines at once: database/sql prepares each again on
// every connection that runs it (and in transactions, tx.Stmt); closed at the end.
func myCheckPreparedConcurrently() {
	myAwaitReplicated("SELECT COUNT(*) FROM items WHERE id < 20", "20")
	db := myOpen(16, "")
	defer db.Close()
	byID, err := db.Prepare("SELECT name, ? AS g FROM items WHERE id = ?")
	must(err, "prepare")
	times, err := db.Prepare("SELECT ? * ?")
	must(err, "prepare")
	insert, err := db.Prepare("INSERT INTO items (id, name, price) VALUES (?, ?, 1)")
	must(err, "prepare")
	inGoroutines(16, func(g int) {
		for i := 0; i < 30; i++ {
			var name string
			var got int64
			must(byID.QueryRow(g, (g+i)%20).Scan(&name, &got), "by id")
			expectEq([]interface{}{name, got}, []interface{}{fmt.Sprintf("item %d ✓", (g+i)%20), int64(g)}, "by id")
			must(times.QueryRow(g, i).Scan(&got), "times")
			expectEq(got, int64(g*i), "times")
			if i%10 == 0 {
				tx, err := db.BeginTx(bg, nil)
				must(err, "begin")
				_, err = tx.Stmt(insert).Exec(10000+100*g+i, fmt.Sprintf("prepared %d %d", g, i))
				must(err, "the insert in a transaction")
				must(tx.Stmt(byID).QueryRow(g, 10000+100*g+i).Scan(&name, &got), "by id in the transaction")
				expectEq(name, fmt.Sprintf("prepared %d %d", g, i), "read your write in the transaction")
				must(tx.Commit(), "commit")
			}
		}
	})
	for _, st := range []*sql.Stmt{byID, times, insert} {
		must(st.Close(), "close")
	}
	_, err = byID.Query(1, 1)
	expect(err != nil, "a closed statement ran")
	expectEq(myInt(db, "SELECT /* switchyard:writer */ COUNT(*) FROM items WHERE id >= 10000"), int64(16*3),
		"rows inserted by the prepared statement")
}

// DECIMAL, DATETIME(6) (parseTime), a 1 MiB BLOB with every byte value, JSON, utf8mb4 and
// NULL (sql.NullString), in the binary protocol (server-side statements) and in text.
func myCheckTypes() {
	db := myOpen(1, "")
	defer db.Close()
	c := myConn(db)
	defer c.Close()
	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte(i)
	}
	dt := time.Date(2024, 2, 29, 12, 34, 56, 789012000, time.UTC)
	text := "héllo 🎉 ✓ 'quoted' \\ \"double\""
	myExec(c, "INSERT INTO typed (id, d, dt, b, j, s, n) VALUES (?, ?, ?, ?, ?, ?, ?)", 1, "12345678901234.123456", dt,
		blob, `{"k": [1, null, "é"]}`, text, nil)
	myExec(c, "INSERT INTO typed (id, d, dt, b, j, s, n) VALUES (2, 1.5, '2024-02-29 12:34:56.789012', x'00ff', "+
		"'[]', 'two 🎉', 'set')")
	check := func(row *sql.Row, what string, wantBlob []byte, wantS string, wantN sql.NullString, wantD string) {
		var (
			d, j, s string
			got     time.Time
			b       []byte
			n       sql.NullString
		)
		must(row.Scan(&d, &got, &b, &j, &s, &n), what)
		expectEq(d, wantD, what+": DECIMAL")
		expect(got.Equal(dt) && got.Location() == time.UTC, "%s: DATETIME(6) %v, want %v", what, got, dt)
		expect(bytes.Equal(b, wantBlob), "%s: a BLOB of %d bytes, want %d", what, len(b), len(wantBlob))
		expectEq(s, wantS, what+": utf8mb4")
		expectEq(n, wantN, what+": a nullable column")
		if wantS == text {
			expectEq(j, `{"k": [1, null, "é"]}`, what+": JSON")
		}
	}
	query := "SELECT d, dt, b, j, s, n FROM typed WHERE id = "
	check(c.QueryRowContext(bg, query+"?", 1), "row 1 (binary)", blob, text, sql.NullString{}, "12345678901234.123456")
	check(c.QueryRowContext(bg, query+"1"), "row 1 (text)", blob, text, sql.NullString{}, "12345678901234.123456")
	check(c.QueryRowContext(bg, query+"?", 2), "row 2 (binary)", []byte{0, 255}, "two 🎉", sql.NullString{String: "set", Valid: true},
		"1.500000")
	check(c.QueryRowContext(bg, query+"2"), "row 2 (text)", []byte{0, 255}, "two 🎉", sql.NullString{String: "set", Valid: true},
		"1.500000")
	var (
		i8    int64
		f8    float64
		u64   uint64
		null  sql.NullInt64
		jsonV string
	)
	for _, q := range []string{"SELECT ?, ?, 18446744073709551615, NULL, JSON_EXTRACT(j, '$.k[2]') FROM typed WHERE id = 1",
		"SELECT 4611686018427387904, 1.5e0, 18446744073709551615, NULL, JSON_EXTRACT(j, '$.k[2]') FROM typed WHERE id = 1"} {
		var args []interface{}
		if strings.Contains(q, "?") {
			args = []interface{}{int64(1) << 62, 1.5}
		}
		must(c.QueryRowContext(bg, q, args...).Scan(&i8, &f8, &u64, &null, &jsonV), q)
		expectEq([]interface{}{i8, f8, u64, null.Valid, jsonV}, []interface{}{int64(1) << 62, 1.5, uint64(18446744073709551615),
			false, `"é"`}, q)
	}
}

// Transactions: commit, rollback, savepoints; BeginTx with isolation levels and ReadOnly (a
// write fails with 1792); a duplicate key (1062) that leaves the transaction going.
func myCheckTransactions() {
	db := myOpen(1, "")
	defer db.Close()
	tx, err := db.BeginTx(bg, nil)
	must(err, "begin")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'committed')", 100)
	must(tx.Commit(), "commit")
	tx, err = db.BeginTx(bg, nil)
	must(err, "begin")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'rolled back')", 101)
	must(tx.Rollback(), "rollback")
	tx, err = db.BeginTx(bg, nil)
	must(err, "begin")
	myExec(tx, "INSERT INTO items (id, name) VALUES (102, 'outer')")
	myExec(tx, "SAVEPOINT s1")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'inner')", 103)
	myExec(tx, "ROLLBACK TO SAVEPOINT s1")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'kept')", 104)
	myExec(tx, "RELEASE SAVEPOINT s1")
	must(tx.Commit(), "commit")
	expectEq(myText(db, "SELECT GROUP_CONCAT(id ORDER BY id) FROM items WHERE id BETWEEN 100 AND 199"), "100,102,104",
		"committed rows")
	// Isolation levels: SET TRANSACTION ISOLATION LEVEL (for the next transaction only, so
	// @@tx_isolation does not show it), then START TRANSACTION; seen by what the transaction
	// reads while other sessions write (a row committed after its first read, a row not
	// committed), and by whether its plain reads lock (SERIALIZABLE) what another
	// transaction's SELECT … FOR UPDATE NOWAIT wants.
	other := myOpen(2, "")
	defer other.Close()
	for k, level := range []sql.IsolationLevel{sql.LevelReadUncommitted, sql.LevelReadCommitted, sql.LevelRepeatableRead,
		sql.LevelSerializable} {
		lo := 300 + 10*k
		tx, err := db.BeginTx(bg, &sql.TxOptions{Isolation: level})
		must(err, "BeginTx "+level.String())
		var seen []int64
		if level != sql.LevelSerializable {
			count := "SELECT COUNT(*) FROM items WHERE id BETWEEN ? AND ?"
			seen = append(seen, myInt(tx, count, lo, lo+9))
			myExec(other, "INSERT INTO items (id, name) VALUES (?, 'committed meanwhile')", lo)
			uncommitted, err := other.BeginTx(bg, nil)
			must(err, "begin")
			myExec(uncommitted, "INSERT INTO items (id, name) VALUES (?, 'not committed')", lo+1)
			seen = append(seen, myInt(tx, count, lo, lo+9))
			must(uncommitted.Rollback(), "rollback")
		}
		var name string
		must(tx.QueryRow("SELECT name FROM items WHERE id = 100").Scan(&name), "a read of row 100")
		locker, err := other.BeginTx(bg, nil)
		must(err, "begin")
		_, err = locker.Exec("SELECT name FROM items WHERE id = 100 FOR UPDATE NOWAIT")
		locked := "no lock"
		if err != nil {
			locked = fmt.Sprintf("error %d", myErr(err, "SELECT … FOR UPDATE NOWAIT").Number)
		}
		must(locker.Rollback(), "rollback")
		must(tx.Commit(), "commit")
		want := map[sql.IsolationLevel]string{
			sql.LevelReadUncommitted: "[0 2] no lock",
			sql.LevelReadCommitted:   "[0 1] no lock",
			sql.LevelRepeatableRead:  "[0 0] no lock",
			sql.LevelSerializable:    "[] error 1205",
		}[level]
		expectEq(fmt.Sprintf("%v %s", seen, locked), want, "rows seen before and after others wrote, and "+
			"whether a read locks, in a transaction begun with "+level.String())
		expectEq(myText(db, "SELECT @@tx_isolation"), "REPEATABLE-READ", "the session's isolation after "+level.String())
	}
	// Read only: START TRANSACTION READ ONLY.
	for _, level := range []sql.IsolationLevel{sql.LevelDefault, sql.LevelSerializable} {
		tx, err = db.BeginTx(bg, &sql.TxOptions{ReadOnly: true, Isolation: level})
		must(err, "a read-only transaction")
		expectEq(myInt(tx, "SELECT COUNT(*) FROM items WHERE id = ?", 102), int64(1), "a read in a read-only transaction")
		_, err = tx.Exec("INSERT INTO items (id, name) VALUES (?, 'read only')", 105)
		expectEq(myErr(err, "a write in a read-only transaction").Number, uint16(erReadOnlyTx),
			"error of a write in a read-only transaction ("+level.String()+")")
		must(tx.Rollback(), "rollback")
	}
	// A duplicate key fails the statement, not the transaction.
	tx, err = db.BeginTx(bg, nil)
	must(err, "begin")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'kept')", 200)
	_, err = tx.Exec("INSERT INTO items (id, name) VALUES (?, 'duplicate')", 200)
	expectEq(myErr(err, "a duplicate key").Number, uint16(erDupEntry), "error of a duplicate key")
	_, err = tx.Exec("INSERT INTO items (id, name) VALUES (200, 'duplicate as text')")
	expectEq(myErr(err, "a duplicate key").Number, uint16(erDupEntry), "error of a duplicate key (text)")
	myExec(tx, "INSERT INTO items (id, name) VALUES (?, 'after the duplicate')", 201)
	expectEq(myInt(tx, "SELECT @@in_transaction"), int64(1), "still in the transaction after the error")
	must(tx.Commit(), "commit")
	expectEq(myText(db, "SELECT GROUP_CONCAT(id ORDER BY id) FROM items WHERE id BETWEEN 200 AND 299"), "200,201",
		"the transaction went on after the duplicate key")
}

// multiStatements=true: several result sets of one query (the OK of an INSERT among them
// skipped by the driver), a failed batch; queries with parameters are still server-side
// statements; several UPDATEs in one Exec.
func myCheckMultiStatements() {
	db := myOpen(1, "multiStatements=true")
	defer db.Close()
	sets := func(query string) ([][]string, error) {
		rows, err := db.Query(query)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var all [][]string
		for {
			var set []string
			cols, err := rows.Columns()
			if err != nil {
				return all, err
			}
			for rows.Next() {
				values := make([]sql.RawBytes, len(cols))
				ptrs := make([]interface{}, len(cols))
				for i := range values {
					ptrs[i] = &values[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					return all, err
				}
				var texts []string
				for _, v := range values {
					texts = append(texts, string(v))
				}
				set = append(set, strings.Join(texts, " "))
			}
			all = append(all, set)
			if !rows.NextResultSet() {
				return all, rows.Err()
			}
		}
	}
	got, err := sets("SELECT 1; SELECT 2, 3 UNION ALL SELECT 4, 5; INSERT INTO items (id, name) VALUES (7000, 'multi'); " +
		"SELECT name FROM items WHERE id = 7000")
	must(err, "several result sets")
	expectEq(got, [][]string{{"1"}, {"2 3", "4 5"}, {"multi"}}, "the result sets")
	// An error ends the batch. (Not in the middle: go-sql-driver 1.5 then waits forever in
	// Rows.Close for the rest of a result set that never began, against the server too.)
	got, err = sets("SELECT * FROM no_such_table; SELECT 3")
	expectEq(len(got), 0, "result sets of a failed batch")
	expectEq(myErr(err, "a missing table first").Number, uint16(erNoSuchTable), "the error of a failed batch")
	expectEq(myInt(db, "SELECT 2"), int64(2), "the session after a failed batch")
	expectEq(myInt(db, "SELECT ? + 4", 1), int64(5), "a query with parameters after the failed batch")
	r := myExec(db, "UPDATE items SET name = 'multi 2' WHERE id = 7000; UPDATE items SET name = 'multi 3' WHERE id = 7000")
	n, err := r.RowsAffected()
	must(err, "rows affected")
	expect(n >= 1, "rows affected by two updates: %d", n)
	expectEq(myText(db, "SELECT /* switchyard:writer */ name FROM items WHERE id = 7000"), "multi 3", "the updates")
}

// 20,000 rows read with rows.Next() as they come, in text and binary protocol; a result
// left early (rows.Close reads the rest), the connection going on.
func myCheckStreaming() {
	db := myOpen(1, "")
	defer db.Close()
	for _, args := range [][]interface{}{nil, {0}} {
		query := "SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000"
		if args != nil {
			query += " WHERE seq > ?"
		}
		rows, err := db.Query(query, args...)
		must(err, query)
		var n, sum, size int64
		for rows.Next() {
			var seq int64
			var s sql.RawBytes
			must(rows.Scan(&seq, &s), "a row")
			n++
			sum += seq
			size += int64(len(s))
		}
		must(rows.Err(), "the rows")
		expectEq([]int64{n, sum, size}, []int64{20000, 200010000, 20000 * 1024}, "rows, sum and bytes of "+query)
		rows, err = db.Query(query, args...)
		must(err, query)
		for i := 0; i < 100 && rows.Next(); i++ {
		}
		must(rows.Close(), "closing a result left early")
		expectEq(myInt(db, "SELECT 5"), int64(5), "the connection after a result left early")
	}
}

// The end of SELECT SLEEP(60)'s context: the driver closes the connection; the pool's next
// query gets another.
func myCheckContextCancel() {
	db := myOpen(1, "")
	defer db.Close()
	expectEq(myInt(db, "SELECT 1"), int64(1), "the first query")
	for _, args := range [][]interface{}{nil, {60}} {
		query := "SELECT SLEEP(60)"
		if args != nil {
			query = "SELECT SLEEP(?)"
		}
		ctx, cancel := context.WithTimeout(bg, 500*time.Millisecond)
		var n int64
		err := db.QueryRowContext(ctx, query, args...).Scan(&n)
		cancel()
		expect(errors.Is(err, context.DeadlineExceeded), "%s at the context's end: %T: %v", query, err, err)
		expectEq(myInt(db, "SELECT ? + 1", 5), int64(6), "the next query after "+query)
	}
}

// KILL QUERY <its own CONNECTION_ID()> from another connection ends SELECT SLEEP(60), in a
// read and in a transaction.
func myCheckKillQuery() {
	db := myOpen(2, "")
	defer db.Close()
	for _, inTx := range []bool{false, true} {
		where := map[bool]string{false: "a read", true: "a transaction"}[inTx]
		c, killer := myConn(db), myConn(db)
		var q myQuerier = c
		var tx *sql.Tx
		if inTx {
			var err error
			tx, err = c.BeginTx(bg, nil)
			must(err, "begin")
			q = tx
		}
		own := myInt(q, "SELECT CONNECTION_ID()")
		var result int64
		var err error
		interrupting(func() error {
			_, err := killer.ExecContext(bg, fmt.Sprintf("KILL QUERY %d", own))
			return err
		}, func() {
			err = q.QueryRowContext(bg, "SELECT SLEEP(60)").Scan(&result)
		})
		if err != nil {
			expectEq(myErr(err, "SLEEP(60) in "+where).Number, uint16(erQueryInterrupted), "error of SLEEP(60) in "+where)
		} else {
			expectEq(result, int64(1), "SLEEP(60) in "+where+" (1: interrupted)")
		}
		if inTx {
			must(tx.Rollback(), "rollback")
		}
		expectEq(myInt(c, "SELECT ? + 2", 1), int64(3), "the session after KILL QUERY in "+where)
		c.Close()
		killer.Close()
	}
}

// DDL between executions of a db.Prepare'd `SELECT *` (on the writer, where the DDL is at
// once), on two connections: the columns each execution gives, as from the server.
func myCheckDDLBetweenExecutions() {
	db := myOpen(2, "")
	defer db.Close()
	myExec(db, "CREATE TABLE shapes (id INT PRIMARY KEY, a INT)")
	myExec(db, "INSERT INTO shapes VALUES (1, 10)")
	st, err := db.Prepare("SELECT /* switchyard:writer */ * FROM shapes WHERE id = ?")
	must(err, "prepare")
	defer st.Close()
	outcome := func() string {
		rows, err := st.Query(1)
		if err != nil {
			return fmt.Sprintf("error %d", myErr(err, "the statement").Number)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		must(err, "columns")
		var all []string
		for rows.Next() {
			values := make([]sql.RawBytes, len(cols))
			ptrs := make([]interface{}, len(cols))
			for i := range values {
				ptrs[i] = &values[i]
			}
			must(rows.Scan(ptrs...), "a row")
			var texts []string
			for _, v := range values {
				texts = append(texts, string(v))
			}
			all = append(all, strings.Join(texts, " "))
		}
		must(rows.Err(), "the rows")
		return fmt.Sprintf("%v %v", cols, all)
	}
	var outcomes []string
	// Two at once: the statement prepared on both connections.
	for i := 0; i < 2; i++ {
		inGoroutines(2, func(int) { outcome() })
	}
	outcomes = append(outcomes, outcome())
	myExec(db, "ALTER TABLE shapes ADD COLUMN b VARCHAR(10) DEFAULT 'new'")
	outcomes = append(outcomes, outcome(), outcome())
	myExec(db, "ALTER TABLE shapes DROP COLUMN a")
	outcomes = append(outcomes, outcome(), outcome())
	myExec(db, "DROP TABLE shapes")
	outcomes = append(outcomes, outcome())
	myExec(db, "CREATE TABLE shapes (id INT PRIMARY KEY, z TEXT)")
	myExec(db, "INSERT INTO shapes VALUES (1, 'again')")
	outcomes = append(outcomes, outcome(), outcome())
	expectEq(outcomes, []string{"[id a] [1 10]", "[id a b] [1 10 new]", "[id a b] [1 10 new]", "[id b] [1 new]",
		"[id b] [1 new]", "error 1146", "[id z] [1 again]", "[id z] [1 again]"},
		"executions; ADD COLUMN; 2 executions; DROP COLUMN; 2 executions; DROP TABLE; an execution; "+
			"CREATE TABLE; 2 executions")
}

// Where statements run: an autocommit read on a fresh connection on a replica, a transaction
// on the primary; a read right after a write sees it.
func myCheckRouting() {
	db := myOpen(1, "")
	defer db.Close()
	want := int64(0)
	if throughProxy {
		want = 1
	}
	expectEq(myInt(db, "SELECT @@read_only"), want, "a fresh session's read")
	tx, err := db.BeginTx(bg, nil)
	must(err, "begin")
	expectEq(myInt(tx, "SELECT @@read_only"), int64(0), "a transaction runs on the primary")
	must(tx.Commit(), "commit")
	myExec(db, "INSERT INTO items (id, name) VALUES (?, ?)", 6000, "routed")
	expectEq(myText(db, "SELECT name FROM items WHERE id = ?", 6000), "routed", "read your write")
	st, err := db.Prepare("SELECT name FROM items WHERE id = ?")
	must(err, "prepare")
	defer st.Close()
	myExec(db, "UPDATE items SET name = 'updated' WHERE id = 6000")
	var name string
	must(st.QueryRow(6000).Scan(&name), "the prepared statement")
	expectEq(name, "updated", "read your write with a prepared statement")
	myAwaitReplicated("SELECT name FROM items WHERE id = 6000", "updated")
}

var myChecks = []check{
	{"connect", myCheckConnect},
	{"setup", myCheckSetup},
	{"queries", myCheckQueries},
	{"pool", myCheckPool},
	{"prepared_concurrently", myCheckPreparedConcurrently},
	{"types", myCheckTypes},
	{"transactions", myCheckTransactions},
	{"multi_statements", myCheckMultiStatements},
	{"streaming", myCheckStreaming},
	{"context_cancel", myCheckContextCancel},
	{"kill_query", myCheckKillQuery},
	{"ddl_between_executions", myCheckDDLBetweenExecutions},
	{"routing", myCheckRouting},
}

func main() {
	// The drivers' own logging (go-sql-driver/mysql logs a closed connection) stays out of
	// the report's lines.
	mysql.SetLogger(logToStderr{})
	arg := ""
	if len(os.Args) > 1 {
		arg = os.Args[1]
	}
	switch arg {
	case "pgx":
		os.Exit(runChecks(fmt.Sprintf("%s pgx v4.15 (Debian's)", runtime.Version()), pgChecks))
	case "pgx-worker":
		w, _ := strconv.Atoi(os.Args[2])
		os.Exit(runChecks(fmt.Sprintf("pgx worker %d", w), []check{{"worker", func() { pgWorker(w) }}}))
	case "mysql":
		os.Exit(runChecks(fmt.Sprintf("%s go-sql-driver/mysql v1.5 (Debian's)", runtime.Version()), myChecks))
	default:
		fmt.Fprintln(os.Stderr, "usage: go run go_driver.go pgx|mysql")
		os.Exit(2)
	}
}

type logToStderr struct{}

func (logToStderr) Print(v ...interface{}) { fmt.Fprintln(os.Stderr, v...) }
