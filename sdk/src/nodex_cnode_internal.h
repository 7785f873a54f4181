/* nodex_cnode_internal: SDK functions shared with its unit tests, not part of the installed API. */
#ifndef NODEX_CNODE_INTERNAL_H
#define NODEX_CNODE_INTERNAL_H

#include "nodex_cnode.h"

/* Fills req from a received message: buf[0..len) (version byte first, owned by the caller and
 * borrowed by req) and msg (NULL = a registered send with an unset sender). Detects the gen_call
 * envelope. Leaves req->cnode and req->reply NULL for the caller to set. Never allocates. */
__attribute__((visibility("hidden"))) void nodex_request_decode(nodex_request *req, const char *buf,
                                                                int len, const erlang_msg *msg);

#endif /* NODEX_CNODE_INTERNAL_H */
