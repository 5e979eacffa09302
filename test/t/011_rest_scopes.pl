# Copyright: iapi_tokens authors.
#
# REST 1.2 over the PostgREST replay (test/lib/PostgrestReplay.pm), request
# in, response out: scopes and metadata in the creation bodies of
# generate_token and create_access_token, and their errors (an undefined
# scope, metadata that is not an object: 400); the scoped example route
# my_source (403 with an insufficient_scope challenge without sources:read,
# 200 with it or without any restriction, 401 without a key, 404 for a
# personal token); whoami with scopes, metadata, last_used_at and use_count;
# revoke_leaked as the secret scanner's JWT role iapi_leak_reporter
# ({"revoked": n}, the audit row, 400 above 1000 tokens, 401 or 403 for the
# other roles, which may not call it); and no token in the log, every
# statement logged.
#
# The node preloads the library (shared_preload_libraries), as 010's do.
# Nothing waits a fixed time: the one wait polls for the state it needs.

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

my $node = PostgreSQL::Test::Cluster->new('scopes');
$node->init;
# Every statement is logged: neither a key nor a reported token may reach
# the log through PostgREST's bind parameters (rest/roles.sql).
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'iapi_tokens'
iapi_tokens.usage_flush_interval = '100ms'
log_statement = all
log_min_error_statement = error
});
$node->start;

# Installation as rest/roles.sql gives it, with one user for personal tokens.
my $roles_sql = slurp_file("$FindBin::RealBin/../../rest/roles.sql");
$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');
$node->safe_psql('postgres',
	"\\set authenticator_password 'not-used-with-trust'\n" . $roles_sql);
$node->safe_psql('postgres', "\\set token_user alice\n" . $roles_sql);

# The scopes tokens may hold, defined by the owner.
$node->safe_psql(
	'postgres', q{
SELECT iapi_tokens.define_scope('sources:read', 'Read the key''s own source');
SELECT iapi_tokens.define_scope('tokens:write', 'Create and revoke tokens');
});
is($node->safe_psql('postgres', 'SELECT string_agg(name, \',\' ORDER BY name) FROM iapi_tokens.scopes'),
	'sources:read,tokens:write', 'two scopes are defined');

my $api = PostgrestReplay->new(
	host => $node->host,
	port => $node->port,
	dbname => 'postgres',
	user => 'iapi_authenticator');

my @tokens;    # every plaintext seen, for the log check at the end

my $client = { role => 'iapi_source_admin', stitch_client_id => 116078 };
my $alice = { role => 'alice' };
my $reporter = { role => 'iapi_leak_reporter' };

sub call
{
	my ($method, $fn, %rest) = @_;
	return $api->request(method => $method, path => "/rpc/$fn", %rest);
}

sub is_success
{
	my ($res, $status, $name) = @_;
	is($res->{status}, $status, $name)
	  or diag("$res->{status}: $res->{body}");
	is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
		"$name: JSON content type");
}

# An error response in PostgREST's shape, with the expected status.
sub is_error
{
	my ($res, $status, $code, $name, $message_re) = @_;
	is($res->{status}, $status, "$name: status $status")
	  or diag($res->{body});
	is($res->{json}{code}, $code, "$name: code $code");
	is_deeply([ sort keys %{ $res->{json} } ], [qw(code details hint message)],
		"$name: PostgREST's error body");
	like($res->{json}{message}, $message_re, "$name: message") if $message_re;
	is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
		"$name: JSON content type");
}

# Neither the key nor its random part is in a response.
sub not_echoed
{
	my ($res, $key, $name) = @_;
	my $random = substr($key, length($key) - 39, 33);
	ok(index($res->{body}, $key) < 0 && index($res->{body}, $random) < 0,
		"$name: the key is not in the response");
}

sub forged
{
	my ($token) = @_;
	return substr($token, 0, -1) . (substr($token, -1) eq 'A' ? 'B' : 'A');
}

