# Copyright: iapi_tokens authors.
#
# Rate limits (1.5, REST 1.3), counted in shared memory at verification
# (shared_preload_libraries = 'iapi_tokens'):
# - 8 concurrent pgbench sessions on one token limited to 100 per 10 seconds:
#   exactly 100 pass in the first window, all inside it, and every other
#   attempt is refused and counted as refused; after the window has ended
#   exactly 100 more pass; use_count grows by the admissions only;
# - over the PostgREST replay (test/lib/PostgrestReplay.pm): a source token
#   made with {"rateLimit": 2, "rateWindowSeconds": 30} answers 200 with the
#   RateLimit-Policy and RateLimit headers twice, then 429 with Retry-After
#   and PostgREST's error body; an unlimited key has no such headers, a bad
#   key is still 401; a personal token with a limit; a limit out of bounds
#   is a 400 that makes no token;
# - a hot standby counts its own requests: a token exhausted on the primary
#   is admitted its limit again on the standby, and refused after it there;
#   refused verifications are no uses on either;
# - a restart starts every window afresh;
# - iapi_tokens.rate_limit_max_tokens = 64: the 65th limited token in a
#   live window is refused (fail closed, an overflow, retry_after 1); a
#   committed revocation frees a slot, a rolled-back one does not; ended
#   windows are evicted to make room.
#
# Nothing waits a fixed time: every wait polls, with a bound, for the state
# it needs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PostgrestReplay;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;
my $preload = q{
shared_preload_libraries = 'iapi_tokens'
iapi_tokens.usage_flush_interval = '100ms'
};

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# One row of a query, as a hash.
sub row
{
	my ($node, $sql, $db) = @_;
	return decode_json(
		$node->safe_psql($db || 'postgres', "SELECT row_to_json(r) FROM ($sql) r"));
}

sub rate_stats
{
	my ($node) = @_;
	return row($node, 'SELECT * FROM iapi_tokens.rate_limit_stats()');
}

sub check_token
{
	my ($node, $token) = @_;
	return row($node,
		"SELECT status, token_id, rate_limit, rate_window, remaining, reset_after, retry_after
		   FROM iapi_tokens.check_token('$token')");
}

# A new source and its token, with a limit if given: (token id, token).
sub new_token
{
	my ($node, $name, $limit, $window) = @_;
	my $rate = defined $limit ? "$limit, '$window'" : 'NULL, NULL';
	my ($id, $token) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT id, access_token FROM iapi_tokens.generate_token(iapi_tokens.create_source('$name'), NULL, NULL, NULL, NULL, $rate)"
	  );
	return ($id, $token);
}

# Verifies a token n times, each in a statement of its own, in one read-only
# transaction (as on a standby): 1 for each admission, 0 for each refusal.
sub verify_times
{
	my ($node, $token, $n) = @_;
	return $node->safe_psql('postgres',
		"BEGIN TRANSACTION READ ONLY;\n"
		  . ("SELECT count(*) FROM iapi_tokens.verify_token('$token');\n" x $n)
		  . 'COMMIT;');
}

sub use_count
{
	my ($node, $id) = @_;
	return $node->safe_psql('postgres',
		"SELECT use_count FROM iapi_tokens.tokens WHERE id = $id");
}

# Waits until the uses recorded on each of @recorders are applied, then
# checks that the token's use_count is exactly n on the primary.
sub is_use_count
{
	my ($primary, $id, $n, $what, @recorders) = @_;
	ok( $primary->poll_query_until(
			'postgres',
			"SELECT use_count >= $n FROM iapi_tokens.tokens WHERE id = $id"),
		"$what: the uses arrive");
	for my $node ($primary, @recorders)
	{
		ok( $node->poll_query_until(
				'postgres', 'SELECT uses_pending = 0 FROM iapi_tokens.usage_stats()'),
			"$what: nothing pending on " . $node->name);
	}
	is(use_count($primary, $id), $n, "$what: use_count is exactly $n");
	return;
}

# ---------------------------------------------------------------------------
# The primary: both extensions, PostgREST's roles.
# ---------------------------------------------------------------------------

