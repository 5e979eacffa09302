# Copyright: iapi_tokens authors.
#
# No plaintext token reaches the server log, on any path that sees one:
# generation (including failed generation), verification of good and bad
# tokens (also as a bind parameter), revocation, the cap error, argument
# errors, and verification while the token's row is locked; once more with
# log_min_messages = debug5.  Then the 1.1 paths: both rotations, personal
# tokens, their errors and the limits, purge, and the audit trail; and
# revoke_leaked, whose reported tokens, valid or not, reach no log either.
#
# Statements are not logged (log_statement = none), and no statement whose
# text holds a token fails, so any token in the log was put there by the
# extension itself.
#
# Then auto_explain (log_min_duration 0, nested statements, verbose), which
# prints the plan of every statement the executor runs, including the
# constants a custom plan makes of parameters.  In a second cluster: with
# rest/roles.sql as shipped, no token of PostgREST's authenticator reaches
# the log, neither through auto_explain nor with log_statement = all for it;
# and with auto_explain on for every role, no statement the extension runs,
# core or REST layer, holds a token (see "auto_explain" below for how the
# caller's own statements are told apart).  Both include a secret scanner's
# report to POST /rpc/revoke_leaked: a valid, a forged and a made-up token,
# then more than 1000 (a 400).  A third cluster loads auto_explain only
# after rest/roles.sql ran.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use DBI;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PostgrestReplay;
use Test::More;

my $token_re = qr/^iapi_[0-9A-Za-z]{39}$/;

# This node runs without shared_preload_libraries, so that the fallback's
# in-transaction write is checked too (010 runs with it): each session's
# first verification warns, as documented.  That warning holds no token.
my $preload_warning = qr/(?:psql:\S+:\d+: )?WARNING:  (?:55000: )?iapi_tokens is not in shared_preload_libraries(?:\n(?:psql:\S+:\d+: )?(?:DETAIL|HINT|LOCATION):  [^\n]*)*\n?/;

sub without_preload_warning
{
	my ($stderr) = @_;
	$stderr =~ s/$preload_warning//g;
	return $stderr;
}

my $node = PostgreSQL::Test::Cluster->new('logs');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_statement = none
log_min_messages = debug1
log_error_verbosity = verbose
log_connections = on
log_disconnections = on
log_min_error_statement = error
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens');
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');

my @tokens;    # every plaintext the test has seen

sub generate
{
	my ($source, $args) = @_;
	$args = defined $args ? ", $args" : '';
	my ($id, $token) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT id, access_token FROM iapi_tokens.generate_token($source$args)");
	like($token, $token_re, "generate_token($source$args) returns a token");
	push @tokens, $token;
	return ($id, $token);
}

# Runs SQL expected to fail; returns stderr.
sub fails
{
	my ($sql, $sqlstate, $name) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	is($ret, 3, "$name fails");
	like($stderr, qr/ERROR:  $sqlstate:/, "$name raises $sqlstate");
	return ($stderr, $stdout);
}

# Verifies a token, with last_used_interval = 0 (as superuser) or with the
# defaults as the ordinary role "app"; checks success, silence and row count.
sub verify_count
{
	my ($token, $name, $expected, $as_app) = @_;
	my $sql = "SELECT count(*) FROM iapi_tokens.verify_token('$token');";
	my %params;
	if ($as_app)
	{
		$params{connstr} = $node->connstr('postgres') . ' user=app';
	}
	else
	{
		$sql = "SET iapi_tokens.last_used_interval = 0;\n$sql";
	}
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql, %params);
	is($ret,    0,         "verify_token($name) succeeds");
	is(without_preload_warning($stderr), '',        "verify_token($name) raises nothing");
	is($stdout, $expected, "verify_token($name) returns $expected row(s)");

	# check_token tells the cases apart, and is as silent.
	$sql =~ s/SELECT count\(\*\) FROM iapi_tokens.verify_token\(('.*')\);/SELECT status FROM iapi_tokens.check_token($1);/s;
	($ret, $stdout, $stderr) = $node->psql('postgres', $sql, %params);
	is($ret, 0, "check_token($name) succeeds");
	is(without_preload_warning($stderr), '', "check_token($name) raises nothing");
	is($stdout, $expected ? 'valid' : 'invalid', "check_token($name) says so");
	return;
}

my $s1 = $node->safe_psql('postgres', q{SELECT iapi_tokens.create_source('log_src')});
my $s2 = $node->safe_psql('postgres', q{SELECT iapi_tokens.create_source('log_src_two')});
my $s3 = $node->safe_psql('postgres', q{SELECT iapi_tokens.create_source('log_src_three')});

# ---------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------

my ($t1_id, $t1) = generate($s1, q{'first'});
my ($t2_id, $t2) = generate($s1, q{'second'});
my ($t3_id, $t3) = generate($s2, q{'short-lived', '1 second'});
my ($t4_id, $t4) = generate($s2, q{NULL, '1 year'});

# A token whose insert was rolled back: well-formed but unknown.
my $unknown = $node->safe_psql('postgres', qq{
	BEGIN;
	SELECT access_token FROM iapi_tokens.generate_token($s3);
	ROLLBACK;
});
like($unknown, $token_re, 'a rolled-back generate_token returns a token');
push @tokens, $unknown;