sub new_source
{
	my ($name) = @_;
	my $res = call(POST => 'create_source', claims => $client, body => { name => $name });
	is($res->{status}, 201, "create_source $name") or diag($res->{body});
	return $res->{json}{id};
}

# A source token through POST /rpc/generate_token, the source in the header
# nginx sets from the path: (id, token).
sub new_source_token
{
	my ($sid, $name, %body) = @_;
	my $res = call(POST => 'generate_token', claims => $client,
		headers => { 'X-Iapi-Source-Id' => $sid }, body => \%body);
	is_success($res, 200, "generate_token: $name");
	like($res->{json}{access_token}, $token_re, "generate_token: $name: a token");
	push @tokens, $res->{json}{access_token} // ();
	return @{ $res->{json} }{qw(id access_token)};
}

sub token_state
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT scopes, metadata, revoked_at IS NOT NULL, revoked_reason FROM iapi_tokens.tokens WHERE id = $id");
}

# --- Source tokens with scopes and metadata --------------------------------

my $sid_read = new_source('scoped');
my $sid_open = new_source('unrestricted');
my $sid_leak = new_source('leaks');

# The body {"scopes": ["sources:read"], "metadata": {"plan": "pro"}}, the source
# in X-Iapi-Source-Id.
my ($read_id, $read_key) = new_source_token($sid_read, 'scope sources:read, metadata',
	scopes => ['sources:read'], metadata => { plan => 'pro' });
is(token_state($read_id), '{sources:read}|{"plan": "pro"}|f|',
	'generate_token: the scopes and the metadata are stored');
my ($write_id, $write_key) = new_source_token($sid_read, 'scope tokens:write only',
	scopes => ['tokens:write']);
my ($open_id, $open_key) = new_source_token($sid_open, 'no scopes: unrestricted');
is(token_state($open_id), '||f|', 'generate_token without scopes: no restriction, no metadata');
my ($none_id, $none_key) = new_source_token($sid_open, 'empty scopes: identifies itself only',
	scopes => []);
is(token_state($none_id), '{}||f|', 'generate_token with "scopes": []: an empty list');

# Errors of the body: no token is made.
my $count_tokens = 'SELECT count(*) FROM iapi_tokens.tokens';
my $before = $node->safe_psql('postgres', $count_tokens);
my $res = call(POST => 'generate_token', claims => $client,
	body => { source_id => $sid_leak, scopes => ['sources:raed'] });
is_error($res, 400, '22023', 'generate_token with an undefined scope',
	qr/^scope "sources:raed" is not defined$/);
$res = call(POST => 'generate_token', claims => $client,
	body => { source_id => $sid_leak, metadata => [ 'pro' ] });
is_error($res, 400, '22023', 'generate_token with metadata that is not an object',
	qr/^metadata must be a JSON object$/);
is($node->safe_psql('postgres', $count_tokens), $before, 'the refused generations made no token');

# --- A key without sources:read: 403 with the challenge --------------------

my $challenge = 'ApiKey realm="iapi_tokens", error="insufficient_scope", scope="sources:read"';
for my $case ([ 'a key with scope tokens:write only', $write_key ],
	[ 'a key with no scope at all ("scopes": [])', $none_key ])
{
	my ($name, $key) = @$case;
	$res = call(GET => 'my_source', headers => { 'X-Api-Key' => $key });
	is_error($res, 403, 'PT403', "my_source, $name", qr/"sources:read"/);
	is($res->{json}{message}, 'the API key lacks scope "sources:read"',
		"my_source, $name: the message names the scope");
	is($res->{json}{details}, undef, "my_source, $name: no details");
	is($res->{headers}{'www-authenticate'}, $challenge,
		"my_source, $name: WWW-Authenticate names the scope");
	not_echoed($res, $key, "my_source, $name");
}
# The same with a JWT whose role may call the route: the scope decides.
$res = call(GET => 'my_source', claims => $client, headers => { 'X-Api-Key' => $write_key });
is($res->{status}, 403, 'my_source, a key without the scope beside a JWT: still 403');
is($res->{headers}{'www-authenticate'}, $challenge, '... with the same challenge');

