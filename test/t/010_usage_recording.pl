# Copyright: iapi_tokens authors.
#
# Token use recorded in shared memory (shared_preload_libraries =
# 'iapi_tokens') and applied by the usage workers: uses verified on a hot
# standby reach the primary over libpq, exactly counted, also after the
# primary was down for a while; a standby without
# iapi_tokens.usage_primary_conninfo keeps its uses and says why; a clean
# restart keeps what was pending, and kill -9 loses at most the uses since
# the last flush, never a token or a revocation; two databases keep their
# own counts although their token ids collide; and a PostgREST GET, replayed
# as PostgREST 12 sends it, moves the token's lastUsed.
#
# Nothing here waits a fixed time: every wait polls for the state it needs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PostgrestReplay;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;
my $iso_ms_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my $dump_file = 'pg_stat/iapi_tokens_usage.stat';
my $preload = q{
shared_preload_libraries = 'iapi_tokens'
iapi_tokens.usage_flush_interval = '100ms'
};

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# A new source and its token in a database: (token id, token).
sub new_token
{
	my ($node, $db, $name) = @_;
	my ($id, $token) = split /\|/,
	  $node->safe_psql($db,
		"SELECT id, access_token FROM iapi_tokens.generate_token(iapi_tokens.create_source('$name'))"
	  );
	return ($id, $token);
}

# Verifies a token n times, each in a statement of its own, in one read-only
# transaction; checks that each verification found it.
sub verify_times
{
	my ($node, $db, $token, $n, $what) = @_;
	my $sql = "BEGIN TRANSACTION READ ONLY;\n"
	  . ("SELECT count(*) FROM iapi_tokens.verify_token('$token');\n" x $n)
	  . "COMMIT;";
	is($node->safe_psql($db, $sql), join("\n", ('1') x $n),
		"$what: $n verifications in a read-only transaction find the token");
	return;
}

# usage_stats() of a database, as a hash.
sub stats
{
	my ($node, $db) = @_;
	return decode_json(
		$node->safe_psql($db || 'postgres',
			'SELECT row_to_json(s) FROM iapi_tokens.usage_stats() s'));
}

sub use_count
{
	my ($node, $db, $id) = @_;
	return $node->safe_psql($db,
		"SELECT use_count FROM iapi_tokens.tokens WHERE id = $id");
}

# Waits until a database of a node has nothing pending.
sub wait_flushed
{
	my ($node, $db, $what) = @_;
	ok( $node->poll_query_until(
			$db, 'SELECT uses_pending = 0 FROM iapi_tokens.usage_stats()'),
		"$what: nothing pending any more");
	return;
}

# Waits until a token's use_count reaches n, then checks that it is exactly
# n once the node that recorded the uses has nothing pending.
sub wait_use_count
{
	my ($node, $db, $id, $n, $what, $recorder) = @_;
	ok( $node->poll_query_until(
			$db,
			"SELECT use_count >= $n FROM iapi_tokens.tokens WHERE id = $id"),
		"$what: the uses arrive");
	wait_flushed($recorder // $node, $db, $what);
	is(use_count($node, $db, $id), $n, "$what: use_count is exactly $n");
	return;
}

# The parent of a process, from /proc; none once it is gone.
sub parent_pid
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return;
	my $line = <$fh>;
	close $fh;
	return unless defined $line && $line =~ /^\d+ \(.*\) \S (\d+) /s;
	return $1;
}

# kill -9 of the postmaster, then a start once it and its children, which
# exit when they notice, are gone, zombies reaped: until then the new
# postmaster would take the old one's lock file, or its shared memory, for
# a running server's, and refuse to start.
sub kill9_and_start
{
	my ($node) = @_;
	my ($postmaster) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	my @pids = ($postmaster);
	foreach my $dir (glob '/proc/[0-9]*')
	{
		my ($pid) = $dir =~ m{(\d+)$};
		my $parent = parent_pid($pid);
		push @pids, $pid if defined $parent && $parent == $postmaster;
	}
	$node->kill9;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (grep { -e "/proc/$_" } @pids)
	{
		die 'the killed server\'s processes did not exit' if time > $deadline;
		usleep(10_000);
	}
	$node->start;
	return;
}

# ---------------------------------------------------------------------------
# A primary, a hot standby that forwards to it, and one that cannot.
# ---------------------------------------------------------------------------

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $preload);
$primary->start;

# The forwarding role needs nothing but apply_usage(), in each database.
$primary->safe_psql('postgres', 'CREATE ROLE iapi_usage_forwarder LOGIN');
my $grant = 'GRANT EXECUTE ON FUNCTION iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[]) TO iapi_usage_forwarder';
foreach my $db (qw(postgres dba dbb))
{
	$primary->safe_psql('postgres', "CREATE DATABASE $db") if $db ne 'postgres';
	$primary->safe_psql($db, 'CREATE EXTENSION iapi_tokens');
	$primary->safe_psql($db, $grant);
}

