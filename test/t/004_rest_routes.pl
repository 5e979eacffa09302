# Copyright: iapi_tokens authors.
#
# The PostgREST layer (extension iapi_tokens_rest), route by route: each
# request is replayed as PostgREST 12 sends it (test/lib/PostgrestReplay.pm)
# on one pooled connection, and the body, status and headers are checked:
# the seeds' JSON shapes, 201 and 204, the errors (400, 401, 403, 404, 409;
# never 500 for a caller's mistake), tenant isolation by stitch_client_id,
# personal tokens owned by the JWT's role and never by a group role (users
# added by rest/roles.sql), X-Api-Key authentication in the pre-request,
# GETs in read-only transactions, and no token in the log, with every
# statement and (auto_explain) every plan logged.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PostgrestReplay;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;
my $iso_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
my $iso_ms_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

my $node = PostgreSQL::Test::Cluster->new('rest');
$node->init;
# Every statement is logged, and auto_explain logs the plan of every
# statement, nested ones included, with the constants of custom plans:
# rest/roles.sql must keep the bind parameters, which carry X-Api-Key, out
# of the log.
$node->append_conf(
	'postgresql.conf', q{
log_statement = all
log_min_error_statement = error
shared_preload_libraries = 'auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_verbose = on
});
$node->start;

# Installation as rest/roles.sql gives it: the extension, then roles.sql,
# then roles.sql once for each user who may hold personal tokens.
my $roles_sql = slurp_file("$FindBin::RealBin/../../rest/roles.sql");
my $server_version = $node->safe_psql('postgres', 'SHOW server_version_num');
$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');
$node->safe_psql('postgres',
	"\\set authenticator_password 'not-used-with-trust'\n" . $roles_sql);
$node->safe_psql('postgres', "\\set token_user $_\n" . $roles_sql) foreach qw(alice bob);
$node->safe_psql(
	'postgres', q{
CREATE ROLE mallory NOLOGIN;	-- a JWT role with no grant
GRANT mallory TO iapi_authenticator;
});

my $api = PostgrestReplay->new(
	host => $node->host,
	port => $node->port,
	dbname => 'postgres',
	user => 'iapi_authenticator');

my @tokens;    # every plaintext seen, for the log check at the end

# Stitch clients, as PostgREST hands over their verified JWT claims.
my $client_a = { role => 'iapi_source_admin', stitch_client_id => 116078 };
my $client_b = { role => 'iapi_source_admin', stitch_client_id => 116079 };

sub call
{
	my ($method, $fn, %rest) = @_;
	return $api->request(method => $method, path => "/rpc/$fn", %rest);
}

# A success: the status, and JSON unless it is a 204 without a body.
sub is_success
{
	my ($res, $status, $name) = @_;
	is($res->{status}, $status, $name)
	  or diag("$res->{status}: $res->{body}");
	if ($status == 204)
	{
		ok(!exists $res->{headers}{'content-type'} && $res->{body} eq '',
			"$name: no body, no content type");
	}
	else
	{
		is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
			"$name: JSON content type");
	}
}

# An error response in PostgREST's shape, with the expected status.
sub is_error
{
	my ($res, $status, $code, $name, $message_re) = @_;
	is($res->{status}, $status, "$name: status $status");
	is($res->{json}{code}, $code, "$name: code $code");
	is_deeply([ sort keys %{ $res->{json} } ], [qw(code details hint message)],
		"$name: PostgREST's error body");
	like($res->{json}{message}, $message_re, "$name: message") if $message_re;
	is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
		"$name: JSON content type");
}

# --- Sources ---------------------------------------------------------------

my $res = call(POST => 'create_source', claims => $client_a,
	body => { name => 'import_api', display_name => 'Import API' });
is_success($res, 201, 'create_source: 201 Created');
is($api->last_access_mode, 'READ WRITE', 'create_source: POST of a VOLATILE function is read-write');
is($res->{headers}{'content-type'}, 'application/json; charset=utf-8', 'create_source: JSON');
my $source = $res->{json};
my $sid = $source->{id};
like($sid, qr/^\d+$/, 'create_source: the Source object has an id');
is_deeply(
	[ sort keys %$source ],
	[
		sort qw(id name display_name type stitch_client_id properties schedule
		  created_at updated_at deleted_at paused_at system_paused_at report_card)
	],
	'create_source: the Source object of seed 002');
