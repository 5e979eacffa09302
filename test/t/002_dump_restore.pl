# Copyright: iapi_tokens authors.
#
# pg_dump keeps the tokens: the tables and sequences are extension
# configuration (pg_extension_config_dump), so a dump and restore must carry
# every source and token hash, the sequence values and the cap.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->start;

my $tempdir = PostgreSQL::Test::Utils::tempdir;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src',      'CREATE EXTENSION iapi_tokens');

sub generate
{
	my ($db, $source, $args) = @_;
	$args = defined $args ? ", $args" : '';
	my ($id, $token) = split /\|/,
	  $node->safe_psql($db,
		"SELECT id, access_token FROM iapi_tokens.generate_token($source$args)");
	like($token, $token_re, "$db: generate_token($source$args) returns a token");
	return ($id, $token);
}

# Source 1: one revoked token, then two active ones (at the cap).
my $s1 = $node->safe_psql('src', q{SELECT iapi_tokens.create_source('full_src', 'Full source')});
my ($revoked_id, $revoked) = generate('src', $s1, q{'to be revoked'});
$node->safe_psql('src', "SELECT iapi_tokens.revoke_token($s1, $revoked_id)");
my ($a1_id, $a1) = generate('src', $s1, q{'active one'});
my ($a2_id, $a2) = generate('src', $s1, q{'active two'});

# Source 2: a token that expires in a day, and one that has already expired.
my $s2 = $node->safe_psql('src', q{SELECT iapi_tokens.create_source('expiring_src')});
my ($exp_id, $expiring) = generate('src', $s2, q{'expires tomorrow', '1 day'});
my ($gone_id, $gone) = generate('src', $s2, q{'expires at once', '1 second'});

# Source 3: deleted, which revokes its token.
my $s3 = $node->safe_psql('src', q{SELECT iapi_tokens.create_source('deleted_src')});
my ($del_id, $deleted) = generate('src', $s3);
$node->safe_psql('src', "SELECT iapi_tokens.delete_source($s3)");

# A recorded use, so that last_used_at has a value to carry over.
$node->safe_psql('src',
	"SET iapi_tokens.last_used_interval = 0; SELECT FROM iapi_tokens.verify_token('$a1')");

# Wait until the short-lived token has expired.
$node->poll_query_until('src',
	"SELECT expires_at < clock_timestamp() FROM iapi_tokens.tokens WHERE id = $gone_id")
  or die "the one-second token never expired";

is($node->safe_psql('src', "SELECT count(*) FROM iapi_tokens.verify_token('$gone')"),
	'0', 'src: the expired token does not verify');
is($node->safe_psql('src', "SELECT count(*) FROM iapi_tokens.verify_token('$revoked')"),
	'0', 'src: the revoked token does not verify');
is($node->safe_psql('src', "SELECT count(*) FROM iapi_tokens.verify_token('$deleted')"),
	'0', 'src: the deleted source\'s token does not verify');

my @all_ids = ($revoked_id, $a1_id, $a2_id, $exp_id, $gone_id, $del_id);
my ($max_token_id) = sort { $b <=> $a } @all_ids;
my ($max_source_id) = sort { $b <=> $a } ($s1, $s2, $s3);

# Snapshots of both tables, every column but the cap's internal counter,
# which the restore's own inserts bump.
my $sources_sql = q{
	SELECT id, name, display_name, stitch_client_id, properties, schedule,
		   created_at, updated_at, deleted_at, paused_at, system_paused_at
	  FROM iapi_tokens.sources ORDER BY id};
my $tokens_sql = q{
	SELECT id, source_id, encode(token_hash, 'hex'), display_prefix,
		   description, created_at, expires_at, last_used_at, revoked_at
	  FROM iapi_tokens.tokens ORDER BY id};
my $sources_before = $node->safe_psql('src', $sources_sql);
my $tokens_before  = $node->safe_psql('src', $tokens_sql);
my $sequences_sql  = q{
	SELECT last_value, is_called FROM iapi_tokens.source_id_seq
	UNION ALL
	SELECT last_value, is_called FROM iapi_tokens.token_id_seq};
my $sequences_before = $node->safe_psql('src', $sequences_sql);

is( $node->safe_psql('src', 'SELECT count(*) FROM iapi_tokens.tokens'),
	scalar(@all_ids), 'src: all tokens are stored');

# ---------------------------------------------------------------------------
# Dump, in custom and plain format.
# ---------------------------------------------------------------------------

my $custom_file = "$tempdir/src.dump";
my $plain_file  = "$tempdir/src.sql";
$node->command_ok(
	[ 'pg_dump', '--format=custom', '--file', $custom_file, '--dbname', $node->connstr('src') ],
	'pg_dump --format=custom');
$node->command_ok(
	[ 'pg_dump', '--format=plain', '--file', $plain_file, '--dbname', $node->connstr('src') ],
	'pg_dump --format=plain');

