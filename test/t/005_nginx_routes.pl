# Copyright: iapi_tokens authors.
#
# rest/nginx/iapi_tokens.conf maps the public /v4 paths onto PostgREST RPC
# routes.  Runs the shipped server block in a real nginx in front of an echo
# upstream that reports what it received, and checks every route: the
# upstream method and URI (never a query string), the path parameters as
# X-Iapi-Source-Id / X-Iapi-Token-Id (never the client's own copies), the
# credentials passed through, and the replaced bodies or, for
# POST /v4/credentials/revoke, the secret scanner's report passed through.
# Then the errors nginx answers itself, none of which may reach the
# upstream, and that no credential, and no reported token, reaches the logs.
#
# Needs nginx, not PostgreSQL.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep);

my $nginx = '/usr/sbin/nginx';
BAIL_OUT("$nginx not found; install nginx") unless -x $nginx;

my $shipped = abs_path('rest/nginx/iapi_tokens.conf');
BAIL_OUT('rest/nginx/iapi_tokens.conf not found; run from the repository root')
  unless defined $shipped && -f $shipped;

my $tmp = tempdir('iapi_nginx_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $hits_file = "$tmp/upstream_hits";

my ($nginx_pid, $echo_pid);

# Also runs on failure.  Only the test process itself cleans up: a forked
# child that dies must not stop nginx under the parent's feet.
my $test_pid = $$;
END
{
	local $?;
	if ($$ == $test_pid && defined $nginx_pid)
	{
		kill 'TERM', $nginx_pid;
		waitpid($nginx_pid, 0);
	}
	if ($$ == $test_pid && defined $echo_pid)
	{
		# The echo server leads a process group, one child per connection.
		kill 'TERM', -$echo_pid, $echo_pid;
		waitpid($echo_pid, 0);
	}
}

sub slurp
{
	my ($path) = @_;
	open my $fh, '<', $path or return '';
	local $/;
	return scalar <$fh>;
}

sub spew
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh $text;
	close $fh or die "cannot write $path: $!";
	return;
}

# ---------------------------------------------------------------------------
# Echo upstream: answers every request with a JSON description of it, one
# forked child per connection so that nginx may keep connections open.
# ---------------------------------------------------------------------------

my $echo_listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto     => 'tcp',
	Listen    => 16,
	ReuseAddr => 1) or die "cannot listen: $!";
my $echo_port = $echo_listener->sockport;

# Serves one connection until the peer closes it.
sub echo_connection
{
	my ($sock) = @_;
	my $served = 0;
	while (1)
	{
		my $line = <$sock>;
		return unless defined $line;
		$line =~ s/\r?\n\z//;
		my ($method, $uri, $protocol) = split / /, $line, 3;

		my %headers;
		while (defined(my $h = <$sock>))
		{
			$h =~ s/\r?\n\z//;
			last if $h eq '';
			my ($name, $value) = split /:\s*/, $h, 2;
			$name = lc $name;
			# A repeated header shows up as "a, b", which no exact
			# comparison accepts.
			$headers{$name} =
			  exists $headers{$name} ? "$headers{$name}, $value" : $value;
		}

		my $body = '';
		my $length = $headers{'content-length'} // 0;
		while (length($body) < $length)
		{
			my $n = read($sock, $body, $length - length($body), length($body));
			return unless $n;
		}
		$served++;

		if (open my $hits, '>>', $hits_file)
		{
			print $hits "$method $uri\n";
			close $hits;
		}

		my $reply = JSON::PP->new->canonical->encode(
			{
				echo                   => JSON::PP::true,
				method                 => $method,
				uri                    => $uri,
				protocol               => $protocol,
				headers                => \%headers,
				body                   => $body,
				requests_on_connection => $served,
			});
		print $sock "HTTP/1.1 200 OK\r\n"
		  . "Content-Type: application/json\r\n"
		  . 'Content-Length: '
		  . length($reply) . "\r\n"
		  . "\r\n"
		  . $reply;
	}
}