# The cap error right after a generation in the same transaction: the
# plaintext of the refused token exists in the backend when the error is
# raised, and the error carries a CONTEXT.  The replacement token generated
# just before is printed, then rolled back; it is a plaintext too.
{
	my ($cap_err, $cap_out) = fails(qq{
	BEGIN;
	SELECT iapi_tokens.revoke_token($s1, $t1_id);
	SELECT access_token FROM iapi_tokens.generate_token($s1, 'replacement');
	SELECT access_token FROM iapi_tokens.generate_token($s1, 'one too many');
	COMMIT;
}, '23514', 'a third active token in one transaction');
	like($cap_err, qr/already has 2 active tokens/,
		'the cap error message reaches the client');
	my @seen = grep { /^iapi_/ } split /\n/, $cap_out;
	is(scalar(@seen), 1,
		'the transaction produced one token before the cap error');
	like($seen[0] // '', $token_re, '... a well-formed one');
	push @tokens, @seen;
}
is($node->safe_psql('postgres',
		"SELECT count(*) FROM iapi_tokens.tokens WHERE source_id = $s1 AND revoked_at IS NULL"),
	'2', 'the failed transactions left the source with its two tokens');

# Straight cap error, no transaction block.
fails("SELECT access_token FROM iapi_tokens.generate_token($s1)",
	'23514', 'generate_token for a full source');
$node->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s1, $t1_id)");

# Failed generations of other kinds.
fails("SELECT access_token FROM iapi_tokens.generate_token(NULL)",
	'22004', 'generate_token(NULL)');
fails("SELECT access_token FROM iapi_tokens.generate_token(999999)",
	'42704', 'generate_token for an unknown source');
fails("SELECT access_token FROM iapi_tokens.generate_token($s2, repeat('x', 256))",
	'22001', 'generate_token with a too-long description');
fails("SELECT access_token FROM iapi_tokens.generate_token($s2, NULL, '-1 day')",
	'22023', 'generate_token with a negative lifetime');
fails("SELECT access_token FROM iapi_tokens.generate_token($s2, NULL, '0 seconds')",
	'22023', 'generate_token with a zero lifetime');
fails("LOAD 'iapi_tokens'; SET iapi_tokens.token_prefix = 'bad prefix'",
	'22023', 'an invalid token prefix');

# A token made with another prefix, by a superuser.
{
	my ($id, $token) = split /\|/, $node->safe_psql('postgres', qq{
		SET iapi_tokens.token_prefix = 'logtest_';
		SELECT id, access_token FROM iapi_tokens.generate_token($s3);
	});
	like($token, qr/^logtest_[0-9A-Za-z]{39}$/, 'generate_token honours token_prefix');
	push @tokens, $token;
	verify_count($token, 'a token with another prefix', '1');
	$node->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s3, $id)");
}

# Permission errors: an ordinary role may not generate.
fails("SET ROLE app; SELECT access_token FROM iapi_tokens.generate_token($s2)",
	'42501', 'generate_token as a non-superuser');

# ---------------------------------------------------------------------------
# Verification of every kind of input.
# ---------------------------------------------------------------------------

$node->poll_query_until('postgres',
	"SELECT expires_at < clock_timestamp() FROM iapi_tokens.tokens WHERE id = $t3_id")
  or die 'the one-second token never expired';

my $bad_checksum = $t2;
substr($bad_checksum, -1, 1) = substr($t2, -1, 1) eq 'A' ? 'B' : 'A';
my $bad_body = $t2;
substr($bad_body, 12, 1) = substr($t2, 12, 1) eq 'A' ? 'B' : 'A';

verify_count($t2,           'a valid token',            '1');
verify_count($t4,           'a valid expiring token',   '1');
verify_count($t1,           'a revoked token',          '0');
verify_count($t3,           'an expired token',         '0');
verify_count($unknown,      'an unknown token',         '0');
verify_count($bad_checksum, 'a bad checksum',           '0');
verify_count($bad_body,     'an altered body',          '0');
verify_count(substr($t2, 0, 30), 'a truncated token',   '0');
verify_count($t2 . $t2,     'a doubled token',          '0');
verify_count('iapi_' . ('!' x 39), 'a malformed token', '0');
verify_count('',            'an empty string',          '0');
verify_count('x' x 100000,  'a huge string',            '0');
verify_count($t2, 'a valid token as a non-superuser', '1', 1);
verify_count($t4, 'a valid token as a non-superuser, default interval', '1', 1);
verify_count($t1, 'a revoked token as a non-superuser', '0', 1);

# The token passed as a bind parameter through the extended protocol
# (pgbench -M extended sends :tok as $1), once succeeding and once inside a
# statement that fails after verify_token has run.
$node->pgbench(
	'--no-vacuum --transactions=1 --client=1 --protocol=extended',
	0,
	[qr/processed: 1\/1/],
	[qr/^(?:$preload_warning)?$/],
	'verify_token with the token as a bind parameter',
	{
		'003_verify_bind' => q{
SELECT count(*) FROM iapi_tokens.verify_token(:tok);
}
	},
	'--define', "tok=$t2");
$node->pgbench(
	'--no-vacuum --transactions=1 --client=1 --protocol=extended',
	2,
	[],
	[qr/division by zero/],
	'a failing statement with the token as a bind parameter',
	{
		'003_verify_bind_fail' => q{
SELECT (SELECT count(*) FROM iapi_tokens.verify_token(:tok)) / 0;
}
	},
	'--define', "tok=$t4");

# ---------------------------------------------------------------------------
# verify_token while another session holds the token's row lock: the
# last_used_at write must neither wait (lock_timeout would fire) nor turn
# into an error; verification still succeeds.
# ---------------------------------------------------------------------------

