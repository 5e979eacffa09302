# Copyright: iapi_tokens authors.
#
# Replays what PostgREST 12 sends to the database for an RPC request, and
# turns the outcome into the HTTP response PostgREST would give, so that a
# test reads as "request in, response out" without PostgREST installed.
#
# Per request, on one pooled connection logged in as the authenticator, over
# the extended protocol with typed parameters (as hasql does):
#   BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE | READ ONLY
#     (READ ONLY for GET and HEAD, and for STABLE or IMMUTABLE functions);
#   select set_config('search_path', $1, true), set_config('role', $2, true),
#          set_config('request.jwt.claims', $3, true), ... request.method,
#          request.path, request.headers, request.cookies;
#   select "iapi_rest"."authenticate"()            -- db-pre-request
#   WITH pgrst_source AS (SELECT pgrst_call.* FROM
#     (SELECT $1 AS json_data) pgrst_payload,
#     LATERAL (SELECT "a" FROM json_to_record(pgrst_payload.json_data)
#              AS _("a" bigint) LIMIT 1) pgrst_body,
#     LATERAL "iapi_rest"."fn"("a" := pgrst_body."a") pgrst_call)
#   SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t)
#          AS page_total, coalesce(json_agg(_postgrest_t)->0, 'null') AS body,
#          nullif(current_setting('response.headers', true), '')
#          AS response_headers, nullif(current_setting('response.status',
#          true), '') AS response_status
#     FROM (SELECT "pgrst_source".* FROM "pgrst_source") _postgrest_t
#   (a set-returning function aggregates to coalesce(json_agg(_postgrest_t),
#   '[]'); a scalar or void one is called as (SELECT fn(...) pgrst_scalar)
#   and aggregated as json_agg(_postgrest_t.pgrst_scalar));
#   COMMIT, or ROLLBACK after an error.
#
# Errors become PostgREST's JSON body and status: SQLSTATE PTnnn is status
# nnn, SQLSTATE PGRST carries its own body, status and headers, and any
# other SQLSTATE goes through PostgREST's table (42501 is 401 without a JWT,
# with "WWW-Authenticate: Bearer", and 403 with one).  JWT signatures are
# PostgREST's business: a request here gives the verified claims.

package PostgrestReplay;

use strict;
use warnings;

use DBI;
use DBD::Pg qw(:pg_types);
use JSON::PP;

my $json = JSON::PP->new->canonical;

# new(host => ..., port => ..., dbname => ..., user => 'iapi_authenticator',
#     schema => 'iapi_rest', anon_role => 'iapi_anon',
#     pre_request => 'iapi_rest.authenticate')
sub new
{
	my ($class, %args) = @_;
	my $self = bless {
		schema => 'iapi_rest',
		extra_search_path => ['public'],
		anon_role => 'iapi_anon',
		pre_request => 'iapi_rest.authenticate',
		%args,
	}, $class;
	$self->{dbh} = DBI->connect(
		"dbi:Pg:dbname=$self->{dbname};host=$self->{host};port=$self->{port}",
		$self->{user}, '',
		{ AutoCommit => 1, RaiseError => 0, PrintError => 0, pg_server_prepare => 1 })
	  or die "cannot connect: $DBI::errstr";
	$self->{dbh}->{pg_enable_utf8} = 1;
	return $self;
}

sub dbh { return $_[0]->{dbh}; }

# The transaction access mode of the last request: "READ ONLY" or "READ WRITE".
sub last_access_mode { return $_[0]->{last_access_mode}; }

# The statements of the last request, for a test that wants to show them.
sub last_statements { return @{ $_[0]->{last_statements} }; }

# PostgREST's schema cache, for one function: its parameters, whether it is
# volatile, and what it returns.
sub routine
{
	my ($self, $name) = @_;
	return $self->{routines}{$name} if $self->{routines}{$name};
	my $row = $self->{dbh}->selectrow_hashref(
		q{SELECT p.provolatile, p.proretset,
				 p.prorettype = 'void'::regtype AS returns_void,
				 (t.typtype = 'c' OR p.prorettype = 'record'::regtype) AS returns_composite,
				 coalesce(p.proargnames, '{}') AS names,
				 (SELECT array_agg(format_type(t, NULL) ORDER BY i)
					FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i)) AS types,
				 p.pronargs, p.pronargdefaults
			FROM pg_proc p JOIN pg_type t ON t.oid = p.prorettype
		   WHERE p.pronamespace = $1::regnamespace AND p.proname = $2},
		undef, $self->{schema}, $name);
	return undef unless $row;
	my @names = @{ $row->{names} };
	my @types = @{ $row->{types} || [] };
	my $required = $row->{pronargs} - $row->{pronargdefaults};
	$self->{routines}{$name} = {
		volatile => $row->{provolatile} eq 'v',
		returns_void => $row->{returns_void},
		returns_composite => $row->{returns_composite},
		returns_set => $row->{proretset},
		params => [ map { { name => $names[$_], type => $types[$_], required => $_ < $required } }
			  0 .. $#types ],
	};
	return $self->{routines}{$name};
}