$echo_pid = fork // die "fork: $!";
if ($echo_pid == 0)
{
	setpgrp(0, 0);
	$SIG{CHLD} = 'IGNORE';
	while (my $sock = $echo_listener->accept)
	{
		my $pid = fork;
		if (defined $pid && $pid == 0)
		{
			close $echo_listener;
			$sock->autoflush(1);
			eval { echo_connection($sock) };
			POSIX::_exit(0);
		}
		close $sock;
	}
	POSIX::_exit(0);
}
close $echo_listener;

# ---------------------------------------------------------------------------
# nginx with the shipped server block, ports rewritten.
# ---------------------------------------------------------------------------

my $probe = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto     => 'tcp',
	Listen    => 1) or die "cannot bind: $!";
my $port = $probe->sockport;
close $probe;

my $conf = slurp($shipped);
my $upstreams = ($conf =~ s/\b127\.0\.0\.1:3000\b/127.0.0.1:$echo_port/g);
my $listens   = ($conf =~ s/^(\s*)listen 127\.0\.0\.1:8080;/${1}listen 127.0.0.1:$port;/mg);
is($upstreams, 1, 'the shipped upstream points at 127.0.0.1:3000');
is($listens,   1, 'the shipped server block listens on 127.0.0.1:8080 only');
like($conf, qr/server 127\.0\.0\.1:$echo_port;/,
	'the test configuration points at the echo upstream');
like($conf, qr/^\s*listen 127\.0\.0\.1:$port;/m,
	'the test configuration listens on a free port');
spew("$tmp/iapi_tokens.conf", $conf);

spew("$tmp/nginx.conf", <<"EOF");
pid $tmp/nginx.pid;
error_log $tmp/error.log info;
events { }
http {
	access_log $tmp/access.log;
	client_body_temp_path $tmp/client_body;
	proxy_temp_path $tmp/proxy;
	fastcgi_temp_path $tmp/fastcgi;
	uwsgi_temp_path $tmp/uwsgi;
	scgi_temp_path $tmp/scgi;
	include $tmp/iapi_tokens.conf;
}
EOF

my @nginx_cmd = ($nginx, '-p', "$tmp/", '-c', "$tmp/nginx.conf", '-e',
	"$tmp/error.log");
my $check = system(@nginx_cmd, '-t', '-q');
is($check, 0, 'nginx -t accepts the shipped configuration')
  or diag(slurp("$tmp/error.log"));

$nginx_pid = fork // die "fork: $!";
if ($nginx_pid == 0)
{
	exec(@nginx_cmd, '-g', 'daemon off;')
	  or do { print STDERR "exec $nginx: $!\n"; POSIX::_exit(127); };
}

my $up = 0;
for (1 .. 100)
{
	last if waitpid($nginx_pid, WNOHANG) == $nginx_pid;
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp');
	if ($s)
	{
		close $s;
		$up = 1;
		last;
	}
	sleep 0.05;
}
ok($up, 'nginx accepts connections') or do
{
	diag(slurp("$tmp/error.log"));
	BAIL_OUT('nginx did not start');
};

# ---------------------------------------------------------------------------
# Every route.
# ---------------------------------------------------------------------------

# Explicit undefs: a proxy from the environment must not be used.
my $http = HTTP::Tiny->new(
	proxy       => undef,
	http_proxy  => undef,
	https_proxy => undef,
	timeout     => 10);
my $base = "http://127.0.0.1:$port";

my %credentials = (
	'Authorization' => 'Bearer abc',
	'X-Api-Key'     => 'iapi_xyz');

sub request
{
	my ($method, $path, $body, %headers) = @_;
	my %options = (headers => { %credentials, %headers });
	$options{content} = $body if defined $body;
	return $http->request($method, "$base$path", \%options);
}

my $uuid = '3f2b8c1e-9d4a-4e6f-8a1b-2c3d4e5f6a7b';
my $uuid_upper = uc $uuid;
my $source_body = '{"name":"route test source","client_id":116078}';
my $token_body  = '{"description":"route test token","lifetime":"1 day"}';
my $revoke_body = '{"tokens":["route test leaked token","iapi_leaked"]}';