{
	my $locker = $node->background_psql('postgres');
	$locker->query_safe(
		"BEGIN; SELECT id FROM iapi_tokens.tokens WHERE id = $t2_id FOR UPDATE;");
	my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{
		\\set VERBOSITY verbose
		SET iapi_tokens.last_used_interval = 0;
		SET lock_timeout = '200ms';
		SELECT count(*) FROM iapi_tokens.verify_token('$t2');
	});
	is($ret, 0, 'verify_token with its token row locked succeeds');
	is(without_preload_warning($stderr), '', 'verify_token with its token row locked raises nothing');
	is($stdout, '1', 'verify_token with its token row locked finds the token');
	$locker->query_safe('ROLLBACK;');
	$locker->quit;
}

# ---------------------------------------------------------------------------
# The same paths with the most verbose server logging, set per session.
# ---------------------------------------------------------------------------

{
	my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{
		SET log_min_messages = debug5;
		SET iapi_tokens.last_used_interval = 0;
		SELECT count(*) FROM iapi_tokens.verify_token('$t2');
		SELECT count(*) FROM iapi_tokens.verify_token('$t1');
		SELECT count(*) FROM iapi_tokens.verify_token('$bad_checksum');
		SELECT access_token FROM iapi_tokens.generate_token($s1, 'debug5');
	});
	is($ret, 0, 'verification and generation at debug5 succeed');
	is(without_preload_warning($stderr), '', 'verification and generation at debug5 raise nothing');
	my @lines = split /\n/, $stdout;
	is(join(',', @lines[0 .. 2]), '1,0,0', 'verification at debug5 gives the right answers');
	like($lines[3] // '', $token_re, 'generation at debug5 returns a token');
	push @tokens, $lines[3] if defined $lines[3];

	fails("SET log_min_messages = debug5; SELECT access_token FROM iapi_tokens.generate_token($s1)",
		'23514', 'the cap error at debug5');
}

# ---------------------------------------------------------------------------
# Revocation, listing, deletion, and their errors.
# ---------------------------------------------------------------------------

$node->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s1, $t2_id)");
fails("SELECT iapi_tokens.revoke_token($s1, $t2_id)",
	'55000', 'revoking a revoked token');
fails("SELECT iapi_tokens.revoke_token($s2, $t2_id)",
	'42704', 'revoking another source\'s token');
fails("SELECT iapi_tokens.revoke_token($s1, NULL)",
	'22004', 'revoke_token with a NULL token id');
fails("SELECT iapi_tokens.revoke_token(999999, $t2_id)",
	'42704', 'revoke_token for an unknown source');
$node->safe_psql('postgres', "SELECT * FROM iapi_tokens.list_tokens($s2)");
$node->safe_psql('postgres', "SELECT * FROM iapi_tokens.list_token_details($s2, true)");
$node->safe_psql('postgres', "SELECT iapi_tokens.delete_source($s2)");
fails("SELECT iapi_tokens.delete_source($s2)",
	'55000', 'deleting a deleted source');
fails("SELECT access_token FROM iapi_tokens.generate_token($s2)",
	'55000', 'generate_token for a deleted source');
fails("SELECT iapi_tokens.create_source('Bad Name')",
	'22023', 'create_source with a bad name');
verify_count($t4, 'a token of a deleted source', '0');

# ---------------------------------------------------------------------------
# 1.1: rotation of source tokens, personal tokens, their errors and purge.
# ---------------------------------------------------------------------------

my $s4 = $node->safe_psql('postgres', q{SELECT iapi_tokens.create_source('log_src_four')});
my ($r1_id, $r1) = generate($s4, q{'to rotate'});
my ($r2_id, $r2) = split /\|/, $node->safe_psql('postgres',
	"SELECT id, access_token FROM iapi_tokens.rotate_token($s4, $r1_id, '1 hour')");
like($r2, $token_re, 'rotate_token returns a token');
push @tokens, $r2;
verify_count($r1, 'a token in its rotation grace period', '1');
verify_count($r2, 'a rotated-in token', '1');
fails("SELECT access_token FROM iapi_tokens.generate_token($s4)",
	'23514', 'generate_token during a rotation grace period');
fails("SELECT access_token FROM iapi_tokens.rotate_token($s4, $r1_id)",
	'55000', 'rotating a token twice');
fails("SELECT access_token FROM iapi_tokens.rotate_token($s4, $r2_id, '-1 hour')",
	'22023', 'rotate_token with a negative grace');
{
	# Refused after minting: the replacement existed in the backend.
	$node->safe_psql('postgres', "SELECT iapi_tokens.revoke_token($s4, $r1_id)");
	my ($r3_id) = generate($s4, q{'third'});
	fails("SELECT access_token FROM iapi_tokens.rotate_token($s4, $r2_id, '1 hour')",
		'23514', 'a rotation with grace on a full source');
}

$node->safe_psql('postgres', q{
	CREATE ROLE owner LOGIN;
	GRANT EXECUTE ON FUNCTION
		iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
		iapi_tokens.list_access_tokens(),
		iapi_tokens.get_access_token(uuid),
		iapi_tokens.delete_access_token(uuid),
		iapi_tokens.rotate_access_token(uuid, interval)
	TO owner;
	ALTER ROLE owner SET iapi_tokens.max_lifetime = '1d';
});
my %as_owner = (connstr => $node->connstr('postgres') . ' user=owner');
my ($p1, $p1_id) = split /\|/, $node->safe_psql('postgres',
	q{SELECT token_value, token_id FROM iapi_tokens.create_access_token(3600, 'mine')},
	%as_owner);
