# Copyright: iapi_tokens authors.
#
# pg_upgrade from an older major (IAPI_OLD_PG_INSTALL: test/run gives it
# PostgreSQL's own 15, tools/pg-toolchain 15-npm) to the major under test,
# in --copy and in --link
# mode, with iapi_tokens installed and in use: every token keeps verifying,
# the data is unchanged, the caps hold, and the upgraded catalog equals a
# fresh installation's at the same version (sql/upgrade.sql's fingerprint).
#
# test/run installs the extension into the old major first.  Debian 12's own
# 15.20 cannot be the old side: it stores an option (pg_attver) in every
# column's attoptions that no newer server accepts, so pg_upgrade from it
# fails for any table, with or without this extension.  Run on the old
# major itself, or without one, the test has nothing to upgrade from and
# says so.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);

my $old_install = $ENV{IAPI_OLD_PG_INSTALL} // '';
my $new_version = PostgreSQL::Test::Cluster->new('probe')->pg_version;
plan skip_all => 'no older major to upgrade from (IAPI_OLD_PG_INSTALL)'
  unless $old_install ne '' && -x "$old_install/bin/pg_ctl";
my ($old_major) = `$old_install/bin/pg_ctl --version` =~ /(\d+)/;
plan skip_all => "PostgreSQL $new_version is not newer than $old_major"
  unless $new_version->major > $old_major;

# The catalog fingerprint, taken from the regression test that compares
# updated and fresh installations, so that both checks use one definition.
my $upgrade_sql = slurp_file(dirname(__FILE__) . '/../../sql/upgrade.sql');
my ($fingerprint_fn) =
  $upgrade_sql =~ /(CREATE FUNCTION public\.iapi_acl.*?CREATE FUNCTION public\.iapi_fingerprint\(\).*?\n\$\$;\n)/s
  or die 'no fingerprint function in sql/upgrade.sql';

