# Copyright: iapi_tokens authors.
#
# pg_dump keeps the tokens: the tables and sequences are extension
# configuration (pg_extension_config_dump), so a dump and restore must carry
# every source and token hash, the sequence values and the cap.
#
# 1.1 adds personal tokens, rotation, token_owners and the audit trail: the
# round trip must keep personal tokens (with their owner and public id), a
# source token rotated with a grace period (both tokens valid), the audit
# rows exactly, without the restore's COPY recording any event, the audit
# sequence, and the per-owner limit.  token_owners is not dumped: its rows
# are lock anchors, which the owner's next token re-creates, so a restore
# cannot collide with them whatever its order.
#
# Last, the privileges users set on functions an update re-created survive
# a dump of a database updated to 1.6 (pg_init_privs).

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

# 1.1, source 4: a token rotated with a one-hour grace period, so that the
# old token (replaced_by set, expiring within the hour) and its replacement
# are both valid.
my $s4 = $node->safe_psql('src', q{SELECT iapi_tokens.create_source('rotated_src')});
my ($rot_old_id, $rot_old) = generate('src', $s4, q{'to be rotated'});
my ($rot_new_id, $rot_new) = split /\|/,
  $node->safe_psql('src',
	"SELECT id, access_token FROM iapi_tokens.rotate_token($s4, $rot_old_id, '1 hour')");
like($rot_new, $token_re, 'src: rotate_token returns a token');

# 1.1: personal tokens.  regress_owner keeps an active one; regress_owner2's
# only token is deleted by the admin, so no token_owners row is re-created for
# it by the restore (it gets one at its next token).  Roles belong to the
# cluster, so the restored databases below see the same ones.
$node->safe_psql('postgres', 'CREATE ROLE regress_owner; CREATE ROLE regress_owner2');
$node->safe_psql('src',
	'GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_owner, regress_owner2'
);

# Creates a personal token as $role; returns its row id, public id and value.
sub create_personal
{
	my ($db, $role, $description) = @_;
	my ($token, $uuid) = split /\|/,
	  $node->safe_psql($db,
		"SET ROLE $role; SELECT token_value, token_id FROM iapi_tokens.create_access_token(3600, '$description')"
	  );
	like($token, $token_re, "$db: create_access_token as $role returns a token");
	my $id = $node->safe_psql($db,
		"SELECT id FROM iapi_tokens.tokens WHERE token_uuid = '$uuid'");
	return ($id, $uuid, $token);
}

my ($p_id, $p_uuid, $personal) = create_personal('src', 'regress_owner', 'x');
my ($p2_id, $p2_uuid, $personal2) = create_personal('src', 'regress_owner2', 'deleted');
$node->safe_psql('src', "SELECT iapi_tokens.revoke_access_token('$p2_uuid')");

is( $node->safe_psql('src',
		"SELECT token_id, owner, access_token_id, source_id IS NULL FROM iapi_tokens.verify_token('$personal')"
	),
	"$p_id|regress_owner|$p_uuid|t",
	'src: the personal token verifies with its owner and public id');
is( $node->safe_psql('src',
		"SELECT v.token_id, v.source_id, t.replaced_by FROM iapi_tokens.verify_token('$rot_old') v JOIN iapi_tokens.tokens t ON t.id = v.token_id"
	),
	"$rot_old_id|$s4|$rot_new_id",
	'src: the rotated token still verifies during its grace period, replaced_by set');

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

my @all_ids = ($revoked_id, $a1_id, $a2_id, $exp_id, $gone_id, $del_id,
	$rot_old_id, $rot_new_id, $p_id, $p2_id);
my ($max_token_id) = sort { $b <=> $a } @all_ids;
my ($max_source_id) = sort { $b <=> $a } ($s1, $s2, $s3, $s4);

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

# 1.1 columns, token_owners (without its internal counter, which the
# restore's COPY into tokens bumps for each active personal token), and the
# audit trail: its (id, action, token_id) set, every column, and its sequence.
my $tokens_11_sql = q{
	SELECT id, owner_role::text, token_uuid, replaced_by
	  FROM iapi_tokens.tokens ORDER BY id};
my $owners_sql = q{
	SELECT string_agg(owner_role::text, ',' ORDER BY owner_role::text)
	  FROM iapi_tokens.token_owners};
my $audit_key_sql = q{
	SELECT id, action, token_id FROM iapi_tokens.audit ORDER BY id};
my $audit_rows_sql = q{
	SELECT id, occurred_at, action, token_id, access_token_id, source_id,
		   owner_role, acting_role, session_role, details
	  FROM iapi_tokens.audit ORDER BY id};
my $audit_count_sql = q{
	SELECT count(*), count(*) FILTER (WHERE action = 'create')
	  FROM iapi_tokens.audit};
