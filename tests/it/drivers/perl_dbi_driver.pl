# Perl's DBI through switchyard, with Debian's DBD::Pg (on libpq) and DBD::mysql (on MariaDB
# Connector/C). Run by tests/it/drivers.rs as `perl perl_dbi_driver.pl pg|mysql`; reads the
# same environment as common.py (SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, SY_SSLMODE,
# SY_TARGET, SY_POOL_MODE) and reports the same way: one line per check, exit status 1 when any
# failed. SY_TRACE set to a check's name (or to `all`): each DBD::Pg connection that check
# opens writes libpq's protocol trace (pg_server_trace) to a file of its own in the temporary
# directory, named on stderr.
#
# What DBD::Pg does that other clients do not. A statement with placeholders runs as the
# unnamed statement on its first execute and is prepared under a name of its own on the second
# (pg_switch_prepared, 2 by default; 1: from the first), with Parse/Sync alone, then run with
# Bind/Describe/Execute/Sync; the names are `dbdpg_p<pid>_<n>`, n counted from 1 in every
# connection, so several connections of one process use the same names, for the same texts or
# for others. A statement handle destroyed sends SQL `DEALLOCATE <name>` (after a ROLLBACK of
# its own when the transaction has failed). AutoCommit off sends `begin` before the first
# statement of each transaction; ping is a query of a comment alone; COPY runs through
# pg_putcopydata / pg_getcopydata, notifications through pg_notifies, queries in the
# background through pg_async (pg_ready, pg_result, pg_cancel, $sth->cancel).
#
# What DBD::mysql does: placeholders are filled in by the client (text protocol) unless
# mysql_server_prepare=1, which prepares every statement on the server (COM_STMT_PREPARE,
# EXECUTE, CLOSE when the handle goes); mysql_use_result streams a result instead of storing it;
# AutoCommit off (and begin_work) switches the session's autocommit with `SET autocommit`;
# `async` sends a query and leaves its result for later (mysql_async_ready / _result).

use strict;
use warnings;
use utf8;

use Carp ();
use Data::Dumper ();
use DBI qw(:sql_types);
use File::Spec ();
use IO::Select ();
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

binmode(STDOUT, ':encoding(UTF-8)');
binmode(STDERR, ':encoding(UTF-8)');
STDOUT->autoflush(1);

sub env {
    my ($name, $fallback) = @_;
    my $value = $ENV{$name};
    return defined $value && $value ne '' ? $value : $fallback;
}

my $HOST = env('SY_HOST', '127.0.0.1');
my $PORT = env('SY_PORT', '0');
my $USER = env('SY_USER', 'app');
my $PASSWORD = env('SY_PASSWORD', 'app-secret');
my $DB = env('SY_DB', '');
my $SSLMODE = env('SY_SSLMODE', '');
# "proxy": through switchyard (reads go to replicas); "server": the primary itself.
my $TARGET = env('SY_TARGET', 'proxy');
my $THROUGH_PROXY = $TARGET eq 'proxy';
# Whether a client's statements all run on one server connection (see common.py).
my $ONE_CONNECTION = !$THROUGH_PROXY || env('SY_POOL_MODE', 'transaction') eq 'session';
# A check still running after this long prints its stack and ends the script.
my $CHECK_TIMEOUT = 60;
my $TRACE = env('SY_TRACE', '');

# Check name -> why it fails through the proxy: a defect reported, not fixed yet. Such a check
# still runs; through the proxy its failure is printed with the reason and does not fail the
# script, and once it passes the script fails, asking for the entry to be removed (as in
# common.py).
my %KNOWN_FAILURES = ();

# ---- reporting ----

# The failure of a check: the message and the line of the script that found it.
sub fail {
    my ($message) = @_;
    my ($line, $depth) = (0, 0);
    while (my @frame = caller($depth++)) {
        $line = $frame[2];
        last if $frame[0] eq 'main' && $frame[1] eq __FILE__ && (caller($depth))[3] !~ /::(expect\w*|fail)$/;
    }
    die "$message (line $line)\n";
}

sub expect {
    my ($condition, $message) = @_;
    fail($message) unless $condition;
}

# A value as comparable, printable text (numbers and numeric strings alike).
sub show {
    my ($value) = @_;
    local $Data::Dumper::Terse = 1;
    local $Data::Dumper::Indent = 0;
    local $Data::Dumper::Sortkeys = 1;
    local $Data::Dumper::Useqq = 1;
    my $text = Data::Dumper::Dumper($value);
    return length($text) > 600 ? substr($text, 0, 600) . '…' : $text;
}

sub canonical {
    my ($value) = @_;
    local $Data::Dumper::Terse = 1;
    local $Data::Dumper::Indent = 0;
    local $Data::Dumper::Sortkeys = 1;
    local $Data::Dumper::Useqq = 1;
    return Data::Dumper::Dumper($value);
}

sub expect_eq {
    my ($got, $want, $what) = @_;
    fail("$what: got " . show($got) . ', want ' . show($want)) unless canonical($got) eq canonical($want);
}

# Runs `code`, which must die; gives the error. `message` says what was accepted otherwise.
sub expect_error {
    my ($code, $message) = @_;
    my $ok = eval { $code->(); 1 };
    fail($message) if $ok;
    return $@;
}

sub now { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) }

sub pause { select(undef, undef, undef, $_[0]) }

# Calls `code` until it gives `want` (a read of what another session wrote: the replicas apply
# it a moment later), for up to 30 seconds.
sub poll_until {
    my ($want, $what, $code) = @_;
    my $deadline = now() + 30;
    while (1) {
        my $got = $code->();
        return if canonical($got) eq canonical($want);
        fail("$what still gives " . show($got) . ', want ' . show($want)) if now() > $deadline;
        pause(0.02);
    }
}

my $current_check = '';

# The watchdog: a check still running after CHECK_TIMEOUT prints where it is and ends the
# script (an unsafe signal handler, so that it runs while a driver call blocks).
my $watchdog = POSIX::SigAction->new(sub {
    print "  FAIL $current_check: still running after ${CHECK_TIMEOUT}s\n", Carp::longmess('    stack'), "\n";
    POSIX::_exit(1);
});
$watchdog->safe(0);
POSIX::sigaction(POSIX::SIGALRM(), $watchdog) or die "sigaction: $!";

sub run_checks {
    my ($driver, @checks) = @_;
    print "$driver: target=$TARGET $HOST:$PORT db=$DB\n";
    my @failed;
    for my $check (@checks) {
        my ($name, $code) = @$check;
        $current_check = $name;
        my $known = $THROUGH_PROXY ? $KNOWN_FAILURES{$name} : undef;
        my $started = now();
        alarm $CHECK_TIMEOUT;
        my $ok = eval { $code->(); 1 };
        my $error = $@;
        alarm 0;
        if ($ok) {
            if ($known) {
                push @failed, $name;
                print "  FAIL $name: listed as a known failure ($known) but passes now: remove it from KNOWN_FAILURES\n";
            } else {
                printf "  ok   %s (%.2fs)\n", $name, now() - $started;
            }
        } else {
            chomp $error;
            if ($known) {
                print "  KNOWN FAILURE $name: $error\n    (not counted: $known)\n";
            } else {
                push @failed, $name;
                print "  FAIL $name: $error\n";
            }
        }
    }
    if (@failed) {
        printf "%s: %d of %d checks FAILED: %s\n", $driver, scalar @failed, scalar @checks, join(', ', @failed);
        return 1;
    }
    printf "%s: all %d checks passed\n", $driver, scalar @checks;
    return 0;
}

