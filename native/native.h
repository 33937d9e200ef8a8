/*
 * C hot paths of the stack: the Internet checksum and a byte-range
 * reassembly buffer. stack/native_py.py is the pure-Python twin of every
 * function here; tests/test_native.py proves that the two agree.
 *
 * The declarations between the two "cdef" markers are read by
 * native/build.py and handed to cffi as they stand, so they must stay in the
 * subset of C that cffi parses: integer #defines are the only preprocessor
 * lines allowed there, and no attributes.
 */
#ifndef STACK_NATIVE_H
#define STACK_NATIVE_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */

/*
 * 16-bit ones-complement sum of the big-endian 16-bit words of buf[0, len)
 * (an odd trailing byte is padded with a zero byte), added to `initial` and
 * folded until it fits in 16 bits. Not complemented. The result is 0 only
 * when initial is 0 and every byte is 0.
 */
uint32_t csum_partial(const uint8_t *buf, size_t len, uint32_t initial);

/* Return codes of reasm_insert besides the count of newly covered bytes. */
#define REASM_OUT_OF_RANGE -1
#define REASM_TOO_MANY_RANGES -2
#define REASM_NO_MEMORY -3

/* One stored range of offsets, [start, end). */
typedef struct {
    int64_t start;
    int64_t end;
} reasm_range;

typedef struct reasm reasm;

/* NULL when out of memory. capacity >= 0, max_holes >= 1. */
reasm *reasm_new(int64_t capacity, int64_t max_holes);
void reasm_free(reasm *r);

/*
 * Store buf[0, len) at `offset`. Bytes already stored win over new ones.
 * Returns the count of newly covered bytes (>= 0), REASM_OUT_OF_RANGE when
 * offset < 0 or offset + len > capacity, REASM_TOO_MANY_RANGES when the data
 * touches no stored range and max_holes ranges are stored already, or
 * REASM_NO_MEMORY. Nothing changes unless the result is >= 0.
 */
int64_t reasm_insert(reasm *r, int64_t offset, const uint8_t *buf, size_t len);

/* 1 when [offset, offset + length) holds a stored byte, else 0. */
int reasm_overlaps(const reasm *r, int64_t offset, int64_t length);

/* Length of the stored prefix that starts at offset 0. */
int64_t reasm_contiguous(const reasm *r);

/* Address of offset 0 in the buffer (NULL when nothing was ever stored). */
const char *reasm_data(const reasm *r);

/*
 * Drop the first n bytes (0 <= n <= reasm_contiguous) and shift every offset
 * down by n. Returns 0, or REASM_OUT_OF_RANGE for a bad n (nothing changes).
 */
int reasm_pop(reasm *r, int64_t n);

/* The stored ranges: reasm_count of them, sorted, disjoint, not adjacent. */
size_t reasm_count(const reasm *r);
const reasm_range *reasm_ranges(const reasm *r);

/* Total bytes stored. */
int64_t reasm_buffered(const reasm *r);

/* Forget everything and release the memory held. */
void reasm_clear(reasm *r);

/*
 * Software GSO (stack/native_py.py gso_segment is the twin): cut the
 * Ethernet + IPv4 + TCP frame in[0, len), whose TCP payload is longer than
 * mss, into frames of mss payload bytes (the last one shorter), written one
 * after another into out[0, cap), the length of frame i in lens[i]. Each
 * frame's IP total length, identification (one more each) and checksum,
 * and TCP sequence number, flags (FIN and PSH on the last only, CWR on the
 * first only, URG while the pointer is ahead), urgent pointer and checksum
 * are set. Returns the count of frames; 0 when the frame is not one to cut
 * (not IPv4 without options, not TCP, a fragment, short, or a payload of
 * mss or less: send it as it is); -1 when cap or max_frames is too small.
 */
int64_t gso_segment(const uint8_t *in, size_t len, uint32_t mss, uint8_t *out, size_t cap,
                    uint32_t *lens, size_t max_frames);

/*
 * Software GRO (stack/native_py.py gro_coalesce is the twin): the frames
 * in[0, ...), frame i lens[i] bytes, one after another. Consecutive frames
 * that are in-order TCP segments of one flow merge into one frame: IPv4
 * without options or fragments, both checksums right, flags ACK or ACK+PSH
 * (PSH on the last only), a payload, no urgent pointer; the same Ethernet
 * header, TOS, DF, TTL, addresses, ports, acknowledgment, window and header
 * length; each segment's sequence number where the last one ended; every
 * segment but the last as long as the first and the last no longer; the
 * same options, or both exactly NOP, NOP, timestamps with neither value
 * going back; at most 65,535 bytes of IP packet. A merged frame has the
 * first frame's headers with the IP total length and both checksums
 * recomputed and PSH when the last had it. which[k] says what output frame
 * k is: >= 0, frame which[k] of the input as it came; < 0, merged frame
 * -1 - which[k], written to out[0, cap) one after another, out_lens its
 * length. Returns the count of output frames (which[] needs count places),
 * or -1 when cap or max_merged is too small.
 */
int64_t gro_coalesce(const uint8_t *in, const uint32_t *lens, size_t count, uint8_t *out,
                     size_t cap, int32_t *which, uint32_t *out_lens, size_t max_merged);

/*
 * The TAP's batched system calls (native/tapio.c; they let go of the GIL
 * while they run, so Python threads go on meanwhile).
 *
 * tap_read_batch: read(2) frames from the non-blocking fd into buf[0, cap),
 * one after another, frame i's length in lens[i], until EAGAIN, max_frames
 * frames, or less than frame_max bytes of room is left. Returns the count
 * (0: nothing was waiting), or -errno when the first read fails otherwise.
 *
 * tap_gso_write: software GSO and the writes in one call: cut the TCP
 * super-frame in[0, len) with gso_segment into frames that fit mtu (IP
 * header, TCP header and payload), using scratch[0, cap) and lens[0,
 * max_frames), and write(2) each to fd. A write the queue refuses (EAGAIN,
 * ENOBUFS) loses that frame only, counted in *dropped. Returns the frames
 * written, 0 when the frame is not one to cut (write it as it is), -EMSGSIZE
 * when cap or max_frames is too small, or -errno when a write fails otherwise.
 */
int64_t tap_read_batch(int fd, uint8_t *buf, size_t cap, size_t frame_max, uint32_t *lens,
                       size_t max_frames);
int64_t tap_gso_write(int fd, const uint8_t *in, size_t len, uint32_t mtu, uint8_t *scratch,
                      size_t cap, uint32_t *lens, size_t max_frames, uint32_t *dropped);

/* cdef-end */

/* The same calls with the GIL held (the wrappers above are cffi's preamble). */
int64_t tap_read_batch_io(int fd, uint8_t *buf, size_t cap, size_t frame_max, uint32_t *lens,
                          size_t max_frames);
int64_t tap_write_frames_io(int fd, const uint8_t *buf, const uint32_t *lens, size_t count,
                            uint32_t *dropped);
int64_t tap_gso_write_io(int fd, const uint8_t *in, size_t len, uint32_t mtu, uint8_t *scratch,
                         size_t cap, uint32_t *lens, size_t max_frames, uint32_t *dropped);

#endif
