%% nodex_front: the user's alternative to nodexd, an Erlang node serving HTTP (bench/run.sh).
%%
%% mochiweb serves `POST /cnodes/example/call` on 127.0.0.1 (an ephemeral port); each request is
%% handled in its own mochiweb process, which calls the example C-node the Nodex way,
%% `{any, CNode} ! Req` and a receive with a timeout, and answers with the reply:
%%   Content-Type application/json          jiffy, with nodexd's JSON mapping (docs/terms.md)
%%   Content-Type application/x-erlang-binary  binary_to_term / term_to_binary (ETF)
%% A timeout answers 504, a body that is not a term 400, anything else 404.
%%
%% main/1 (from `erl -run nodex_front main Exe TimeoutMs`) starts the C-node as a port with the
%% Nodex argv (nodex_bench:start_cnode/1, it connects back to this node), starts mochiweb and
%% prints "nodex_front ready port=P cnode_os_pid=N" on stdout, then serves until the runner ends
%% this node by pid (the C-node exits when the node goes away).
-module(nodex_front).

-export([main/1, to_json/1, from_json/1]).

-define(PATH, "/cnodes/example/call").
-define(ETF, "application/x-erlang-binary").

main([Exe, TimeoutStr]) ->
    Timeout = list_to_integer(TimeoutStr),
    {_Port, CNode, OsPid} = nodex_bench:start_cnode(Exe),
    Loop = fun(Req) -> handle(Req, CNode, Timeout) end,
    {ok, Server} = mochiweb_http:start([{ip, {127, 0, 0, 1}}, {port, 0}, {loop, Loop},
                                        {max, 20000}]),
    Port = mochiweb_socket_server:get(Server, port),
    io:format("nodex_front ready port=~p cnode_os_pid=~p~n", [Port, OsPid]),
    receive stop -> halt(0) end;
main(Args) ->
    io:format(standard_error, "nodex_front: bad arguments ~p~n", [Args]),
    halt(2).

handle(Req, CNode, Timeout) ->
    case {mochiweb_request:get(method, Req), mochiweb_request:get(path, Req)} of
        {'POST', ?PATH} ->
            Etf = mochiweb_request:get_primary_header_value("content-type", Req) =:= ?ETF,
            Body = mochiweb_request:recv_body(Req),
            case decode(Etf, Body) of
                {ok, Term} -> call(Req, CNode, Term, Timeout, Etf);
                error -> respond(Req, 400, false, <<"bad request body">>)
            end;
        _ ->
            respond(Req, 404, false, <<"not found">>)
    end.

%% The Nodex way: a registered send to the C-node, the reply is the next message we get.
call(Req, CNode, Term, Timeout, Etf) ->
    {any, CNode} ! Term,
    receive
        Reply -> respond(Req, 200, Etf, encode(Etf, Reply))
    after Timeout -> respond(Req, 504, false, <<"timeout">>)
    end.

respond(Req, Status, Etf, Body) ->
    Type = case {Status, Etf} of
               {200, true} -> ?ETF;
               {200, false} -> "application/json";
               _ -> "text/plain"
           end,
    mochiweb_request:respond({Status, [{"Content-Type", Type}], Body}, Req).

decode(true, Body) ->
    try {ok, binary_to_term(Body, [safe])} catch error:_ -> error end;
decode(false, Body) ->
    try {ok, from_json(jiffy:decode(Body))} catch _:_ -> error end.

encode(true, Term) -> term_to_binary(Term);
encode(false, Term) -> jiffy:encode(to_json(Term)).