# --- A key with sources:read, or without restriction: 200 ------------------

$res = call(GET => 'list_sources', claims => $client);
my %source_of = map { $_->{id} => $_ } @{ $res->{json} };

$res = call(GET => 'my_source', headers => { 'X-Api-Key' => $read_key });
is_success($res, 200, 'my_source with scope sources:read');
is($api->last_access_mode, 'READ ONLY', 'my_source: a GET runs read-only');
is($res->{json}{id}, $sid_read, 'my_source: the key\'s own source');
is_deeply($res->{json}, $source_of{$sid_read}, 'my_source: the Source object, as list_sources shows it');
ok(!exists $res->{headers}{'www-authenticate'}, 'my_source: no challenge on success');

$res = call(GET => 'my_source', headers => { 'X-Api-Key' => $open_key });
is_success($res, 200, 'my_source with an unrestricted key');
is($res->{json}{id}, $sid_open, 'my_source: the unrestricted key\'s own source');
is_deeply($res->{json}, $source_of{$sid_open}, 'my_source: its Source object');

# --- No key: 401; a bad key: 401; a personal token: 404 --------------------

$res = call(GET => 'my_source');
is_error($res, 401, 'PT401', 'my_source without X-Api-Key', qr/^no API key was given$/);
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="iapi_tokens"',
	'my_source without X-Api-Key: the challenge');

$res = call(GET => 'my_source', headers => { 'X-Api-Key' => forged($read_key) });
is_error($res, 401, 'PT401', 'my_source with a forged key', qr/not valid/);
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="iapi_tokens", error="invalid_token"',
	'my_source with a forged key: the challenge');
not_echoed($res, forged($read_key), 'my_source with a forged key');

$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 600, description => 'reads sources', scopes => ['sources:read'] });
is_success($res, 201, 'create_access_token with scope sources:read');
my $personal_read = $res->{json}{tokenValue};
push @tokens, $personal_read // ();
$res = call(GET => 'my_source', headers => { 'X-Api-Key' => $personal_read });
is_error($res, 404, 'PT404', 'my_source with a personal token that has the scope',
	qr/^the API key is not an Import API source token$/);
not_echoed($res, $personal_read, 'my_source with a personal token');

# --- whoami shows the scopes and the metadata ------------------------------

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $read_key });
is_success($res, 200, 'whoami with the scoped key');
is_deeply([ sort keys %{ $res->{json} } ],
	[ sort qw(token_id source_id stitch_client_id owner access_token_id created_at
		  expires_at last_used_at use_count scopes metadata) ],
	'whoami: the identity of REST 1.2');
is($res->{json}{token_id}, $read_id, 'whoami: the token');
is($res->{json}{source_id}, $sid_read, 'whoami: its source');
is_deeply($res->{json}{scopes}, ['sources:read'], 'whoami: its scopes');
is_deeply($res->{json}{metadata}, { plan => 'pro' }, 'whoami: its metadata');

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $open_key });
is($res->{json}{scopes}, undef, 'whoami of an unrestricted key: scopes null');
is($res->{json}{metadata}, undef, 'whoami of a key without metadata: metadata null');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $none_key });
is_deeply($res->{json}{scopes}, [], 'whoami of a key with "scopes": []: an empty array');

# The uses of the GETs above are applied by the usage flush; whoami then
# shows them.
ok($node->poll_query_until('postgres',
		"SELECT use_count >= 1 AND last_used_at IS NOT NULL FROM iapi_tokens.tokens WHERE id = $read_id"),
	'the scoped key\'s uses are applied');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $read_key });
like($res->{json}{last_used_at}, $iso_re, 'whoami: last_used_at once a use is applied');
like($res->{json}{use_count}, qr/^[1-9][0-9]*$/, 'whoami: use_count once a use is applied');

