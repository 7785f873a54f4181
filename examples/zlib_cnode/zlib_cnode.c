/* zlib_cnode: a C-node that puts zlib (compress, inflate, CRC-32) behind nodexd, on libnodex_cnode.
 */

/*
 * usage: zlib_cnode <sname> <hostname> <cookie> <gateway-sname> [workers N] [max_inflate BYTES]
 *
 * Requests (Bin is an Erlang binary; Level an integer 0-9), replies:
 *   {deflate, Bin}         -> {ok, Compressed}     zlib format, as Erlang's zlib:compress/1
 *   {deflate, Bin, Level}  -> {ok, Compressed}
 *   {inflate, Bin}         -> {ok, Bin} | {error, data_error | truncated | too_large | enomem}
 *   {crc32, Bin}           -> Int                  as erlang:crc32/1
 *   {adler32, Bin}         -> Int                  as erlang:adler32/1
 *   version                -> {ok, <<"1.2.13">>}   the zlib linked in
 *   anything else          -> {error, badarg}
 *
 * Why a C-node: a native library runs in its own process, so a crash or a leak in it never takes
 * down the Erlang VM or the gateway, and long calls (1 MiB in, with `workers`) use other cores
 * without blocking schedulers. Binaries are read in place from the received message: no copy.
 */

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <nodex_cnode.h>

typedef struct zconfig {
    size_t max_inflate; /* largest inflated result; a bigger one is {error, too_large} */
} zconfig;

/* Finds the binary at buf[*index] without copying it; advances *index past it. */
static int decode_binary_ref(const char *buf, int *index, const unsigned char **data, size_t *len) {
    int type = 0, size = 0;
    if (ei_get_type(buf, index, &type, &size) < 0 || type != ERL_BINARY_EXT) return -1;
    *data = (const unsigned char *)buf + *index + 5; /* tag byte, 4-byte length, then the bytes */
    *len = (size_t)size;
    return ei_skip_term(buf, index);
}

/* Replies {ok, <<out[0..len)>>}. */
static void reply_ok_binary(nodex_request *req, const void *out, size_t len) {
    ei_x_buff *r = nodex_reply_begin(req);
    if (ei_x_encode_tuple_header(r, 2) < 0 || ei_x_encode_atom(r, "ok") < 0 || len > INT_MAX ||
        ei_x_encode_binary(r, out, (int)len) < 0) {
        nodex_reply_error(req, "enomem");
        return;
    }
    nodex_reply_send(req);
}

static void do_deflate(nodex_request *req, const unsigned char *in, size_t len, int level) {
    uLongf out_len = compressBound((uLong)len);
    unsigned char *out = malloc(out_len ? out_len : 1);
    if (!out) {
        nodex_reply_error(req, "enomem");
        return;
    }
    int rc = compress2(out, &out_len, in, (uLong)len, level);
    if (rc == Z_OK)
        reply_ok_binary(req, out, out_len);
    else
        nodex_reply_error(req, rc == Z_MEM_ERROR ? "enomem" : "badarg");
    free(out);
}

static void do_inflate(nodex_request *req, const unsigned char *in, size_t len, size_t max) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK) {
        nodex_reply_error(req, "enomem");
        return;
    }
    /* One byte over max tells "exactly max" from "more than max". */
    size_t limit = max + 1, cap = len * 4 < 65536 ? 65536 : len * 4, used = 0;
    if (cap > limit) cap = limit;
    unsigned char *out = malloc(cap);
    const char *error = out ? NULL : "enomem";
    zs.next_in = (Bytef *)(uintptr_t)in; /* zlib does not write through next_in */
    zs.avail_in = (uInt)len;
    while (!error) {
        zs.next_out = out + used;
        zs.avail_out = (uInt)(cap - used);
        int rc = inflate(&zs, Z_NO_FLUSH);
        used = cap - zs.avail_out;
        if (rc == Z_STREAM_END) break;
        if (rc == Z_MEM_ERROR) {
            error = "enomem";
        } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR) {
            error = "data_error";
        } else if (zs.avail_out == 0) { /* out of room: grow up to the limit */
            if (cap >= limit) {
                error = "too_large";
                break;
            }
            size_t next = cap * 2 > limit ? limit : cap * 2;
            unsigned char *grown = realloc(out, next);
            if (!grown) {
                error = "enomem";
            } else {
                out = grown;
                cap = next;
            }
        } else if (zs.avail_in == 0) { /* all input used, stream not ended */
            error = "truncated";
        } else if (rc == Z_BUF_ERROR) { /* room and input, yet no progress: not expected */
            error = "buf_error";
        }
    }
    inflateEnd(&zs);
    if (!error && used > max) error = "too_large";
    if (error)
        nodex_reply_error(req, error);
    else
        reply_ok_binary(req, out, used);
    free(out);
}

static void reply_checksum(nodex_request *req, unsigned long sum) {
    ei_x_buff *r = nodex_reply_begin(req);
    ei_x_encode_ulong(r, sum);
    nodex_reply_send(req);
}

static int on_request(nodex_request *req, void *user) {
    const zconfig *cfg = user;
    const char *buf = req->buf;
    int i = req->index, arity = 0;
    char tag[MAXATOMLEN_UTF8];
    const unsigned char *data = NULL;
    size_t len = 0;
    long level = Z_DEFAULT_COMPRESSION;

    if (ei_decode_atom(buf, &i, tag) == 0) {
        if (strcmp(tag, "version") != 0) return nodex_reply_error(req, "badarg"), 0;
        ei_x_buff *r = nodex_reply_begin(req);
        ei_x_encode_tuple_header(r, 2);
        ei_x_encode_atom(r, "ok");
        ei_x_encode_binary(r, zlibVersion(), (int)strlen(zlibVersion()));
        nodex_reply_send(req);
        return 0;
    }
    i = req->index;
    if (ei_decode_tuple_header(buf, &i, &arity) < 0 || arity < 2 || arity > 3 ||
        ei_decode_atom(buf, &i, tag) < 0 || decode_binary_ref(buf, &i, &data, &len) < 0 ||
        (arity == 3 && (strcmp(tag, "deflate") != 0 || ei_decode_long(buf, &i, &level) < 0 ||
                        level < 0 || level > 9))) {
        nodex_reply_error(req, "badarg");
        return 0;
    }
    if (strcmp(tag, "deflate") == 0)
        do_deflate(req, data, len, (int)level);
    else if (strcmp(tag, "inflate") == 0 && arity == 2)
        do_inflate(req, data, len, cfg->max_inflate);
    else if (strcmp(tag, "crc32") == 0 && arity == 2)
        reply_checksum(req, crc32(crc32(0L, Z_NULL, 0), data, (uInt)len));
    else if (strcmp(tag, "adler32") == 0 && arity == 2)
        reply_checksum(req, adler32(adler32(0L, Z_NULL, 0), data, (uInt)len));
    else
        nodex_reply_error(req, "badarg");
    return 0;
}

int main(int argc, char **argv) {
    zconfig cfg = {.max_inflate = 64u << 20};
    nodex_cnode_options opts = {.on_request = on_request, .user = &cfg, .program = "zlib_cnode"};
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "workers") == 0)
            opts.workers = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "max_inflate") == 0)
            cfg.max_inflate = (size_t)strtoull(argv[i + 1], NULL, 10);
    }
    return nodex_cnode_main(argc, argv, &opts);
}
