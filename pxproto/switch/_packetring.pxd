# cython: language_level=3
"""The switch's batched packet I/O, reachable at C level by the AF_PACKET loop (_afpacket.pyx):
recvmmsg slots, the PACKET_MMAP receive ring, and the batch of frames they fill."""

from pxproto.fastpath.tpacket cimport iovec, mmsghdr

cdef enum:
    BATCH = 64                    # frames per batch
    VNET = 10                     # sizeof(struct virtio_net_hdr)
    SLOT = 65536 + 10 + 118       # a 64 KiB GSO segment with its virtio_net_hdr


cdef struct Batch:
    # the frames of one batch: pointers into a _Slots buffer or into a ring, their lengths, truncation
    int n
    unsigned char* ptr[BATCH]
    unsigned char* vh[BATCH]      # the frame's virtio_net_hdr (PACKET_VNET_HDR sockets), else NULL
    Py_ssize_t len[BATCH]
    bint trunc[BATCH]


cdef class _Slots:
    cdef unsigned char* buf
    cdef iovec iov[BATCH]
    cdef mmsghdr hdr[BATCH]
    cdef unsigned char names[BATCH][28]  # each datagram's sender (a struct sockaddr_in/_in6) when asked for

    cdef int recv(self, int fd, Batch* b, int hdr=*, bint names=*) noexcept nogil


cdef class PacketRing:
    cdef readonly int version
    cdef readonly int fd
    cdef readonly bint vnet         # PACKET_VNET_HDR: a virtio_net_hdr sits before each frame
    cdef unsigned char* map
    cdef size_t map_len
    cdef unsigned int block_size, block_nr, frame_size, frame_nr
    cdef unsigned int cur            # V2: next frame slot; V3: current block
    cdef unsigned int v3_left        # V3: frames of the current block not read yet
    cdef unsigned char* v3_next      # V3: next frame header in the current block
    cdef unsigned int pending[BATCH]  # V2: slots handed out, to release
    cdef int npending
    cdef bint v3_done                # V3: the current block is read to its end; release it
    cdef unsigned char* big          # V2: a frame longer than a slot (a GSO segment), read whole from the socket
    cdef long long ncopied           # V2: frames that came that way

    cdef unsigned char* v2_slot(self, unsigned int i) noexcept nogil
    cdef int take(self, Batch* b) noexcept nogil
    cdef bint ready(self) noexcept nogil
    cdef void c_release(self) noexcept nogil


cdef class TxRing:
    cdef readonly int fd
    cdef readonly Py_ssize_t cap    # the longest frame a slot takes (longer ones go out with sendmmsg)
    cdef readonly unsigned int slots  # frames the ring holds
    cdef unsigned char* map
    cdef size_t map_len
    cdef unsigned int frame_size, frame_nr, cur, data_off
    cdef unsigned int queued         # frames marked for sending since the last flush

    cdef int put(self, const unsigned char* vh, const unsigned char* b, Py_ssize_t n) noexcept nogil
    cdef int flush(self, bint force=*) noexcept nogil
