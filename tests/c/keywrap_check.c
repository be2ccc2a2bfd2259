/* Hosted driver for tests/test_baremetal_keywrap.py: the kernel's AES-256 inverse cipher, HKDF and
 * RFC 5649 unwrap (kernel/keywrap.c), one command a line on stdin, one answer a line:
 *   aes KEYHEX BLOCKHEX          -> the decrypted block (hex)
 *   kek WRAPPINGKEYHEX NEWID     -> pxproto's KEY_INSTALL KEK (hex)
 *   unwrap KEKHEX WRAPPEDHEX     -> the key (hex), or "-" if the unwrap fails
 * An empty value is written "-". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hexarg.h"
#include "keywrap.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap) { return unhex_as("keywrap_check", s, out, cap); }

static void put(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
    printf("\n");
}

int main(void) {
    static char line[4096];
    uint8_t key[256], data[1024], out[KEYWRAP_MAX];
    char *cmd;
    while (fgets(line, sizeof line, stdin)) {
        cmd = strtok(line, " \n");
        if (!cmd) continue;
        if (strcmp(cmd, "aes") == 0) {
            if (unhex(strtok(NULL, " \n"), key, 32) != 32 || unhex(strtok(NULL, " \n"), data, 16) != 16) return 2;
            aes256_decrypt(key, data);
            put(data, 16);
        } else if (strcmp(cmd, "kek") == 0) {
            size_t n = unhex(strtok(NULL, " \n"), key, sizeof key);
            char *id = strtok(NULL, " \n");
            if (!id) return 2;
            keywrap_kek(key, n, (unsigned)strtoul(id, 0, 10), out);
            put(out, 32);
        } else if (strcmp(cmd, "unwrap") == 0) {
            size_t n;
            int got;
            if (unhex(strtok(NULL, " \n"), key, 32) != 32) return 2;
            n = unhex(strtok(NULL, " \n"), data, sizeof data);
            got = aes_kw_unwrap_pad(key, data, n, out, sizeof out);
            if (got < 0) printf("-\n");
            else put(out, (size_t)got);
        } else {
            fprintf(stderr, "keywrap_check: unknown command %s\n", cmd);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
