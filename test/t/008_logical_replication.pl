# Copyright: iapi_tokens authors.
#
# The extension's tables published with logical replication.  The
# subscriber's copy is a read replica: the publisher enforces the caps and
# writes the audit trail, and both arrive as data.  So the triggers stay as
# installed, which means they do not fire for replicated changes (they are
# not ENABLE REPLICA or ALWAYS): enabling them would record every audit
# event twice and re-check the caps against rows applied in another order.
#
# Checked here: the initial copy, tokens of both families verifying on the
# subscriber, a revocation and a rotation arriving, the subscriber's audit
# trail equal to the publisher's (no event of its own), and the caps
# holding on the publisher.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $publisher = PostgreSQL::Test::Cluster->new('publisher');
$publisher->init(allows_streaming => 'logical');
$publisher->start;
my $subscriber = PostgreSQL::Test::Cluster->new('subscriber');
$subscriber->init;
$subscriber->start;

for my $node ($publisher, $subscriber)
{
	$node->safe_psql('postgres', 'CREATE ROLE regress_owner');
	$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens');
	$node->safe_psql('postgres',
		'GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_owner');
}

# Data before the subscription: it arrives with the initial copy.
my $s1 = $publisher->safe_psql('postgres', q{SELECT iapi_tokens.create_source('first')});
my ($t1, $tok1) = split /\|/,
  $publisher->safe_psql('postgres', "SELECT id, access_token FROM iapi_tokens.generate_token($s1)");
my ($uuid, $ptok) = split /\|/, $publisher->safe_psql('postgres',
	q{SET ROLE regress_owner; SELECT token_id, token_value FROM iapi_tokens.create_access_token(3600, 'p')});

$publisher->safe_psql('postgres',
	'CREATE PUBLICATION iapi FOR TABLE iapi_tokens.sources, iapi_tokens.tokens,
		iapi_tokens.audit, iapi_tokens.owner_limits');
my $publisher_conn = $publisher->connstr . ' dbname=postgres';
$subscriber->safe_psql('postgres',
	"CREATE SUBSCRIPTION iapi CONNECTION '$publisher_conn' PUBLICATION iapi");
$subscriber->wait_for_subscription_sync($publisher, 'iapi');

is($subscriber->safe_psql('postgres', "SELECT token_id FROM iapi_tokens.verify_token('$tok1')"),
	$t1, 'a source token from the initial copy verifies on the subscriber');
is($subscriber->safe_psql('postgres', "SELECT access_token_id FROM iapi_tokens.verify_token('$ptok')"),
	$uuid, 'a personal token from the initial copy verifies on the subscriber');

# Changes after the subscription: a second token (the source is now full),
# a revocation, and a rotation with grace (full again).
my ($t2, $tok2) = split /\|/,
  $publisher->safe_psql('postgres', "SELECT id, access_token FROM iapi_tokens.generate_token($s1)");
$publisher->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s1, $t1)");
my ($t3, $tok3) = split /\|/,
  $publisher->safe_psql('postgres', "SELECT id, access_token FROM iapi_tokens.rotate_token($s1, $t2, '1 hour')");
$publisher->wait_for_catchup('iapi');

is($subscriber->safe_psql('postgres', "SELECT count(*) FROM iapi_tokens.verify_token('$tok1')"),
	'0', 'a revocation on the publisher reaches the subscriber');
is($subscriber->safe_psql('postgres', "SELECT token_id FROM iapi_tokens.verify_token('$tok3')"),
	$t3, 'a rotated token verifies on the subscriber');
is($subscriber->safe_psql('postgres', "SELECT token_id FROM iapi_tokens.verify_token('$tok2')"),
	$t2, 'the token in its grace period verifies too');

my $audit_sql = 'SELECT string_agg(id || action || token_id, \',\' ORDER BY id) FROM iapi_tokens.audit';
my $published_audit = $publisher->safe_psql('postgres', $audit_sql);
like($published_audit, qr/create.*revoke.*rotate.*create/, 'the publisher recorded its events');
is($subscriber->safe_psql('postgres', $audit_sql), $published_audit,
	"the subscriber's audit trail is the publisher's: no event of its own");
is( $subscriber->safe_psql('postgres',
		q{SELECT count(*) FROM pg_trigger
		   WHERE tgrelid IN ('iapi_tokens.tokens'::regclass, 'iapi_tokens.sources'::regclass,
							 'iapi_tokens.audit'::regclass)
			 AND NOT tgisinternal AND tgenabled <> 'O'}),
	'0', 'no trigger of the extension is enabled for replicated changes');

my ($ret, $out, $err) = $publisher->psql('postgres',
	"SELECT * FROM iapi_tokens.generate_token($s1)");
like($err, qr/already has 2 active tokens/, 'the publisher still enforces the cap');
is($subscriber->safe_psql('postgres', 'SELECT count(*) FROM iapi_tokens.check_tokens()'),
	'0', 'check_tokens() finds nothing wrong on the subscriber');

done_testing();