# Opens `n` connections with `connect`, gives them to `code`, and closes them whatever happens.
sub with_connections {
    my ($connect, $n, $code) = @_;
    my @handles;
    my $ok = eval {
        push @handles, $connect->() for 1 .. $n;
        $code->(@handles);
        1;
    };
    my $error = $@;
    for my $dbh (@handles) {
        eval { $dbh->rollback unless $dbh->{AutoCommit} };
        eval { $dbh->disconnect };
    }
    die $error unless $ok;
}

# ======================================================================
# PostgreSQL: DBD::Pg
# ======================================================================

my $traces = 0;

sub pg_connect {
    my (%attrs) = @_;
    my $dsn = "dbi:Pg:dbname=$DB;host=$HOST;port=$PORT;connect_timeout=10";
    $dsn .= ";sslmode=$SSLMODE" if $SSLMODE ne '';
    my $dbh = DBI->connect($dsn, $USER, $PASSWORD,
                           { RaiseError => 1, PrintError => 0, PrintWarn => 0, AutoCommit => 1, %attrs });
    if ($TRACE eq 'all' || $TRACE eq $current_check) {
        $traces++;
        my $path = File::Spec->catfile(File::Spec->tmpdir, "perl_dbd_pg_trace_${$}_$traces.log");
        open(my $fh, '>', $path) or die "open $path: $!";
        $fh->autoflush(1);
        warn "$current_check: connection $traces (backend pid $dbh->{pg_pid}) traced to $path\n";
        $dbh->pg_server_trace($fh);
    }
    return $dbh;
}

