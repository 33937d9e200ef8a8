/*
 * Software GSO: one TCP frame cut into MSS-sized frames, headers copied
 * and adjusted, checksums computed (native.h has the contract; the
 * pure-Python twin is stack/native_py.py gso_segment, and
 * tests/native/test_gso.py holds the two to the same bytes).
 */
#include <string.h>

#include "bytes.h"
#include "native.h"

#define ETH_LEN 14
#define IP_LEN 20
#define F_FIN 0x01
#define F_PSH 0x08
#define F_URG 0x20
#define F_CWR 0x80

int64_t gso_segment(const uint8_t *in, size_t len, uint32_t mss, uint8_t *out, size_t cap,
                    uint32_t *lens, size_t max_frames)
{
    if (mss == 0 || len < ETH_LEN + IP_LEN + 20)
        return 0;
    if (in[12] != 0x08 || in[13] != 0x00 || in[14] != 0x45 || in[23] != 6)
        return 0;
    const uint8_t *ip = in + ETH_LEN;
    size_t total = get16(ip + 2);
    if (get16(ip + 6) & 0x3FFF)
        return 0;                                   /* a fragment */
    const uint8_t *tcp = ip + IP_LEN;
    size_t thl = (size_t)(tcp[12] >> 4) * 4;
    size_t end = ETH_LEN + total;
    if (thl < 20 || end > len || ETH_LEN + IP_LEN + thl > end)
        return 0;
    const uint8_t *payload = tcp + thl;
    size_t n = end - (ETH_LEN + IP_LEN + thl);
    if (n <= mss)
        return 0;
    size_t count = (n + mss - 1) / mss;
    size_t hdr = ETH_LEN + IP_LEN + thl;
    if (count > max_frames || cap < count * hdr + n)
        return -1;

    uint32_t ident = get16(ip + 4);
    uint32_t seq = get32(tcp + 4);
    uint8_t flags = tcp[13];
    int64_t urg = get16(tcp + 18);
    uint32_t pseudo = (uint32_t)get16(ip + 12) + get16(ip + 14) + get16(ip + 16)
                      + get16(ip + 18) + 6;
    uint8_t *o = out;
    for (size_t i = 0, off = 0; i < count; i++, off += mss) {
        size_t piece = n - off < mss ? n - off : mss;
        int last = i == count - 1;
        memcpy(o, in, hdr);
        uint8_t *oip = o + ETH_LEN;
        uint8_t *otcp = oip + IP_LEN;
        put16(oip + 2, (uint32_t)(IP_LEN + thl + piece));
        put16(oip + 4, (ident + (uint32_t)i) & 0xFFFF);
        put16(oip + 10, 0);
        put16(oip + 10, ~csum_partial(oip, IP_LEN, 0) & 0xFFFF);
        put32(otcp + 4, seq + (uint32_t)off);
        uint8_t f = flags;
        if (!last)
            f &= (uint8_t)~(F_FIN | F_PSH);
        if (i)
            f &= (uint8_t)~F_CWR;
        uint32_t up = 0;
        if (flags & F_URG) {
            int64_t left = urg - (int64_t)off;
            if (left <= 0)
                f &= (uint8_t)~F_URG;
            else
                up = left > 0xFFFF ? 0xFFFF : (uint32_t)left;
        }
        otcp[13] = f;
        put16(otcp + 18, up);
        put16(otcp + 16, 0);
        memcpy(o + hdr, payload + off, piece);
        uint32_t sum = csum_partial(otcp, thl + piece, pseudo + (uint32_t)(thl + piece));
        put16(otcp + 16, ~sum & 0xFFFF);
        lens[i] = (uint32_t)(hdr + piece);
        o += hdr + piece;
    }
    return (int64_t)count;
}
