# Included by wirec.pyx after _frames.pxi: FrameView, a validated frame kept as its
# bytes plus the C view, with lazy attribute reads.

cdef class FrameView:
    """A validated frame kept as its bytes plus the C view: attribute reads are C field
    reads and nothing else is built until asked.  ``view == frame`` compares with a
    reference Frame; ``to_dict()`` and ``frame()`` give exactly the reference's results."""

    cdef bytes _data
    cdef PxView v

    @property
    def cls(self):
        from pxproto.wire.codes import FrameClass
        return FrameClass(self.v.cls)

    @property
    def scope(self):
        return SCOPE_DIME if self.v.scope else SCOPE_SYSTEM

    @property
    def src_dime(self):
        return self.v.src_dime

    @property
    def src_thread(self):
        return self.v.src_thread

    @property
    def dst_dime(self):
        return self.v.dst_dime

    @property
    def dst_thread(self):
        return self.v.dst_thread

    @property
    def seq(self):
        return self.v.seq

    @property
    def version(self):
        return self.v.version

    @property
    def padding(self):
        return self.v.padding

    @property
    def cmd(self):
        return CMD_M[self.v.cmd] if self.v.cls == PX_CLASS_SIGNALING else None

    @property
    def op(self):
        return OP_M[self.v.op] if self.v.cls == PX_CLASS_SIGNALING else None

    @property
    def status(self):
        return STATUS_M[self.v.status] if self.v.cls == PX_CLASS_SIGNALING else None

    @property
    def req_id(self):
        return self.v.req_id if self.v.cls == PX_CLASS_SIGNALING else None

    @property
    def raw(self):
        return self._data

    def frame(self) -> Frame:
        """The reference Frame for these bytes."""
        return _frame(<const unsigned char*>PyBytes_AS_STRING(self._data), &self.v)

    @property
    def body(self):
        return self.frame().body

    def to_dict(self) -> dict:
        return self.frame().to_dict()

    def __eq__(self, other):
        if isinstance(other, FrameView):
            return self.frame() == (<FrameView>other).frame()
        if isinstance(other, FrameT):
            return self.frame() == other
        return NotImplemented

    def __repr__(self):
        return f"FrameView({self.frame()!r})"


def view(buf) -> FrameView:
    """Validate one frame and return a lazy FrameView (ProtocolError as decode())."""
    cdef FrameView fv = FrameView.__new__(FrameView)
    cdef bytes data = buf if PyBytes_CheckExact(buf) else bytes(buf)
    fv._data = data
    if _view(<const unsigned char*>PyBytes_AS_STRING(data), len(data), &fv.v):
        raise _error(fv.v.error, fv.v.error_offset, data)
    return fv

