/* fuzz.h: what every libFuzzer target here shares. Included after the target defines FUZZ_NAME. */
#ifndef CHUNKD_FUZZ_H
#define CHUNKD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A property the target checks besides "no crash": abort() (which libFuzzer reports, with the input) and say why. */
#define CHECK(cond, ...)                                                                                              \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            fprintf(stderr, FUZZ_NAME ": check failed: %s: ", #cond);                                                 \
            fprintf(stderr, __VA_ARGS__);                                                                             \
            fputc('\n', stderr);                                                                                      \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