my $node = PostgreSQL::Test::Cluster->new('primary');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', $preload);
$node->start;

my $roles_sql = slurp_file("$FindBin::RealBin/../../rest/roles.sql");
$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');
$node->safe_psql('postgres',
	"\\set authenticator_password 'not-used-with-trust'\n" . $roles_sql);
$node->safe_psql('postgres', "\\set token_user alice\n" . $roles_sql);

my $stats = rate_stats($node);
ok($stats->{preloaded}, 'rate_limit_stats: the library is preloaded');
is($stats->{max_tokens}, 65536, 'rate_limit_stats: rate_limit_max_tokens defaults to 65536');
is($stats->{requests_admitted} + $stats->{requests_refused}, 0,
	'rate_limit_stats: nothing counted yet');

# ---------------------------------------------------------------------------
# 8 concurrent sessions on one token, 100 per 10 seconds.
# ---------------------------------------------------------------------------

my ($hot_id, $hot) = new_token($node, 'hot', 100, '10 seconds');
like($hot, $token_re, 'hot: a token limited to 100 per 10 seconds');
is($node->safe_psql('postgres',
		"SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = $hot_id"),
	'100|00:00:10', 'hot: its limit is stored');

# Every attempt is a row: token_id is the token when it was admitted, NULL
# when it was refused.  The sessions read the token from a table.
$node->safe_psql(
	'postgres', qq{
CREATE TABLE plain (token text NOT NULL);
INSERT INTO plain VALUES ('$hot');
CREATE TABLE attempts (run integer NOT NULL, at timestamptz NOT NULL, token_id bigint);
});
my $script = $node->basedir . '/verify_hot.sql';
PostgreSQL::Test::Utils::append_to_file($script,
	"INSERT INTO attempts (run, at, token_id) SELECT :run, clock_timestamp(), v.token_id "
	  . "FROM plain p LEFT JOIN LATERAL iapi_tokens.verify_token(p.token) v ON true;\n");

# pgbench with 8 clients on 8 threads for some seconds: the number of
# transactions it processed.
sub pgbench_run
{
	my ($run, $seconds) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[
			'pgbench', '-n', '-c', '8', '-j', '8', '-T', $seconds,
			'-D', "run=$run", '-f', $script, $node->connstr('postgres')
		],
		'>', \$out, '2>', \$err);
	ok($ok, "run $run: pgbench, 8 clients for $seconds s") or diag("$out\n$err");
	my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
	ok(defined $processed, "run $run: pgbench reports its transactions") or diag($out);
	like($out, qr/number of clients: 8/, "run $run: 8 clients");
	if ($out =~ /number of failed transactions: (\d+)/)
	{
		is($1, 0, "run $run: no transaction failed");
	}
	return $processed // -1;
}

