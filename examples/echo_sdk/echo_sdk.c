/* echo_sdk: example_cnode's echo ({ping, T} -> {pong, T}) rebuilt on libnodex_cnode. */

/*
 * usage: echo_sdk <sname> <hostname> <cookie> <gateway-sname> [to] [workers N]
 *   to         publish and wait for the gateway (nodexd `direction: to`) instead of connecting back
 *   workers N  answer on N worker threads
 * Compare with ../example_cnode.c: argv, ready line, ticks, gen_call envelopes, reply targets and
 * exit-on-disconnect are the library's job; what is left is the request handler.
 */

#include <stdlib.h>
#include <string.h>

#include <nodex_cnode.h>

static int on_request(nodex_request *req, void *user) {
    (void)user;
    int i = req->index, arity = 0, start = 0;
    char tag[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(req->buf, &i, &arity) == 0 && arity == 2 &&
        ei_decode_atom(req->buf, &i, tag) == 0 && strcmp(tag, "ping") == 0 &&
        (start = i, ei_skip_term(req->buf, &i) == 0)) {
        ei_x_buff *r = nodex_reply_begin(req); /* owned by the library, reused */
        ei_x_encode_tuple_header(r, 2);
        ei_x_encode_atom(r, "pong");
        ei_x_append_buf(r, req->buf + start, i - start); /* T's bytes, copied verbatim */
        nodex_reply_send(req); /* a failure means the gateway is gone: run returns on its own */
        return 0;
    }
    nodex_reply_error(req, "unknown_call");
    return 0;
}

int main(int argc, char **argv) {
    nodex_cnode_options opts = {.on_request = on_request, .program = "echo_sdk"};
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "to") == 0)
            opts.direction = NODEX_DIRECTION_TO;
        else if (strcmp(argv[i], "workers") == 0 && i + 1 < argc)
            opts.workers = (unsigned)strtoul(argv[++i], NULL, 10);
    }
    return nodex_cnode_main(argc, argv, &opts); /* 0 when the gateway lets us go */
}