like($p1, $token_re, 'create_access_token returns a token');
push @tokens, $p1;
my ($p2, $p2_id) = split /\|/, $node->safe_psql('postgres',
	"SELECT token_value, token_id FROM iapi_tokens.rotate_access_token('$p1_id', '1 minute')",
	%as_owner);
like($p2, $token_re, 'rotate_access_token returns a token');
push @tokens, $p2;
verify_count($p1, 'a personal token in its grace period', '1', 1);
verify_count($p2, 'a personal token', '1', 1);
$node->safe_psql('postgres', "SELECT * FROM iapi_tokens.list_access_tokens()", %as_owner);
$node->safe_psql('postgres', "SELECT iapi_tokens.delete_access_token('$p2_id')", %as_owner);
verify_count($p2, 'a deleted personal token', '0', 1);
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT token_value FROM iapi_tokens.create_access_token(-1)",
		%as_owner);
	is($ret, 3, 'a never-expiring token under max_lifetime fails');
	like($stderr, qr/ERROR:  22023: tokens that never expire are not allowed/,
		'... with 22023');
	($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT * FROM iapi_tokens.get_access_token('$p2_id')",
		%as_owner);
	like($stderr, qr/ERROR:  42704: access token \Q$p2_id\E does not exist/,
		'a deleted personal token does not exist');
}
fails(qq{SET iapi_tokens.max_tokens_per_owner = 1;
	SET ROLE owner;
	SELECT token_value FROM iapi_tokens.create_access_token(60, 'over the limit')},
	'23514', 'the per-owner limit');
is($node->safe_psql('postgres', 'SELECT iapi_tokens.purge_tokens(\'0\') > 0'),
	't', 'purge_tokens deletes the revoked tokens');

# revoke_leaked: a reported token, valid or not, reaches no log either.  Its
# plaintexts never reach a statement; only their hashes do.
{
	my $leak_src = $node->safe_psql('postgres', q{SELECT iapi_tokens.create_source('leak_src')});
	my ($leak_id, $leaked) = generate($leak_src);
	(my $never_made = $leaked) =~ s/^(iapi_)(.)/$1 . ($2 eq 'A' ? 'B' : 'A')/e;
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT iapi_tokens.revoke_leaked(ARRAY['$leaked', '$never_made', 'junk'])");
	is($stdout, '1', 'revoke_leaked revokes the one real token among three');
	is(without_preload_warning($stderr), '', 'revoke_leaked raises nothing');
	verify_count($leaked, 'a leaked token', '0', 1);
}

# The audit trail holds nothing token-shaped either.
unlike($node->safe_psql('postgres', 'SELECT string_agg(a::text, E\'\n\') FROM iapi_tokens.audit a'),
	qr/(?:iapi|logtest)_[0-9A-Za-z]{20,}/,
	'the audit trail holds nothing token-shaped');

# ---------------------------------------------------------------------------
# The log.
# ---------------------------------------------------------------------------

# Make sure everything has been written: stop the server.
$node->stop;

my $log = slurp_file($node->logfile);

# The log was really being written, at the configured verbosity.
like($log, qr/ERROR:  23514: source $s1 already has 2 active tokens, the maximum/,
	'the log holds the cap error');
like($log, qr/ERROR:  22001: token description is too long/,
	'the log holds the description error');
like($log, qr/LOCATION:  /, 'the log is verbose');
like($log, qr/DEBUG:  /, 'the log has debug messages');
like($log, qr/connection authorized: user=app/, 'the log has connections');
unlike($log, qr/LOG:  (?:00000: )?statement: /, 'statements are not logged');

is(scalar(@tokens), 14, 'fourteen plaintext tokens were seen');
my %seen;
foreach my $token (grep { !$seen{$_}++ } @tokens)
{
	(my $shown = $token) =~ s/^([a-z]+_[0-9A-Za-z]{4}).*/$1.../;
	my $random = substr($token, length($token) - 39, 33);
	unlike($log, qr/\Q$token\E/, "the log does not hold token $shown");
	unlike($log, qr/\Q$random\E/, "the log does not hold the random part of token $shown");
	unlike($log, qr/\Q$bad_checksum\E/, "the log does not hold a bad-checksum variant")
	  if $token eq $t2;
}
# Nor any other token-shaped string, such as the plaintext of a refused
# generation the test never saw.
unlike($log, qr/(?:iapi|logtest)_[0-9A-Za-z]{20,}/,
	'the log holds nothing token-shaped');

# ===========================================================================
# auto_explain.  With log_nested_statements and log_verbose it logs the plan
# of every statement the executor runs, at any depth, and a custom plan
# prints each parameter's value as a constant: a PL/pgSQL variable that a
# query uses, or a bind parameter of the client.  Two kinds of statement
# reach it:
#   * the extension's own, nested in a call (a CONTEXT line says where):
#     none of them may ever hold a token, whatever the settings;
#   * the caller's own top-level statement (no CONTEXT), which holds the
#     token if the caller put it there as a literal or a bind parameter.
#     That is the caller's configuration, not the extension's doing.
# ===========================================================================

my $shape_re = qr/(?:iapi|logtest)_[0-9A-Za-z]{20,}/;

my $explain_conf = q{
log_statement = none
log_line_prefix = '%m [%p] '
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_verbose = on
};

# A log excerpt is fit for a diagnostic once its tokens are cut short.
sub redacted
{
	my ($text) = @_;
	$text =~ s/((?:iapi|logtest)_[0-9A-Za-z]{4})[0-9A-Za-z]{16,}/$1.../g;
	return $text;
}