# request(method => 'GET', path => '/rpc/list_tokens',
#         query => { source_id => 5 }, body => { ... } or a raw string,
#         claims => { role => ..., ... } (a verified JWT) or undef,
#         headers => { 'X-Api-Key' => ... })
# returns { status, headers => { lower-case name => value }, body, json }
sub request
{
	my ($self, %req) = @_;
	my $method = uc($req{method} // 'GET');
	my $path = $req{path};
	my %headers = (accept => '*/*', host => 'localhost:3000');
	while (my ($k, $v) = each %{ $req{headers} || {} })
	{
		$headers{ lc $k } = $v;
	}
	$headers{authorization} = 'Bearer <verified JWT>' if $req{claims};

	my ($fn) = $path =~ m{^/rpc/([a-z_0-9]+)$}
	  or die "not an RPC path: $path";
	my $routine = $self->routine($fn);
	return _error(404, { code => 'PGRST202', message => "Could not find the $self->{schema}.$fn function in the schema cache", details => undef, hint => undef })
	  unless $routine;

	# The arguments: the JSON body of a POST, the query string of a GET.
	my ($payload, $args);
	if ($method eq 'GET' || $method eq 'HEAD')
	{
		$args = { map { $_ => "$req{query}{$_}" } keys %{ $req{query} || {} } };
		$payload = $json->encode($args);
	}
	else
	{
		$headers{'content-type'} //= 'application/json';
		$payload = ref $req{body} ? $json->encode($req{body}) : ($req{body} // '{}');
		$args = eval { JSON::PP->new->decode($payload) };
		return _error(400, { code => 'PGRST102', message => 'Empty or invalid json', details => undef, hint => undef })
		  unless ref $args eq 'HASH';
	}
	my %given = map { $_ => 1 } keys %$args;
	my @params = grep { $given{ $_->{name} } } @{ $routine->{params} };
	my %known = map { $_->{name} => 1 } @{ $routine->{params} };
	if (grep { !$known{$_} } keys %given or grep { $_->{required} && !$given{ $_->{name} } } @{ $routine->{params} })
	{
		return _error(404, { code => 'PGRST202', message => "Could not find the $self->{schema}.$fn(" . join(', ', sort keys %given) . ") function in the schema cache", details => undef, hint => undef });
	}

	my $claims = { %{ $req{claims} || {} } };
	my $authenticated = defined $req{claims};
	$claims->{role} //= $self->{anon_role};
	my $read_only = ($method eq 'GET' || $method eq 'HEAD' || !$routine->{volatile});
	$self->{last_access_mode} = $read_only ? 'READ ONLY' : 'READ WRITE';

	# A composite result is selected as pgrst_call.*, a scalar one (void
	# included) as pgrst_scalar; a set is a JSON array, a single row its
	# first element.
	my $qfn = qq{"$self->{schema}"."$fn"};
	my $composite = $routine->{returns_composite};
	my $named = join ', ', map { qq{"$_->{name}" := pgrst_body."$_->{name}"} } @params;
	my $invoke = $composite ? "$qfn($named) pgrst_call"
	  : "(SELECT $qfn($named) pgrst_scalar) pgrst_call";
	my $selected = $composite ? 'pgrst_call.*' : 'pgrst_call.pgrst_scalar';
	my $call;
	if (@params)
	{
		my $cols = join ', ', map { qq{"$_->{name}"} } @params;
		my $typed = join ', ', map { qq{"$_->{name}" $_->{type}} } @params;
		$call = "SELECT $selected FROM (SELECT \$1 AS json_data) pgrst_payload, "
		  . "LATERAL (SELECT $cols FROM json_to_record(pgrst_payload.json_data) AS _($typed) LIMIT 1) pgrst_body , "
		  . "LATERAL $invoke";
	}
	else
	{
		$call = "SELECT $selected FROM $invoke";
	}
	my $aggregated = $composite ? 'json_agg(_postgrest_t)' : 'json_agg(_postgrest_t.pgrst_scalar)';
	my $body_sql = $routine->{returns_set}
	  ? "coalesce($aggregated, '[]')"
	  : "coalesce($aggregated->0, 'null')";
	my $main = "WITH pgrst_source AS ($call) "
	  . "SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, "
	  . "$body_sql AS body, "
	  . "nullif(current_setting('response.headers', true), '') AS response_headers, "
	  . "nullif(current_setting('response.status', true), '') AS response_status "
	  . "FROM (SELECT \"pgrst_source\".* FROM \"pgrst_source\") _postgrest_t";

	my $search_path = join ', ', map { qq{"$_"} } $self->{schema}, @{ $self->{extra_search_path} };
	my $prologue = "select set_config('search_path', \$1, true), set_config('role', \$2, true), "
	  . "set_config('request.jwt.claims', \$3, true), set_config('request.method', \$4, true), "
	  . "set_config('request.path', \$5, true), set_config('request.headers', \$6, true), "
	  . "set_config('request.cookies', \$7, true)";
	my @prologue_args = ($search_path, $claims->{role}, $json->encode($claims), $method,
		$path, $json->encode(\%headers), '{}');
	my ($pre_schema, $pre_name) = split /\./, $self->{pre_request};
	my $pre = qq{select "$pre_schema"."$pre_name"()};

	my $dbh = $self->{dbh};
	my $begin = "BEGIN ISOLATION LEVEL READ COMMITTED $self->{last_access_mode}";
	$self->{last_statements} = [ $begin, $prologue, $pre, $main, 'COMMIT' ];
	$dbh->do($begin) or die "BEGIN failed: " . $dbh->errstr;

	# The error is read at once: DBI resets it on the next call.
	my ($row, $state, $errstr);
	if (!$dbh->do($prologue, undef, @prologue_args) || !$dbh->do($pre))
	{
		($state, $errstr) = ($dbh->state, $dbh->errstr);
	}
	else
	{
		my $sth = $dbh->prepare($main);
		$sth->bind_param(1, $payload, { pg_type => PG_JSON }) if @params;
		if ($sth->execute)
		{
			$row = $sth->fetchrow_hashref;
		}
		else
		{
			($state, $errstr) = ($sth->state, $sth->errstr);
		}
		$sth->finish;
	}
	if (defined $errstr)
	{
		$dbh->do('ROLLBACK');
		return _pg_error($state, $errstr, $authenticated);
	}
	$dbh->do('COMMIT') or die 'COMMIT failed: ' . $dbh->errstr;

	# PostgREST 12: a void function answers 204 without a body.
	my $status = $row->{response_status} // ($routine->{returns_void} ? 204 : 200);
	my %response_headers;
	$response_headers{'content-type'} = 'application/json; charset=utf-8'
	  unless $status == 204;
	if (defined $row->{response_headers})
	{
		for my $h (@{ JSON::PP->new->decode($row->{response_headers}) })
		{
			$response_headers{ lc $_ } = $h->{$_} for keys %$h;
		}
	}
	my $body = ($status == 204 || $routine->{returns_void}) ? '' : $row->{body};
	return {
		status => 0 + $status,
		headers => \%response_headers,
		body => $body,
		json => length($body) ? JSON::PP->new->allow_nonref->decode($body) : undef,
	};
}

sub _error
{
	my ($status, $body, $headers) = @_;
	my $text = $json->encode($body);
	return {
		status => $status,
		headers => { 'content-type' => 'application/json; charset=utf-8', %{ $headers || {} } },
		body => $text,
		json => JSON::PP->new->decode($text),
	};
}

# libpq's message: "ERROR:  message\nDETAIL:  detail\nHINT:  hint\nCONTEXT: ..."
sub _pg_error
{
	my ($state, $errstr, $authenticated) = @_;
	my %field;
	my $current = 'message';
	for my $line (split /\n/, $errstr)
	{
		if ($line =~ /^(ERROR|FATAL|PANIC):  (.*)$/) { $current = 'message'; $field{message} = $2; }
		elsif ($line =~ /^DETAIL:  (.*)$/) { $current = 'details'; $field{details} = $1; }
		elsif ($line =~ /^HINT:  (.*)$/) { $current = 'hint'; $field{hint} = $1; }
		elsif ($line =~ /^[A-Z ]+:  /) { $current = 'other'; }
		elsif ($current ne 'other') { $field{$current} .= "\n$line"; }
	}

	if ($state eq 'PGRST')
	{
		my $body = JSON::PP->new->decode($field{message});
		my $detail = JSON::PP->new->decode($field{details});
		return _error($detail->{status}, $body,
			{ map { lc($_) => $detail->{headers}{$_} } keys %{ $detail->{headers} || {} } });
	}

	my $body = { code => $state, message => $field{message}, details => $field{details}, hint => $field{hint} };
	return _error($1, $body) if $state =~ /^PT(\d\d\d)$/;
	if ($state eq '42501')
	{
		return $authenticated ? _error(403, $body)
		  : _error(401, $body, { 'www-authenticate' => 'Bearer' });
	}
	return _error(_status_of($state), $body);
}

# PostgREST's table of SQLSTATEs (docs: references/errors.html).
sub _status_of
{
	my ($s) = @_;
	my %exact = (
		'23503' => 409, '23505' => 409, '25006' => 405, '53400' => 500,
		'P0001' => 400, '42883' => 404, '42P01' => 404, '42P17' => 500);
	return $exact{$s} if $exact{$s};
	my %class = (
		'08' => 503, '09' => 500, '0L' => 403, '0P' => 403, '25' => 500,
		'28' => 403, '2D' => 500, '38' => 500, '39' => 500, '3B' => 500,
		'40' => 500, '53' => 503, '54' => 500, '55' => 500, '57' => 500,
		'58' => 500, 'F0' => 500, 'HV' => 500, 'P0' => 500, 'XX' => 500);
	return $class{ substr($s, 0, 2) } // 400;
}

1;
