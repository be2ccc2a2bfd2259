"""The bare-metal DIME kernel's Python side: the package built into its image, and QEMU guests of it.

The kernel itself is C (``kernel/``, ``make -C kernel``); see :mod:`pxproto.baremetal.builtin` and
:mod:`pxproto.baremetal.qemu`.
"""