# The attempts of a run: admitted, all, and the span of the admissions.
sub run_counts
{
	my ($run) = @_;
	return row($node,
		"SELECT count(token_id) AS admitted, count(*) AS attempts,
				count(DISTINCT token_id) AS tokens, max(token_id) AS token_id,
				extract(epoch FROM max(at) FILTER (WHERE token_id IS NOT NULL)
								  - min(at) FILTER (WHERE token_id IS NOT NULL)) AS span
		   FROM attempts WHERE run = $run");
}

my $before = rate_stats($node);
my $processed = pgbench_run(1, 3);
my $c1 = run_counts(1);
is($c1->{admitted}, 100, 'run 1: exactly 100 of 8 concurrent sessions\' attempts are admitted');
is($c1->{attempts}, $processed, 'run 1: every transaction of pgbench is an attempt');
ok($c1->{attempts} >= 200,
	"run 1: the sessions tried far more often ($c1->{attempts} attempts): the limit was hit");
is($c1->{token_id}, $hot_id, 'run 1: the admissions are the hot token');
ok($c1->{span} < 10,
	"run 1: all 100 admissions lie inside one 10 s window ($c1->{span} s apart)");
my $after = rate_stats($node);
is($after->{requests_admitted} - $before->{requests_admitted}, 100,
	'run 1: rate_limit_stats counts 100 admitted');
is($after->{requests_refused} - $before->{requests_refused},
	$c1->{attempts} - 100, 'run 1: and every other attempt refused');
is($after->{tokens_tracked}, 1, 'run 1: one token tracked');
is($after->{overflows}, 0, 'run 1: no overflow');

# Until the window ends, check_token says why it is refused and for how
# long; the first valid answer opens the next window, and counts in it.
my $poll = q{
WITH c AS (SELECT c.* FROM plain p, LATERAL iapi_tokens.check_token(p.token) c),
	 i AS (INSERT INTO attempts (run, at, token_id)
		   SELECT 2, clock_timestamp(), CASE WHEN c.status = 'valid' THEN c.token_id END FROM c)
SELECT row_to_json(c) FROM c};
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my ($answer, @refusals);
while (1)
{
	$answer = decode_json($node->safe_psql('postgres', $poll));
	last if $answer->{status} ne 'rate_limited';
	push @refusals, $answer;
	last if time > $deadline;
	usleep(100_000);
}
is($answer->{status}, 'valid', 'window end: check_token says valid again');
is($answer->{remaining}, 99, 'window end: the new window has 99 left');
is($answer->{reset_after}, 10, 'window end: and ends in 10 s');
is($answer->{retry_after}, undef, 'window end: no retry_after when admitted');
ok(@refusals >= 1, 'window end: check_token was refused at first');
is( scalar(grep {
			    $_->{remaining} == 0
			  && $_->{retry_after} == $_->{reset_after}
			  && $_->{retry_after} >= 1
			  && $_->{retry_after} <= 10
			  && $_->{rate_limit} == 100
			  && $_->{rate_window} eq '00:00:10'
			  && $_->{token_id} == $hot_id
		} @refusals),
	scalar(@refusals),
	'window end: each refusal had remaining 0 and a retry_after of 1 to 10 s');
my @retries = map { $_->{retry_after} } @refusals;
is_deeply(\@retries, [ sort { $b <=> $a } @retries ],
	'window end: retry_after counts down');

$processed = pgbench_run(2, 2);
my $c2 = run_counts(2);
is($c2->{admitted}, 100,
	'run 2: exactly 100 more in the next window (the first check_token and 99)');
is($c2->{attempts}, $processed + @refusals + 1,
	'run 2: every transaction of pgbench and every check is an attempt');
ok($c2->{span} < 10, "run 2: inside one window ($c2->{span} s apart)");
$after = rate_stats($node);
is($after->{requests_admitted} - $before->{requests_admitted}, 200,
	'runs 1 and 2: rate_limit_stats counts 200 admitted');
is( $after->{requests_refused} - $before->{requests_refused},
	$c1->{attempts} + $c2->{attempts} - 200,
	'runs 1 and 2: and every other attempt refused');

# A refused verification is not a use.
is_use_count($node, $hot_id, 200, 'hot: only the admissions are uses');

# ---------------------------------------------------------------------------
# PostgREST: 200 with RateLimit headers, then 429.
# ---------------------------------------------------------------------------

my $api = PostgrestReplay->new(
	host => $node->host,
	port => $node->port,
	dbname => 'postgres',
	user => 'iapi_authenticator');
my $client = { role => 'iapi_source_admin', stitch_client_id => 116078 };
my $alice = { role => 'alice' };

sub call
{
	my ($method, $fn, %rest) = @_;
	return $api->request(method => $method, path => "/rpc/$fn", %rest);
}

my $res = call(POST => 'create_source', claims => $client, body => { name => 'limited' });
is($res->{status}, 201, 'REST: create_source') or diag($res->{body});
my $sid = $res->{json}{id};

$res = call(POST => 'generate_token', claims => $client,
	headers => { 'X-Iapi-Source-Id' => $sid },
	body => { rateLimit => 2, rateWindowSeconds => 30 });
is($res->{status}, 200, 'REST: generate_token with rateLimit 2, rateWindowSeconds 30')
  or diag($res->{body});
my ($lim_id, $lim) = @{ $res->{json} }{qw(id access_token)};
like($lim, $token_re, 'REST: the limited key');
is($node->safe_psql('postgres',
		"SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = $lim_id"),
	'2|00:00:30', 'REST: the limit is stored');

my $policy = '"token";q=2;w=30';
for my $r (1, 0)
{
	$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $lim });
	is($res->{status}, 200, "REST: whoami, r=$r: 200") or diag($res->{body});
	is($res->{json}{token_id}, $lim_id, "REST: whoami, r=$r: the key's token");
	is($res->{headers}{'ratelimit-policy'}, $policy, "REST: whoami, r=$r: RateLimit-Policy");
	like($res->{headers}{ratelimit}, qr/^"token";r=$r;t=\d+$/, "REST: whoami, r=$r: RateLimit");
	my ($t) = ($res->{headers}{ratelimit} // '') =~ /;t=(\d+)$/;
	ok(defined $t && $t >= 1 && $t <= 30, "REST: whoami, r=$r: t is 1 to 30 s");
}

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $lim });
is($res->{status}, 429, 'REST: the third whoami: 429') or diag($res->{body});
my $retry = $res->{headers}{'retry-after'} // '';
like($retry, qr/^\d+$/, 'REST: 429: Retry-After in whole seconds');
ok($retry >= 1 && $retry <= 30, "REST: 429: Retry-After $retry is 1 to 30");
is($res->{headers}{'ratelimit-policy'}, $policy, 'REST: 429: RateLimit-Policy');
is($res->{headers}{ratelimit}, "\"token\";r=0;t=$retry", 'REST: 429: RateLimit with r=0');
is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
	'REST: 429: JSON content type');
