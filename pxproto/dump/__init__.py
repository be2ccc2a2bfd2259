"""pxdump: sniff, read, filter, decode and write Parallax traffic.

- :mod:`pxproto.dump.columns`  batches of frames as numpy columns (fast path or reference codec)
- :mod:`pxproto.dump.filter`   the filter language, compiled to BPF and to column masks
- :mod:`pxproto.dump.oneline`  one line per frame, rendered in bulk (:mod:`pxproto.dump.text`)
- :mod:`pxproto.dump.detail`   -v tree, -x/-X hex, --json lines
- :mod:`pxproto.dump.track`    request/response matching, heartbeat gaps, DATA reassembly
- :mod:`pxproto.dump.stats`    -q statistics
- :mod:`pxproto.dump.source`, :mod:`pxproto.dump.live`  capture files and live interfaces
- :mod:`pxproto.dump.cli`      the ``pxdump`` command
"""