is($source->{stitch_client_id}, 116078, 'create_source: owned by the JWT client');
is($source->{type}, 'import_api', 'create_source: type import_api');
like($source->{created_at}, $iso_re, 'create_source: created_at in the Connect format');
is($source->{report_card}{current_step}, 1, 'create_source: not configured before a token');

$res = call(POST => 'create_source', claims => $client_a,
	body => { name => 'import_api' });
is_error($res, 409, '23505', 'a duplicate source name', qr/already in use/);

$res = call(POST => 'create_source', claims => $client_b,
	body => { name => 'import_api' });
is_success($res, 201, 'another client may use the same name');
my $sid_b = $res->{json}{id};

$res = call(POST => 'create_source', claims => $client_a, body => { name => 'Bad Name' });
is_error($res, 400, '22023', 'an invalid source name', qr/invalid source name/);

$res = call(GET => 'list_sources', claims => $client_a);
is_success($res, 200, 'list_sources: 200');
is($api->last_access_mode, 'READ ONLY', 'list_sources: GET runs read-only');
is_deeply([ map { $_->{id} } @{ $res->{json} } ], [$sid], 'list_sources: only the client\'s sources');
is_deeply($res->{json}[0], $source, 'list_sources: the same Source object');

$res = call(GET => 'list_sources', claims => { role => 'iapi_source_admin' });
is_error($res, 403, 'PT403', 'a JWT without stitch_client_id', qr/stitch_client_id/);

$res = call(GET => 'list_sources', claims => { role => 'iapi_source_admin', stitch_client_id => 'x' });
is_error($res, 403, 'PT403', 'a non-numeric stitch_client_id');

# Client 0 would share names with sources made outside the API, with no client.
$res = call(GET => 'list_sources', claims => { role => 'iapi_source_admin', stitch_client_id => 0 });
is_error($res, 403, 'PT403', 'stitch_client_id 0');

# --- Source tokens ---------------------------------------------------------

$res = call(POST => 'generate_token', claims => $client_a, body => { source_id => $sid });
is_success($res, 200, 'generate_token: 200');
is_deeply([ sort keys %{ $res->{json} } ], [qw(access_token id)], 'generate_token: seed 000 shape');
like($res->{json}{access_token}, $token_re, 'generate_token: a token');
my ($t1, $tok1) = @{ $res->{json} }{qw(id access_token)};
push @tokens, $tok1;

# The path parameter through the header nginx sets.
$res = call(POST => 'generate_token', claims => $client_a, body => {},
	headers => { 'X-Iapi-Source-Id' => $sid });
is_success($res, 200, 'generate_token: source id from X-Iapi-Source-Id');
my ($t2, $tok2) = @{ $res->{json} }{qw(id access_token)};
push @tokens, $tok2;
cmp_ok($t2, '>', $t1, 'token ids increase');

$res = call(POST => 'generate_token', claims => $client_a, body => { source_id => $sid });
is_error($res, 409, 'PT409', 'a third active token', qr/revoke one first/);
like($res->{json}{hint}, qr{DELETE /v4/sources/$sid/tokens/}, 'the third token: the hint names the route');

$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => $sid });
is_success($res, 200, 'list_tokens: 200');
is($api->last_access_mode, 'READ ONLY', 'list_tokens: GET runs read-only');
is_deeply([ map { $_->{token_id} } @{ $res->{json} } ], [ $t2, $t1 ], 'list_tokens: newest first');
is_deeply([ sort keys %{ $res->{json}[0] } ], [qw(created_at token_id)], 'list_tokens: seed 002 shape');
like($res->{json}[0]{created_at}, $iso_re, 'list_tokens: created_at in the Connect format');

$res = call(GET => 'list_tokens', claims => $client_a, headers => { 'X-Iapi-Source-Id' => $sid });
is_deeply([ map { $_->{token_id} } @{ $res->{json} } ], [ $t2, $t1 ], 'list_tokens: source id from the header');