is_deeply([ sort keys %{ $res->{json} || {} } ], [qw(code details hint message)],
	'REST: 429: PostgREST\'s error body');
is($res->{json}{code}, 'PT429', 'REST: 429: code PT429');
is($res->{json}{message}, 'the API key is rate limited', 'REST: 429: message');
is($res->{json}{details}, "Retry after $retry seconds.", 'REST: 429: details');
is($res->{json}{hint}, 'The key is limited to 2 requests per 00:00:30.',
	'REST: 429: the hint, as docs/rate-limits.md shows it');
ok(index($res->{body}, $lim) < 0, 'REST: 429: the key is not in the response');

# An unlimited key: no RateLimit fields; a bad key: still 401.
$res = call(POST => 'generate_token', claims => $client,
	headers => { 'X-Iapi-Source-Id' => $sid }, body => {});
is($res->{status}, 200, 'REST: generate_token without a limit') or diag($res->{body});
my ($open_id, $open) = @{ $res->{json} }{qw(id access_token)};
is($node->safe_psql('postgres',
		"SELECT rate_limit IS NULL AND rate_window IS NULL FROM iapi_tokens.tokens WHERE id = $open_id"),
	't', 'REST: no limit stored');
for my $i (1 .. 3)
{
	$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $open });
	is($res->{status}, 200, "REST: the unlimited key, request $i: 200");
	ok(!exists $res->{headers}{'ratelimit-policy'} && !exists $res->{headers}{ratelimit},
		"REST: the unlimited key, request $i: no RateLimit fields");
}
my $forged = substr($lim, 0, -1) . (substr($lim, -1) eq 'A' ? 'B' : 'A');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $forged });
is($res->{status}, 401, 'REST: a bad key: 401');
is($res->{json}{code}, 'PT401', 'REST: a bad key: PT401');
ok(!exists $res->{headers}{'retry-after'} && !exists $res->{headers}{ratelimit},
	'REST: a bad key: no rate limit fields');

# The 429 was no use.
is_use_count($node, $lim_id, 2, 'REST: the limited key');

# A personal token with a limit.
$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 600, description => 'limited', rateLimit => 5,
		rateWindowSeconds => 60 });
is($res->{status}, 201, 'REST: create_access_token with rateLimit 5, rateWindowSeconds 60')
  or diag($res->{body});