# request and upstream: method and path; body and type: what the client
# sends; source and token: the X-Iapi headers PostgREST must see (undef:
# none); sent: the body PostgREST must see.
my @routes = (
	{
		request  => 'GET /v4/sources',
		upstream => 'GET /rpc/list_sources',
		sent     => '',
	},
	{
		request  => 'POST /v4/sources',
		body     => $source_body,
		type     => 'application/json',
		upstream => 'POST /rpc/create_source',
		sent     => $source_body,
	},
	{
		request  => 'POST /v4/sources/42/tokens',
		body     => '{"source_id":999}',
		type     => 'text/plain',
		upstream => 'POST /rpc/generate_token',
		source   => '42',
		sent     => '{}',
	},
	{
		request  => 'GET /v4/sources/42/tokens',
		upstream => 'GET /rpc/list_tokens',
		source   => '42',
		sent     => '',
	},
	{
		request  => 'DELETE /v4/sources/42/tokens/123456789012345678',
		upstream => 'POST /rpc/revoke_token',
		source   => '42',
		token    => '123456789012345678',
		sent     => '{}',
	},
	{
		request  => 'POST /v4/apiAccessTokens',
		body     => $token_body,
		type     => 'application/json',
		upstream => 'POST /rpc/create_access_token',
		sent     => $token_body,
	},
	{
		request  => 'GET /v4/apiAccessTokens',
		upstream => 'GET /rpc/list_access_tokens',
		sent     => '',
	},
	{
		request  => "GET /v4/apiAccessTokens/$uuid",
		upstream => 'GET /rpc/get_access_token',
		token    => $uuid,
		sent     => '',
	},
	{
		request  => "DELETE /v4/apiAccessTokens/$uuid_upper",
		upstream => 'POST /rpc/delete_access_token',
		token    => $uuid_upper,
		sent     => '{}',
	},
	{
		request  => 'GET /v4/whoami',
		upstream => 'GET /rpc/whoami',
		sent     => '',
	},
	{
		request  => 'GET /v4/source',
		upstream => 'GET /rpc/my_source',
		sent     => '',
	},
	{
		request  => 'POST /v4/credentials/revoke',
		body     => $revoke_body,
		type     => 'application/json',
		upstream => 'POST /rpc/revoke_leaked',
		sent     => $revoke_body,
	},);