sub with_pg {
    my $code = pop;
    my ($n, %attrs) = @_;
    with_connections(sub { pg_connect(%attrs) }, $n // 1, $code);
}

sub pg_one {
    my ($dbh, $sql, @params) = @_;
    my @row = $dbh->selectrow_array($sql, undef, @params);
    return $row[0];
}

# What a statement did, as comparable text: "ok" or its error's SQLSTATE.
sub pg_outcome {
    my ($dbh, $code) = @_;
    my $ok = eval { $code->(); 1 };
    return $ok ? 'ok' : 'error ' . $dbh->state;
}

# Waits until a fresh session's read (on a replica, through the proxy) of `sql` gives `want`.
sub pg_await_replicated {
    my ($sql, $want) = @_;
    with_pg(sub {
        my ($dbh) = @_;
        poll_until($want, $sql, sub { pg_one($dbh, $sql) });
    });
}

sub pg_check_connect {
    with_pg(sub {
        my ($dbh) = @_;
        expect_eq(pg_one($dbh, 'SELECT current_user'), $USER, 'current_user');
        expect_eq(pg_one($dbh, 'SELECT current_database()'), $DB, 'current_database()');
        expect($dbh->{pg_server_version} >= 150000, "server version $dbh->{pg_server_version}");
        expect_eq($dbh->{pg_protocol}, 3, 'protocol version');
        expect_eq(pg_one($dbh, 'SHOW client_encoding'), 'UTF8', 'client_encoding');
        # ping: a query of a comment alone (EmptyQueryResponse), and the transaction status.
        expect_eq($dbh->ping, 1, 'ping when idle');
        $dbh->begin_work;
        pg_one($dbh, 'SELECT 1');
        expect_eq($dbh->ping, 3, 'ping in a transaction');
        eval { $dbh->do('SELECT 1/0') };
        expect_eq($dbh->ping, 4, 'ping in a failed transaction');
        $dbh->rollback;
        expect_eq($dbh->ping, 1, 'ping after the rollback');
        my $pid = pg_one($dbh, '/* switchyard:writer */ SELECT pg_backend_pid()');
        expect(!$ONE_CONNECTION || $pid == $dbh->{pg_pid},
               "the pid the client was told ($dbh->{pg_pid}) is its writer connection's ($pid)");
    });
}

sub pg_check_setup {
    with_pg(sub {
        my ($dbh) = @_;
        $dbh->do('DROP TABLE IF EXISTS items, bins, copied, docs');
        $dbh->do('CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))');
        $dbh->do('CREATE TABLE bins (id int PRIMARY KEY, b bytea, n text)');
        $dbh->do('CREATE TABLE copied (id int, name text, data bytea)');
        $dbh->do('CREATE TABLE docs (id serial PRIMARY KEY, doc jsonb, tags text[])');
    });
    pg_await_replicated("SELECT to_regclass('docs') IS NOT NULL", 1);
}

# Placeholders of every style, the types DBD::Pg converts, bytea, and the client-side
# interpolation of pg_server_prepare => 0.
sub pg_check_parameters_and_types {
    with_pg(sub {
        my ($dbh) = @_;
        my $row = $dbh->selectrow_arrayref(
            'SELECT ?::int + 1, ?::numeric(10,2), ?::bool, ?::float8, ?::int[], ?::date, ?::jsonb ->> ?, '
            . '?::text, NULL::int, ?::text[]',
            undef, 41, '1.50', 1, 1.5, [1, undef, 3], '2024-02-29', '{"k": "é ✓"}', 'k', undef, ['a', 'b c']);
        expect_eq($row, [42, '1.50', 1, 1.5, [1, undef, 3], '2024-02-29', 'é ✓', undef, undef, ['a', 'b c']],
                  'decoded types (? placeholders)');
        expect_eq($dbh->selectrow_arrayref('SELECT $1::int * 2, $2::text || $1::text', undef, 21, 'x'), [42, 'x21'],
                  '$n placeholders, one used twice');
        my $sth = $dbh->prepare('SELECT :a::int - :b::int, :a::text');
        $sth->bind_param(':a', 50);
        $sth->bind_param(':b', 8);
        $sth->execute;
        expect_eq($sth->fetchrow_arrayref, [42, '50'], ':name placeholders');
        # pg_placeholder_dollaronly: ? is jsonb's operator, $1 the parameter.
        $sth = $dbh->prepare(q{SELECT '{"a": 1}'::jsonb ? 'a', $1::int}, { pg_placeholder_dollaronly => 1 });
        $sth->execute(7);
        expect_eq($sth->fetchrow_arrayref, [1, 7], 'pg_placeholder_dollaronly');
        # pg_placeholder_nocolons: an array slice.
        $sth = $dbh->prepare('SELECT (ARRAY[10,20,30])[2:3], ?::int', { pg_placeholder_nocolons => 1 });
        $sth->execute(5);
        expect_eq($sth->fetchrow_arrayref, [[20, 30], 5], 'pg_placeholder_nocolons');
        # Text, INSERT … RETURNING, rows, and jsonb and arrays written.
        my $text = "héllo wörld ✓ 🎉 it's \"quoted\" \\";
        my ($id) = $dbh->selectrow_array('INSERT INTO docs (doc, tags) VALUES (?, ?) RETURNING id', undef,
                                         JSON::PP->new->encode({ t => $text }), ['x', 'y']);
        expect_eq($id, 1, 'INSERT … RETURNING id');
        expect_eq($dbh->selectrow_arrayref("SELECT doc->>'t', tags FROM docs WHERE id = ?", undef, $id),
                  [$text, ['x', 'y']], 'jsonb and text[] read back');
        expect_eq($dbh->do('UPDATE docs SET tags = ? WHERE id = ?', undef, ['z'], $id), 1, 'rows of an UPDATE');
        expect_eq($dbh->do('UPDATE docs SET tags = tags WHERE id < 0'), '0E0', 'rows of an UPDATE of none');
        # bytea, bound as such, every byte value; read back in one piece.
        my $blob = join('', map { chr } 0 .. 255) x 256;
        $sth = $dbh->prepare('INSERT INTO bins VALUES (?, ?, ?)');
        $sth->bind_param(1, 1);
        $sth->bind_param(2, $blob, { pg_type => DBD::Pg::PG_BYTEA() });
        $sth->bind_param(3, undef);
        $sth->execute;
        my $got = $dbh->selectrow_arrayref('SELECT b, n, length(b) FROM bins WHERE id = ?', undef, 1);
        expect_eq([$got->[0] eq $blob ? 'the blob' : 'another blob', $got->[1], $got->[2]],
                  ['the blob', undef, 65536], 'bytea of every byte value, and a NULL');
        # The statement's description.
        $sth = $dbh->prepare('SELECT id, name, price FROM items WHERE id = ? AND name = ?');
        $sth->execute(-1, 'none');
        expect_eq([$sth->{NUM_OF_PARAMS}, $sth->{NUM_OF_FIELDS}, $sth->{NAME}, $sth->{pg_type}],
                  [2, 3, ['id', 'name', 'price'], ['int4', 'text', 'numeric']], "the statement's description");
        expect_eq($sth->fetchall_arrayref, [], 'no rows');
        # pg_server_prepare => 0: the values quoted into the text by the client.
        $sth = $dbh->prepare('SELECT ?::text || ?, ?::int', { pg_server_prepare => 0 });
        $sth->execute("a'b\\", 'x', 3);
        expect_eq($sth->fetchrow_arrayref, ["a'b\\x", 3], 'values interpolated by the client');
        expect_eq(pg_one($dbh, 'SELECT ' . $dbh->quote("it's ✓")), "it's ✓", 'quote');
    });
}

# One connection's statements: the unnamed statement on a first execute, then dbdpg_p<pid>_<n>;
# many alive at once; each deallocated when its handle goes, and its name free again.
sub pg_check_prepared_statements {
    with_pg(sub {
        my ($dbh) = @_;
        my $insert = $dbh->prepare('INSERT INTO items (id, name, price) VALUES (?, ?, ?)');
        for my $i (0 .. 19) {
            expect_eq($insert->execute($i, "item$i", sprintf('%.2f', 1.5 * $i)), 1, "insert $i");
        }
        my $name = $insert->{pg_prepare_name};
        expect(defined $name && $name =~ /^dbdpg_p${$}_\d+$/, 'the name DBD::Pg prepared under: ' . show($name));
        # From here on, prepared under a name from the first execute.
        $dbh->{pg_switch_prepared} = 1;
        my $select = $dbh->prepare('SELECT name, price FROM items WHERE id = ?');
        for my $i (0 .. 19) {
            $select->execute($i);
            expect_eq($select->fetchall_arrayref, [["item$i", sprintf('%.2f', 1.5 * $i)]], "row $i");
        }
        my @many = map { $dbh->prepare("SELECT ?::int + $_") } 0 .. 29;
        for my $round (0 .. 3) {
            for my $k (0 .. 29) {
                $many[$k]->execute($round);
                expect_eq($many[$k]->fetchrow_arrayref, [$round + $k], "statement $k round $round");
            }
        }
        my %names = map { $_->{pg_prepare_name} => 1 } @many;
        expect_eq(scalar keys %names, 30, 'names of 30 statements alive at once');
        # Gone with its handle (DEALLOCATE): the name can be prepared again, with another text.
        my $old = $many[7]->{pg_prepare_name};
        @many = ();
        undef $select;
        my $again = $dbh->prepare("SELECT 'again: ' || ?::text, 2 AS two",
                                  { pg_prepare_name => $old, pg_prepare_now => 1 });
        for my $i (0 .. 2) {
            $again->execute($i);
            expect_eq($again->fetchrow_arrayref, ["again: $i", 2], "the name $old prepared again");
        }
        # pg_prepare_now: the Parse at prepare time, and its error there.
        expect_error(sub { $dbh->prepare('SELECT * FROM no_such_table WHERE id = ?', { pg_prepare_now => 1 }) },
                     'a statement of a missing table prepared');
        expect_eq($dbh->state, '42P01', 'SQLSTATE of a failed prepare');
        my $now = $dbh->prepare('SELECT ?::text', { pg_prepare_now => 1 });
        $now->execute('prepared now');
        expect_eq($now->fetchrow_arrayref, ['prepared now'], 'a statement prepared at once');
        expect_eq(pg_one($dbh, 'SELECT 3'), 3, 'the session after the statements');
    });
}

# Eight connections (`$conns`), each with a statement of a text all share and one of its own
# (`$own_text->($c)`: of other shapes for even and odd connections), executed in turns for 12
# rounds, some in transactions; `$after_round->($round, $conns, $statements, $prepare)` after
# each round (to check names, or drop and prepare statements again midway).
sub prepared_many_connections {
    my ($conns, $own_text, $after_round) = @_;
    my $prepare = sub {
        my ($c) = @_;
        return [$conns->[$c]->prepare('SELECT name FROM items WHERE id = ?'), $conns->[$c]->prepare($own_text->($c))];
    };
    my @statements = map { $prepare->($_) } 0 .. 7;
    for my $round (0 .. 11) {
        for my $c (0 .. 7) {
            my $in_transaction = ($round + $c) % 3 == 0;
            $conns->[$c]->begin_work if $in_transaction;
            my ($shared, $own) = @{ $statements[$c] };
            $shared->execute($round);
            expect_eq($shared->fetchall_arrayref, [["item$round"]], "connection $c round $round: shared text");
            $own->execute($round);
            expect_eq($own->fetchall_arrayref, $c % 2 ? [[$round * $c]] : [["$round from $c", $c]],
                      "connection $c round $round: its own text");
            $conns->[$c]->commit if $in_transaction;
        }
        $after_round->($round, $conns, \@statements, $prepare);
    }
}

# Eight connections of one process: the same names dbdpg_p<pid>_1, _2 in each, for one text
# all share and for texts of each connection's own (of other shapes); executed in turns, some
# in transactions, one connection deallocating and preparing again midway.
sub pg_check_prepared_many_connections {
    pg_await_replicated('SELECT count(*) FROM items WHERE id < 20', 20);
    with_pg(8, pg_switch_prepared => 1, sub {
        prepared_many_connections(\@_, sub {
            my ($c) = @_;
            $c % 2 ? "SELECT ?::int * $c" : "SELECT ?::text || ' from $c', $c AS client";
        }, sub {
            my ($round, $conns, $statements, $prepare) = @_;
            if ($round == 0) {
                my @names = map { show([map { $_->{pg_prepare_name} } @$_]) } @$statements;
                expect_eq(\@names, [(show(["dbdpg_p${$}_1", "dbdpg_p${$}_2"])) x 8], "every connection's names");
            }
            if ($round == 4) {
                # Connection 3 deallocates its statements and prepares them again (names _3, _4);
                # connection 5 its own text only, under the name the others use for theirs.
                my $name = $statements->[5][1]{pg_prepare_name};
                $statements->[3] = $prepare->(3);
                $statements->[5][1] = undef;
                $statements->[5][1] = $conns->[5]->prepare('SELECT ?::int * 5', { pg_prepare_name => $name });
            }
        });
    });
}

# A statement handle destroyed in a transaction: DEALLOCATE in the transaction (prepared
# statements are not transactional: it stays deallocated when the transaction rolls back); in
# a failed transaction DBD::Pg rolls back first.
sub pg_check_deallocate_in_transaction {
    with_pg(sub {
        my ($dbh) = @_;
        my $name = "dbdpg_p${$}_dealloc";
        my $attrs = { pg_prepare_name => $name, pg_prepare_now => 1 };
        my $sth = $dbh->prepare('SELECT ?::int * 41', $attrs);
        $sth->execute(2);
        expect_eq($sth->fetchrow_arrayref, [82], 'before the transaction');
        my @outcomes;
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (500, 'before the deallocation', 1)");
        push @outcomes, pg_outcome($dbh, sub { undef $sth });
        push @outcomes, pg_outcome($dbh, sub { $sth = $dbh->prepare('SELECT name FROM items WHERE id = ?', $attrs) });
        $sth->execute(500);
        expect_eq($sth->fetchall_arrayref, [['before the deallocation']], 'prepared again in the transaction');
        push @outcomes, pg_outcome($dbh, sub { $dbh->commit });
        expect_eq(\@outcomes, ['ok', 'ok', 'ok'], 'DEALLOCATE, Parse of the name again, COMMIT');
        # Deallocated in a transaction that rolls back: gone all the same.
        $dbh->begin_work;
        undef $sth;
        $dbh->rollback;
        $sth = $dbh->prepare('SELECT ?::int * 43', $attrs);
        $sth->execute(2);
        expect_eq($sth->fetchrow_arrayref, [86], 'the name prepared after a rolled back DEALLOCATE');
        # In a failed transaction: DBD::Pg sends ROLLBACK, then DEALLOCATE.
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (501, 'rolled back', 1)");
        eval { $dbh->do('SELECT 1/0') };
        expect_eq($dbh->state, '22012', 'the failing statement');
        undef $sth;
        expect_eq($dbh->ping, 1, 'idle after the statement handle went in a failed transaction');
        $dbh->rollback;
        expect_eq(pg_one($dbh, 'SELECT count(*) FROM items WHERE id = 501'), 0, 'the failed transaction rolled back');
        $sth = $dbh->prepare('SELECT ?::int * 44', $attrs);
        $sth->execute(2);
        expect_eq($sth->fetchrow_arrayref, [88], 'the name prepared after DEALLOCATE in a failed transaction');
    });
}

# Transactions: AutoCommit off (`begin` before each transaction's first statement), begin_work,
# savepoints (pg_savepoint, pg_rollback_to, pg_release), a failed transaction (25P02).
sub pg_check_transactions {
    with_pg(sub {
        my ($dbh) = @_;
        $dbh->begin_work;
        $dbh->do('INSERT INTO items VALUES (?, ?, 1)', undef, 100, 'committed');
        $dbh->commit;
        $dbh->begin_work;
        $dbh->do('INSERT INTO items VALUES (?, ?, 1)', undef, 101, 'rolled back');
        $dbh->rollback;
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (102, 'outer', 1)");
        $dbh->pg_savepoint('sp1');
        $dbh->do("INSERT INTO items VALUES (103, 'inner', 1)");
        $dbh->pg_rollback_to('sp1');
        $dbh->pg_savepoint('sp2');
        $dbh->do("INSERT INTO items VALUES (104, 'inner kept', 1)");
        $dbh->pg_release('sp2');
        # A failed statement after a savepoint: rolled back to it, the transaction goes on.
        $dbh->pg_savepoint('sp3');
        expect_error(sub { $dbh->do("INSERT INTO items VALUES (100, 'duplicate', 1)") }, 'a duplicate key accepted');
        expect_eq([$dbh->state, $dbh->ping], ['23505', 4], 'SQLSTATE and status of the failed statement');
        $dbh->pg_rollback_to('sp3');
        $dbh->do("INSERT INTO items VALUES (105, 'after the savepoint', 1)");
        $dbh->commit;
        expect_eq($dbh->selectcol_arrayref('SELECT id FROM items WHERE id BETWEEN 100 AND 199 ORDER BY id'),
                  [100, 102, 104, 105], 'committed rows');
        # A failed transaction: 25P02 until the rollback.
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (300, 'x', 1)");
        expect_error(sub { $dbh->do("INSERT INTO items VALUES (300, 'x', 1)") }, 'a duplicate key accepted');
        expect_eq($dbh->pg_error_field('constraint'), 'items_pkey', 'constraint name');
        expect_error(sub { pg_one($dbh, 'SELECT 1') }, 'a query in a failed transaction ran');
        expect_eq($dbh->state, '25P02', 'SQLSTATE in a failed transaction');
        $dbh->rollback;
        expect_eq(pg_one($dbh, 'SELECT count(*) FROM items WHERE id = 300'), 0, 'rolled back');
    });
    # AutoCommit off: DBD::Pg begins each transaction itself.
    with_pg(1, AutoCommit => 0, pg_switch_prepared => 1, sub {
        my ($dbh) = @_;
        $dbh->do("INSERT INTO items VALUES (110, 'autocommit off', 1)");
        expect_eq($dbh->ping, 3, 'in a transaction after the first statement');
        expect_eq(pg_one($dbh, 'SELECT pg_is_in_recovery()'), 0, 'a read in the transaction on the primary');
        $dbh->commit;
        $dbh->do("INSERT INTO items VALUES (111, 'rolled back', 1)");
        $dbh->pg_savepoint('a');
        $dbh->do("INSERT INTO items VALUES (112, 'rolled back', 1)");
        $dbh->rollback;
        my $sth = $dbh->prepare('SELECT name FROM items WHERE id BETWEEN ? AND ? ORDER BY id');
        $sth->execute(110, 119);
        expect_eq($sth->fetchall_arrayref, [['autocommit off']], 'the rows committed with AutoCommit off');
        $dbh->commit;
    });
}

# Errors with their SQLSTATE, from simple queries and from prepared statements; notices; the
# session going on after each.
sub pg_check_errors {
    with_pg(sub {
        my ($dbh) = @_;
        my @outcomes;
        push @outcomes, pg_outcome($dbh, sub { $dbh->do('SELECT 1/0') });
        push @outcomes, pg_outcome($dbh, sub { $dbh->do('SELECT 1 / ?::int', undef, 0) });
        push @outcomes, pg_outcome($dbh, sub { $dbh->selectall_arrayref('SELECT * FROM no_such_table') });
        $dbh->{pg_switch_prepared} = 1;
        my $sth = $dbh->prepare('SELECT * FROM no_such_table WHERE id = ?');
        push @outcomes, pg_outcome($dbh, sub { $sth->execute(1) });
        push @outcomes, pg_outcome($dbh, sub { $dbh->do('SELEC 1') });
        $sth = $dbh->prepare('SELECT 10 / ?::int');
        push @outcomes, pg_outcome($dbh, sub { $sth->execute(0) });
        push @outcomes, pg_outcome($dbh, sub { $sth->execute(5) });
        push @outcomes, pg_outcome($dbh, sub {
            $dbh->do(q{DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'P0099', HINT = 'a hint'; END $$});
        });
        expect_eq($dbh->pg_error_field('hint'), 'a hint', 'the hint of a raised exception');
        expect_eq(\@outcomes, ['error 22012', 'error 22012', 'error 42P01', 'error 42P01', 'error 42601',
                               'error 22012', 'ok', 'error P0099'], 'outcomes');
        expect_eq($sth->fetchrow_arrayref, [2], 'the statement after its error');
        # Notices reach the client (as warnings, in UTF-8 bytes).
        my @notices;
        local $SIG{__WARN__} = sub { my $notice = $_[0]; utf8::decode($notice); push @notices, $notice };
        $dbh->{PrintWarn} = 1;
        $dbh->do(q{DO $$ BEGIN RAISE NOTICE 'notice ✓'; END $$});
        expect(scalar(grep { /notice ✓/ } @notices), 'the notice: ' . show(\@notices));
        expect_eq(pg_one($dbh, 'SELECT 4'), 4, 'the session after errors');
    });
}

sub pg_check_copy {
    with_pg(sub {
        my ($dbh) = @_;
        my @rows = map {
            [$_, "name $_\t\\ \n", $_ == 0 ? undef : join('', map { chr } 0 .. ($_ % 256) - 1)]
        } 0 .. 1999;
        my $escape = sub { $_[0] =~ s/\\/\\\\/gr =~ s/\t/\\t/gr =~ s/\n/\\n/gr };
        my $line = sub {
            my ($id, $name, $data) = @{ $_[0] };
            return join("\t", $id, $escape->($name), defined $data ? '\\\\x' . unpack('H*', $data) : '\\N') . "\n";
        };
        $dbh->do('COPY copied (id, name, data) FROM STDIN');
        $dbh->pg_putcopydata($line->($_)) for @rows;
        expect_eq($dbh->pg_putcopyend, 1, 'pg_putcopyend');
        expect_eq(pg_one($dbh, 'SELECT count(*) FROM copied'), 2000, 'rows copied in');
        $dbh->do('COPY (SELECT id, name, data FROM copied ORDER BY id) TO STDOUT');
        my @out;
        my $data = '';
        push @out, $data while $dbh->pg_getcopydata($data) >= 0;
        expect_eq(scalar @out, 2000, 'rows copied out');
        my @want = map { $line->($_) } @rows;
        expect_eq([grep { $out[$_] ne $want[$_] } 0 .. $#want], [], 'rows copied out that differ');
        # COPY in a transaction that rolls back.
        $dbh->begin_work;
        $dbh->do('COPY copied (id, name) FROM STDIN');
        $dbh->pg_putcopydata("5000\trolled back\n");
        $dbh->pg_putcopyend;
        $dbh->rollback;
        expect_eq(pg_one($dbh, 'SELECT count(*) FROM copied WHERE id = 5000'), 0, 'a COPY rolled back');
        # An error in the middle of COPY FROM: the server's error, and the session goes on.
        $dbh->do('COPY items (id, name, price) FROM STDIN');
        $dbh->pg_putcopydata("900\ta\t1\n");
        $dbh->pg_putcopydata("900\tdup\t1\n");
        expect_error(sub { $dbh->pg_putcopyend }, 'a duplicate in COPY accepted');
        expect_eq($dbh->state, '23505', 'SQLSTATE of a failed COPY');
        expect_eq(pg_one($dbh, 'SELECT count(*) FROM items WHERE id = 900'), 0, 'the failed COPY left nothing');
        expect_eq($dbh->ping, 1, 'idle after the failed COPY');
    });
}

# LISTEN, then pg_notifies on the connection's socket becoming readable.
sub pg_check_listen_notify {
    with_pg(2, sub {
        my ($listener, $notifier) = @_;
        $listener->do('LISTEN chan');
        $listener->do('LISTEN "other chan"');
        $notifier->do(q{NOTIFY chan, 'hello ✓'});
        $notifier->do(q{SELECT pg_notify('other chan', ?)}, undef, 'second');
        $notifier->begin_work;
        $notifier->do(q{NOTIFY chan, 'committed'});
        $notifier->do(q{NOTIFY chan, 'committed'});
        $notifier->commit;
        my @got;
        my $select = IO::Select->new($listener->{pg_socket});
        my $deadline = now() + 10;
        while (@got < 3 && now() < $deadline) {
            $select->can_read(1);
            while (my $n = $listener->pg_notifies) {
                push @got, $n;
            }
        }
        expect_eq([map { [$_->[0], $_->[2]] } @got],
                  [['chan', 'hello ✓'], ['other chan', 'second'], ['chan', 'committed']], 'notifications');
        expect(!$ONE_CONNECTION || $got[0][1] == $notifier->{pg_pid},
               "the notifying pid $got[0][1] is the pid the notifier was told ($notifier->{pg_pid})");
        # Queued while the listener runs a query of its own, seen after it.
        $notifier->do(q{NOTIFY chan, 'while busy'});
        my $deadline2 = now() + 10;
        my $seen;
        until ($seen || now() > $deadline2) {
            expect_eq(pg_one($listener, 'SELECT 5'), 5, 'a query of the listener');
            $seen = $listener->pg_notifies;
            $select->can_read(0.05) unless $seen;
        }
        expect_eq($seen && [$seen->[0], $seen->[2]], ['chan', 'while busy'], 'a notification around a query');
        $listener->do('UNLISTEN *');
        expect_eq(pg_one($listener, 'SELECT 1'), 1, 'the listener after UNLISTEN');
    });
}

# A query in the background (pg_async) cancelled: $sth->cancel (a CancelRequest) every 100 ms
# until it ends, on a replica and in a transaction on the writer; and pg_cancel of a query seen
# running on the writer.
sub pg_check_cancel {
    for my $case (['a read (on a replica)', 0], ['a transaction (on the writer)', 1]) {
        my ($name, $in_transaction) = @$case;
        with_pg(sub {
            my ($dbh) = @_;
            $dbh->begin_work if $in_transaction;
            my $sth = $dbh->prepare('SELECT pg_sleep(60)', { pg_async => DBD::Pg::PG_ASYNC() });
            my $started = now();
            $sth->execute;
            until ($dbh->pg_ready) {
                fail("pg_sleep(60) in $name not cancelled after 30s") if now() - $started > 30;
                $sth->cancel or fail("cancel failed: " . $dbh->errstr);
                pause(0.1);
            }
            expect_error(sub { $dbh->pg_result }, "pg_sleep(60) in $name ended without an error");
            expect_eq($dbh->state, '57014', "SQLSTATE of a cancelled query in $name");
            $dbh->rollback if $in_transaction;
            expect_eq(pg_one($dbh, 'SELECT 7'), 7, "the session after a cancel in $name");
        });
    }
    with_pg(2, sub {
        my ($dbh, $observer) = @_;
        $dbh->begin_work;
        $dbh->do(q{SELECT pg_sleep(60) /* perl pg_cancel */}, { pg_async => DBD::Pg::PG_ASYNC() });
        poll_until(1, 'the query seen running on the writer', sub {
            pg_one($observer, q{/* switchyard:writer */ SELECT count(*) FROM pg_stat_activity }
                              . q{WHERE query LIKE '%perl pg_cancel */' AND state = 'active' }
                              . q{AND pid <> pg_backend_pid()});
        });
        expect_eq($dbh->pg_cancel ? 'cancelled' : 'not cancelled: ' . ($dbh->errstr // ''), 'cancelled', 'pg_cancel');
        expect_eq($dbh->state, '57014', 'SQLSTATE after pg_cancel');
        $dbh->rollback;
        expect_eq(pg_one($dbh, 'SELECT 8'), 8, 'the session after pg_cancel');
    });
}

# Queries in the background: pg_async with pg_ready / pg_result, PG_OLDQUERY_WAIT, an error.
sub pg_check_async {
    with_pg(sub {
        my ($dbh) = @_;
        my $async = { pg_async => DBD::Pg::PG_ASYNC() };
        my $sth = $dbh->prepare('SELECT ?::int * 2', $async);
        $sth->execute(21);
        my $deadline = now() + 10;
        pause(0.01) until $sth->pg_ready || now() > $deadline;
        expect_eq($sth->pg_result, 1, 'rows of an async SELECT');
        expect_eq($sth->fetchall_arrayref, [[42]], 'an async SELECT');
        $dbh->do("INSERT INTO items VALUES (400, 'async', 1)", $async);
        expect_eq($dbh->pg_result, 1, 'rows of an async INSERT');
        # A second query while one runs: waits for it (PG_OLDQUERY_WAIT).
        $dbh->do('SELECT count(*) FROM generate_series(1, 200000)', $async);
        $sth = $dbh->prepare('SELECT name FROM items WHERE id = ?',
                             { pg_async => DBD::Pg::PG_ASYNC() + DBD::Pg::PG_OLDQUERY_WAIT() });
        $sth->execute(400);
        $sth->pg_result;
        expect_eq($sth->fetchall_arrayref, [['async']], 'the query after PG_OLDQUERY_WAIT');
        $dbh->do('SELECT * FROM no_such_table', $async);
        expect_error(sub { $dbh->pg_result }, 'a missing table accepted');
        expect_eq($dbh->state, '42P01', 'SQLSTATE of an async error');
        expect_eq(pg_one($dbh, 'SELECT 9'), 9, 'the session after the async queries');
    });
}

# 20,000 rows of ~1 KiB: fetched a row at a time, then through a cursor (DECLARE / FETCH).
sub pg_check_large_results {
    with_pg(sub {
        my ($dbh) = @_;
        my $sql = 'SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, ?::int) i';
        $dbh->{pg_switch_prepared} = 1;
        my $sth = $dbh->prepare($sql);
        for my $round (1 .. 2) {
            $sth->execute(20000);
            my ($n, $sum, $bytes) = (0, 0, 0);
            while (my $row = $sth->fetchrow_arrayref) {
                $n++;
                $sum += $row->[0];
                $bytes += length $row->[1];
            }
            expect_eq([$n, $sum, $bytes], [20000, 200010000, 20000 * 1024], "rows, sum and bytes, round $round");
        }
        $dbh->begin_work;
        $dbh->do("DECLARE c CURSOR FOR SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i");
        my $fetch = $dbh->prepare('FETCH 1000 FROM c');
        my ($n, $sum) = (0, 0);
        while (1) {
            $fetch->execute;
            my $rows = $fetch->fetchall_arrayref;
            last unless @$rows;
            $n += @$rows;
            $sum += $_->[0] for @$rows;
        }
        $dbh->do('CLOSE c');
        $dbh->commit;
        expect_eq([$n, $sum], [20000, 200010000], 'rows and sum through a cursor');
        expect_eq(pg_one($dbh, 'SELECT 10'), 10, 'the session after large results');
    });
}

sub pg_check_routing {
    with_pg(sub {
        my ($dbh) = @_;
        expect_eq(pg_one($dbh, 'SELECT pg_is_in_recovery()'), $THROUGH_PROXY ? 1 : 0, "a fresh session's read");
        $dbh->begin_work;
        expect_eq(pg_one($dbh, 'SELECT pg_is_in_recovery()'), 0, 'a transaction runs on the primary');
        $dbh->commit;
        $dbh->do('INSERT INTO items (id, name, price) VALUES (?, ?, ?)', undef, 6000, 'routed', 1);
        expect_eq(pg_one($dbh, 'SELECT name FROM items WHERE id = ?', 6000), 'routed', 'read your write');
        $dbh->{pg_switch_prepared} = 1;
        my $sth = $dbh->prepare('SELECT name FROM items WHERE id = ?');
        $sth->execute(6000);
        $sth->finish;
        $dbh->do('UPDATE items SET name = ? WHERE id = ?', undef, 'updated', 6000);
        $sth->execute(6000);
        expect_eq($sth->fetchall_arrayref, [['updated']], 'read your write with a named statement');
    });
}

my @PG_CHECKS = (
    ['connect', \&pg_check_connect],
    ['setup', \&pg_check_setup],
    ['parameters_and_types', \&pg_check_parameters_and_types],
    ['prepared_statements', \&pg_check_prepared_statements],
    ['prepared_many_connections', \&pg_check_prepared_many_connections],
    ['deallocate_in_transaction', \&pg_check_deallocate_in_transaction],
    ['transactions', \&pg_check_transactions],
    ['errors', \&pg_check_errors],
    ['copy', \&pg_check_copy],
    ['listen_notify', \&pg_check_listen_notify],
    ['cancel', \&pg_check_cancel],
    ['async', \&pg_check_async],
    ['large_results', \&pg_check_large_results],
    ['routing', \&pg_check_routing],
);

# ======================================================================
# MySQL: DBD::mysql
# ======================================================================

my $ER_DUP_ENTRY = 1062;
my $ER_NO_SUCH_TABLE = 1146;
my $ER_PARSE_ERROR = 1064;
my $ER_QUERY_INTERRUPTED = 1317;

# A connection; `prepare => 1`: every statement prepared on the server.
sub my_connect {
    my (%opts) = @_;
    my $prepare = delete $opts{prepare};
    my $dsn = "DBI:mysql:database=$DB;host=$HOST;port=$PORT;mysql_connect_timeout=10";
    # TLS, unverified. DBD::mysql 4.050 on Connector/C cannot insist on TLS ("Enforcing SSL
    # encryption is not supported") unless it verifies the certificate: TLS when offered.
    $dsn .= ';mysql_ssl=1;mysql_ssl_optional=1' if $SSLMODE ne '';
    return DBI->connect($dsn, $USER, $PASSWORD, {
        RaiseError => 1, PrintError => 0, PrintWarn => 0, AutoCommit => 1, mysql_enable_utf8mb4 => 1,
        ($prepare ? (mysql_server_prepare => 1, mysql_server_prepare_disable_fallback => 1) : ()),
        %opts,
    });
}

sub with_mysql {
    my $code = pop;
    my ($n, %opts) = @_;
    with_connections(sub { my_connect(%opts) }, $n // 1, $code);
}

sub my_one {
    my ($dbh, $sql, @params) = @_;
    my @row = $dbh->selectrow_array($sql, undef, @params);
    return $row[0];
}

# What a statement did, as comparable text: "ok" or its error's errno and SQLSTATE.
sub my_outcome {
    my ($dbh, $code) = @_;
    my $ok = eval { $code->(); 1 };
    return $ok ? 'ok' : 'error ' . $dbh->err . ' ' . $dbh->state;
}

sub my_await_replicated {
    my ($sql, $want) = @_;
    with_mysql(sub {
        my ($dbh) = @_;
        poll_until($want, $sql, sub { my_one($dbh, $sql) });
    });
}

sub my_check_connect {
    for my $prepare (0, 1) {
        with_mysql(1, prepare => $prepare, sub {
            my ($dbh) = @_;
            expect_eq((split /@/, my_one($dbh, 'SELECT CURRENT_USER()'))[0], $USER, 'current user');
            expect_eq(my_one($dbh, 'SELECT DATABASE()'), $DB, 'default database');
            my $version = my_one($dbh, 'SELECT VERSION()');
            expect($version =~ /MariaDB/, "a MariaDB server: $version");
            expect_eq($dbh->{mysql_serverinfo} =~ s/^5\.5\.5-//r, $version, "the greeting's version");
            expect($dbh->ping, 'ping');
            $dbh->begin_work;
            my $id = my_one($dbh, 'SELECT CONNECTION_ID()');
            expect(!$ONE_CONNECTION || $id == $dbh->{mysql_thread_id},
                   "the greeting's connection id ($dbh->{mysql_thread_id}) is the writer's ($id)");
            $dbh->rollback;
            expect_eq(my_one($dbh, 'SELECT @@autocommit'), 1, 'autocommit after the rollback');
        });
    }
}

sub my_check_setup {
    with_mysql(sub {
        my ($dbh) = @_;
        $dbh->do('DROP TABLE IF EXISTS items, bins, posts');
        $dbh->do('CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2)) ENGINE=InnoDB');
        $dbh->do('CREATE TABLE bins (id INT PRIMARY KEY, b LONGBLOB, t DATETIME(6), d DOUBLE, '
                 . 's VARCHAR(50) CHARACTER SET utf8mb4, n INT) ENGINE=InnoDB');
        $dbh->do('CREATE TABLE posts (id BIGINT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(10) NOT NULL) ENGINE=InnoDB');
    });
    my_await_replicated("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                        . "AND table_name = 'posts'", 1);
}

# Both protocols: values quoted into the text by the client, and bound to a statement prepared on
# the server (the binary protocol).
sub my_check_parameters_and_types {
    for my $prepare (0, 1) {
        my $how = $prepare ? 'server-side' : 'client-side';
        with_mysql(1, prepare => $prepare, sub {
            my ($dbh) = @_;
            my $base = $prepare ? 1100 : 1000;
            my $text = "it's \"quoted\" \\ ✓ 🎉\n\0end";
            expect_eq(my_one($dbh, 'SELECT ?', $text), $text, "escaping ($how)");
            expect_eq(my_one($dbh, 'SELECT ? + 1', 41), 42, "a number ($how)");
            expect_eq($dbh->do('INSERT INTO items VALUES (?, ?, ?)', undef, $base, 'one', '1.50'), 1,
                      "rows of an INSERT ($how)");
            expect_eq($dbh->selectall_arrayref('SELECT id, name, price FROM items WHERE id = ?', undef, $base),
                      [[$base, 'one', '1.50']], "the row ($how)");
            my $blob = join('', map { chr } 0 .. 255) x 4096;
            my $sth = $dbh->prepare('INSERT INTO bins VALUES (?, ?, ?, ?, ?, ?)');
            $sth->bind_param(1, $base, SQL_INTEGER);
            $sth->bind_param(2, $blob, SQL_BLOB);
            $sth->bind_param(3, '2024-02-29 12:34:56.789012');
            $sth->bind_param(4, 1.5, SQL_DOUBLE);
            $sth->bind_param(5, 'héllo 🎉');
            $sth->bind_param(6, undef, SQL_INTEGER);
            $sth->execute;
            my $row = $dbh->selectrow_arrayref('SELECT b, t, d, s, n, NULL FROM bins WHERE id = ?', undef, $base);
            expect_eq([$row->[0] eq $blob ? 'the blob' : 'another blob (' . length($row->[0]) . ' bytes)',
                       @$row[1 .. 5]],
                      ['the blob', '2024-02-29 12:34:56.789012', 1.5, 'héllo 🎉', undef, undef],
                      "1 MiB blob, types and NULLs ($how)");
            expect_eq($dbh->do('INSERT INTO posts (title) VALUES (?)', undef, "p$prepare"), 1, "insert ($how)");
            expect($dbh->{mysql_insertid} > 0 && $dbh->last_insert_id(undef, undef, 'posts', 'id')
                   == $dbh->{mysql_insertid}, "the AUTO_INCREMENT id ($how)");
            $sth = $dbh->prepare('SELECT id, name, price FROM items WHERE id = ?');
            $sth->execute($base);
            expect_eq([$sth->{NUM_OF_PARAMS}, $sth->{NUM_OF_FIELDS}, $sth->{NAME}],
                      [1, 3, ['id', 'name', 'price']], "the statement's description ($how)");
            expect_eq($sth->fetchall_arrayref, [[$base, 'one', '1.50']], "the row again ($how)");
            # CLIENT_FOUND_ROWS (DBD::mysql's default): an UPDATE counts the rows it matched.
            expect_eq($dbh->do('UPDATE items SET name = name WHERE id = ?', undef, $base), 1,
                      "rows of an UPDATE that changed nothing ($how)");
            expect_eq(my_outcome($dbh, sub { $dbh->do('INSERT INTO posts (title) VALUES (?)', undef, 'x' x 11) }),
                      'error 1406 22001', "a value too long ($how)");
        });
    }
}

# mysql_server_prepare: statements prepared on the server, executed many times, many alive at
# once, closed when their handles go.
sub my_check_prepared_statements {
    with_mysql(1, prepare => 1, sub {
        my ($dbh) = @_;
        my $insert = $dbh->prepare('INSERT INTO items VALUES (?, ?, ?)');
        for my $i (0 .. 19) {
            expect_eq($insert->execute($i, "item$i", sprintf('%.2f', 1.5 * $i)), 1, "insert $i");
        }
        undef $insert;
        my $select = $dbh->prepare('SELECT name, price FROM items WHERE id = ?');
        for my $i (0 .. 19) {
            $select->execute($i);
            expect_eq($select->fetchall_arrayref, [["item$i", sprintf('%.2f', 1.5 * $i)]], "row $i");
        }
        my @many = map { $dbh->prepare("SELECT ? + $_") } 0 .. 29;
        for my $round (0 .. 3) {
            for my $k (0 .. 29) {
                $many[$k]->execute($round);
                expect_eq($many[$k]->fetchrow_arrayref, [$round + $k], "statement $k round $round");
            }
        }
        @many = ();
        # Errors of a statement and of a prepare; the session goes on.
        my $dup = $dbh->prepare('INSERT INTO items (id, name) VALUES (?, ?)');
        expect_eq(my_outcome($dbh, sub { $dup->execute(0, 'dup') }), "error $ER_DUP_ENTRY 23000",
                  'a duplicate key from a prepared statement');
        expect_eq(my_outcome($dbh, sub { $dbh->prepare('SELECT * FROM no_such_table WHERE id = ?') }),
                  "error $ER_NO_SUCH_TABLE 42S02", 'a prepare of a missing table');
        expect_eq($dup->execute(50, 'after errors'), 1, 'the statement after errors');
        # A large result through the binary protocol, twice.
        my $large = $dbh->prepare('SELECT seq, REPEAT(?, 1000) FROM seq_1_to_10000 WHERE seq > ?');
        for my $round (1 .. 2) {
            $large->execute('y', 0);
            expect_eq(scalar @{ $large->fetchall_arrayref }, 10000, "a large binary-protocol result, round $round");
        }
        expect_eq(my_one($dbh, 'SELECT 3'), 3, 'the session after the statements');
    });
}

# Eight connections, each with a statement of a text all share and one of its own, executed in
# turns (some in transactions), one connection closing and preparing again midway.
sub my_check_prepared_many_connections {
    my_await_replicated('SELECT COUNT(*) FROM items WHERE id < 20', 20);
    with_mysql(8, prepare => 1, sub {
        prepared_many_connections(\@_, sub {
            my ($c) = @_;
            $c % 2 ? "SELECT ? * $c" : "SELECT CONCAT(?, ' from $c'), $c AS client";
        }, sub {
            my ($round, $conns, $statements, $prepare) = @_;
            if ($round == 4) {
                @{ $statements->[3] } = ();
                $statements->[3] = $prepare->(3);
                $statements->[5][1] = undef;
                $statements->[5][1] = $conns->[5]->prepare('SELECT ? * 5');
            }
        });
    });
}

# begin_work (autocommit switched off and on), AutoCommit off, savepoints as SQL, a duplicate key
# failing the statement and not the transaction.
sub my_check_transactions {
    with_mysql(sub {
        my ($dbh) = @_;
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (100, 'committed', 1)");
        $dbh->commit;
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (101, 'rolled back', 1)");
        $dbh->rollback;
        $dbh->begin_work;
        $dbh->do("INSERT INTO items VALUES (102, 'outer', 1)");
        $dbh->do('SAVEPOINT sp');
        $dbh->do("INSERT INTO items VALUES (103, 'inner', 1)");
        $dbh->do('ROLLBACK TO SAVEPOINT sp');
        $dbh->do('RELEASE SAVEPOINT sp');
        expect_eq(my_outcome($dbh, sub { $dbh->do("INSERT INTO items VALUES (100, 'duplicate', 1)") }),
                  "error $ER_DUP_ENTRY 23000", 'a duplicate key in a transaction');
        $dbh->do("INSERT INTO items VALUES (104, 'after the error', 1)");
        expect_eq(my_one($dbh, 'SELECT @@in_transaction'), 1, 'still in the transaction after the error');
        $dbh->commit;
        expect_eq($dbh->selectcol_arrayref('SELECT id FROM items WHERE id BETWEEN 100 AND 199 ORDER BY id'),
                  [100, 102, 104], 'committed rows');
    });
    # AutoCommit off: SET autocommit=0, so every statement is in a transaction.
    with_mysql(1, AutoCommit => 0, prepare => 1, sub {
        my ($dbh) = @_;
        expect_eq(my_one($dbh, 'SELECT @@autocommit'), 0, '@@autocommit with AutoCommit off');
        $dbh->do("INSERT INTO items VALUES (110, 'autocommit off', 1)");
        expect_eq(my_one($dbh, 'SELECT @@in_transaction'), 1, 'in a transaction after the first statement');
        expect_eq(my_one($dbh, 'SELECT @@read_only'), 0, 'a read in the transaction on the primary');
        $dbh->commit;
        $dbh->do("INSERT INTO items VALUES (111, 'rolled back', 1)");
        $dbh->rollback;
        expect_eq($dbh->selectcol_arrayref('SELECT name FROM items WHERE id BETWEEN ? AND ? ORDER BY id', undef,
                                           110, 119), ['autocommit off'], 'the rows committed with AutoCommit off');
        $dbh->commit;
        $dbh->{AutoCommit} = 1;
        expect_eq(my_one($dbh, 'SELECT @@autocommit'), 1, '@@autocommit with AutoCommit on again');
    });
}

sub my_check_errors {
    for my $prepare (0, 1) {
        with_mysql(1, prepare => $prepare, sub {
            my ($dbh) = @_;
            my @outcomes;
            push @outcomes, my_outcome($dbh, sub { $dbh->do("INSERT INTO items (id, name) VALUES (0, 'dup')") });
            push @outcomes, my_outcome($dbh, sub { $dbh->selectall_arrayref('SELECT * FROM no_such_table') });
            push @outcomes, my_outcome($dbh, sub { $dbh->do('SELEC 1') });
            push @outcomes, my_outcome($dbh, sub { $dbh->do(q{SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 3999}) });
            expect_eq(\@outcomes, [
                "error $ER_DUP_ENTRY 23000", "error $ER_NO_SUCH_TABLE 42S02", "error $ER_PARSE_ERROR 42000",
                'error 3999 45000',
            ], 'errors (server-side prepare: ' . $prepare . ')');
            expect_eq(my_one($dbh, 'SELECT 4'), 4, 'the session after errors');
        });
    }
}

# KILL QUERY <the client's CONNECTION_ID()> from another client, every 100 ms, until the
# client's SELECT SLEEP(60) (sent in the background) ends.
sub my_check_kill_query {
    for my $case (['a read', 0], ['a transaction', 1]) {
        my ($name, $in_transaction) = @$case;
        with_mysql(2, sub {
            my ($dbh, $killer) = @_;
            $dbh->begin_work if $in_transaction;
            my $own = my_one($dbh, 'SELECT CONNECTION_ID()');
            my $sth = $dbh->prepare('SELECT SLEEP(60)', { async => 1 });
            my $started = now();
            $sth->execute;
            until ($sth->mysql_async_ready) {
                fail("SLEEP(60) in $name not interrupted after 30s") if now() - $started > 30;
                $killer->do("KILL QUERY $own");
                pause(0.1);
            }
            my $result;
            my $ok = eval { $sth->mysql_async_result; $result = $sth->fetchrow_arrayref; 1 };
            my $interrupted = $ok ? $result && $result->[0] == 1 : $dbh->err == $ER_QUERY_INTERRUPTED;
            expect($interrupted, "SLEEP(60) in $name was not interrupted: "
                                 . ($ok ? 'returned ' . show($result) : $dbh->errstr));
            $dbh->rollback if $in_transaction;
            expect_eq(my_one($dbh, 'SELECT 3'), 3, "the session after KILL QUERY in $name");
        });
    }
}

# mysql_use_result: 20,000 rows of ~1 KiB read as they come (DBD::mysql streams only the text
# protocol); a result left half read (finish reads the rest).
sub my_check_streaming {
    with_mysql(sub {
        my ($dbh) = @_;
        my $sth = $dbh->prepare('SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000 WHERE seq > ?',
                                { mysql_use_result => 1 });
        $sth->execute(0);
        my ($n, $sum, $bytes) = (0, 0, 0);
        while (my $row = $sth->fetchrow_arrayref) {
            $n++;
            $sum += $row->[0];
            $bytes += length $row->[1];
        }
        expect_eq([$n, $sum, $bytes], [20000, 200010000, 20000 * 1024], 'rows, sum and bytes streamed');
        $sth->execute(0);
        $sth->fetchrow_arrayref for 1 .. 10;
        $sth->finish;
        expect_eq(my_one($dbh, 'SELECT 5'), 5, 'the session after a result left half read');
        $dbh->{mysql_use_result} = 1;
        $dbh->begin_work;
        expect_eq(scalar @{ $dbh->selectall_arrayref('SELECT seq FROM seq_1_to_20000') }, 20000,
                  'rows streamed in a transaction');
        $dbh->commit;
    });
}

sub my_check_multi_statements {
    with_mysql(1, mysql_multi_statements => 1, sub {
        my ($dbh) = @_;
        my $sth = $dbh->prepare("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi'); SELECT 4");
        $sth->execute;
        my @results;
        do {
            push @results, $sth->{NUM_OF_FIELDS} ? $sth->fetchall_arrayref : $sth->rows;
        } while ($sth->more_results);
        expect_eq(\@results, [[[1]], [[2, 3]], 1, [[4]]], 'every result');
        expect_eq(my_one($dbh, 'SELECT name FROM items WHERE id = 7000'), 'multi', 'the insert in the batch');
    });
}

sub my_check_routing {
    with_mysql(sub {
        my ($dbh) = @_;
        expect_eq(my_one($dbh, 'SELECT @@read_only'), $THROUGH_PROXY ? 1 : 0, "a fresh session's read on a replica");
        $dbh->begin_work;
        expect_eq(my_one($dbh, 'SELECT @@read_only'), 0, 'a transaction on the primary');
        $dbh->commit;
        $dbh->do('INSERT INTO items (id, name) VALUES (?, ?)', undef, 6000, 'routed');
        expect_eq(my_one($dbh, 'SELECT name FROM items WHERE id = ?', 6000), 'routed', 'read your write');
    });
    with_mysql(1, prepare => 1, sub {
        my ($dbh) = @_;
        expect_eq(my_one($dbh, 'SELECT @@read_only'), $THROUGH_PROXY ? 1 : 0,
                  "a fresh session's read on a replica (server-side prepare)");
        my $sth = $dbh->prepare('SELECT name FROM items WHERE id = ?');
        $dbh->do('UPDATE items SET name = ? WHERE id = ?', undef, 'updated', 6000);
        $sth->execute(6000);
        expect_eq($sth->fetchall_arrayref, [['updated']], 'read your write with a server-side statement');
    });
}

my @MYSQL_CHECKS = (
    ['connect', \&my_check_connect],
    ['setup', \&my_check_setup],
    ['parameters_and_types', \&my_check_parameters_and_types],
    ['prepared_statements', \&my_check_prepared_statements],
    ['prepared_many_connections', \&my_check_prepared_many_connections],
    ['transactions', \&my_check_transactions],
    ['errors', \&my_check_errors],
    ['kill_query', \&my_check_kill_query],
    ['streaming', \&my_check_streaming],
    ['multi_statements', \&my_check_multi_statements],
    ['routing', \&my_check_routing],
);

my $which = $ARGV[0] // '';
if ($which eq 'pg') {
    require DBD::Pg;
    exit run_checks("perl $^V DBI $DBI::VERSION DBD::Pg $DBD::Pg::VERSION", @PG_CHECKS);
} elsif ($which eq 'mysql') {
    require DBD::mysql;
    exit run_checks("perl $^V DBI $DBI::VERSION DBD::mysql $DBD::mysql::VERSION", @MYSQL_CHECKS);
} else {
    print STDERR "usage: perl perl_dbi_driver.pl pg|mysql\n";
    exit 2;
}