my $audit_seq_sql = q{
	SELECT last_value, is_called FROM iapi_tokens.audit_id_seq};
my $tokens_11_before = $node->safe_psql('src', $tokens_11_sql);
my $audit_keys_before = $node->safe_psql('src', $audit_key_sql);
my $audit_rows_before = $node->safe_psql('src', $audit_rows_sql);
my $audit_count_before = $node->safe_psql('src', $audit_count_sql);
my $audit_seq_before = $node->safe_psql('src', $audit_seq_sql);
my $max_audit_id = $node->safe_psql('src', 'SELECT max(id) FROM iapi_tokens.audit');

is($node->safe_psql('src', $owners_sql),
	'regress_owner,regress_owner2', 'src: both owners have a token_owners row');
# Every token here was minted once: one "create" each, and the trail holds
# every kind of event this test makes.
is($audit_count_before, join('|', scalar(@all_ids) + 4, scalar(@all_ids)),
	'src: one audit "create" per token, plus the four other events');
is( $node->safe_psql('src',
		q{SELECT string_agg(action || ':' || token_id, ',' ORDER BY id) FROM iapi_tokens.audit WHERE action <> 'create'}
	),
	"revoke:$revoked_id,revoke:$del_id,rotate:$rot_old_id,delete:$p2_id",
	'src: the audit trail has the revocations, the rotation and the deletion');

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
like($plain, qr/COPY iapi_tokens\.audit /, 'the plain dump has the audit trail');
unlike($plain, qr/COPY iapi_tokens\.token_owners /, 'the plain dump leaves out the token_owners lock anchors');
like($plain, qr/setval\('iapi_tokens\.audit_id_seq'/, 'the plain dump sets the audit id sequence');
unlike($plain, qr/\Q$personal\E|\Q$rot_old\E|\Q$rot_new\E/,
	'the plain dump holds no plaintext personal or rotated token');

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

	# 1.1: checked before anything below writes to the restored database.
	is($node->safe_psql($db, $tokens_11_sql), $tokens_11_before,
		"$db: owners, public ids and replaced_by restored unchanged");
	is($node->safe_psql($db, $audit_count_sql), $audit_count_before,
		"$db: as many audit rows, and \"create\" rows, as in the source: the restore recorded no event");
	is($node->safe_psql($db, $audit_key_sql), $audit_keys_before,
		"$db: the audit (id, action, token_id) rows restored exactly");
	is($node->safe_psql($db, $audit_rows_sql), $audit_rows_before,
		"$db: the audit rows restored unchanged, every column");
	is($node->safe_psql($db, $audit_seq_sql), $audit_seq_before,
		"$db: audit sequence value restored");
	# The restore's COPY takes rows as they are (1.3), so it makes no lock
	# anchor; the owner's next token creates it (checked below).
	is($node->safe_psql($db, $owners_sql), '',
		"$db: the restore leaves token_owners empty: its rows are only lock anchors");
	is( $node->safe_psql($db,
			q{SELECT has_function_privilege('regress_owner', 'iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)', 'EXECUTE')}
		),
		't', "$db: the owner's EXECUTE grant on create_access_token restored");

	# The personal token verifies with its owner and public id; the deleted
	# one does not.
	is( $node->safe_psql($db,
			"SELECT token_id, owner, access_token_id, source_id IS NULL FROM iapi_tokens.verify_token('$personal')"
		),
		"$p_id|regress_owner|$p_uuid|t",
		"$db: the personal token verifies with its owner and access_token_id");
	is($node->safe_psql($db, "SELECT count(*) FROM iapi_tokens.verify_token('$personal2')"),
		'0', "$db: the deleted personal token does not verify");

	# Both tokens of the rotation verify; the old one is still marked
	# replaced and ends within the grace period.
	is( $node->safe_psql($db,
			"SELECT v.token_id, v.source_id, t.replaced_by,
					v.expires_at <= n.created_at + interval '1 hour'
			   FROM iapi_tokens.verify_token('$rot_old') v
			   JOIN iapi_tokens.tokens t ON t.id = v.token_id
			   JOIN iapi_tokens.tokens n ON n.id = t.replaced_by"
		),
		"$rot_old_id|$s4|$rot_new_id|t",
		"$db: the rotated token still verifies in its grace period, replaced_by set");
	is( $node->safe_psql($db,
			"SELECT token_id, source_id FROM iapi_tokens.verify_token('$rot_new')"),
		"$rot_new_id|$s4", "$db: the replacement token verifies");

	# The first event in the restored database: its audit row gets an id
	# above every restored one (and the only new row is this one).
	my ($revoke_ret) = $node->psql($db,
		"SELECT iapi_tokens.revoke_token($s4, $rot_new_id)");
	is($revoke_ret, 0, "$db: revoking a restored token succeeds (its audit insert included)");
	is( $node->safe_psql($db,
			"SELECT string_agg(action || ':' || token_id, ',' ORDER BY id) FROM iapi_tokens.audit WHERE id > $max_audit_id"
		),
		"revoke:$rot_new_id",
		"$db: the new audit row gets an id above every restored one");
	is( $node->safe_psql($db, 'SELECT count(*) FROM iapi_tokens.audit'),
		(split /\|/, $audit_count_before)[0] + 1,
		"$db: and it is the only row added");

	# The per-owner limit counts the restored personal token: with a limit
	# of 2, regress_owner can create exactly one more.
	my ($limit_ret, $limit_out, $limit_err) = $node->psql(
		$db, qq{
		\\set VERBOSITY verbose
		SET iapi_tokens.max_tokens_per_owner = 2;
		SET ROLE regress_owner;
		SELECT 'created' FROM iapi_tokens.create_access_token(3600, 'limit 1');
		SELECT 'created' FROM iapi_tokens.create_access_token(3600, 'limit 2');
		SELECT 'created' FROM iapi_tokens.create_access_token(3600, 'limit 3');
	});
	is($limit_out, 'created',
		"$db: with max_tokens_per_owner = 2 the owner of a restored token creates exactly one more");
	is($limit_ret, 3, "$db: the next create_access_token fails");
	like($limit_err,
		qr/ERROR:  23514: role regress_owner already has 2 active personal tokens, the maximum/,
		"$db: the per-owner limit raises check_violation (23514)");
	is($node->safe_psql($db, $owners_sql), 'regress_owner',
		"$db: the owner's next token re-created its lock anchor in token_owners");
	is( $node->safe_psql($db,
			q{SELECT count(*) FROM iapi_tokens.tokens WHERE owner_role = 'regress_owner'::regrole AND revoked_at IS NULL}
		),
		'2', "$db: the refused personal token was not stored");

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
is($node->safe_psql('src', $audit_rows_sql), $audit_rows_before, 'src: audit unchanged');

# 1.6: privileges users set on functions that an update re-created.  Here
# 1.5, with verify_token revoked from PUBLIC and granted to one role and
# generate_token granted to one, is updated to 1.6 and dumped: the restore
# into a fresh installation must carry both, as pg_dump writes the grants
# that differ from the extension's own record of its grants.
$node->safe_psql('postgres', q{
	CREATE ROLE regress_verifier NOLOGIN;
	CREATE ROLE regress_minter NOLOGIN;
	CREATE DATABASE updated});
$node->safe_psql('updated', q{
	SET client_min_messages = warning;
	CREATE EXTENSION iapi_tokens VERSION '1.5';
	REVOKE EXECUTE ON FUNCTION iapi_tokens.verify_token(text) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO regress_verifier;
	GRANT EXECUTE ON FUNCTION iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval)
		TO regress_minter;
	ALTER EXTENSION iapi_tokens UPDATE TO '1.6'});
