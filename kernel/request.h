/* A signaling request as a DIME's handlers see it, and the answer they build (dime.c, mice.c). */
#ifndef KERNEL_REQUEST_H
#define KERNEL_REQUEST_H
#include <stdint.h>
#include "px_codec.h"
#include "dime.h"

#define TLV_BUF ANSWER_TLVS

struct request {
    const uint8_t *raw;
    PxView v;
};

struct reply {
    unsigned status, count;
    px_ssize len;
    uint8_t tlvs[TLV_BUF];
};

/* A TLV of the request (px_decode validated the list), its length in *len; 0 if absent. */
const uint8_t *tlv_find(const struct request *r, unsigned type, unsigned *len);
int tlv_uint(const struct request *r, unsigned type, uint64_t *out);
void put_uint(struct reply *y, unsigned type, uint64_t value);
void put_bytes(struct reply *y, unsigned type, const uint8_t *value, unsigned len);
void put_text(struct reply *y, const char *text);

/* The MICE commands (mice.c): LOAD, START, STOP, CONNECT, DISCONNECT. */
void h_load(struct dime *d, const struct request *r, struct reply *y);
void h_start(struct dime *d, const struct request *r, struct reply *y);
void h_stop(struct dime *d, const struct request *r, struct reply *y);
void h_connect(struct dime *d, const struct request *r, struct reply *y);
void h_disconnect(struct dime *d, const struct request *r, struct reply *y);

/* The security commands (security.c): KEY_INSTALL, KEY_ROTATE, ACL_SET, ACL_GET. */
void h_key_install(struct dime *d, const struct request *r, struct reply *y);
void h_key_rotate(struct dime *d, const struct request *r, struct reply *y);
void h_acl_set(struct dime *d, const struct request *r, struct reply *y);
void h_acl_get(struct dime *d, const struct request *r, struct reply *y);
/* Whether the access list lets mac send cmd (an empty list lets everyone send everything). */
int acl_allows(const struct dime *d, const uint8_t *mac, unsigned cmd);
#endif