# --- create_access_token with scopes and metadata, and its errors ----------

$res = call(POST => 'create_access_token', claims => $alice,
	body => {
		lifetimeSeconds => 600,
		description => 'scoped personal token',
		scopes => [ 'tokens:write', 'sources:read', 'tokens:write' ],
		metadata => { customer => 'acme', tier => 2 } });
is_success($res, 201, 'create_access_token with scopes and metadata');
is_deeply([ sort keys %{ $res->{json}{tokenInfo} } ],
	[qw(createdAt description expiredAt lastUsed tokenId)],
	'create_access_token: tokenInfo keeps the shape of seed 003');
my $personal = $res->{json}{tokenValue};
like($personal, $token_re, 'create_access_token: a token');
push @tokens, $personal // ();
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $personal });
is($res->{json}{owner}, 'alice', 'whoami of the scoped personal token: its owner');
is_deeply($res->{json}{scopes}, [ 'sources:read', 'tokens:write' ],
	'whoami of the scoped personal token: scopes folded and sorted');
is_deeply($res->{json}{metadata}, { customer => 'acme', tier => 2 },
	'whoami of the scoped personal token: its metadata');

my $list_sql = 'SELECT count(*) FROM iapi_tokens.tokens WHERE owner_role = \'alice\'::regrole';
$before = $node->safe_psql('postgres', $list_sql);
$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 600, scopes => [ 'sources:read', 'sources:raed' ] });
is_error($res, 400, '22023', 'create_access_token with an undefined scope',
	qr/^scope "sources:raed" is not defined$/);
like($res->{json}{hint}, qr/define_scope/, 'an undefined scope: the hint says how to define it');
$res = call(POST => 'create_access_token', claims => $alice,
	body => { lifetimeSeconds => 600, scopes => ['Sources Read'] });
is_error($res, 400, '22023', 'create_access_token with a malformed scope', qr/^invalid scope name/);
for my $bad ([ 'an array', [ 'plan', 'pro' ], 'array' ], [ 'a string', 'pro', 'string' ],
	[ 'a number', 42, 'number' ])
{
	my ($name, $metadata, $type) = @$bad;
	$res = call(POST => 'create_access_token', claims => $alice,
		body => { lifetimeSeconds => 600, metadata => $metadata });
	is_error($res, 400, '22023', "create_access_token with metadata that is $name",
		qr/^metadata must be a JSON object$/);
	is($res->{json}{details}, "It was a JSON $type.", "metadata that is $name: the details say what it was");
}
is($node->safe_psql('postgres', $list_sql), $before, 'the refused creations made no token');

# --- revoke_leaked, as a secret scanner ------------------------------------

is($node->safe_psql('postgres', q{
	SELECT string_agg(p.proname, ',' ORDER BY p.proname)
	  FROM pg_proc p
	 WHERE p.pronamespace = 'iapi_rest'::regnamespace
	   AND has_function_privilege('iapi_leak_reporter', p.oid, 'EXECUTE')}),
	'authenticate,revoke_leaked',
	'iapi_leak_reporter may call revoke_leaked and the pre-request, no other route');

my ($valid_id, $valid) = new_source_token($sid_leak, 'to be reported');
my ($old_id, $old) = new_source_token($sid_leak, 'revoked before the report');
$res = call(POST => 'revoke_token', claims => $client,
	body => { source_id => $sid_leak, token_id => $old_id });
is($res->{status}, 200, 'the second token is revoked first');
my $invalid = forged($valid);
my $report = { tokens => [ $valid, $invalid, $old ] };

