/* Numbers of the node's management model that px_codec.h does not (yet) carry: discovery
 * capabilities, GET/SET_PARAM ids, COUNTERS ids (a DIME's, and the server's) and CONNECT's directions.
 * tests/test_baremetal_build.py checks each against pxproto.wire.codes, so they cannot drift. */
#ifndef KERNEL_CODES_H
#define KERNEL_CODES_H

#define CAP_AUTH 0x02
#define CAP_BARE_METAL_CAPS CAP_AUTH

#define PARAM_HEARTBEAT_PERIOD_MS 1
#define PARAM_MEM_LIMIT_CHUNKS 2
#define PARAM_RETRANSMIT_MS 3
#define PARAM_CREDIT_WINDOW 4
#define PARAM_LOG_LEVEL 5

#define CID_FRAMES_RX 1
#define CID_FRAMES_TX 2
#define CID_BYTES_RX 3
#define CID_BYTES_TX 4
#define CID_REJECTED_MALFORMED 11
#define CID_REJECTED_AUTH 12
#define CID_REJECTED_REPLAY 13
#define CID_REJECTED_ACL 14
#define CID_MEM_USED_CHUNKS 15
#define CID_MEM_PEAK_CHUNKS 16
#define CID_FAULTS 17
#define CID_CPU_NS 18
#define CID_REJECTED_UNAUTHENTICATED 20
#define CID_MAX 20

/* system-scope COUNTERS ids (ServerCounterId): the server's own wire */
#define SCID_WIRE_RX 1
#define SCID_WIRE_TX 2
#define SCID_DROPPED 3
#define SCID_UNKNOWN_DIME 4
#define SCID_DIME_BUSY 5
#define SCID_MALFORMED 6
#define SCID_REJECTED_UNAUTHENTICATED 7
#define SCID_REJECTED_AUTH 8
#define SCID_REJECTED_REPLAY 9
#define SCID_FAULT_REPORTS 10
#define SCID_REJECTED_FENCED 11
#define SCID_MAX 11

/* CONNECT's DIRECTION (Direction) */
#define DIR_INPUT 0
#define DIR_OUTPUT 1

#define SW_VERSION 0x00010000u
#endif