my $state_sql = q{
	SELECT (SELECT count(*) FROM iapi_tokens.sources),
		   (SELECT count(*) FROM iapi_tokens.tokens),
		   (SELECT count(*) FROM iapi_tokens.audit),
		   (SELECT count(*) FROM iapi_tokens.owner_limits),
		   (SELECT last_value FROM iapi_tokens.token_id_seq),
		   (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM iapi_tokens.tokens t),
		   (SELECT md5(string_agg(a::text, ',' ORDER BY a.id)) FROM iapi_tokens.audit a),
		   (SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens')
};

for my $mode ('--copy', '--link')
{
	(my $name = $mode) =~ s/^--//;
	my $old = PostgreSQL::Test::Cluster->new("old_${old_major}_$name",
		install_path => $old_install);
	$old->init;
	$old->start;
	$old->safe_psql('postgres', 'CREATE ROLE regress_owner');
	$old->safe_psql('postgres', 'CREATE DATABASE app');
	$old->safe_psql('app', 'CREATE EXTENSION iapi_tokens');
	$old->safe_psql('app', 'CREATE EXTENSION iapi_tokens_rest');

	# Tokens of both families in every state: active, revoked, rotated in
	# their grace period; a full source; a per-role limit; the audit trail.
	my @valid = split /\n/, $old->safe_psql(
		'app', q{
		GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
			iapi_tokens.rotate_access_token(uuid, interval) TO regress_owner;
		SELECT iapi_tokens.set_owner_limit('regress_owner', 2);
		CREATE TEMP TABLE kept (token text, valid boolean);
		SELECT iapi_tokens.create_source('full') AS full \gset
		INSERT INTO kept SELECT access_token, true FROM iapi_tokens.generate_token(:full);
		INSERT INTO kept SELECT access_token, false FROM iapi_tokens.generate_token(:full) g,
			LATERAL iapi_tokens.revoke_token(:full, g.id);
		INSERT INTO kept SELECT access_token, true FROM iapi_tokens.generate_token(:full);
		SELECT iapi_tokens.create_source('rotated') AS rotated \gset
		SELECT id AS old_id FROM iapi_tokens.generate_token(:rotated) \gset
		INSERT INTO kept SELECT access_token, true FROM iapi_tokens.rotate_token(:rotated, :old_id, '1 day');
		SET ROLE regress_owner;
		CREATE TEMP TABLE p AS SELECT * FROM iapi_tokens.create_access_token(-1, 'kept');
		CREATE TEMP TABLE r AS SELECT * FROM iapi_tokens.rotate_access_token((SELECT token_id FROM p), '1 hour');
		RESET ROLE;
		INSERT INTO kept SELECT token_value, true FROM p UNION ALL SELECT token_value, true FROM r;
		SELECT 'kept ' || token || ' ' || valid FROM kept;
	});
	@valid = map { /^kept (\S+ (?:true|false))$/ ? $1 : () } @valid;
	cmp_ok(scalar @valid, '==', 6, "$mode: six tokens kept from creation");
	my $before = $old->safe_psql('app', $state_sql);
	$old->stop;

	my $new = PostgreSQL::Test::Cluster->new("new_$name");
	# 18 turns data checksums on by default; the old cluster has none.
	$new->init($new_version->major >= 18 ? (extra => ['--no-data-checksums']) : ());

	my $workdir = PostgreSQL::Test::Utils::tempdir;
	chdir $workdir or die "chdir $workdir: $!";
	command_ok(
		[
			'pg_upgrade', '--no-sync', $mode,
			'-d', $old->data_dir, '-D', $new->data_dir,
			'-b', "$old_install/bin", '-B', $new->config_data('--bindir'),
			'-s', $new->host, '-p', $old->port, '-P', $new->port
		],
		"pg_upgrade $mode from $old_major to " . $new_version->major);

	$new->start;
	is($new->safe_psql('app', $state_sql), $before,
		"$mode: sources, tokens, audit rows, owner limits, sequence and version unchanged");

	my $wrong = 0;
	for my $row (@valid)
	{
		my ($token, $valid) = split / /, $row;
		my $n = $new->safe_psql('app', "SELECT count(*) FROM iapi_tokens.verify_token('$token')");
		$wrong++ if $n ne ($valid eq 'true' ? '1' : '0');
	}
	is($wrong, 0, "$mode: every token verifies as before (" . scalar(@valid) . ' of them)');

	is($new->safe_psql('app',
			q{SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens_rest'}),
		$new->safe_psql('postgres',
			q{SELECT default_version FROM pg_available_extensions WHERE name = 'iapi_tokens_rest'}),
		"$mode: the REST layer came along at its version");
	is($new->safe_psql('app', q{SELECT iapi_rest_internal.iso8601_ms('2026-01-02 03:04:05.678+00')}),
		'2026-01-02T03:04:05.678Z', "$mode: and its functions run");

	my ($ret, $out, $err) = $new->psql('app',
		q{SELECT * FROM iapi_tokens.generate_token((SELECT id FROM iapi_tokens.sources WHERE name = 'full'))});
	like($err, qr/already has 2 active tokens/, "$mode: the full source still refuses a third token");
	($ret, $out, $err) = $new->psql('app',
		q{SET ROLE regress_owner; SELECT * FROM iapi_tokens.create_access_token(60)});
	like($err, qr/already has 2 active personal tokens/, "$mode: the per-role limit still holds");
	is($new->safe_psql('app', 'SELECT count(*) FROM iapi_tokens.check_tokens()'),
		'0', "$mode: check_tokens() finds nothing wrong");

	# The user's grants came along; apart from them, the upgraded catalog
	# is a fresh installation's in the new major.
	is($new->safe_psql('app',
			q{SELECT has_function_privilege('regress_owner', 'iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)', 'EXECUTE')}),
		't', "$mode: the grant to regress_owner survived");
	$new->safe_psql('app',
		'REVOKE EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
			iapi_tokens.rotate_access_token(uuid, interval) FROM regress_owner');
	$new->safe_psql('postgres', 'CREATE DATABASE fresh');
	$new->safe_psql('fresh', 'CREATE EXTENSION iapi_tokens');
	for my $db ('app', 'fresh')
	{
		$new->safe_psql($db, $fingerprint_fn);
	}
	my $upgraded = $new->safe_psql('app',
		'SELECT object || $$ = $$ || state FROM public.iapi_fingerprint() ORDER BY 1');
	my $fresh = $new->safe_psql('fresh',
		'SELECT object || $$ = $$ || state FROM public.iapi_fingerprint() ORDER BY 1');
	my %fresh = map { $_ => 1 } split /\n/, $fresh;
	my %upgraded = map { $_ => 1 } split /\n/, $upgraded;
	cmp_ok(scalar(keys %fresh), '>', 100, "$mode: the fingerprint covers the catalog");
	is(join("\n", (map { "upgraded only: $_" } grep { !$fresh{$_} } sort keys %upgraded),
				(map { "fresh only: $_" } grep { !$upgraded{$_} } sort keys %fresh)),
		'', "$mode: the upgraded catalog equals a fresh install's");
	$new->stop;
}

done_testing();
