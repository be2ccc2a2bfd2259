/* Hosted driver for tests/test_baremetal_ed25519.py: the kernel's SHA-512 and Ed25519 verification
 * (kernel/sha512.c, kernel/ed25519.c), one command a line on stdin, one answer a line:
 *   sha MSGHEX                 -> the SHA-512 digest (hex)
 *   verify PUBHEX SIGHEX MSGHEX -> 1 (valid) or 0
 * An empty message is written "-". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ed25519.h"
#include "hexarg.h"
#include "sha512.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap) { return unhex_as("ed25519_check", s, out, cap); }

int main(void) {
    static char line[1 << 20];
    static uint8_t msg[1 << 19];
    uint8_t pub[32], sig[64], dig[64];
    char *cmd, *a, *b, *c;
    while (fgets(line, sizeof line, stdin)) {
        cmd = strtok(line, " \n");
        if (!cmd)
            continue;
        if (strcmp(cmd, "sha") == 0) {
            struct sha512 s;
            size_t n = unhex(strtok(NULL, " \n"), msg, sizeof msg);
            sha512_init(&s);
            sha512_update(&s, msg, n);
            sha512_final(&s, dig);
            for (int i = 0; i < 64; i++)
                printf("%02x", dig[i]);
            printf("\n");
        } else if (strcmp(cmd, "verify") == 0) {
            a = strtok(NULL, " \n"), b = strtok(NULL, " \n"), c = strtok(NULL, " \n");
            if (!a || !b || !c || unhex(a, pub, 32) != 32 || unhex(b, sig, 64) != 64) {
                fprintf(stderr, "ed25519_check: verify wants PUBHEX SIGHEX MSGHEX\n");
                return 2;
            }
            printf("%d\n", ed25519_verify(sig, msg, unhex(c, msg, sizeof msg), pub));
        } else {
            fprintf(stderr, "ed25519_check: unknown command %s\n", cmd);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