my $personal = $res->{json}{tokenValue};
like($personal, $token_re, 'REST: the limited personal token');
is( $node->safe_psql(
		'postgres',
		"SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE token_uuid = '$res->{json}{tokenInfo}{tokenId}'"
	),
	'5|00:01:00',
	'REST: its limit is stored');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $personal });
is($res->{status}, 200, 'REST: whoami with the personal token');
is($res->{json}{owner}, 'alice', 'REST: whoami: its owner');
is($res->{headers}{'ratelimit-policy'}, '"token";q=5;w=60',
	'REST: whoami with the personal token: RateLimit-Policy');
like($res->{headers}{ratelimit}, qr/^"token";r=4;t=\d+$/,
	'REST: whoami with the personal token: RateLimit r=4');

# Out of bounds: 400, and no token.
my $count_tokens = 'SELECT count(*) FROM iapi_tokens.tokens';
my $ntokens = $node->safe_psql('postgres', $count_tokens);
my $res_src = call(POST => 'create_source', claims => $client, body => { name => 'bad_limits' });
my $bad_sid = $res_src->{json}{id};
for my $bad ([ 'rateLimit 0', { rateLimit => 0, rateWindowSeconds => 30 }, qr/^invalid rate limit: 0 per /],
	[ 'rateLimit without rateWindowSeconds', { rateLimit => 2 }, qr/^invalid rate limit: 2 per NULL$/ ],
	[ 'rateWindowSeconds 0', { rateLimit => 2, rateWindowSeconds => 0 }, qr/^invalid rate limit: 2 per / ])
{
	my ($name, $body, $message_re) = @$bad;
	$res = call(POST => 'generate_token', claims => $client,
		headers => { 'X-Iapi-Source-Id' => $bad_sid }, body => $body);
	is($res->{status}, 400, "REST: generate_token with $name: 400") or diag($res->{body});
	is($res->{json}{code}, '22023', "REST: generate_token with $name: 22023");
	like($res->{json}{message}, $message_re, "REST: generate_token with $name: the message");
	like($res->{json}{details}, qr/^A rate limit is 1 to 1000000 requests per window of 1 second to 1 day/,
		"REST: generate_token with $name: the bounds in the details");
}
$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 600, rateLimit => 0, rateWindowSeconds => 60 });
is($res->{status}, 400, 'REST: create_access_token with rateLimit 0: 400') or diag($res->{body});
is($res->{json}{code}, '22023', 'REST: create_access_token with rateLimit 0: 22023');
is($node->safe_psql('postgres', $count_tokens), $ntokens, 'REST: the refused creations made no token');
$api->dbh->disconnect;

# ---------------------------------------------------------------------------
# A hot standby counts its own requests.
# ---------------------------------------------------------------------------

$node->safe_psql('postgres', q{
CREATE ROLE iapi_usage_forwarder LOGIN;
GRANT EXECUTE ON FUNCTION iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[]) TO iapi_usage_forwarder;
});
$node->backup('bkp');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'bkp', has_streaming => 1);
my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' user=iapi_usage_forwarder';
$standby->append_conf('postgresql.conf',
	"iapi_tokens.usage_primary_conninfo = '$conninfo'");
$standby->start;

my ($sb_id, $sb) = new_token($node, 'per_server', 3, '60 seconds');
$node->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't',
	'the standby is in recovery');

is(verify_times($node, $sb, 4), "1\n1\n1\n0", 'primary: 3 of 4 verifications admitted');
my $check = check_token($node, $sb);
is($check->{status}, 'rate_limited', 'primary: check_token after them: rate_limited');
ok($check->{retry_after} >= 1 && $check->{retry_after} <= 60,
	'primary: retry_after is 1 to 60 s');

my $sb_before = rate_stats($standby);
is(verify_times($standby, $sb, 4), "1\n1\n1\n0",
	'standby: its own 3 of 4 admitted, whatever the primary admitted');
