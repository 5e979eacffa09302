# Copyright: iapi_tokens authors.
#
# Backups keep every token whatever the restore command: pg_restore -j 1, 2,
# 4 and 8, from custom (-Fc) and directory (-Fd) dumps, into fresh
# databases, with no step around the restore.  Parallel workers load the
# extension's tables in any order, so tokens may arrive before their
# sources.  Each restore must report no error and bring back every source,
# token of both families, owner limit, audit row and sequence position;
# sampled plaintexts kept from creation must verify, a revoked token must
# stay refused, the caps must still hold, and the restore itself must record
# no audit event.
#
# Then a data-only dump restored into a database that already has the
# extension (empty), which is the documented way to copy the data alone.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sources = 3000;    # enough rows that parallel workers overlap

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\nfsync = off\n");
$node->start;

my $tempdir = PostgreSQL::Test::Utils::tempdir;

$node->safe_psql('postgres', 'CREATE ROLE regress_alice; CREATE ROLE regress_bob');
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', 'CREATE EXTENSION iapi_tokens');
$node->safe_psql('src',
	'GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
		iapi_tokens.rotate_access_token(uuid, interval) TO regress_alice, regress_bob');

# Many sources with one token each; the plaintexts are kept in a table of
# this test database only, so that the restored copies can be checked.
$node->safe_psql(
	'src', qq{
	CREATE TABLE public.kept (kind text, id text, token text);
	INSERT INTO public.kept
	SELECT 'source', g.id::text, g.access_token
	  FROM generate_series(1, $sources) i,
		   LATERAL iapi_tokens.generate_token(
			   iapi_tokens.create_source('src_' || i)) g;
});

# A full source (two active tokens), a revoked token, and a rotation still
# in its grace period (old and new both valid, and both counted).
$node->safe_psql(
	'src', q{
	SELECT iapi_tokens.create_source('full_src') AS full \gset
	INSERT INTO public.kept SELECT 'full', id::text, access_token
	  FROM iapi_tokens.generate_token(:full);
	INSERT INTO public.kept SELECT 'revoked', id::text, access_token
	  FROM iapi_tokens.generate_token(:full);
	SELECT iapi_tokens.revoke_token(:full, (SELECT id::bigint FROM public.kept WHERE kind = 'revoked'));
	INSERT INTO public.kept SELECT 'full', id::text, access_token
	  FROM iapi_tokens.generate_token(:full);
	SELECT iapi_tokens.create_source('grace_src') AS grace \gset
	INSERT INTO public.kept SELECT 'grace_old', id::text, access_token
	  FROM iapi_tokens.generate_token(:grace);
	INSERT INTO public.kept SELECT 'grace_new', id::text, access_token
	  FROM iapi_tokens.rotate_token(:grace, (SELECT id::bigint FROM public.kept WHERE kind = 'grace_old'), '1 day');
});

# Personal tokens: alice has a per-role limit of two and is at it; bob has a
# token rotated with grace.
$node->safe_psql(
	'src', q{
	SELECT iapi_tokens.set_owner_limit('regress_alice', 2);
	SET ROLE regress_alice;
	CREATE TEMP TABLE t AS SELECT * FROM iapi_tokens.create_access_token(3600, 'a1');
	INSERT INTO t SELECT * FROM iapi_tokens.create_access_token(-1, 'a2');
	RESET ROLE;
	INSERT INTO public.kept SELECT 'personal', token_id::text, token_value FROM t;
	SET ROLE regress_bob;
	CREATE TEMP TABLE b AS SELECT * FROM iapi_tokens.create_access_token(86400, 'b1');
	INSERT INTO b SELECT * FROM iapi_tokens.rotate_access_token((SELECT token_id FROM b), '1 hour');
	RESET ROLE;
	INSERT INTO public.kept SELECT 'personal', token_id::text, token_value FROM b;
});

# What every restored copy must equal.
my $census_sql = q{
	SELECT (SELECT count(*) FROM iapi_tokens.sources),
		   (SELECT count(*) FROM iapi_tokens.tokens),
		   (SELECT count(*) FROM iapi_tokens.tokens WHERE owner_role IS NOT NULL),
		   (SELECT count(*) FROM iapi_tokens.tokens WHERE revoked_at IS NOT NULL),
		   (SELECT count(*) FROM iapi_tokens.audit),
		   (SELECT count(*) FROM iapi_tokens.owner_limits),
		   (SELECT last_value FROM iapi_tokens.token_id_seq),
		   (SELECT last_value FROM iapi_tokens.source_id_seq),
		   (SELECT last_value FROM iapi_tokens.audit_id_seq),
		   (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM iapi_tokens.tokens t),
		   (SELECT md5(string_agg(a::text, ',' ORDER BY a.id)) FROM iapi_tokens.audit a)
};
my $census = $node->safe_psql('src', $census_sql);
my @kept = map { [ split /\|/ ] } split /\n/,
  $node->safe_psql('src',
	q{SELECT kind, id, token FROM public.kept
	   WHERE kind <> 'source' OR id::bigint % 500 = 0 ORDER BY kind, id});
cmp_ok(scalar @kept, '>', 10, 'kept a sample of plaintexts');

$node->command_ok(
	[ 'pg_dump', '-Fc', '-f', "$tempdir/src.dump", '-d', $node->connstr('src') ],
	'pg_dump -Fc');
$node->command_ok(
	[ 'pg_dump', '-Fd', '-j', '2', '-f', "$tempdir/src.dir", '-d', $node->connstr('src') ],
	'pg_dump -Fd');

# Checks one restored database against the source database.
sub check_restored
{
	my ($db, $what) = @_;
	is($node->safe_psql($db, $census_sql), $census,
		"$what: every source, token, audit row, owner limit and sequence position");
	my $wrong = 0;
	for my $k (@kept)
	{
		my ($kind, $id, $token) = @$k;
		my $verified = $node->safe_psql($db,
			"SELECT coalesce(token_id::text, '') || '/' || coalesce(access_token_id::text, '')
			   FROM iapi_tokens.verify_token('$token')");
		my $want = $kind eq 'revoked' ? '' : ($kind eq 'personal' ? "/$id" : "$id/");
		$want = '' if $kind eq 'revoked';
		if ($kind eq 'personal')
		{
			$wrong++ unless $verified =~ m{^\d+/\Q$id\E$};
		}
		else
		{
			$wrong++ unless $verified eq $want;
		}
	}
	is($wrong, 0, "$what: the kept plaintexts verify, and the revoked one does not");
	my ($stderr);
	$node->psql($db,
		q{SELECT * FROM iapi_tokens.generate_token(
			(SELECT id FROM iapi_tokens.sources WHERE name = 'full_src'))},
		stderr => \$stderr);
	like($stderr, qr/already has 2 active tokens/, "$what: the full source still refuses a third token");
	$node->psql($db,
		q{SET ROLE regress_alice; SELECT * FROM iapi_tokens.create_access_token(60)},
		stderr => \$stderr);
	like($stderr, qr/already has 2 active personal tokens/,
		"$what: alice's restored limit still holds");
	is($node->safe_psql($db, 'SELECT count(*) FROM iapi_tokens.check_tokens()'),
		'0', "$what: check_tokens() finds nothing wrong");
	return;
}

my $n = 0;
for my $format ([ 'Fc', "$tempdir/src.dump" ], [ 'Fd', "$tempdir/src.dir" ])
{
	my ($fmt, $path) = @$format;
	for my $jobs (1, 2, 4, 8)
	{
		my $db = 'restored_' . lc($fmt) . "_$jobs";
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		my ($stdout, $stderr);
		my $ok = $node->run_log(
			[ 'pg_restore', '-j', $jobs, '-d', $node->connstr($db), $path ]);
		ok($ok, "pg_restore -$fmt -j $jobs succeeds");
		check_restored($db, "-$fmt -j $jobs");
		$n++;
	}
}

# Data only, into a database that already has the extension: the tables'
# rows and the sequences, nothing else.
$node->safe_psql('postgres', 'CREATE DATABASE data_only');
$node->safe_psql('data_only', 'CREATE EXTENSION iapi_tokens');
# A data-only dump carries no grant.
$node->safe_psql('data_only',
	'GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_alice');
$node->command_ok(
	[
		'pg_dump', '--data-only', '--schema=iapi_tokens', '-Fc',
		'-f', "$tempdir/data.dump", '-d', $node->connstr('src')
	],
	'pg_dump --data-only of the extension schema');
$node->command_ok(
	[ 'pg_restore', '-j', '4', '-d', $node->connstr('data_only'), "$tempdir/data.dump" ],
	'pg_restore -j 4 of the data-only dump into an installed, empty extension');
check_restored('data_only', 'data only');

done_testing();