$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => $sid },
	headers => { 'X-Iapi-Source-Id' => $sid_b });
is_error($res, 400, 'PT400', 'path header and argument disagree', qr/differ/);

$res = call(GET => 'list_tokens', claims => $client_a);
is_error($res, 400, 'PT400', 'no source id at all', qr/source_id is required/);

$res = call(GET => 'list_tokens', claims => $client_a, headers => { 'X-Iapi-Source-Id' => 'abc' });
is_error($res, 400, 'PT400', 'a malformed source id header', qr/not valid/);

$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => 'abc' });
is_error($res, 400, '22P02', 'a malformed source_id argument');

$res = call(GET => 'generate_token', claims => $client_a, query => { source_id => $sid });
is_error($res, 405, '25006', 'a GET of a POST route, read-only');

# Tenant isolation: another client's source is not found, whatever the route.
for my $case (
	[ GET => 'list_tokens', { source_id => $sid } ],
	[ POST => 'generate_token', { source_id => $sid } ],
	[ POST => 'generate_token_v3', { source_id => $sid } ],
	[ POST => 'revoke_token', { source_id => $sid, token_id => $t1 } ])
{
	my ($method, $fn, $args) = @$case;
	$res = call($method => $fn, claims => $client_b,
		($method eq 'GET' ? (query => $args) : (body => $args)));
	is_error($res, 404, 'PT404', "client B, $fn on client A's source", qr/^source $sid does not exist$/);
}
$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => 999999 });
is_error($res, 404, 'PT404', 'an unknown source', qr/^source 999999 does not exist$/);
$res = call(GET => 'list_tokens', claims => $client_b, query => { source_id => $sid_b });
is_deeply($res->{json}, [], 'client B lists its own source: no tokens');

# Revocation returns the Source object with a new updated_at.
$res = call(POST => 'revoke_token', claims => $client_a, body => { source_id => $sid, token_id => $t1 });
is_success($res, 200, 'revoke_token: 200');
is($res->{json}{id}, $sid, 'revoke_token: the Source object');
cmp_ok($res->{json}{updated_at}, 'ge', $source->{updated_at}, 'revoke_token: updated_at moved on');
is($res->{json}{report_card}{current_step}, 2, 'revoke_token: still configured with one token');

$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => $sid });
is_deeply([ map { $_->{token_id} } @{ $res->{json} } ], [$t2], 'revoked token no longer listed');

$res = call(POST => 'revoke_token', claims => $client_a, body => {},
	headers => { 'X-Iapi-Source-Id' => $sid, 'X-Iapi-Token-Id' => $t1 });
is_error($res, 409, 'PT409', 'revoking a revoked token (ids from the headers)', qr/already revoked/);

$res = call(POST => 'revoke_token', claims => $client_a, body => { source_id => $sid, token_id => 424242 });
is_error($res, 404, 'PT404', 'revoking an unknown token', qr/does not exist/);

$res = call(POST => 'revoke_token', claims => $client_a, body => { source_id => $sid });
is_error($res, 400, 'PT400', 'revoke_token without token_id', qr/token_id is required/);

# Seed 001: the older response, with the other token masked.
$res = call(POST => 'generate_token_v3', claims => $client_a, body => { source_id => $sid });
is_success($res, 200, 'generate_token_v3: 200');
my $v3 = $res->{json};
like($v3->{access_token}, $token_re, 'generate_token_v3: the new token');
push @tokens, $v3->{access_token};
is($v3->{connection}{id}, $sid, 'generate_token_v3: the Source object under connection');
ok($v3->{connection}{report_card}, 'generate_token_v3: with its report_card');
my $shown = $v3->{connection}{properties}{token};
is(scalar(keys %$shown), 2, 'generate_token_v3: both active tokens are listed');
is($shown->{$t2} =~ /^iapi_[0-9A-Za-z]{4}\.\.\.$/ ? 1 : 0, 1, 'generate_token_v3: the older token is masked');
isnt($shown->{$t2}, $tok2, 'generate_token_v3: the older token is not shown');
my ($t3) = grep { $_ != $t2 } keys %$shown;
is($shown->{$t3}, $v3->{access_token}, 'generate_token_v3: the new token in full under its id');
$res = call(POST => 'generate_token_v3', claims => $client_a, body => { source_id => $sid });
is_error($res, 409, 'PT409', 'generate_token_v3: a third active token', qr/revoke one first/);

