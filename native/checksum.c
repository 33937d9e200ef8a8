/*
 * The Internet checksum (RFC 1071): a ones-complement sum of 16-bit words.
 *
 * The sum is taken over native-order 32-bit words (loaded with memcpy, so any
 * alignment is fine) into 64-bit accumulators, which cannot overflow within a
 * chunk. Because 2^16 - 1 divides 2^32 - 1, folding the wide sum down to 16
 * bits gives the sum of native-order 16-bit words; on a little-endian machine
 * that is the byte-swapped sum of the big-endian words (RFC 1071, 2.B), so
 * one swap at the end fixes the order.
 */
#include <string.h>

#include "native.h"

/* Bytes summed between two folds of the accumulators: far below overflow. */
#define CHUNK ((size_t)1 << 30)

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Fold until no carry is left: one fold is not always enough. */
static inline uint32_t fold16(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}

/* Ones-complement reduction of a 64-bit accumulator to at most 33 bits. */
static inline uint64_t fold32(uint64_t s)
{
    return (s & 0xffffffffu) + (s >> 32);
}

/* Sum of the native-order 32-bit words of p[0, n), n < CHUNK, as 64 bits. */
static uint64_t sum_chunk(const uint8_t *p, size_t n)
{
    uint64_t a = 0, b = 0;

    /* Each round adds less than 2^34 to a and to b: no overflow below 2^30 bytes. */
    for (; n >= 32; n -= 32, p += 32) {
        uint64_t w0 = load64(p), w1 = load64(p + 8);
        uint64_t w2 = load64(p + 16), w3 = load64(p + 24);
        a += (w0 & 0xffffffffu) + (w0 >> 32) + (w1 & 0xffffffffu) + (w1 >> 32);
        b += (w2 & 0xffffffffu) + (w2 >> 32) + (w3 & 0xffffffffu) + (w3 >> 32);
    }
    for (; n >= 4; n -= 4, p += 4)
        a += load32(p);
    if (n) {
        /* 1 to 3 bytes left: pad with zeros up to a whole word. */
        uint8_t tail[4] = {0, 0, 0, 0};
        memcpy(tail, p, n);
        a += load32(tail);
    }
    return fold32(a) + fold32(b);
}

uint32_t csum_partial(const uint8_t *buf, size_t len, uint32_t initial)
{
    uint64_t acc = 0;
    uint32_t sum;

    while (len > CHUNK) {
        acc = fold32(acc + sum_chunk(buf, CHUNK));
        buf += CHUNK;
        len -= CHUNK;
    }
    acc += sum_chunk(buf, len);

    sum = fold16(acc);
    if (little_endian())
        sum = ((sum & 0xff) << 8) | (sum >> 8);
    return fold16((uint64_t)sum + initial);
}
