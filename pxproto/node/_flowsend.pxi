# ChannelPlane.pump's loop for one output channel (included in ``_flowc.pyx``): batches taken off the flow and sent.


def take_batch(flow, object ch, Py_ssize_t room):
    """Flow.take, compiled (see :func:`_take` in ``_flowc.pyx``)."""
    return _take(flow, ch, room)


def send_batches(flow, tx, Py_ssize_t room, double now, Py_ssize_t most, bint gather=True):
    """Up to ``most`` messages on the output channel ``tx`` while it has credit and outputs wait: each the waiting
    outputs that fit ``room`` bytes (:func:`take_batch`), sent with ``tx.send_wire``.  A compiled ``tx`` with
    ``iov`` set is given a message of large kept runs as their :class:`pxproto.dime._channel.Gather` (``gather``
    False: always joined, as the twin does).  Returns (the first message's
    WireOutput with the frames and events of the others appended, messages, items, frames counted as
    ITEM_FRAMES_TX counts them, bytes of item payload sent) for the caller to put out once; (None, 0, ...):
    nothing was sent.  The twin of pump's loop body for one channel in ``channels.py``."""
    cdef object out = None, o
    cdef list frames
    cdef Py_ssize_t msgs = 0, items = 0, nframes = 0, payload = 0, n, k
    cdef Py_ssize_t frag = tx.frag_size
    cdef object ch = tx.channel, send = tx.send_wire
    cdef tuple got
    cdef object msg
    gather = gather and type(tx) is _CSender and tx.iov
    while msgs < most and (msgs == 0 or tx.credit_left > 0):
        got = _take(flow, ch, room, gather)
        k = got[1]
        if k == 0:
            break
        msg = got[0]
        o = send(msg, now)[1]
        if out is None:
            out = o
            frames = out.frames
        else:
            frames += o.frames
            if o.events:
                out.events += o.events
            out.timer = o.timer
        n = PyBytes_GET_SIZE(msg) if type(msg) is bytes else (<Gather>msg).n
        msgs += 1
        items += k
        nframes += (n + frag - 1) // frag
        payload += n - MARK - ITEM * k
    return out, msgs, items, nframes, payload