# --- Errors of authorisation -----------------------------------------------

$res = call(GET => 'list_sources');
is_error($res, 401, '42501', 'no credential');
is($res->{headers}{'www-authenticate'}, 'Bearer', 'no credential: WWW-Authenticate');

$res = call(GET => 'list_sources', claims => { role => 'mallory', stitch_client_id => 116078 });
is_error($res, 403, '42501', 'a JWT role without the grant');

$res = call(GET => 'list_sources', claims => { role => 'alice' });
is_error($res, 403, '42501', 'a personal-token user on a source route');

# --- Personal access tokens (seed 003) -------------------------------------

my $alice = { role => 'alice' };
my $bob = { role => 'bob' };

$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 100, description => 'My 100-second token' });
is_success($res, 201, 'create_access_token: 201 Created');
is_deeply([ sort keys %{ $res->{json} } ], [qw(tokenInfo tokenValue)], 'create_access_token: seed 003 shape');
my $info = $res->{json}{tokenInfo};
is_deeply([ sort keys %$info ], [qw(createdAt description expiredAt lastUsed tokenId)],
	'create_access_token: tokenInfo of seed 003');
like($res->{json}{tokenValue}, $token_re, 'create_access_token: a token');
my $ptok = $res->{json}{tokenValue};
push @tokens, $ptok;
my $puuid = $info->{tokenId};
like($puuid, $uuid_re, 'create_access_token: tokenId is a uuid');
is($info->{description}, 'My 100-second token', 'create_access_token: description');
is($info->{lastUsed}, undef, 'create_access_token: never used');
like($info->{createdAt}, $iso_ms_re, 'create_access_token: createdAt with milliseconds');
like($info->{expiredAt}, $iso_ms_re, 'create_access_token: expiredAt with milliseconds');
is($node->safe_psql('postgres',
		"SELECT extract(epoch FROM '$info->{expiredAt}'::timestamptz - '$info->{createdAt}'::timestamptz)"),
	'100.000000', 'create_access_token: expires lifetimeSeconds after creation');

$res = call(POST => 'create_access_token', claims => $alice, body => { lifetimeSeconds => -1 });
is_success($res, 201, 'create_access_token -1: 201');
is($res->{json}{tokenInfo}{expiredAt}, undef, 'create_access_token -1: never expires');
push @tokens, $res->{json}{tokenValue};
my $puuid2 = $res->{json}{tokenInfo}{tokenId};

for my $bad ([ 0, '22023' ], [ -5, '22023' ], [ 'abc', '22P02' ], [ 99999999999, '22003' ])
{
	$res = call(POST => 'create_access_token', claims => $alice, body => { lifetimeSeconds => $bad->[0] });
	is_error($res, 400, $bad->[1], "lifetimeSeconds $bad->[0]");
}
$res = call(POST => 'create_access_token', claims => $alice, body => { description => 'no lifetime' });
is_error($res, 400, 'PT400', 'no lifetimeSeconds', qr/lifetimeSeconds is required/);

$res = call(GET => 'list_access_tokens', claims => $alice);
is_success($res, 200, 'list_access_tokens: 200');
is($api->last_access_mode, 'READ ONLY', 'list_access_tokens: GET runs read-only');
is_deeply([ keys %{ $res->{json} } ], ['data'], 'list_access_tokens: {"data": [...]}');
is_deeply([ map { $_->{tokenId} } @{ $res->{json}{data} } ], [ $puuid2, $puuid ],
	'list_access_tokens: the caller\'s tokens, newest first');

$res = call(GET => 'list_access_tokens', claims => $bob);
is_deeply($res->{json}, { data => [] }, 'list_access_tokens: another role sees none of them');