# Whether text holds a token: anything token-shaped, or the random part of a
# token the test has seen.
sub holds_token
{
	my ($text, @known) = @_;
	return 1 if $text =~ $shape_re;
	foreach my $token (@known)
	{
		return 1 if index($text, substr($token, length($token) - 39, 33)) >= 0;
	}
	return 0;
}

# The log as messages: a primary line (LOG, ERROR, ...) with its continuation
# lines, and the DETAIL, HINT, CONTEXT, STATEMENT, QUERY and LOCATION lines
# its process wrote with it.  An auto_explain message is a plan: {query} is
# the first line of its Query Text, {context} says it ran nested.
sub log_messages
{
	my ($text) = @_;
	my (@messages, %last_of_pid, $current);
	foreach my $line (split /\n/, $text)
	{
		if ($line =~ /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] ([A-Z0-9]+):  (.*)$/)
		{
			my ($pid, $severity, $rest) = ($1, $2, $3);
			if ($severity =~ /^(?:DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION)$/
				&& $last_of_pid{$pid})
			{
				$current = $last_of_pid{$pid};
				$current->{context} = 1 if $severity eq 'CONTEXT';
				$current->{part} = $severity;
			}
			else
			{
				$current = {
					severity => $severity,
					part => 'primary',
					context => 0,
					plan => ($severity eq 'LOG' && $rest =~ /^duration: [0-9.]+ ms  plan:$/)
				};
				push @messages, $current;
				$last_of_pid{$pid} = $current;
			}
		}
		elsif (!$current)
		{
			$current = { severity => 'none', part => 'primary', context => 0, plan => 0 };
			push @messages, $current;
		}
		elsif ($current->{plan} && $current->{part} eq 'primary'
			&& !defined $current->{query} && $line =~ /^\tQuery Text: (.*)$/)
		{
			$current->{query} = $1;
		}
		$current->{text} .= "$line\n";
	}
	return @messages;
}

# Splits the messages of a log excerpt that hold a token into the caller's
# (a top-level plan whose own text has the token, or bind parameters) and
# the rest, which the extension would have put there.
sub token_messages
{
	my ($text, @known) = @_;
	my (@callers, @others);
	foreach my $m (grep { holds_token($_->{text}, @known) } log_messages($text))
	{
		if ($m->{plan} && !$m->{context} && defined $m->{query}
			&& ($m->{query} =~ /\$[0-9]/ || holds_token($m->{query}, @known)))
		{
			push @callers, $m;
		}
		else
		{
			push @others, $m;
		}
	}
	return (\@callers, \@others);
}

sub connect_as
{
	my ($node, $user) = @_;
	return DBI->connect(
		'dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
		$user, '',
		{ AutoCommit => 1, RaiseError => 1, PrintError => 0, pg_server_prepare => 1 });
}

sub forged
{
	my ($token) = @_;
	return substr($token, 0, -1) . (substr($token, -1) eq 'A' ? 'B' : 'A');
}

my $xnode = PostgreSQL::Test::Cluster->new('explain');
$xnode->init;
$xnode->append_conf('postgresql.conf',
	"session_preload_libraries = 'auto_explain'\n$explain_conf");
$xnode->start;

$xnode->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');
is($xnode->safe_psql('postgres',
		"SELECT count(*) > 0 FROM pg_settings WHERE name LIKE 'auto_explain.%';\n"
		  . "\\set authenticator_password 'not-used-with-trust'\n"
		  . slurp_file("$FindBin::RealBin/../../rest/roles.sql")),
	't', 'rest/roles.sql runs in a session with auto_explain loaded');
$xnode->safe_psql(
	'postgres', q{
CREATE ROLE alice NOLOGIN IN ROLE iapi_token_user;
GRANT alice TO iapi_authenticator;
CREATE ROLE app LOGIN;
CREATE ROLE owner LOGIN;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.rotate_access_token(uuid, interval)
TO owner;
});
is($xnode->safe_psql('postgres', 'SHOW auto_explain.log_verbose'), 'on',
	'auto_explain: loaded in every session');

