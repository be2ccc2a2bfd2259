"""Capture files: pcap and pcapng reading and pcapng writing."""

from pxproto.capture.pcapng import CaptureError, Packet, PcapngWriter, read_packets

__all__ = ["CaptureError", "Packet", "PcapngWriter", "read_packets"]