$res = call(GET => 'get_access_token', claims => $alice, query => { tokenId => $puuid });
is_success($res, 200, 'get_access_token: 200');
is_deeply($res->{json}, $info, 'get_access_token: the same tokenInfo');

$res = call(GET => 'get_access_token', claims => $alice, headers => { 'X-Iapi-Token-Id' => $puuid });
is($res->{json}{tokenId}, $puuid, 'get_access_token: tokenId from the header');

$res = call(GET => 'get_access_token', claims => $bob, query => { tokenId => $puuid });
is_error($res, 404, 'PT404', 'get_access_token of another role\'s token', qr/does not exist/);

$res = call(GET => 'get_access_token', claims => $alice, query => { tokenId => 'not-a-uuid' });
is_error($res, 400, '22P02', 'get_access_token with a malformed tokenId');

$res = call(POST => 'delete_access_token', claims => $bob, body => { tokenId => $puuid2 });
is_error($res, 404, 'PT404', 'delete_access_token of another role\'s token');

$res = call(POST => 'delete_access_token', claims => $alice, body => { tokenId => $puuid2 });
is_success($res, 204, 'delete_access_token: 204 No Content');
is($res->{body}, '', 'delete_access_token: no body');
ok(!exists $res->{headers}{'content-type'}, 'delete_access_token: no content type');

$res = call(POST => 'delete_access_token', claims => $alice, body => { tokenId => $puuid2 });
is_error($res, 404, 'PT404', 'deleting a deleted token');

$res = call(GET => 'list_access_tokens', claims => $client_a);
is_error($res, 403, '42501', 'a source client on a personal-token route');

# --- A JWT naming the group role --------------------------------------------

# iapi_token_user is the group of the users' roles.  Tokens it owned would
# be shared by its members and by everyone holding a JWT that names it, so
# it owns none: every personal-token route answers 403, and no token is made.
# A token the group got otherwise (here in SQL, as under 1.0's routes) is
# neither listed, nor shown, nor deleted.
my $group = { role => 'iapi_token_user' };
my $group_token = $node->safe_psql('postgres', q{
	SET ROLE iapi_token_user;
	SELECT token_id FROM iapi_tokens.create_access_token(600, 'made in SQL');
});
like($group_token, $uuid_re, 'a token owned by the group, made in SQL');
my $group_state = q{SELECT count(*) || ' tokens, ' || count(*) FILTER (WHERE revoked_at IS NULL) || ' active'
	FROM iapi_tokens.tokens WHERE owner_role = 'iapi_token_user'::regrole};
is($node->safe_psql('postgres', $group_state), '1 tokens, 1 active', 'the group owns one token');

sub group_refused
{
	my ($name, $code, $message_re) = @_;
	for my $case (
		[ POST => 'create_access_token', body => { lifetimeSeconds => 60, description => 'shared' } ],
		[ GET => 'list_access_tokens' ],
		[ GET => 'get_access_token', query => { tokenId => $group_token } ],
		[ GET => 'get_access_token', headers => { 'X-Iapi-Token-Id' => $group_token } ],
		[ POST => 'delete_access_token', body => { tokenId => $group_token } ])
	{
		my ($method, $fn, @args) = @$case;
		my $res = call($method => $fn, claims => $group, @args);
		is_error($res, 403, $code, "$name: $fn", $message_re);
	}
	is($node->safe_psql('postgres', $group_state), '1 tokens, 1 active',
		"$name: no token made, none deleted");
}

# The users rest/roles.sql adds: from 16 on, their membership in the group
# has SET FALSE, so the authenticator cannot become the group through them
# and PostgreSQL refuses the role; 15 has no such option, and the routes
# refuse it.
if ($server_version >= 160000)
{
	group_refused('a JWT for the group, users added by roles.sql', '42501',
		qr/permission denied to set role "iapi_token_user"/);
}
else
{
	group_refused('a JWT for the group, users added by roles.sql', 'PT403',
		qr/^role iapi_token_user is a group role and cannot own personal tokens$/);
}