$check = check_token($standby, $sb);
is($check->{status}, 'rate_limited', 'standby: check_token after them: rate_limited');
is($check->{remaining}, 0, 'standby: remaining 0');
ok($check->{retry_after} >= 1 && $check->{retry_after} <= 60,
	'standby: retry_after is 1 to 60 s');
my $sb_after = rate_stats($standby);
is($sb_after->{requests_admitted} - $sb_before->{requests_admitted}, 3,
	'standby: rate_limit_stats counts 3 admitted');
is($sb_after->{requests_refused} - $sb_before->{requests_refused}, 2,
	'standby: and 2 refused');
is($sb_after->{tokens_in_window}, 1, 'standby: one token in a window');
is(check_token($node, $sb)->{status}, 'rate_limited',
	'primary: still refused after the standby\'s requests');

# 3 admitted on each server; no refusal is a use.
is_use_count($node, $sb_id, 6, 'per server: the admissions of both', $standby);
$standby->stop;

# ---------------------------------------------------------------------------
# A restart starts every window afresh.
# ---------------------------------------------------------------------------

is(check_token($node, $sb)->{status}, 'rate_limited', 'before the restart: refused');
$node->restart;
$stats = rate_stats($node);
is($stats->{tokens_tracked}, 0, 'after the restart: no token tracked');
is($stats->{requests_admitted} + $stats->{requests_refused}, 0,
	'after the restart: nothing counted');
$check = check_token($node, $sb);
is($check->{status}, 'valid', 'after the restart: the exhausted token is admitted again');
is($check->{remaining}, 2, 'after the restart: a new window, 2 left');
is($check->{reset_after}, 60, 'after the restart: ending in 60 s');

$api = PostgrestReplay->new(
	host => $node->host,
	port => $node->port,
	dbname => 'postgres',
	user => 'iapi_authenticator');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $lim });
is($res->{status}, 200, 'after the restart: the key that had a 429 gets 200');
like($res->{headers}{ratelimit}, qr/^"token";r=1;t=30$/,
	'after the restart: RateLimit r=1, t=30');
$api->dbh->disconnect;
$node->stop;

# ---------------------------------------------------------------------------
# iapi_tokens.rate_limit_max_tokens: full, fail closed; revocation and
# eviction free slots.
# ---------------------------------------------------------------------------

my $small = PostgreSQL::Test::Cluster->new('slots');
$small->init;
$small->append_conf('postgresql.conf', $preload . "iapi_tokens.rate_limit_max_tokens = 64\n");
$small->start;
$small->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens');
is(rate_stats($small)->{max_tokens}, 64, 'slots: max_tokens is 64');

# 65 tokens limited for an hour, and one unlimited.
$small->safe_psql(
	'postgres', q{
CREATE TABLE hour AS
SELECT n, g.id, g.access_token
  FROM generate_series(1, 65) n,
	   LATERAL iapi_tokens.generate_token(iapi_tokens.create_source('h' || n), NULL, NULL, NULL, NULL,
										 1000, '1 hour') g;
});
my ($free_id, $free) = new_token($small, 'unlimited');
is($small->safe_psql('postgres',
		'SELECT count(*) FROM hour h, LATERAL iapi_tokens.verify_token(h.access_token) v WHERE h.n <= 64'),
	'64', 'slots: 64 tokens limited for an hour are admitted');
$stats = rate_stats($small);
is($stats->{tokens_tracked}, 64, 'slots: 64 tracked');
is($stats->{tokens_in_window}, 64, 'slots: all 64 in a window');

my $t65 = $small->safe_psql('postgres', 'SELECT access_token FROM hour WHERE n = 65');
my $id65 = $small->safe_psql('postgres', 'SELECT id FROM hour WHERE n = 65');
$check = check_token($small, $t65);
is($check->{status}, 'rate_limited', 'slots full: the 65th is refused');
is($check->{token_id}, $id65, 'slots full: check_token names the token');
is($check->{remaining}, 0, 'slots full: remaining 0');
is($check->{retry_after}, 1, 'slots full: retry_after 1');
is($check->{reset_after}, 1, 'slots full: reset_after 1');
$stats = rate_stats($small);
is($stats->{overflows}, 1, 'slots full: one overflow');
is($stats->{evictions}, 0, 'slots full: nothing evicted, every window is live');
is($stats->{requests_refused}, 1, 'slots full: the overflow is a refusal');
is($stats->{requests_admitted}, 64, 'slots full: 64 admitted');
is($stats->{tokens_tracked}, 64, 'slots full: still 64 tracked');
is($small->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.verify_token('$t65')"),
	'0', 'slots full: verify_token of the 65th returns no row');