# --- rest/roles.sql as shipped ----------------------------------------------
#
# The authenticator's statements are the caller's own: PostgREST sends
# request.headers, X-Api-Key included, as a bind parameter, and a service may
# call verify_token($1) itself.  rest/roles.sql turns auto_explain off for
# that role, which only a superuser can undo, so that none of its statements
# reaches the log, while auto_explain goes on logging for other roles.
sub roles_sql_keeps_tokens_out
{
	my ($node, $name) = @_;
	my $client = { role => 'iapi_source_admin', stitch_client_id => 4243 };
	my $offset = -s $node->logfile;
	my @known;

	# Every statement of the authenticator is logged: rest/roles.sql keeps
	# their bind parameters out (log_parameter_max_length and
	# log_parameter_max_length_on_error = 0).
	$node->safe_psql('postgres', q{ALTER ROLE iapi_authenticator SET log_statement = 'all'});

	my $dbh = connect_as($node, 'iapi_authenticator');
	is($dbh->selectrow_array('SHOW auto_explain.log_min_duration'), '-1',
		"$name: auto_explain is off for the authenticator");
	foreach my $sql ('SET auto_explain.log_min_duration = 0',
		q{SELECT set_config('auto_explain.log_min_duration', '0', false)},
		'RESET auto_explain.log_min_duration')
	{
		my $done = eval { $dbh->do($sql); 1 };
		ok(!$done && $dbh->state eq '42501',
			"$name: the authenticator may not undo it: $sql");
	}
	is($dbh->selectrow_array('SHOW auto_explain.log_min_duration'), '-1',
		"$name: auto_explain is still off for the authenticator");

	my $sid = $node->safe_psql('postgres',
		"SELECT iapi_tokens.create_source('roles_sql_$offset', NULL, 4243)");
	my $token = $node->safe_psql('postgres',
		"SELECT access_token FROM iapi_tokens.generate_token($sid)");
	like($token, $token_re, "$name: a source token");
	push @known, $token;

	# verify_token($1) and authenticate($1), straight from the authenticator.
	is($dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.verify_token($1)',
			undef, $token),
		1, "$name: verify_token(\$1) as the authenticator");
	is($dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.verify_token($1)',
			undef, forged($token)),
		0, "$name: verify_token(\$1) of a forged token as the authenticator");
	$dbh->begin_work;
	is($dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.authenticate($1)',
			undef, $token),
		1, "$name: authenticate(\$1) as the authenticator");
	$dbh->commit;
	$dbh->disconnect;

	# Requests through PostgREST, with the key in request.headers.
	my $api = PostgrestReplay->new(
		host => $node->host,
		port => $node->port,
		dbname => 'postgres',
		user => 'iapi_authenticator');
	my $res = $api->request(method => 'GET', path => '/rpc/whoami',
		headers => { 'X-Api-Key' => $token });
	is($res->{status}, 200, "$name: GET /rpc/whoami with an X-Api-Key");
	$res = $api->request(method => 'GET', path => '/rpc/whoami',
		headers => { 'X-Api-Key' => forged($token) });
	is($res->{status}, 401, "$name: GET /rpc/whoami with a forged X-Api-Key");
	$res = $api->request(method => 'POST', path => '/rpc/generate_token_v3',
		claims => $client, body => { source_id => $sid }, headers => { 'X-Api-Key' => $token });
	is($res->{status}, 200, "$name: POST /rpc/generate_token_v3 with an X-Api-Key");
	push @known, $res->{json}{access_token} // ();
	$res = $api->request(method => 'POST', path => '/rpc/create_access_token',
		claims => { role => 'alice' }, body => { lifetimeSeconds => 60 },
		headers => { 'X-Api-Key' => $token });
	is($res->{status}, 201, "$name: POST /rpc/create_access_token with an X-Api-Key");
	push @known, $res->{json}{tokenValue} // ();

	# A secret scanner's report: the valid token, a forged one and a made-up
	# one; then more than 1000, which is refused.
	my $reporter = { role => 'iapi_leak_reporter' };
	$res = $api->request(method => 'POST', path => '/rpc/revoke_leaked',
		claims => $reporter,
		body => { tokens => [ $token, forged($token), 'iapi_' . ('0' x 39) ] });
	is($res->{status}, 200, "$name: POST /rpc/revoke_leaked");
	is($res->{json}{revoked}, 1, "$name: revoke_leaked revokes the valid token");
	$res = $api->request(method => 'POST', path => '/rpc/revoke_leaked',
		claims => $reporter,
		body => { tokens => [ map { sprintf('iapi_%039d', $_) } 1 .. 1001 ] });
	is($res->{status}, 400, "$name: POST /rpc/revoke_leaked with 1001 tokens");
	$api->dbh->disconnect;
	$node->safe_psql('postgres', 'ALTER ROLE iapi_authenticator RESET log_statement');

	# Other roles are still explained.
	$node->safe_psql('postgres', q{SELECT 'other roles are still explained' AS marker});

	my $log = slurp_file($node->logfile, $offset);
	like($log, qr/Query Text: SELECT 'other roles are still explained' AS marker/,
		"$name: auto_explain logs the statements of other roles");
	like($log, qr/LOG:  execute [^\n]*LATERAL "iapi_rest"\."revoke_leaked"\("tokens"/,
		"$name: the authenticator's statements are logged");
	like($log, qr/ERROR:  a report holds at most 1000 tokens/,
		"$name: the refused report is logged");
	ok(!holds_token($log, @known), "$name: no token in the log")
	  or diag(redacted(join('', map { $_->{text} } grep { holds_token($_->{text}, @known) } log_messages($log))));
	return;
}

roles_sql_keeps_tokens_out($xnode, 'rest/roles.sql run with auto_explain loaded');

my @x_tokens;    # every plaintext the auto_explain cluster has seen

# --- Every path, with auto_explain logging for every role ------------------

# auto_explain on for PostgREST's authenticator too, without what
# rest/roles.sql set: the extension's statements must be clean anyway.
$xnode->safe_psql('postgres',
	'ALTER ROLE iapi_authenticator RESET auto_explain.log_min_duration');
my $x_offset = -s $xnode->logfile;

# Core: the functions that return a plaintext.
my $xs = $xnode->safe_psql('postgres', q{SELECT iapi_tokens.create_source('explained')});
my ($xt1_id, $xt1) = split /\|/, $xnode->safe_psql('postgres',
	"SELECT id, access_token FROM iapi_tokens.generate_token($xs, 'explained')");
my ($xt2_id, $xt2) = split /\|/, $xnode->safe_psql('postgres',
	"SELECT id, access_token FROM iapi_tokens.rotate_token($xs, $xt1_id, '1 hour')");
my %x_as_owner = (connstr => $xnode->connstr('postgres') . ' user=owner');
my ($xp1, $xp1_id) = split /\|/, $xnode->safe_psql('postgres',
	q{SELECT token_value, token_id FROM iapi_tokens.create_access_token(3600, 'explained')},
	%x_as_owner);
my ($xp2) = split /\|/, $xnode->safe_psql('postgres',
	"SELECT token_value, token_id FROM iapi_tokens.rotate_access_token('$xp1_id', '1 minute')",
	%x_as_owner);