%% --- nodexd's JSON mapping (docs/terms.md) over jiffy's EJSON ------------------------------
%% JSON → term: what jiffy:decode/1 gives ({[{K, V}]} objects, binaries for strings).
from_json(B) when is_binary(B) -> B;
from_json(N) when is_number(N) -> N;
from_json(A) when A =:= true; A =:= false; A =:= null -> A;
from_json(L) when is_list(L) -> [from_json(E) || E <- L];
from_json({[{<<"$atom">>, A}]}) -> binary_to_atom(A, utf8);
from_json({[{<<"$tuple">>, L}]}) -> list_to_tuple([from_json(E) || E <- L]);
from_json({[{<<"$binary">>, B64}]}) -> base64:decode(B64);
from_json({[{<<"$bits">>, {Fields}}]}) ->
    Bytes = base64:decode(proplists:get_value(<<"bytes">>, Fields)),
    Bits = proplists:get_value(<<"bits">>, Fields),
    <<Bs:Bits/bitstring, _/bitstring>> = Bytes,
    Bs;
from_json({[{<<"$charlist">>, S}]}) -> unicode:characters_to_list(S);
from_json({[{<<"$improper">>, L}]}) -> improper([from_json(E) || E <- L]);
from_json({[{<<"$map">>, Pairs}]}) -> maps:from_list([{from_json(K), from_json(V)} || [K, V] <- Pairs]);
from_json({[{<<"$pid">>, <<"self">>}]}) -> self();
from_json({[{<<"$", Tag/binary>>, B64}]}) when Tag =:= <<"pid">>; Tag =:= <<"ref">>;
                                               Tag =:= <<"port">>; Tag =:= <<"fun">> ->
    binary_to_term(<<131, (base64:decode(B64))/binary>>);
from_json({[{<<"$", _/binary>> = Tag, _}]}) -> error({unknown_tag, Tag});
from_json({Pairs}) -> maps:from_list([{K, from_json(V)} || {K, V} <- Pairs]).

improper([T]) -> T;
improper([H | T]) -> [H | improper(T)].

%% term → JSON: EJSON for jiffy:encode/1.
to_json(B) when is_binary(B) ->
    case unicode:characters_to_binary(B) of
        B -> B;
        _ -> {[{<<"$binary">>, base64:encode(B)}]}
    end;
to_json(B) when is_bitstring(B) ->
    Bits = bit_size(B),
    Pad = (8 - Bits rem 8) rem 8,
    {[{<<"$bits">>, {[{<<"bytes">>, base64:encode(<<B/bitstring, 0:Pad>>)}, {<<"bits">>, Bits}]}}]};
to_json(N) when is_number(N) -> N;
to_json(A) when A =:= true; A =:= false; A =:= null -> A;
to_json(A) when is_atom(A) -> {[{<<"$atom">>, atom_to_binary(A, utf8)}]};
to_json(T) when is_tuple(T) -> {[{<<"$tuple">>, [to_json(E) || E <- tuple_to_list(T)]}]};
to_json(L) when is_list(L) ->
    case proper(L, []) of
        {proper, Es} -> Es;
        {improper, Es} -> {[{<<"$improper">>, Es}]}
    end;
to_json(M) when is_map(M) ->
    Keys = maps:keys(M),
    case lists:all(fun is_json_key/1, Keys) andalso not dollar_tag(Keys) of
        true -> {[{K, to_json(V)} || {K, V} <- maps:to_list(M)]};
        false -> {[{<<"$map">>, [[to_json(K), to_json(V)] || {K, V} <- maps:to_list(M)]}]}
    end;
to_json(Opaque) ->
    Tag = if is_pid(Opaque) -> <<"$pid">>; is_reference(Opaque) -> <<"$ref">>;
             is_port(Opaque) -> <<"$port">>; true -> <<"$fun">> end,
    <<131, Bytes/binary>> = term_to_binary(Opaque),
    {[{Tag, base64:encode(Bytes)}]}.

proper([], Acc) -> {proper, lists:reverse(Acc)};
proper([H | T], Acc) -> proper(T, [to_json(H) | Acc]);
proper(Tail, Acc) -> {improper, lists:reverse([to_json(Tail) | Acc])}.

is_json_key(K) -> is_binary(K) andalso unicode:characters_to_binary(K) =:= K.

dollar_tag([<<"$", _/binary>>]) -> true;
dollar_tag(_) -> false.