is($small->safe_psql('postgres',
		'SELECT count(*) FROM hour h, LATERAL iapi_tokens.verify_token(h.access_token) v WHERE h.n = 1'),
	'1', 'slots full: a tracked token is still admitted');
is($small->safe_psql('postgres', "SELECT count(*) FROM iapi_tokens.verify_token('$free')"),
	'1', 'slots full: an unlimited token takes no slot');
is(rate_stats($small)->{overflows}, 2, 'slots full: two overflows');
like(slurp_file($small->logfile),
	qr/every one of the 64 rate limit slots is in a live window/,
	'slots full: the server log says so');

# A revocation that rolls back keeps the counts; a committed one frees the
# slot.
my ($s1, $id1) = split /\|/, $small->safe_psql('postgres',
	'SELECT t.source_id, t.id FROM hour h JOIN iapi_tokens.tokens t ON t.id = h.id WHERE h.n = 1');
$small->safe_psql('postgres',
	"BEGIN; SELECT iapi_tokens.revoke_token($s1, $id1); ROLLBACK;");
is(rate_stats($small)->{tokens_tracked}, 64, 'a rolled-back revocation keeps the slot');
is(check_token($small, $t65)->{status}, 'rate_limited', 'so the 65th is still refused');
$small->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s1, $id1)");
is(rate_stats($small)->{tokens_tracked}, 63, 'a committed revocation frees the slot');
$check = check_token($small, $t65);
is($check->{status}, 'valid', 'the 65th is admitted in the freed slot');
is($check->{remaining}, 999, 'the 65th: its window has 999 left');
is(rate_stats($small)->{tokens_tracked}, 64, 'the 65th is tracked');

# Fresh slots, then 64 tokens with a window of a second: once their windows
# have ended, a new token evicts them.
$small->restart;
$small->safe_psql(
	'postgres', q{
CREATE TABLE second AS
SELECT n, g.id, g.access_token
  FROM generate_series(1, 65) n,
	   LATERAL iapi_tokens.generate_token(iapi_tokens.create_source('s' || n), NULL, NULL, NULL, NULL,
										 1, '1 second') g;
});
is($small->safe_psql('postgres',
		'SELECT count(*) FROM second s, LATERAL iapi_tokens.verify_token(s.access_token) v WHERE s.n <= 64'),
	'64', 'eviction: 64 tokens limited for a second are admitted');
is(rate_stats($small)->{tokens_tracked}, 64, 'eviction: all 64 slots taken');
ok( $small->poll_query_until(
		'postgres', 'SELECT tokens_in_window = 0 FROM iapi_tokens.rate_limit_stats()'),
	'eviction: their windows end');
$t65 = $small->safe_psql('postgres', 'SELECT access_token FROM second WHERE n = 65');
$check = check_token($small, $t65);
is($check->{status}, 'valid', 'eviction: the 65th gets a slot');
$stats = rate_stats($small);
is($stats->{evictions}, 64, 'eviction: the 64 ended windows were evicted');
is($stats->{overflows}, 0, 'eviction: no overflow');
is($stats->{tokens_tracked}, 1, 'eviction: one token tracked');
is($small->safe_psql('postgres',
		'SELECT count(*) FROM second s, LATERAL iapi_tokens.verify_token(s.access_token) v WHERE s.n <= 63'),
	'63', 'eviction: 63 of the evicted tokens get slots again');
$stats = rate_stats($small);
is($stats->{tokens_tracked}, 64, 'eviction: 64 tracked again');
is($stats->{overflows}, 0, 'eviction: still no overflow');

$small->stop;

done_testing();