my $plain = slurp_file($plain_file);
like($plain, qr/CREATE EXTENSION IF NOT EXISTS iapi_tokens/, 'the plain dump creates the extension');
like($plain, qr/COPY iapi_tokens\.tokens /, 'the plain dump has the tokens\' data');
like($plain, qr/COPY iapi_tokens\.sources /, 'the plain dump has the sources\' data');
like($plain, qr/setval\('iapi_tokens\.token_id_seq'/, 'the plain dump sets the token id sequence');
unlike($plain, qr/\Q$a1\E|\Q$a2\E|\Q$expiring\E/, 'the plain dump holds no plaintext token');

# ---------------------------------------------------------------------------
# Restore each dump into a fresh database and check it.
# ---------------------------------------------------------------------------

sub check_restored
{
	my ($db) = @_;

	is($node->safe_psql($db, $sources_sql), $sources_before,
		"$db: sources restored unchanged, updated_at included");
	is($node->safe_psql($db, $tokens_sql), $tokens_before,
		"$db: tokens restored unchanged (hashes, expiry, last use, revocation)");
	is($node->safe_psql($db, $sequences_sql), $sequences_before,
		"$db: sequence values restored");

	# Old plaintexts verify with the same ids.
	is( $node->safe_psql($db,
			"SELECT token_id, source_id FROM iapi_tokens.verify_token('$a1')"),
		"$a1_id|$s1", "$db: the first active token verifies with its old id");
	is( $node->safe_psql($db,
			"SELECT token_id, source_id FROM iapi_tokens.verify_token('$a2')"),
		"$a2_id|$s1", "$db: the second active token verifies with its old id");
	is( $node->safe_psql($db,
			"SELECT token_id, source_id, expires_at = (SELECT expires_at FROM iapi_tokens.tokens WHERE id = $exp_id) FROM iapi_tokens.verify_token('$expiring')"),
		"$exp_id|$s2|t", "$db: the expiring token verifies with its old id and expiry");
	is($node->safe_psql($db, "SELECT count(*) FROM iapi_tokens.verify_token('$revoked')"),
		'0', "$db: the revoked token does not verify");
	is($node->safe_psql($db, "SELECT count(*) FROM iapi_tokens.verify_token('$gone')"),
		'0', "$db: the expired token does not verify");
	is($node->safe_psql($db, "SELECT count(*) FROM iapi_tokens.verify_token('$deleted')"),
		'0', "$db: the deleted source's token does not verify");

	is( $node->safe_psql($db,
			"SELECT string_agg(token_id::text, ',') FROM iapi_tokens.list_tokens($s1)"),
		"$a2_id,$a1_id", "$db: list_tokens shows the two active tokens");

	# The cap holds: source 1 already has two active tokens.
	my ($ret, $stdout, $stderr) = $node->psql(
		$db, qq{
		\\set VERBOSITY verbose
		SELECT id FROM iapi_tokens.generate_token($s1);
	});
	is($ret, 3, "$db: a third active token for a full source fails");
	like($stderr, qr/ERROR:  23514: source $s1 already has 2 active tokens, the maximum/,
		"$db: the cap raises check_violation (23514)");
	is($stdout, '', "$db: the refused generate_token returns no token");
	is( $node->safe_psql($db,
			"SELECT count(*) FROM iapi_tokens.tokens WHERE source_id = $s1"),
		'3', "$db: the refused token was not stored");

	# The deleted source accepts no token.
	($ret, $stdout, $stderr) = $node->psql(
		$db, qq{
		\\set VERBOSITY verbose
		SELECT id FROM iapi_tokens.generate_token($s3);
	});
	is($ret, 3, "$db: a deleted source still refuses tokens");
	like($stderr, qr/55000: source $s3 is deleted/, "$db: ... with object_not_in_prerequisite_state");

	# New ids continue after the old ones.
	my ($new_id, $new_token) = generate($db, $s2, q{'after restore'});
	cmp_ok($new_id, '>', $max_token_id,
		"$db: a new token gets an id above every restored one");
	is( $node->safe_psql($db,
			"SELECT token_id, source_id FROM iapi_tokens.verify_token('$new_token')"),
		"$new_id|$s2", "$db: the new token verifies");
	my $new_source = $node->safe_psql($db,
		"SELECT iapi_tokens.create_source('new_after_restore')");
	cmp_ok($new_source, '>', $max_source_id,
		"$db: a new source gets an id above every restored one");

	# A source name of a live restored source is still taken.
	($ret, $stdout, $stderr) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT iapi_tokens.create_source('full_src')");
	like($stderr, qr/23505: source name "full_src" is already in use/,
		"$db: the restored live source name is still unique");

	# Revoking one of the two restored tokens makes room for a new one.
	$node->safe_psql($db, "SELECT iapi_tokens.revoke_token($s1, $a1_id)");
	is($node->safe_psql($db, "SELECT count(*) FROM iapi_tokens.verify_token('$a1')"),
		'0', "$db: a restored token can be revoked");
	generate($db, $s1, q{'replacement'});
	return;
}

$node->safe_psql('postgres', 'CREATE DATABASE restored_custom');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '--dbname', $node->connstr('restored_custom'), $custom_file ],
	'pg_restore of the custom dump');
check_restored('restored_custom');

$node->safe_psql('postgres', 'CREATE DATABASE restored_plain');
$node->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '--dbname', $node->connstr('restored_plain'), '-f', $plain_file ],
	'psql restore of the plain dump');
check_restored('restored_plain');

# The source database was not touched by any of this.
is($node->safe_psql('src', $tokens_sql), $tokens_before, 'src: tokens unchanged');

$node->stop;

done_testing();
