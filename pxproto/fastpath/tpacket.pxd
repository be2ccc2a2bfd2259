# cython: language_level=3
# Linux packet-socket declarations (AF_PACKET, PACKET_MMAP rings, batched socket calls, poll, mmap)
# shared by the compiled rings: the switch's (pxproto/switch/_packetring.pyx, _afpacket.pyx) and
# pxdump's live capture (pxproto/dump/_ring.pyx).  Declarations only: no code, no module of its own.
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_REALTIME
    int CLOCK_MONOTONIC

cdef extern from "<sys/socket.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        unsigned int msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr* v, unsigned int n, int flags, timespec* t)
    int sendmmsg(int fd, mmsghdr* v, unsigned int n, int flags)
    long send(int fd, const void* buf, size_t n, int flags)
    long recv(int fd, void* buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void* optval, unsigned int optlen)
    int getsockopt(int fd, int level, int optname, void* optval, unsigned int* optlen)
    int MSG_DONTWAIT
    int MSG_TRUNC
    int SOL_SOCKET
    int SO_ATTACH_FILTER

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN
    short POLLOUT
    short POLLERR

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    int PROT_READ
    int PROT_WRITE
    int MAP_SHARED
    int MAP_LOCKED
    void* MAP_FAILED

cdef extern from "<linux/if_packet.h>" nogil:
    struct tpacket_req:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket2_hdr:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_sec
        uint32_t tp_nsec
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_hdr_v1 h1 "hdr.bh1"
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
        unsigned int tp_freeze_q_cnt
    struct sockaddr_ll:
        unsigned char sll_pkttype
    size_t TPACKET_ALIGN(size_t x)
    int TPACKET2_HDRLEN
    int PACKET_OUTGOING
    int SOL_PACKET
    int PACKET_VERSION
    int PACKET_RX_RING
    int PACKET_TX_RING
    int PACKET_STATISTICS
    int PACKET_QDISC_BYPASS
    int PACKET_VNET_HDR
    int PACKET_COPY_THRESH
    int TPACKET_V2
    int TPACKET_V3
    int TP_STATUS_KERNEL
    int TP_STATUS_USER
    int TP_STATUS_COPY
    int TP_STATUS_AVAILABLE
    int TP_STATUS_SEND_REQUEST
    int TP_STATUS_SENDING
    int TP_STATUS_WRONG_FORMAT