# A user added the old way, with SET TRUE (the only way on 15): the
# authenticator can become the group through it, and the routes refuse it.
$node->safe_psql('postgres', q{
CREATE ROLE legacy NOLOGIN IN ROLE iapi_token_user;
GRANT legacy TO iapi_authenticator;
});
group_refused('a JWT for the group, a user with SET', 'PT403',
	qr/^role iapi_token_user is a group role and cannot own personal tokens$/);
$res = call(POST => 'create_access_token', claims => $group, body => { lifetimeSeconds => 60 });
is($res->{json}{hint}, 'Issue the JWT for the user\'s own role, not for a group it belongs to.',
	'a JWT for the group: the hint says what to do');
is($node->safe_psql('postgres', $group_state), '1 tokens, 1 active',
	'a JWT for the group: still no token made');

# The users themselves still own tokens: the authenticator's membership in
# their roles does not make them groups.
$res = call(POST => 'create_access_token', claims => { role => 'legacy' }, body => { lifetimeSeconds => 60 });
is_success($res, 201, 'a user added the old way still creates tokens');
push @tokens, $res->{json}{tokenValue};

# From 16 on, a CREATEROLE role gets an ADMIN-only membership in the roles it
# creates (neither INHERIT nor SET): that does not make them groups.
SKIP:
{
	skip 'grant options INHERIT and SET are 16 and later', 2 if $server_version < 160000;
	$node->safe_psql('postgres', q{
CREATE ROLE user_admin NOLOGIN CREATEROLE;
SET ROLE user_admin;
CREATE ROLE carol NOLOGIN;
RESET ROLE;
});
	$node->safe_psql('postgres', "\\set token_user carol\n" . $roles_sql);
	$res = call(POST => 'create_access_token', claims => { role => 'carol' }, body => { lifetimeSeconds => 60 });
	is_success($res, 201, 'a user made by a CREATEROLE role creates tokens');
	push @tokens, $res->{json}{tokenValue} // ();
}

# --- X-Api-Key: the pre-request and whoami ---------------------------------

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $tok2 });
is_success($res, 200, 'whoami with a source token: 200');
is($api->last_access_mode, 'READ ONLY', 'whoami: the pre-request verifies in a read-only transaction');
is($res->{json}{token_id}, $t2, 'whoami: the token');
is($res->{json}{source_id}, $sid, 'whoami: its source');
is($res->{json}{stitch_client_id}, 116078, 'whoami: its client');
is($res->{json}{owner}, undef, 'whoami: a source token has no owner role');

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $ptok });
is($res->{json}{owner}, 'alice', 'whoami with a personal token: its owner');
is($res->{json}{access_token_id}, $puuid, 'whoami: its tokenId');
is($res->{json}{source_id}, undef, 'whoami: a personal token has no source');

$res = call(GET => 'whoami');
is_error($res, 401, 'PT401', 'whoami without a key', qr/no API key/);
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="iapi_tokens"', 'whoami without a key: challenge');

my $forged = substr($tok2, 0, -1) . (substr($tok2, -1) eq 'A' ? 'B' : 'A');
for my $bad ([ 'a forged key', $forged ], [ 'a revoked key', $tok1 ], [ 'an empty key', '' ],
	[ 'garbage', 'x' x 5000 ])
{
	$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $bad->[1] });
	is_error($res, 401, 'PT401', $bad->[0], qr/not valid/);
	is($res->{headers}{'www-authenticate'}, 'ApiKey realm="iapi_tokens", error="invalid_token"',
		"$bad->[0]: WWW-Authenticate");
	unlike($res->{body}, qr/\Q$bad->[1]\E/, "$bad->[0]: the key is not echoed") if length $bad->[1];
}

# A bad key fails every route, even one the JWT alone would allow.
$res = call(GET => 'list_sources', claims => $client_a, headers => { 'X-Api-Key' => $forged });
is_error($res, 401, 'PT401', 'a bad key beside a good JWT');

# Nothing carries over between requests on the pooled connection.
call(GET => 'whoami', headers => { 'X-Api-Key' => $tok2 });
$res = call(GET => 'whoami');
is_success($res, 401, 'the next request on the connection is not authenticated');
is($api->dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.current_token()'), 0,
	'no current token outside a request');

