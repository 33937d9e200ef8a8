/*
 * A byte-range reassembly buffer: data arrives at offsets in [0, capacity),
 * the stored prefix starting at 0 is read and dropped from the front.
 *
 * Thousands of these may be alive at once (one per IP datagram being
 * reassembled, one per TCP connection with data out of order), so memory is
 * taken only when data arrives: the byte buffer grows with realloc up to the
 * highest offset stored (never to capacity up front) and the range array grows
 * up to max_holes entries. Both are released when nothing is stored.
 */
#include <stdlib.h>
#include <string.h>

#include "native.h"

struct reasm {
    uint8_t *buf;         /* offsets [0, alloc); only stored ranges are meaningful */
    int64_t alloc;        /* bytes allocated at buf */
    int64_t capacity;     /* offsets must stay below this */
    int64_t max_holes;    /* most ranges stored at once */
    reasm_range *ranges;  /* sorted, disjoint, not adjacent */
    size_t count;         /* ranges in use */
    size_t room;          /* ranges allocated */
    int64_t stored;       /* total length of the ranges */
};

reasm *reasm_new(int64_t capacity, int64_t max_holes)
{
    reasm *r;

    if (capacity < 0 || max_holes < 1)
        return NULL;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->capacity = capacity;
    r->max_holes = max_holes;
    return r;
}

void reasm_free(reasm *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r->ranges);
    free(r);
}

/* Make buf hold offsets [0, need), need <= capacity. 0, or -1 without memory. */
static int grow_buf(reasm *r, int64_t need)
{
    int64_t size;
    uint8_t *grown;

    if (need <= r->alloc)
        return 0;
    /* Double, so that data arriving in order costs O(log n) reallocs. */
    size = r->alloc > r->capacity / 2 ? r->capacity : r->alloc * 2;
    if (size < need)
        size = need;
    grown = realloc(r->buf, (size_t)size);
    if (grown == NULL)
        return -1;
    r->buf = grown;
    r->alloc = size;
    return 0;
}

/* Make room for one more range (count < max_holes). 0, or -1 without memory. */
static int grow_ranges(reasm *r)
{
    size_t room;
    reasm_range *grown;

    if (r->count < r->room)
        return 0;
    room = r->room ? r->room * 2 : 4;
    if ((uint64_t)room > (uint64_t)r->max_holes)
        room = (size_t)r->max_holes;
    grown = realloc(r->ranges, room * sizeof *grown);
    if (grown == NULL)
        return -1;
    r->ranges = grown;
    r->room = room;
    return 0;
}

/* Index of the first range whose end is at least `offset` (count if none). */
static size_t first_reaching(const reasm *r, int64_t offset)
{
    size_t lo = 0, hi = r->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ranges[mid].end < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int64_t reasm_insert(reasm *r, int64_t offset, const uint8_t *buf, size_t len)
{
    reasm_range *rg;
    reasm_range merged;
    int64_t end, cur, fresh = 0;
    size_t i, j, k;

    if (offset < 0 || offset > r->capacity || (uint64_t)len > (uint64_t)(r->capacity - offset))
        return REASM_OUT_OF_RANGE;
    if (len == 0)
        return 0;
    end = offset + (int64_t)len;

    /* Ranges i..j-1 overlap or touch [offset, end): they merge into one. */
    i = first_reaching(r, offset);
    for (j = i; j < r->count && r->ranges[j].start <= end; j++)
        ;
    if (i == j) {
        if ((int64_t)r->count >= r->max_holes)
            return REASM_TOO_MANY_RANGES;
        if (grow_ranges(r) != 0)
            return REASM_NO_MEMORY;
    }
    if (grow_buf(r, end) != 0)
        return REASM_NO_MEMORY;

    /* Copy only the gaps: bytes already stored win. */
    rg = r->ranges;
    cur = offset;
    for (k = i; k < j; k++) {
        if (cur < rg[k].start) {
            memcpy(r->buf + cur, buf + (cur - offset), (size_t)(rg[k].start - cur));
            fresh += rg[k].start - cur;
        }
        if (cur < rg[k].end)
            cur = rg[k].end;
    }
    if (cur < end) {
        memcpy(r->buf + cur, buf + (cur - offset), (size_t)(end - cur));
        fresh += end - cur;
    }

    merged.start = offset;
    merged.end = end;
    if (i < j) {
        if (rg[i].start < merged.start)
            merged.start = rg[i].start;
        if (rg[j - 1].end > merged.end)
            merged.end = rg[j - 1].end;
    }
    if (i == j) {
        memmove(rg + i + 1, rg + i, (r->count - i) * sizeof *rg);
        r->count++;
    } else if (j - i > 1) {
        memmove(rg + i + 1, rg + j, (r->count - j) * sizeof *rg);
        r->count -= j - i - 1;
    }
    rg[i] = merged;
    r->stored += fresh;
    return fresh;
}

int reasm_overlaps(const reasm *r, int64_t offset, int64_t length)
{
    int64_t end;
    size_t lo = 0, hi = r->count;

    if (length <= 0)
        return 0;
    /* Saturate: ranges lie in [0, capacity], so a clipped end compares the same. */
    end = offset > INT64_MAX - length ? INT64_MAX : offset + length;
    /* The first range ending after `offset` is the only one to check. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ranges[mid].end <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->count && r->ranges[lo].start < end;
}

int64_t reasm_contiguous(const reasm *r)
{
    return r->count && r->ranges[0].start == 0 ? r->ranges[0].end : 0;
}

const char *reasm_data(const reasm *r)
{
    return (const char *)r->buf;
}

int reasm_pop(reasm *r, int64_t n)
{
    reasm_range *rg = r->ranges;
    size_t k;

    if (n < 0 || n > reasm_contiguous(r))
        return REASM_OUT_OF_RANGE;
    if (n == 0)
        return 0;
    /* n <= contiguous: only the first range can vanish; others start past n. */
    if (rg[0].end == n) {
        memmove(rg, rg + 1, (r->count - 1) * sizeof *rg);
        r->count--;
    } else {
        rg[0].start = n;
    }
    for (k = 0; k < r->count; k++) {
        rg[k].start -= n;
        rg[k].end -= n;
    }
    r->stored -= n;
    if (r->count == 0) {
        reasm_clear(r);
        return 0;
    }
    memmove(r->buf, r->buf + n, (size_t)(rg[r->count - 1].end));
    return 0;
}

size_t reasm_count(const reasm *r)
{
    return r->count;
}

const reasm_range *reasm_ranges(const reasm *r)
{
    return r->ranges;
}

int64_t reasm_buffered(const reasm *r)
{
    return r->stored;
}

void reasm_clear(reasm *r)
{
    free(r->buf);
    free(r->ranges);
    r->buf = NULL;
    r->ranges = NULL;
    r->alloc = 0;
    r->count = 0;
    r->room = 0;
    r->stored = 0;
}
