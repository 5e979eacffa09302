# Copyright: iapi_tokens authors.
#
# The token format that docs/secret-scanning.md publishes for secret
# scanners: its regular expressions and gitleaks rule, read from that file,
# must match every token the server makes (both families, default and custom
# prefix), and its checksum rule must accept them.  Near misses must fail
# the expression or the checksum.

use strict;
use warnings;

use Compress::Raw::Zlib ();
use File::Basename qw(dirname);
use Math::BigInt;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $doc = slurp_file(dirname(__FILE__) . '/../../docs/secret-scanning.md');
my @blocks = $doc =~ /```regex\n(.*?)\n```/sg;
is(scalar @blocks, 2, 'the document gives two regular expressions');
my ($default_re, $any_re) = map { qr/$_/ } @blocks;
my ($gitleaks) = $doc =~ /^regex = '''(.*?)'''$/m;
ok(defined $gitleaks, 'the document gives a gitleaks rule');
my $gitleaks_re = qr/$gitleaks/;

my $digits = join '', '0' .. '9', 'A' .. 'Z', 'a' .. 'z';

sub base62
{
	my $n = Math::BigInt->new(0);
	for my $c (split //, shift)
	{
		my $v = index($digits, $c);
		return undef if $v < 0;
		$n->bmul(62)->badd($v);
	}
	return $n;
}

# The documented checksum rule, written from the document alone.
sub checksum_holds
{
	my ($candidate) = @_;
	return 0 if length($candidate) < 40;
	my ($body, $checksum) = (substr($candidate, -39, 33), substr($candidate, -6));
	my $value = base62($body);
	my $stated = base62($checksum);
	return 0 unless defined $value && defined $stated;
	return 0 if $value->bcmp(Math::BigInt->new(2)->bpow(192)) >= 0;
	my $hex = substr('0' x 48 . $value->as_hex =~ s/^0x//r, -48);
	my $crc = Compress::Raw::Zlib::crc32(pack('H*', $hex));
	return $stated->bcmp($crc) == 0 ? 1 : 0;
}

my $node = PostgreSQL::Test::Cluster->new('scan');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION iapi_tokens; CREATE ROLE regress_scan');
$node->safe_psql('postgres',
	'GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_scan');

my %tokens;
for my $prefix ('iapi_', 'acme_live_')
{
	my $set = "SET iapi_tokens.token_prefix = '$prefix';";
	$tokens{$prefix} = [
		split /\n/,
		$node->safe_psql(
			'postgres', qq{$set
			SELECT g.access_token
			  FROM generate_series(1, 20) i,
				   LATERAL iapi_tokens.generate_token(
					   iapi_tokens.create_source('scan_' || md5('$prefix') || i)) g;
			SET ROLE regress_scan;
			SELECT t.token_value
			  FROM generate_series(1, 20), LATERAL iapi_tokens.create_access_token(60) t;
		})
	];
	is(scalar @{ $tokens{$prefix} }, 40, "40 tokens of both families with prefix $prefix");
}

for my $prefix (sort keys %tokens)
{
	my @t = @{ $tokens{$prefix} };
	my $default = $prefix eq 'iapi_';
	is(scalar(grep { /^$any_re$/ } @t), 40, "$prefix: the any-prefix expression matches every token");
	is(scalar(grep { checksum_holds($_) } @t), 40, "$prefix: the checksum rule accepts every token");
	is(scalar(grep { "token: $_\n" =~ $default_re } @t), $default ? 40 : 0,
		"$prefix: the default-prefix expression finds " . ($default ? 'every token' : 'none of them'));
	is(scalar(grep { "export KEY=\"$_\";" =~ $gitleaks_re && $1 eq $_ } @t), $default ? 40 : 0,
		"$prefix: the gitleaks rule captures " . ($default ? 'every token whole' : 'none of them'));
}

# Near misses, made from a real token.
my $real = $tokens{'iapi_'}[0];
my $flip = sub {
	my ($s, $pos) = @_;
	my $c = substr($s, $pos, 1);
	substr($s, $pos, 1) = $c eq 'A' ? 'B' : 'A';
	return $s;
};
my $too_big = 'iapi_' . ('z' x 33);
my $crc_of_big = '000000';
my %near = (
	'a changed body character' => $flip->($real, 10),
	'a changed checksum character' => $flip->($real, length($real) - 1),
	'a dropped character' => substr($real, 0, -1),
	'a body of 2^192 or more' => $too_big . $crc_of_big,
	'a hyphen in the body' => substr($real, 0, 12) . '-' . substr($real, 13),
);
for my $what (sort keys %near)
{
	my $s = $near{$what};
	ok(!($s =~ /^$any_re$/ && checksum_holds($s)), "near miss refused: $what");
	is($node->safe_psql('postgres', "SELECT count(*) FROM iapi_tokens.verify_token('$s')"),
		'0', "and verify_token agrees: $what");
}
ok(!("x${real}x" =~ $default_re), 'a token glued to other word characters is not a match');
is($node->safe_psql('postgres', "SELECT count(*) FROM iapi_tokens.verify_token('$real')"),
	'1', 'the real token verifies');

done_testing();
