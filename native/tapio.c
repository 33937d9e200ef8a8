/*
 * The TAP's batched system calls: many frames read, or one TCP super-frame
 * cut and written, in one call from Python (native.h has the contract; the
 * pure-Python twins are in stack/native_py.py). Nothing here decides
 * anything about a protocol: errors come back to the caller as -errno.
 */
#include <errno.h>
#include <unistd.h>

#include "native.h"

int64_t tap_read_batch_io(int fd, uint8_t *buf, size_t cap, size_t frame_max, uint32_t *lens,
                          size_t max_frames)
{
    size_t count = 0, at = 0;
    while (count < max_frames && cap - at >= frame_max) {
        ssize_t n = read(fd, buf + at, frame_max);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || count)
                break;
            return -(int64_t)errno;
        }
        if (n == 0)
            break;
        lens[count++] = (uint32_t)n;
        at += (size_t)n;
    }
    return (int64_t)count;
}

/* The errors that lose one frame without anything being broken (a full
 * queue, no buffers, the interface down): dropped, counted. */
static int dropped_errno(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENOMEM || e == EIO
           || e == ENETDOWN;
}

int64_t tap_write_frames_io(int fd, const uint8_t *buf, const uint32_t *lens, size_t count,
                            uint32_t *dropped)
{
    size_t at = 0;
    uint32_t lost = 0;
    for (size_t i = 0; i < count; i++) {
        ssize_t n;
        do
            n = write(fd, buf + at, lens[i]);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (!dropped_errno(errno)) {
                *dropped = lost;
                return -(int64_t)errno;
            }
            lost++;
        }
        at += lens[i];
    }
    *dropped = lost;
    return (int64_t)(count - lost);
}

int64_t tap_gso_write_io(int fd, const uint8_t *in, size_t len, uint32_t mtu, uint8_t *scratch,
                         size_t cap, uint32_t *lens, size_t max_frames, uint32_t *dropped)
{
    *dropped = 0;
    if (len < 14 + 20 + 20)
        return 0;
    size_t thl = (size_t)(in[14 + 20 + 12] >> 4) * 4;
    if (mtu <= 20 + thl)
        return 0;
    int64_t count = gso_segment(in, len, mtu - 20 - (uint32_t)thl, scratch, cap, lens, max_frames);
    if (count < 0)
        return -(int64_t)EMSGSIZE;                 /* scratch or lens too small */
    if (count == 0)
        return 0;
    return tap_write_frames_io(fd, scratch, lens, (size_t)count, dropped);
}