# The read-only verification wrote nothing; a read-write request records use.
is($node->safe_psql('postgres', "SELECT last_used_at IS NULL FROM iapi_tokens.tokens WHERE id = $t2"),
	't', 'a read-only pre-request does not write last_used_at');
$res = call(POST => 'generate_token', claims => $client_a, body => { source_id => $sid },
	headers => { 'X-Api-Key' => $tok2 });
is($res->{status}, 409, 'a POST with a key still gets the route\'s answer');
$res = call(POST => 'create_source', claims => $client_a, body => { name => 'second' },
	headers => { 'X-Api-Key' => $tok2 });
is_success($res, 201, 'a POST with a valid key and a JWT');
is($node->safe_psql('postgres', "SELECT last_used_at IS NOT NULL FROM iapi_tokens.tokens WHERE id = $t2"),
	't', 'a read-write pre-request records last_used_at');

# --- Hardened PUBLIC grants ------------------------------------------------

# rest/roles.sql grants everything the request roles use, so revoking
# PUBLIC's grants on the core and the helpers changes no answer.
$node->safe_psql(
	'postgres', q{
REVOKE USAGE ON SCHEMA iapi_tokens, iapi_rest_internal FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA iapi_tokens FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA iapi_rest_internal FROM PUBLIC;
});
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $tok2 });
is_success($res, 200, 'hardened: whoami with a key');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $forged });
is($res->{status}, 401, 'hardened: a bad key is still a 401');
$res = call(POST => 'create_access_token', claims => $bob, body => { lifetimeSeconds => 60 });
is_success($res, 201, 'hardened: create_access_token');
push @tokens, $res->{json}{tokenValue};
$res = call(GET => 'get_access_token', claims => $bob, query => { tokenId => $puuid });
is($res->{status}, 404, 'hardened: another role\'s token is still a 404');
$res = call(GET => 'list_tokens', claims => $client_a, query => { source_id => $sid });
is_success($res, 200, 'hardened: list_tokens');

# --- The statements are PostgREST's ----------------------------------------

call(POST => 'generate_token', claims => $client_b, body => { source_id => $sid_b });
my @stmts = $api->last_statements;
is($stmts[0], 'BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE', 'replay: the transaction start');
like($stmts[1], qr/^select set_config\('search_path', \$1, true\), set_config\('role', \$2, true\), set_config\('request\.jwt\.claims', \$3, true\)/,
	'replay: the set_config prologue');
is($stmts[2], 'select "iapi_rest"."authenticate"()', 'replay: the pre-request');
like($stmts[3], qr/^WITH pgrst_source AS \(SELECT pgrst_call\.\* FROM \(SELECT \$1 AS json_data\) pgrst_payload, LATERAL \(SELECT "source_id" FROM json_to_record\(pgrst_payload\.json_data\) AS _\("source_id" bigint\) LIMIT 1\) pgrst_body , LATERAL "iapi_rest"\."generate_token"\("source_id" := pgrst_body\."source_id"\) pgrst_call\) SELECT null::bigint AS total_result_set, pg_catalog\.count\(_postgrest_t\) AS page_total, coalesce\(json_agg\(_postgrest_t\)->0, 'null'\) AS body, nullif\(current_setting\('response\.headers', true\), ''\) AS response_headers, nullif\(current_setting\('response\.status', true\), ''\) AS response_status FROM/,
	'replay: the RPC statement, as PostgREST 12 forms it for a composite result');

# --- No token in the server log --------------------------------------------

my $log = slurp_file($node->logfile);
like($log, qr/iapi_rest"\."authenticate"/, 'the log holds the statements');
like($log, qr/does not exist/, 'the log holds the errors');
like($log, qr/LOG:  duration: [0-9.]+ ms  plan:\n\tQuery Text: /, 'the log holds plans');
for my $tok (@tokens)
{
	unlike($log, qr/\Q$tok\E/, 'no plaintext token in the server log');
}
# Nor a key that was not valid, nor anything else token-shaped.
unlike($log, qr/iapi_[0-9A-Za-z]{20,}/, 'nothing token-shaped in the server log');

$node->stop;
done_testing();