like($_, $token_re, 'auto_explain: the core returns a token') foreach ($xt1, $xt2, $xp1, $xp2);
push @x_tokens, $xt1, $xt2, $xp1, $xp2;

# Core: the functions that take one, good and bad, as a literal of the
# caller's statement, then as a bind parameter, as a superuser and as an
# ordinary role.
my @x_inputs = (
	[ $xt1, 1 ], [ $xt2, 1 ], [ $xp2, 1 ], [ forged($xt2), 0 ],
	[ 'iapi_' . ('!' x 39), 0 ]);
foreach my $input (@x_inputs)
{
	my ($token, $rows) = @$input;
	is($xnode->safe_psql('postgres',
			"SET iapi_tokens.last_used_interval = 0;\n"
			  . "SELECT count(*) FROM iapi_tokens.verify_token('$token');"),
		$rows, "auto_explain: verify_token of a literal: $rows row(s)");
	is($xnode->safe_psql('postgres',
			"BEGIN;\nSELECT count(*) FROM iapi_tokens.authenticate('$token');\n"
			  . "SELECT count(*) FROM iapi_tokens.current_token();\nCOMMIT;"),
		"$rows\n$rows", "auto_explain: authenticate of a literal: $rows row(s)");
}
my $x_superuser = $xnode->safe_psql('postgres', 'SELECT current_user');
foreach my $user ($x_superuser, 'app')
{
	my $dbh = connect_as($xnode, $user);
	foreach my $input (@x_inputs)
	{
		my ($token, $rows) = @$input;
		is($dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.verify_token($1)',
				undef, $token),
			$rows, "auto_explain: verify_token(\$1) as $user: $rows row(s)");
		$dbh->begin_work;
		is($dbh->selectrow_array('SELECT count(*) FROM iapi_tokens.authenticate($1)',
				undef, $token),
			$rows, "auto_explain: authenticate(\$1) as $user: $rows row(s)");
		$dbh->commit;
	}
	$dbh->disconnect;
}

