# Copyright: iapi_tokens authors.
#
# verify_token on a hot standby and inside read-only transactions, without
# shared_preload_libraries (010 covers the preloaded case, which records
# such uses): it must answer correctly, raise no error, and write nothing
# (last_used_at stays NULL), whatever iapi_tokens.last_used_interval says.
# Each session's first verification warns that the library is not preloaded.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;

# ---------------------------------------------------------------------------
# A primary and a streaming hot standby.
# ---------------------------------------------------------------------------

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->start;

$primary->backup('bkp');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bkp', has_streaming => 1);
$standby->start;

# Everything below is created after the base backup, so the standby only
# gets it through WAL.
$primary->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens');
$primary->safe_psql('postgres', 'CREATE ROLE app LOGIN');

my $source_id = $primary->safe_psql('postgres',
	q{SELECT iapi_tokens.create_source('standby_src')});
like($source_id, qr/^\d+$/, 'create_source returns an id');

my ($token_id, $token) = split /\|/,
  $primary->safe_psql('postgres',
	"SELECT id, access_token FROM iapi_tokens.generate_token($source_id, 'standby test')"
  );
like($token_id, qr/^\d+$/, 'generate_token returns an id');
like($token, $token_re, 'generate_token returns a well-formed token');

# A well-formed token with a valid checksum that is not stored anywhere: its
# insert was rolled back.  Uses its own source so that the cap is not in play.
my $other_source = $primary->safe_psql('postgres',
	q{SELECT iapi_tokens.create_source('rolled_back_src')});
my $unknown_token = $primary->safe_psql(
	'postgres', qq{
	BEGIN;
	SELECT access_token FROM iapi_tokens.generate_token($other_source);
	ROLLBACK;
});
like($unknown_token, $token_re, 'rolled-back generate_token returned a token');
isnt($unknown_token, $token, 'the rolled-back token differs from the stored one');

$primary->wait_for_catchup($standby);

is( $standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');

# Runs SQL on a node and returns (exit code, stdout, stderr).
sub run_sql
{
	my ($node, $sql, %params) = @_;
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql(
		'postgres', $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		%params);
	return ($ret, $stdout, $stderr);
}

# Runs SQL on a node and checks that it succeeds, prints nothing on stderr
# (no error, warning or notice) and prints what is expected.
sub answers_cleanly
{
	my ($node, $sql, $expected, $what, $meaning, %params) = @_;
	my ($ret, $out, $err) = run_sql($node, $sql, %params);
	is($ret, 0,  "$what succeeds");
	$err =~ s/(?:psql:\S+:\d+: )?WARNING:  iapi_tokens is not in shared_preload_libraries(?:\n(?:psql:\S+:\d+: )?(?:DETAIL|HINT):  [^\n]*)*\n?//;
	is($err, '', "$what raises nothing");
	is($out, $expected, $meaning);
	return;
}

sub last_used_is_null
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT last_used_at IS NULL FROM iapi_tokens.tokens WHERE id = $token_id"
	);
}

# ---------------------------------------------------------------------------
# On the standby.
# ---------------------------------------------------------------------------

answers_cleanly(
	$standby, qq{
	SET iapi_tokens.last_used_interval = 0;
	SELECT token_id, source_id, last_used_at IS NULL
	  FROM iapi_tokens.verify_token('$token');
}, "$token_id|$source_id|t",
	'standby: verify_token with last_used_interval = 0',
	'standby: verify_token returns exactly one row, the right token and source');

# Twice in one session, and with the default interval as well: the first
# call may have cached state (plans, the hash) that the second one reuses.
answers_cleanly(
	$standby, qq{
	SET iapi_tokens.last_used_interval = 0;
	SELECT count(*) FROM iapi_tokens.verify_token('$token');
	SELECT count(*) FROM iapi_tokens.verify_token('$token');
	RESET iapi_tokens.last_used_interval;
	SELECT count(*) FROM iapi_tokens.verify_token('$token');
}, "1\n1\n1",
	'standby: repeated verify_token in one session',
	'standby: repeated verify_token finds the token each time');

# An ordinary role, which can neither set the interval nor write the table.
answers_cleanly(
	$standby, "SELECT token_id FROM iapi_tokens.verify_token('$token')",
	$token_id,
	'standby: verify_token as a non-superuser',
	'standby: verify_token as a non-superuser finds the token',
	connstr => $standby->connstr('postgres') . ' user=app');

is(last_used_is_null($standby),
	't', 'standby: last_used_at is still NULL after verification');