my $stats = stats($primary);
ok($stats->{preloaded}, 'primary: the library is preloaded');

$primary->backup('bkp');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bkp', has_streaming => 1);
my $conninfo = 'host=' . $primary->host . ' port=' . $primary->port
  . ' user=iapi_usage_forwarder';
# Its own time zone, west of UTC, and date style: the forwarded times must
# not depend on them.
$standby->append_conf(
	'postgresql.conf', qq{
iapi_tokens.usage_primary_conninfo = '$conninfo'
timezone = 'Pacific/Honolulu'
datestyle = 'SQL, DMY'
});
$standby->start;

my $unset = PostgreSQL::Test::Cluster->new('standby_unset');
$unset->init_from_backup($primary, 'bkp', has_streaming => 1);
$unset->start;

# ---------------------------------------------------------------------------
# Uses verified on the standby are applied on the primary.
# ---------------------------------------------------------------------------

my ($t1, $tok1) = new_token($primary, 'postgres', 'standby_uses');
like($tok1, $token_re, 'a token to verify on the standby');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');

my $before = $primary->safe_psql('postgres', 'SELECT clock_timestamp()');
verify_times($standby, 'postgres', $tok1, 5, 'standby');
wait_use_count($primary, 'postgres', $t1, 5,
	'standby uses on the primary', $standby);
