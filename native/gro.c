/*
 * Software GRO: consecutive in-order TCP segments of one flow in a batch of
 * received frames merged into one segment before TCP sees them (native.h
 * has the contract; the pure-Python twin is stack/native_py.py
 * gro_coalesce, and tests/native/test_gro.py holds the two to the same
 * frames).
 */
#include <string.h>

#include "bytes.h"
#include "native.h"

#define ETH_LEN 14
#define IP_LEN 20
#define TCP_ACK 0x10
#define TCP_PSH 0x08
#define IP_MAX 65535

/* What the merge rules need of one frame; len 0: the frame never merges. */
typedef struct {
    const uint8_t *f;
    uint32_t thl;       /* TCP header length */
    uint32_t len;       /* TCP payload length */
    uint32_t seq;
    int ts;             /* options are exactly NOP, NOP, timestamps */
} seg;

/* The TCP checksum over the pseudo-header and tcp[0, n). */
static uint32_t tcp_sum(const uint8_t *ip, const uint8_t *tcp, size_t n)
{
    uint32_t pseudo = (uint32_t)get16(ip + 12) + get16(ip + 14) + get16(ip + 16)
                      + get16(ip + 18) + 6 + (uint32_t)n;
    return csum_partial(tcp, n, pseudo);
}

static void parse(const uint8_t *f, size_t n, seg *s)
{
    s->f = f;
    s->len = 0;
    if (n < ETH_LEN + IP_LEN + 20 || f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45)
        return;
    const uint8_t *ip = f + ETH_LEN;
    size_t total = get16(ip + 2);
    if (ip[9] != 6 || (get16(ip + 6) & 0xBFFF) || total < IP_LEN + 20 || ETH_LEN + total > n)
        return;                                  /* not TCP, a fragment, or short */
    const uint8_t *tcp = ip + IP_LEN;
    size_t thl = (size_t)(tcp[12] >> 4) * 4;
    if (thl < 20 || IP_LEN + thl >= total || (tcp[12] & 0x0F))
        return;                                  /* no payload, or reserved bits set */
    if (tcp[13] != TCP_ACK && tcp[13] != (TCP_ACK | TCP_PSH))
        return;                                  /* only ACK, or ACK and PSH */
    if (get16(tcp + 18))
        return;                                  /* an urgent pointer */
    if (csum_partial(ip, IP_LEN, 0) != 0xFFFF || tcp_sum(ip, tcp, total - IP_LEN) != 0xFFFF)
        return;                                  /* a bad checksum: TCP counts it */
    s->thl = (uint32_t)thl;
    s->len = (uint32_t)(total - IP_LEN - thl);
    s->seq = get32(tcp + 4);
    s->ts = thl == 32 && tcp[20] == 1 && tcp[21] == 1 && tcp[22] == 8 && tcp[23] == 10;
}

/* Whether b may follow a in one merged segment (a is the group's last so
 * far, head its first, total the group's IP length so far). */
static int follows(const seg *head, const seg *a, const seg *b, size_t total)
{
    const uint8_t *fa = a->f, *fb = b->f;
    const uint8_t *ta = fa + ETH_LEN + IP_LEN, *tb = fb + ETH_LEN + IP_LEN;
    if (!b->len || b->thl != a->thl || a->len != head->len || b->len > head->len)
        return 0;
    if (total + b->len > IP_MAX || ta[13] & TCP_PSH)
        return 0;
    if (memcmp(fa, fb, ETH_LEN) || fa[15] != fb[15] || memcmp(fa + 20, fb + 20, 3)
        || memcmp(fa + 26, fb + 26, 8))
        return 0;                                /* Ethernet, TOS, DF, TTL, protocol, addresses */
    if (memcmp(ta, tb, 4) || memcmp(ta + 8, tb + 8, 4) || memcmp(ta + 14, tb + 14, 2))
        return 0;                                /* ports, acknowledgment, window */
    if (b->seq != a->seq + a->len)
        return 0;                                /* not the next bytes */
    if (a->ts && b->ts) {
        if (get32(tb + 24) - get32(ta + 24) >= 0x80000000u
            || get32(tb + 28) - get32(ta + 28) >= 0x80000000u)
            return 0;                            /* a timestamp going back */
        return 1;
    }
    return !memcmp(ta + 20, tb + 20, a->thl - 20);
}

int64_t gro_coalesce(const uint8_t *in, const uint32_t *lens, size_t count, uint8_t *out,
                     size_t cap, int32_t *which, uint32_t *out_lens, size_t max_merged)
{
    seg head, last, next;
    size_t at = 0, i = 0, n_out = 0, merged = 0, used = 0;
    while (i < count) {
        const uint8_t *f = in + at;
        parse(f, lens[i], &head);
        size_t start = i, total = 0, end_at = at + lens[i];
        last = head;
        if (head.len) {
            total = IP_LEN + head.thl + head.len;
            size_t j_at = end_at;
            for (size_t j = i + 1; j < count; j++) {
                parse(in + j_at, lens[j], &next);
                if (!follows(&head, &last, &next, total))
                    break;
                total += next.len;
                last = next;
                j_at += lens[j];
                end_at = j_at;
                i = j;
            }
        }
        if (i == start) {
            which[n_out++] = (int32_t)start;     /* as it came */
        } else {
            size_t hdr = ETH_LEN + IP_LEN + head.thl;
            if (merged == max_merged || cap - used < ETH_LEN + total)
                return -1;
            uint8_t *o = out + used;
            memcpy(o, f, hdr);
            uint8_t *p = o + hdr;
            for (size_t k = start, k_at = at; k <= i; k_at += lens[k], k++) {
                const uint8_t *g = in + k_at;
                size_t piece = get16(g + ETH_LEN + 2) - IP_LEN - head.thl;
                memcpy(p, g + hdr, piece);
                p += piece;
            }
            uint8_t *oip = o + ETH_LEN, *otcp = oip + IP_LEN;
            put16(oip + 2, (uint32_t)total);
            put16(oip + 10, 0);
            put16(oip + 10, ~csum_partial(oip, IP_LEN, 0) & 0xFFFF);
            otcp[13] = (uint8_t)(head.f[ETH_LEN + IP_LEN + 13]
                                 | (last.f[ETH_LEN + IP_LEN + 13] & TCP_PSH));
            put16(otcp + 16, 0);
            put16(otcp + 16, ~tcp_sum(oip, otcp, total - IP_LEN) & 0xFFFF);
            out_lens[merged] = (uint32_t)(ETH_LEN + total);
            used += ETH_LEN + total;
            which[n_out++] = -1 - (int32_t)merged;
            merged++;
        }
        at = end_at;
        i++;
    }
    return (int64_t)n_out;
}