my $max_on_connection = 0;
for my $route (@routes)
{
	my ($method, $path) = split / /, $route->{request};
	my ($up_method, $up_uri) = split / /, $route->{upstream};
	my ($source_id, $token_id, $up_body) = @$route{qw(source token sent)};
	my $name = $route->{request};

	my %headers = (
		'X-Iapi-Source-Id' => '999',
		'X-Iapi-Token-Id'  => '999',
		'Accept-Profile'   => 'other_schema',
		'Content-Profile'  => 'other_schema',
		'Prefer'           => 'tx=rollback, params=single-object');
	$headers{'Content-Type'} = $route->{type} if defined $route->{type};
	my $res = request($method, "$path?source_id=7", $route->{body}, %headers);

	is($res->{status}, 200, "$name: proxied")
	  or diag("$res->{status} $res->{reason}: $res->{content}");
	my $echo = eval { decode_json($res->{content}) } // {};
	my $h = $echo->{headers} // {};

	is($echo->{method}, $up_method, "$name: upstream method is $up_method");
	is($echo->{uri}, $up_uri, "$name: upstream URI is $up_uri, no query string");
	is($echo->{protocol}, 'HTTP/1.1', "$name: upstream request is HTTP/1.1");
	ok(!exists $h->{connection}, "$name: no Connection header upstream");
	is($h->{'x-iapi-source-id'}, $source_id,
		"$name: X-Iapi-Source-Id is "
		  . ($source_id // 'absent')
		  . ', never the client\'s');
	is($h->{'x-iapi-token-id'}, $token_id,
		"$name: X-Iapi-Token-Id is "
		  . ($token_id // 'absent')
		  . ', never the client\'s');
	is($h->{authorization}, 'Bearer abc', "$name: Authorization passed through");
	is($h->{'x-api-key'}, 'iapi_xyz', "$name: X-Api-Key passed through");
	ok(!exists $h->{'accept-profile'} && !exists $h->{'content-profile'},
		"$name: no schema choice reaches PostgREST");
	ok(!exists $h->{prefer}, "$name: no Prefer reaches PostgREST");
	is($h->{'x-forwarded-for'}, '127.0.0.1', "$name: X-Forwarded-For set");
	is($h->{'x-forwarded-proto'}, 'http', "$name: X-Forwarded-Proto set");
	is($h->{'x-forwarded-host'}, '127.0.0.1', "$name: X-Forwarded-Host set");
	is($echo->{body}, $up_body,
		"$name: upstream body is " . ($up_body eq '' ? 'empty' : $up_body));

	if ($up_body ne '')
	{
		is($h->{'content-type'}, 'application/json',
			"$name: upstream Content-Type is application/json");
		is($h->{'content-length'}, length($up_body),
			"$name: upstream Content-Length matches the body");
	}
	else
	{
		ok(!exists $h->{'content-type'}, "$name: no Content-Type upstream");
	}

	my $n = $echo->{requests_on_connection} // 0;
	$max_on_connection = $n if $n > $max_on_connection;
}

cmp_ok($max_on_connection, '>', 1,
	'nginx reuses upstream connections (keepalive)');

# ---------------------------------------------------------------------------
# Errors nginx answers itself; none reaches the upstream.
# ---------------------------------------------------------------------------

my $hits_before = () = slurp($hits_file) =~ /\n/g;

my %messages = (
	PT404 => 'not found',
	PT405 => 'method not allowed',
	PT413 => 'payload too large');

sub error_is
{
	my ($method, $path, $status, $code, $name, $body) = @_;
	my $res = request($method, $path, $body);

	is($res->{status}, $status, "$name: $status");
	is($res->{headers}{'content-type'}, 'application/json; charset=utf-8',
		"$name: JSON content type");
	my $err = eval { decode_json($res->{content}) } // {};
	is_deeply(
		$err,
		{
			code    => $code,
			message => $messages{$code},
			details => undef,
			hint    => undef
		},
		"$name: body is PostgREST's error shape with code $code");
	ok(!exists $err->{echo}, "$name: never reaches the upstream");
	return $res;
}

my @not_found = (
	[ 'GET',    '/v4/sources/abc/tokens',    'non-numeric source id' ],
	[ 'POST',   '/v4/sources/abc/tokens',    'non-numeric source id on POST' ],
	[ 'GET',    '/v4/sources/1234567890123456789/tokens', '19-digit source id' ],
	[ 'GET',    '/v4/sources/-1/tokens',     'negative source id' ],
	[ 'DELETE', '/v4/sources/5/tokens/abc',  'non-numeric token id' ],
	[ 'DELETE', '/v4/sources/5/tokens/7/',   'trailing slash' ],
	[ 'GET',    '/v4/apiAccessTokens/not-a-uuid', 'bad uuid' ],
	[ 'DELETE', '/v4/apiAccessTokens/3f2b8c1e-9d4a-4e6f-8a1b-2c3d4e5f6a7g',
		'uuid with a non-hex digit' ],
	[ 'GET', "/v4/apiAccessTokens/${uuid}0", 'uuid with an extra hex digit' ],
	[ 'GET', "/v4/apiAccessTokens/$uuid/",   'uuid with a trailing slash' ],
	[ 'GET', '/v4/source/',          'trailing slash on /v4/source' ],
	[ 'GET', '/v4/source/42',        'a source id after /v4/source' ],
	[ 'POST', '/v4/credentials',     'credentials without revoke' ],
	[ 'POST', '/v4/credentials/revoke/', 'trailing slash on credentials/revoke' ],
	[ 'GET', '/v4/nope',             'unknown path' ],
	[ 'GET', '/v4/nope.html',        'unknown path with an extension' ],
	[ 'GET', '/',                    'root' ],);
# The raw RPC routes are not exposed, whatever the method.
for my $route (@routes)
{
	my ($method, $path) = split / /, $route->{upstream};
	push @not_found, [ $method, $path, 'raw RPC route' ];
}
for my $case (@not_found)
{
	my ($method, $path, $name) = @$case;
	error_is($method, $path, 404, 'PT404', "$name ($method $path)");
}

my @wrong_methods = (
	[ 'PUT',    '/v4/sources/5/tokens',      'GET, POST' ],
	[ 'DELETE', '/v4/sources',               'GET, POST' ],
	[ 'GET',    '/v4/sources/5/tokens/6',    'DELETE' ],
	[ 'PATCH',  '/v4/apiAccessTokens',       'GET, POST' ],
	[ 'POST',   "/v4/apiAccessTokens/$uuid", 'GET, DELETE' ],
	[ 'POST',   '/v4/whoami',                'GET' ],
	[ 'HEAD',   '/v4/whoami',                'GET' ],
	[ 'POST',   '/v4/source',                'GET' ],
	[ 'DELETE', '/v4/source',                'GET' ],
	[ 'HEAD',   '/v4/source',                'GET' ],
	[ 'GET',    '/v4/credentials/revoke',    'POST' ],
	[ 'PUT',    '/v4/credentials/revoke',    'POST' ],
	[ 'DELETE', '/v4/credentials/revoke',    'POST' ],);
for my $case (@wrong_methods)
{
	my ($method, $path, $allow) = @$case;
	my $name = "$method $path";
	if ($method eq 'HEAD')
	{
		# No body to check on HEAD.
		my $res = request($method, $path);
		is($res->{status}, 405, "$name: 405");
		is($res->{headers}{allow}, $allow, "$name: Allow: $allow");
		next;
	}
	my $res = error_is($method, $path, 405, 'PT405', $name);
	is($res->{headers}{allow}, $allow, "$name: Allow: $allow");
}

my $big = '{"name":"' . ('x' x (17 * 1024)) . '"}';
error_is('POST', '/v4/sources', 413, 'PT413', 'a body over 16k', $big);

my $hits_after = () = slurp($hits_file) =~ /\n/g;
is($hits_after, $hits_before, 'no error case reached the upstream');
is($hits_before, scalar(@routes), 'each route reached the upstream once');

# A secret scanner's largest report: 1000 tokens of 44 characters, about
# 47 kB of JSON, is what revoke_leaked takes in one call (400 above it).
{
	my $batch = '{"tokens":['
	  . join(',', map { sprintf('"iapi_%039d"', $_) } 1 .. 1000) . ']}';
	my $res = request('POST', '/v4/credentials/revoke', $batch,
		'Content-Type' => 'application/json');
	is($res->{status}, 200,
		'POST /v4/credentials/revoke: a report of 1000 tokens is proxied');
	my $echo = eval { decode_json($res->{content}) } // {};
	ok(defined $echo->{body} && $echo->{body} eq $batch,
		'POST /v4/credentials/revoke: the report of 1000 tokens reaches PostgREST whole');
}

# ---------------------------------------------------------------------------
# Logs.
# ---------------------------------------------------------------------------

my $access_log = slurp("$tmp/access.log");
my $error_log  = slurp("$tmp/error.log");
unlike($error_log, qr/\[(?:warn|crit|alert|emerg)\]/,
	'nginx logged no warnings (such as an uninitialized variable)');
like($access_log, qr{"GET /v4/sources\?source_id=7 HTTP/1\.1" 200},
	'the access log records requests');
for my $log ([ 'access log', $access_log ], [ 'error log', $error_log ])
{
	my ($name, $text) = @$log;
	unlike($text, qr/iapi_xyz/,   "the $name holds no API key");
	unlike($text, qr/Bearer/,     "the $name holds no bearer token");
	unlike($text, qr/route test/, "the $name holds no request body");
	unlike($text, qr/iapi_leaked/, "the $name holds no reported token");
}

# ---------------------------------------------------------------------------
# Shutdown, here rather than only in END so that failures show.
# ---------------------------------------------------------------------------

kill 'TERM', $nginx_pid;
is(waitpid($nginx_pid, 0), $nginx_pid, 'nginx stops');
is($? >> 8, 0, 'nginx exits cleanly');
undef $nginx_pid;

done_testing();