is( $primary->safe_psql(
		'postgres',
		"SELECT last_used_at >= '$before' AND last_used_at <= clock_timestamp()
		   FROM iapi_tokens.tokens WHERE id = $t1"),
	't',
	'standby uses on the primary: last_used_at is the time of the verifications');

$stats = stats($standby);
is($stats->{uses_forwarded}, 5, 'standby: usage_stats counts 5 uses forwarded');
is($stats->{uses_applied}, 0, 'standby: it applied nothing itself');
is($stats->{last_flush_error}, undef, 'standby: no flush error');
ok(defined $stats->{last_flush_at}, 'standby: last_flush_at is set');
is($stats->{uses_dropped}, 0, 'standby: no use dropped');

# The applied uses replicate back; the standby still has nothing pending.
$primary->wait_for_catchup($standby);
is(use_count($standby, 'postgres', $t1), 5,
	'standby: the applied count replicated back');

# ---------------------------------------------------------------------------
# The primary is down: the standby keeps its uses and retries.
# ---------------------------------------------------------------------------

my ($t2, $tok2) = new_token($primary, 'postgres', 'primary_down');
$primary->wait_for_catchup($standby);
my $failures = stats($standby)->{forward_failures};
$primary->stop;

verify_times($standby, 'postgres', $tok2, 4, 'standby, primary down');
ok( $standby->poll_query_until(
		'postgres',
		"SELECT forward_failures > $failures AND uses_pending = 4 FROM iapi_tokens.usage_stats()"
	),
	'primary down: forwarding fails and the 4 uses stay pending');
$stats = stats($standby);
like($stats->{last_flush_error}, qr/could not connect to the primary/,
	'primary down: last_flush_error says why');
is($stats->{uses_pending}, 4, 'primary down: uses_pending is 4');
is($stats->{tokens_pending}, 1, 'primary down: one token pending');
is($stats->{uses_forwarded}, 5, 'primary down: nothing more forwarded');

$primary->start;
wait_use_count($primary, 'postgres', $t2, 4,
	'primary back: the pending uses', $standby);
is(use_count($primary, 'postgres', $t1), 5,
	'primary back: the earlier token kept its count');
$stats = stats($standby);
is($stats->{uses_forwarded}, 9, 'primary back: 9 uses forwarded in all');
is($stats->{last_flush_error}, undef, 'primary back: the error is cleared');
is($stats->{uses_dropped}, 0, 'primary back: no use dropped');

# ---------------------------------------------------------------------------
# Two databases, whose token ids collide, keep their own uses: applied on
# the primary, and forwarded from the standby to the same database.
# ---------------------------------------------------------------------------

my ($ta, $toka) = new_token($primary, 'dba', 'db_a');
my ($tb, $tokb) = new_token($primary, 'dbb', 'db_b');
is($ta, $tb, 'the token ids of the two databases collide');
is($ta, $t1, 'and collide with a token of database postgres');

verify_times($primary, 'dba', $toka, 2, 'primary, dba');
verify_times($primary, 'dbb', $tokb, 3, 'primary, dbb');
wait_use_count($primary, 'dba', $ta, 2, 'primary, dba');
wait_use_count($primary, 'dbb', $tb, 3, 'primary, dbb');

$primary->wait_for_catchup($standby);
verify_times($standby, 'dba', $toka, 4, 'standby, dba');
verify_times($standby, 'dbb', $tokb, 5, 'standby, dbb');
wait_use_count($primary, 'dba', $ta, 6, 'standby, dba', $standby);
wait_use_count($primary, 'dbb', $tb, 8, 'standby, dbb', $standby);
is(use_count($primary, 'postgres', $t1), 5,
	'two databases: token 1 of database postgres kept its count');
is(stats($standby)->{uses_forwarded}, 18, 'two databases: 18 uses forwarded in all');

# ---------------------------------------------------------------------------
# A standby without usage_primary_conninfo keeps its uses and says why.
# ---------------------------------------------------------------------------

my ($t7, $tok7) = new_token($primary, 'postgres', 'no_conninfo');
$primary->wait_for_catchup($unset);
verify_times($unset, 'postgres', $tok7, 3, 'standby without conninfo');
ok( $unset->poll_query_until(
		'postgres',
		'SELECT forward_failures >= 2 FROM iapi_tokens.usage_stats()'),
	'no conninfo: the flushes fail, again and again');
$stats = stats($unset);
like($stats->{last_flush_error}, qr/usage_primary_conninfo is not set/,
	'no conninfo: last_flush_error names the missing setting');
is($stats->{uses_pending}, 3, 'no conninfo: the 3 uses stay pending');
is($stats->{uses_dropped}, 0, 'no conninfo: no use dropped');
is($stats->{uses_forwarded}, 0, 'no conninfo: nothing forwarded');
is(use_count($primary, 'postgres', $t7), 0,
	'no conninfo: nothing reached the primary');

# Setting it, with a reload, delivers them all.
$unset->append_conf('postgresql.conf',
	"iapi_tokens.usage_primary_conninfo = '$conninfo'");
$unset->reload;
wait_use_count($primary, 'postgres', $t7, 3,
	'no conninfo, then set: the kept uses', $unset);
$stats = stats($unset);
is($stats->{uses_forwarded}, 3, 'conninfo set: 3 uses forwarded');
is($stats->{last_flush_error}, undef, 'conninfo set: the error is cleared');

$unset->stop;
$standby->stop;
$primary->stop;

# ---------------------------------------------------------------------------
# A clean restart keeps what is pending; kill -9 loses at most the uses
# since the last flush, and no token or revocation.
# ---------------------------------------------------------------------------

my $node = PostgreSQL::Test::Cluster->new('solo');
$node->init;
$node->append_conf('postgresql.conf', $preload);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');

my ($t3, $tok3) = new_token($node, 'postgres', 'clean_restart');
my ($t4, $tok4) = new_token($node, 'postgres', 'crash');
my ($t5, $tok5) = new_token($node, 'postgres', 'crash_revoked');
my $s5 = $node->safe_psql('postgres',
	"SELECT source_id FROM iapi_tokens.tokens WHERE id = $t5");

# Flushed before the crash.
verify_times($node, 'postgres', $tok4, 3, 'before the crash');
wait_use_count($node, 'postgres', $t4, 3, 'before the crash');
is(stats($node)->{uses_applied}, 3, 'before the crash: 3 uses applied');

# From here on the launcher flushes once an hour: a restart makes sure it
# runs with that setting.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '1h'");
$node->restart;

verify_times($node, 'postgres', $tok3, 7, 'clean restart');
$stats = stats($node);
is($stats->{uses_pending}, 7, 'clean restart: 7 uses pending before');
is($stats->{tokens_pending}, 1, 'clean restart: one token pending before');

$node->stop('fast');
ok(-f $node->data_dir . "/$dump_file",
	'clean restart: the pending uses were written at shutdown');
$node->start;
ok(!-e $node->data_dir . "/$dump_file",
	'clean restart: the file is read once and removed');
$stats = stats($node);
is($stats->{uses_pending}, 7, 'clean restart: the 7 uses are pending again');
is(use_count($node, 'postgres', $t3), 0,
	'clean restart: and not applied yet (the interval is an hour)');

$node->safe_psql('postgres',
	"ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '100ms'");
$node->reload;
wait_use_count($node, 'postgres', $t3, 7, 'clean restart');

# Pending at the crash: 5 uses of one token, 2 of another, which is then
# revoked.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '1h'");
$node->restart;
verify_times($node, 'postgres', $tok4, 5, 'crash');
verify_times($node, 'postgres', $tok5, 2, 'crash, the revoked token');
$node->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s5, $t5)");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.verify_token('$tok5')"),
	'0', 'crash: the revoked token no longer verifies');
is(stats($node)->{uses_pending}, 7, 'crash: 7 uses pending at the crash');
my $tokens_before = $node->safe_psql('postgres',
	'SELECT count(*) FROM iapi_tokens.tokens');