# The REST layer, as PostgREST calls it.
{
	my $api = PostgrestReplay->new(
		host => $xnode->host,
		port => $xnode->port,
		dbname => 'postgres',
		user => 'iapi_authenticator');
	my $client = { role => 'iapi_source_admin', stitch_client_id => 4242 };
	my $alice = { role => 'alice' };
	my $res = $api->request(method => 'POST', path => '/rpc/create_source',
		claims => $client, body => { name => 'explained_http' });
	is($res->{status}, 201, 'auto_explain: POST /rpc/create_source');
	my $hsid = $res->{json}{id};
	$res = $api->request(method => 'POST', path => '/rpc/generate_token',
		claims => $client, body => { source_id => $hsid });
	is($res->{status}, 200, 'auto_explain: POST /rpc/generate_token');
	my $h1 = $res->{json}{access_token};
	$res = $api->request(method => 'POST', path => '/rpc/generate_token_v3',
		claims => $client, body => { source_id => $hsid });
	is($res->{status}, 200, 'auto_explain: POST /rpc/generate_token_v3');
	my $h2 = $res->{json}{access_token};
	is(scalar(keys %{ $res->{json}{connection}{properties}{token} }), 2,
		'auto_explain: generate_token_v3 lists both tokens');
	my $shown = $res->{json}{connection}{properties}{token};
	is(scalar(grep { $shown->{$_} eq $h2 } keys %$shown), 1,
		'auto_explain: generate_token_v3 shows the new token in full');
	$res = $api->request(method => 'POST', path => '/rpc/create_access_token',
		claims => $alice, body => { lifetimeSeconds => 600, description => 'explained' });
	is($res->{status}, 201, 'auto_explain: POST /rpc/create_access_token');
	my $h3 = $res->{json}{tokenValue};
	like($_ // '', $token_re, 'auto_explain: the REST layer returns a token') foreach ($h1, $h2, $h3);
	push @x_tokens, grep { defined } $h1, $h2, $h3;
	$res = $api->request(method => 'GET', path => '/rpc/list_access_tokens', claims => $alice);
	is($res->{status}, 200, 'auto_explain: GET /rpc/list_access_tokens');

	foreach my $key ($h1, $h2, $h3, $xp2)
	{
		$res = $api->request(method => 'GET', path => '/rpc/whoami',
			headers => { 'X-Api-Key' => $key });
		is($res->{status}, 200, 'auto_explain: GET /rpc/whoami with a valid X-Api-Key');
	}
	$res = $api->request(method => 'GET', path => '/rpc/whoami',
		headers => { 'X-Api-Key' => forged($h1) });
	is($res->{status}, 401, 'auto_explain: GET /rpc/whoami with a forged X-Api-Key');
	# Read-write: the pre-request also records the use.
	$res = $api->request(method => 'POST', path => '/rpc/create_source',
		claims => $client, body => { name => 'explained_http_two' },
		headers => { 'X-Api-Key' => $h2 });
	is($res->{status}, 201, 'auto_explain: a POST with an X-Api-Key');

	# A secret scanner's report, valid, forged and made up; then more than
	# 1000 tokens, refused.
	my $reporter = { role => 'iapi_leak_reporter' };
	$res = $api->request(method => 'POST', path => '/rpc/revoke_leaked',
		claims => $reporter,
		body => { tokens => [ $h1, forged($h2), 'iapi_' . ('0' x 39) ] });
	is($res->{status}, 200, 'auto_explain: POST /rpc/revoke_leaked');
	is($res->{json}{revoked}, 1, 'auto_explain: revoke_leaked revokes the one valid token');
	$res = $api->request(method => 'POST', path => '/rpc/revoke_leaked',
		claims => $reporter,
		body => { tokens => [ $h2, map { sprintf('iapi_%039d', $_) } 1 .. 1000 ] });
	is($res->{status}, 400, 'auto_explain: POST /rpc/revoke_leaked with 1001 tokens');
	$res = $api->request(method => 'GET', path => '/rpc/whoami',
		headers => { 'X-Api-Key' => $h2 });
	is($res->{status}, 200, 'auto_explain: the refused report revoked nothing');
	$api->dbh->disconnect;
}

{
	my $log = slurp_file($xnode->logfile, $x_offset);
	my @messages = log_messages($log);
	my ($callers, $others) = token_messages($log, @x_tokens);
	is(scalar(@$others), 0,
		'auto_explain: no statement of the extension holds a token')
	  or diag(redacted(join('', map { $_->{text} } @$others[ 0 .. ($#$others < 4 ? $#$others : 4) ])));
	# The check can see a token where one is: the caller's own statements
	# with a bind parameter, here the verify_token($1) calls and PostgREST's
	# request.headers, are logged with it.
	ok(scalar(grep { ($_->{query} // '') =~ /verify_token\(\$1\)/ } @$callers),
		'auto_explain: the caller\'s verify_token($1) is logged with its token (the check sees one)');
	ok(scalar(grep { ($_->{query} // '') =~ /set_config\('request\.headers', \$6/ } @$callers),
		'auto_explain: so is PostgREST\'s request.headers, with auto_explain on for its role');
	# The extension's statements were logged: the check looked at them.
	foreach my $function ('iapi_rest.authenticate()', 'iapi_rest.generate_token_v3(bigint)',
		'iapi_rest.create_access_token(integer,text,text[],jsonb,integer,integer)',
		'iapi_rest.revoke_leaked(jsonb)', 'iapi_tokens.list_token_details(bigint,boolean)')
	{
		ok(scalar(grep { $_->{plan} && $_->{context} && $_->{text} =~ /PL\/pgSQL function \Q$function\E line/ } @messages),
			"auto_explain: the statements of $function are logged");
	}
	ok(scalar(grep { $_->{plan} && $_->{context} && ($_->{query} // '') =~ /^UPDATE iapi_tokens\.tokens\s+SET last_used_at/ } @messages),
		'auto_explain: so is verify_token\'s record of a use');
	ok(scalar(grep { $_->{plan} && $_->{context} && ($_->{query} // '') =~ /revoke_leaked_hashes\(\$1\)/ } @messages),
		'auto_explain: so is revoke_leaked\'s revocation, which sees only the hashes');
}

# A report whose "tokens" is a JSON string, not an array.  PostgREST's own
# statement turns the body into the route's text[] argument, and the array
# parser's error quotes the value it could not read: the reported token, in
# the response and in the log, before iapi_rest.revoke_leaked runs.
{
	my $offset = -s $xnode->logfile;
	my $sid = $xnode->safe_psql('postgres', q{SELECT iapi_tokens.create_source('not_an_array')});
	my $token = $xnode->safe_psql('postgres',
		"SELECT access_token FROM iapi_tokens.generate_token($sid)");
	like($token, $token_re, 'a report that is not an array: a source token');
	my $api = PostgrestReplay->new(
		host => $xnode->host,
		port => $xnode->port,
		dbname => 'postgres',
		user => 'iapi_authenticator');
	my $res = $api->request(method => 'POST', path => '/rpc/revoke_leaked',
		claims => { role => 'iapi_leak_reporter' }, body => { tokens => $token });
	is($res->{status}, 400, 'a report that is not an array: 400');
	$api->dbh->disconnect;
	my $log = slurp_file($xnode->logfile, $offset);
	my (undef, $others) = token_messages($log, $token);
	# The route takes jsonb: no array parser quotes the value in an error.
	ok(index($res->{body}, substr($token, length($token) - 39, 33)) < 0,
		'a report that is not an array: the token is not in the response');
	is(scalar(@$others), 0, 'a report that is not an array: the token is not in the log')
	  or diag(redacted(join('', map { $_->{text} } @$others)));
}

$xnode->stop;

# rest/roles.sql run before auto_explain is loaded at all, which is loaded
# afterwards, this time in shared_preload_libraries.
{
	my $ynode = PostgreSQL::Test::Cluster->new('explain_late');
	$ynode->init;
	$ynode->append_conf('postgresql.conf', "log_statement = none\nlog_line_prefix = '%m [%p] '\n");
	$ynode->start;
	$ynode->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens_rest CASCADE');
	is($ynode->safe_psql('postgres',
			"SELECT count(*) FROM pg_settings WHERE name LIKE 'auto_explain.%';\n"
			  . "\\set authenticator_password 'not-used-with-trust'\n"
			  . slurp_file("$FindBin::RealBin/../../rest/roles.sql")),
		'0', 'rest/roles.sql runs in a session without auto_explain');
	$ynode->safe_psql('postgres', q{
CREATE ROLE alice NOLOGIN IN ROLE iapi_token_user;
GRANT alice TO iapi_authenticator;
});
	$ynode->append_conf('postgresql.conf',
		"shared_preload_libraries = 'auto_explain'\n$explain_conf");
	$ynode->restart;
	roles_sql_keeps_tokens_out($ynode, 'rest/roles.sql run before auto_explain was loaded');
	$ynode->stop;
}

done_testing();