# Bad tokens on the standby: no row, no error.
my $bad_checksum = $token;
substr($bad_checksum, -1, 1) = substr($token, -1, 1) eq 'A' ? 'B' : 'A';
my $bad_body = $token;
substr($bad_body, 10, 1) = substr($token, 10, 1) eq 'A' ? 'B' : 'A';
my %bad = (
	'unknown well-formed token' => $unknown_token,
	'bad checksum'              => $bad_checksum,
	'altered body'              => $bad_body,
	'truncated'                 => substr($token, 0, -1),
	'too long'                  => $token . 'A',
	'prefix only'               => 'iapi_',
	'empty string'              => '',
	'garbage'                   => 'not a token at all',
	'wrong prefix'              => 'xyz_' . substr($token, 5),
	'lower-cased'               => lc($token));
foreach my $case (sort keys %bad)
{
	answers_cleanly(
		$standby, qq{
		SET iapi_tokens.last_used_interval = 0;
		SELECT count(*) FROM iapi_tokens.verify_token('$bad{$case}');
	}, '0',
		"standby: verify_token($case)",
		"standby: verify_token($case) returns no row");
}

# ---------------------------------------------------------------------------
# On the primary: read-only transactions write nothing, and raise nothing.
# ---------------------------------------------------------------------------

is(last_used_is_null($primary), 't',
	'primary: last_used_at is NULL after the standby verifications');

answers_cleanly(
	$primary, qq{
	SET iapi_tokens.last_used_interval = 0;
	BEGIN READ ONLY;
	SELECT token_id FROM iapi_tokens.verify_token('$token');
	SELECT 'still in the transaction';
	COMMIT;
}, "$token_id\nstill in the transaction",
	'primary: verify_token inside BEGIN READ ONLY',
	'primary: verify_token inside BEGIN READ ONLY finds the token and leaves the transaction usable');
is(last_used_is_null($primary),
	't', 'primary: a read-only transaction did not record last_used_at');

answers_cleanly(
	$primary, qq{
	SET iapi_tokens.last_used_interval = 0;
	SET default_transaction_read_only = on;
	SELECT token_id FROM iapi_tokens.verify_token('$token');
}, $token_id,
	'primary: verify_token with default_transaction_read_only',
	'primary: verify_token with default_transaction_read_only finds the token');
is(last_used_is_null($primary), 't',
	'primary: default_transaction_read_only did not record last_used_at');

# -1 means never, even in a read-write transaction.
answers_cleanly(
	$primary, qq{
	SET iapi_tokens.last_used_interval = -1;
	SELECT token_id FROM iapi_tokens.verify_token('$token');
}, $token_id,
	'primary: verify_token with last_used_interval = -1',
	'primary: verify_token with last_used_interval = -1 finds the token');
is(last_used_is_null($primary), 't',
	'primary: last_used_interval = -1 did not record last_used_at');

# A read-write verification with interval 0 records the use.
answers_cleanly(
	$primary, qq{
	SET iapi_tokens.last_used_interval = 0;
	SELECT token_id FROM iapi_tokens.verify_token('$token');
}, $token_id,
	'primary: read-write verify_token',
	'primary: read-write verify_token finds the token');
is($primary->safe_psql('postgres',
		"SELECT last_used_at IS NOT NULL AND last_used_at <= clock_timestamp() FROM iapi_tokens.tokens WHERE id = $token_id"),
	't', 'primary: read-write verification with interval 0 recorded last_used_at');

# The recorded use replicates; the standby still verifies without error.
$primary->wait_for_catchup($standby);
is( $standby->safe_psql('postgres',
		"SELECT last_used_at IS NOT NULL FROM iapi_tokens.tokens WHERE id = $token_id"),
	't', 'standby: the recorded last_used_at replicated');
answers_cleanly(
	$standby, qq{
	SET iapi_tokens.last_used_interval = 0;
	SELECT token_id, last_used_at IS NOT NULL FROM iapi_tokens.verify_token('$token');
}, "$token_id|t",
	'standby: verify_token of a used token',
	'standby: verify_token reports the replicated last_used_at');

# ---------------------------------------------------------------------------
# Revocation replicates: the standby stops verifying the token.
# ---------------------------------------------------------------------------

$primary->safe_psql('postgres',
	"SELECT iapi_tokens.revoke_token($source_id, $token_id)");
is( $primary->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.verify_token('$token')"),
	'0', 'primary: a revoked token no longer verifies');
$primary->wait_for_catchup($standby);

answers_cleanly(
	$standby, qq{
	SET iapi_tokens.last_used_interval = 0;
	SELECT count(*) FROM iapi_tokens.verify_token('$token');
}, '0',
	'standby: verify_token of a revoked token',
	'standby: a token revoked on the primary no longer verifies');

$standby->stop;
$primary->stop;

done_testing();
