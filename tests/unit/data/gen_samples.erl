-module(gen_samples).
-export([main/1]).
main([CorpusDir, DataFile]) ->
    Fun = fun(X) -> X + 1 end,
    Samples = [
      {ping, <<"hello world">>}, self(), make_ref(), hd(erlang:ports()), Fun, fun lists:map/2,
      1 bsl 64, -(1 bsl 100), 1 bsl 2100, 1.5, -0.0, 1.0e300, 0.1, 2147483647, -2147483648, 2147483648,
      #{a => 1, <<"b">> => [1,2,3]}, #{<<"x">> => <<"y">>}, maps:from_list([{I, I} || I <- lists:seq(1, 40)]),
      <<1,2,3:5>>, <<255,0>>, <<"é"/utf8>>, "abc", [1000, 2000], [a | b], 'hello world', 'é', '日本',
      [], {}, <<>>, list_to_tuple(lists:seq(1, 300)), lists:seq(1, 300), {[{[{}]}]}],
    {ok, _} = {ok, 0},
    lists:foldl(fun(T, N) ->
        ok = file:write_file(filename:join(CorpusDir, io_lib:format("erl~2..0B.etf", [N])), term_to_binary(T)),
        N + 1 end, 1, Samples),
    ok = file:write_file(DataFile, term_to_binary(Samples)),
    ok = file:write_file(filename:join(CorpusDir, "compressed.etf"), term_to_binary(lists:duplicate(100, a), [compressed])),
    halt().