my $privileges_sql = q{
	SELECT string_agg(format('%s %s %s', r.rolname, f.f,
							 has_function_privilege(r.oid, f.f, 'EXECUTE')), ', ' ORDER BY r.rolname, f.f)
	  FROM pg_roles r,
		   (VALUES ('iapi_tokens.verify_token(text)'),
				   ('iapi_tokens.check_token(text, boolean)'),
				   ('iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval)')) f(f)
	 WHERE r.rolname IN ('regress_verifier', 'regress_minter')};
my $privileges = $node->safe_psql('updated', $privileges_sql);
is( $privileges,
	join(', ',
		'regress_minter iapi_tokens.check_token(text, boolean) t',
		'regress_minter iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval) t',
		'regress_minter iapi_tokens.verify_token(text) f',
		'regress_verifier iapi_tokens.check_token(text, boolean) t',
		'regress_verifier iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval) f',
		'regress_verifier iapi_tokens.verify_token(text) t'),
	'updated: the update to 1.6 kept the revocation from PUBLIC and both grants');
my $updated_file = "$tempdir/updated.dump";
$node->command_ok([ 'pg_dump', '--format=custom', '--file', $updated_file, $node->connstr('updated') ],
	'pg_dump of the database updated to 1.6');
$node->safe_psql('postgres', 'CREATE DATABASE updated_restored');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '--dbname', $node->connstr('updated_restored'), $updated_file ],
	'pg_restore of it into a fresh installation of 1.6');
is($node->safe_psql('updated_restored', $privileges_sql),
	$privileges, 'updated_restored: the same privileges as the database it was dumped from');

$node->stop;

done_testing();
