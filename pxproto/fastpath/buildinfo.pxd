# cython: language_level=3
# The source hash setup.py passes to the C compiler (pxproto/fastpath/buildhash.py);
# every compiled module exposes it as BUILD_HASH so a stale build is caught at import.
cdef extern from *:
    """
    #ifndef PXPROTO_BUILD_HASH
    #define PXPROTO_BUILD_HASH ""
    #endif
    """
    const char* PXPROTO_BUILD_HASH