kill9_and_start($node);

ok(!-e $node->data_dir . "/$dump_file", 'crash: no usage file was written');
my $after = use_count($node, 'postgres', $t4);
ok($after >= 3 && $after <= 8,
	"crash: use_count $after is between the 3 flushed and 3 + 5");
is($node->safe_psql('postgres', 'SELECT count(*) FROM iapi_tokens.tokens'),
	$tokens_before, 'crash: every token is still there');
is( $node->safe_psql(
		'postgres',
		"SELECT revoked_at IS NOT NULL FROM iapi_tokens.tokens WHERE id = $t5"),
	't',
	'crash: the revocation survived');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.verify_token('$tok5')"),
	'0', 'crash: the revoked token still does not verify');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.verify_token('$tok4')"),
	'1', 'crash: the other token still verifies');
is(stats($node)->{uses_dropped}, 0, 'crash: no use dropped');

$node->safe_psql('postgres',
	'ALTER SYSTEM RESET iapi_tokens.usage_flush_interval');
$node->reload;
wait_use_count($node, 'postgres', $t4, $after + 1, 'after the crash');

# ---------------------------------------------------------------------------
# A PostgREST GET moves lastUsed.
# ---------------------------------------------------------------------------

my $roles_sql = slurp_file("$FindBin::RealBin/../../rest/roles.sql");
$node->safe_psql('postgres',
	"\\set authenticator_password 'not-used-with-trust'\n" . $roles_sql);
$node->safe_psql('postgres', "\\set token_user alice\n" . $roles_sql);

my $api = PostgrestReplay->new(
	host => $node->host,
	port => $node->port,
	dbname => 'postgres',
	user => 'iapi_authenticator');
my $alice = { role => 'alice' };

my $res = $api->request(
	method => 'POST',
	path => '/rpc/create_access_token',
	claims => $alice,
	body => { lifetimeSeconds => -1, description => 'usage' });
is($res->{status}, 201, 'REST: a personal token') or diag($res->{body});
my $ptok = $res->{json}{tokenValue};
my $puuid = $res->{json}{tokenInfo}{tokenId};
like($ptok, $token_re, 'REST: its value');
is($res->{json}{tokenInfo}{lastUsed}, undef, 'REST: never used');
my $pid = $node->safe_psql('postgres',
	"SELECT id FROM iapi_tokens.tokens WHERE token_uuid = '$puuid'");

sub get_token_info
{
	my $r = $api->request(
		method => 'GET',
		path => '/rpc/get_access_token',
		claims => $alice,
		query => { tokenId => $puuid });
	is($r->{status}, 200, 'REST: GET /v4/apiAccessTokens/{tokenId}')
	  or diag($r->{body});
	return $r->{json};
}

sub whoami
{
	my ($what) = @_;
	my $r = $api->request(
		method => 'GET',
		path => '/rpc/whoami',
		headers => { 'X-Api-Key' => $ptok });
	is($r->{status}, 200, "REST: $what: GET /rpc/whoami") or diag($r->{body});
	is($api->last_access_mode, 'READ ONLY',
		"REST: $what: a GET runs in a read-only transaction");
	is($r->{json}{owner}, 'alice', "REST: $what: the token's owner");
	ok(exists $r->{json}{use_count} && $r->{json}{use_count} =~ /^\d+$/,
		"REST: $what: whoami has a use_count");
	return $r->{json};
}

whoami('first use');
wait_use_count($node, 'postgres', $pid, 1, 'REST: first use');
my $last1 = $node->safe_psql('postgres',
	"SELECT last_used_at FROM iapi_tokens.tokens WHERE id = $pid");
my $info = get_token_info();
like($info->{lastUsed}, $iso_ms_re, 'REST: lastUsed is set after a GET');
is( $info->{lastUsed},
	$node->safe_psql(
		'postgres',
		"SELECT iapi_rest_internal.iso8601_ms('$last1'::timestamptz)"),
	'REST: lastUsed is the recorded last use');

my $me = whoami('second use');
ok($me->{use_count} >= 1, 'REST: whoami reports the applied first use');
wait_use_count($node, 'postgres', $pid, 2, 'REST: second use');
is( $node->safe_psql(
		'postgres',
		"SELECT last_used_at > '$last1' FROM iapi_tokens.tokens WHERE id = $pid"),
	't',
	'REST: the second GET moved last_used_at');
my $info2 = get_token_info();
like($info2->{lastUsed}, $iso_ms_re, 'REST: lastUsed after the second GET');
ok($info2->{lastUsed} gt $info->{lastUsed}, 'REST: lastUsed moved forward');

$api->dbh->disconnect;
$node->stop;

done_testing();