# The other roles may not report: PostgREST's 42501, and nothing is revoked.
$res = call(POST => 'revoke_leaked', body => $report);
is_error($res, 401, '42501', 'revoke_leaked without a JWT (iapi_anon)');
is($res->{headers}{'www-authenticate'}, 'Bearer', 'revoke_leaked without a JWT: WWW-Authenticate');
not_echoed($res, $valid, 'revoke_leaked without a JWT');
$res = call(POST => 'revoke_leaked', claims => $client, body => $report);
is_error($res, 403, '42501', 'revoke_leaked as iapi_source_admin');
not_echoed($res, $valid, 'revoke_leaked as iapi_source_admin');
$res = call(POST => 'revoke_leaked', claims => $alice, body => $report);
is_error($res, 403, '42501', 'revoke_leaked as a token user');
$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $valid });
is($res->{status}, 200, 'the refused reports revoked nothing');
is(token_state($valid_id), '||f|', 'the reported token is still active');

# The reporter: one of the three was valid.
$res = call(POST => 'revoke_leaked', claims => $reporter, body => $report);
is_success($res, 200, 'revoke_leaked as iapi_leak_reporter: valid, invalid, already revoked');
is($api->last_access_mode, 'READ WRITE', 'revoke_leaked: a POST of a VOLATILE function is read-write');
is_deeply($res->{json}, { revoked => 1 }, 'revoke_leaked: {"revoked": 1}');
not_echoed($res, $valid, 'revoke_leaked');

$res = call(GET => 'whoami', headers => { 'X-Api-Key' => $valid });
is_error($res, 401, 'PT401', 'the reported key afterwards', qr/not valid/);
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="iapi_tokens", error="invalid_token"',
	'the reported key afterwards: the challenge');
is(token_state($valid_id), '||t|leaked', 'the reported token: revoked, as leaked');
is(token_state($old_id), '||t|', 'the token revoked before: unchanged');
is($node->safe_psql('postgres',
		"SELECT action, acting_role, session_role, source_id FROM iapi_tokens.audit WHERE token_id = $valid_id ORDER BY id DESC LIMIT 1"),
	"leaked|iapi_leak_reporter|iapi_authenticator|$sid_leak",
	'the audit row: action leaked, acting role iapi_leak_reporter');
is($node->safe_psql('postgres', q{SELECT count(*) FROM iapi_tokens.audit WHERE action = 'leaked'}),
	'1', 'one leaked row: none for the invalid or the already revoked token');

$res = call(POST => 'revoke_leaked', claims => $reporter, body => $report);
is_deeply($res->{json}, { revoked => 0 }, 'the same report again: {"revoked": 0}');

# Up to 1000 tokens, as a scanner batches them; 1001 is a 400 that revokes
# nothing.  The others are token-shaped, with a bad checksum.
my ($batch_id, $batch_valid) = new_source_token($sid_leak, 'in a batch');
my @filler = map { sprintf('iapi_%039d', $_) } 1 .. 1000;
$res = call(POST => 'revoke_leaked', claims => $reporter,
	body => { tokens => [ $batch_valid, @filler ] });
is_error($res, 400, 'PT400', 'revoke_leaked with 1001 tokens', qr/at most 1000 tokens/);
not_echoed($res, $batch_valid, 'revoke_leaked with 1001 tokens');
is(token_state($batch_id), '||f|', '1001 tokens: nothing is revoked');
$res = call(POST => 'revoke_leaked', claims => $reporter,
	body => { tokens => [ $batch_valid, @filler[ 1 .. 999 ] ] });
is_success($res, 200, 'revoke_leaked with 1000 tokens');
is_deeply($res->{json}, { revoked => 1 }, 'revoke_leaked with 1000 tokens: {"revoked": 1}');
is(token_state($batch_id), '||t|leaked', '1000 tokens: the valid one is revoked');

# --- No token in the server log --------------------------------------------

$api->dbh->disconnect;
$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/"iapi_rest"\."revoke_leaked"/, 'the log holds the statements');
like($log, qr/at most 1000 tokens/, 'the log holds the errors');
for my $tok (@tokens, $invalid)
{
	unlike($log, qr/\Q$tok\E/, 'no key and no reported token in the server log');
}
unlike($log, qr/iapi_[0-9A-Za-z]{20,}/, 'nothing token-shaped in the server log');

done_testing();
