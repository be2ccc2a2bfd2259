/* Multiboot 1 entry: the loader starts us in 32-bit protected mode with paging off.
 * We build identity-mapped page tables (4 GiB in 2 MiB pages), enter long mode and
 * call kmain(magic, info).  The a.out kludge (flag bit 16) lets QEMU load this ELF64. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00010003   /* page-align modules, memory info, address fields valid */

        .section .multiboot, "a"
        .align 4
mb_header:
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)
        .long mb_header          /* header_addr */
        .long __load_start       /* load_addr */
        .long __load_end         /* load_end_addr */
        .long __bss_end          /* bss_end_addr */
        .long _start32           /* entry_addr */

        .section .text32, "ax"
        .code32
        .globl _start32
_start32:
        cli
        mov %eax, boot_magic
        mov %ebx, boot_info
        mov $boot_stack_top, %esp

        /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB, present|writable|huge */
        mov $pdpt, %eax
        or $3, %eax
        mov %eax, pml4
        xor %ecx, %ecx
0:      mov %ecx, %eax
        shl $12, %eax
        add $pd, %eax
        or $3, %eax
        mov %eax, pdpt(,%ecx,8)
        inc %ecx
        cmp $4, %ecx
        jne 0b
        xor %ecx, %ecx
1:      mov %ecx, %eax
        shl $21, %eax
        or $0x83, %eax
        cmp $1536, %ecx           /* the top GiB (LAPIC, I/O APIC, PCI holes): uncached */
        jb 3f
        or $0x18, %eax
3:      mov %eax, pd(,%ecx,8)
        mov %ecx, %eax
        shr $11, %eax
        mov %eax, pd+4(,%ecx,8)
        inc %ecx
        cmp $2048, %ecx
        jne 1b

        mov $pml4, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax            /* PAE */
        mov %eax, %cr4
        mov $0xC0000080, %ecx     /* EFER */
        rdmsr
        or $0x100, %eax           /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax      /* PG | PE */
        mov %eax, %cr0
        lgdt gdt_ptr
        ljmp $0x08, $_start64

        .code64
_start64:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        xor %ax, %ax
        mov %ax, %fs
        mov %ax, %gs
        mov $boot_stack_top, %rsp
        mov boot_magic(%rip), %edi
        mov boot_info(%rip), %esi
        call kmain
2:      cli
        hlt
        jmp 2b

/* Application processors: the SIPI starts them in real mode at ap_tramp copied to AP_TRAMP
 * (below 1 MiB).  They load the kernel's GDT, go to protected mode, enable long mode on the
 * BSP's page tables and jump to ap_start64 with the stack the BSP left in ap_stack. */
#define AP_TRAMP 0x8000
#define TR(x) ((x) - ap_tramp + AP_TRAMP)
        .section .rodata
        .code16
        .globl ap_tramp, ap_tramp_end
ap_tramp:
        cli
        xor %ax, %ax
        mov %ax, %ds
        lgdtl TR(tramp_gdt_ptr)
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x18, $TR(tramp32)
        .code32
tramp32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %cr4, %eax
        or $0x20, %eax
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xC0000080, %ecx
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax
        mov %eax, %cr0
        ljmp $0x08, $ap_start64
        .align 4
tramp_gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
ap_tramp_end:

        .section .text
        .code64
ap_start64:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov ap_stack(%rip), %rsp
        mov ap_index(%rip), %edi
        call ap_main
4:      cli
        hlt
        jmp 4b

        .section .data
        .globl ap_stack, ap_index
        .align 8
ap_stack: .quad 0
ap_index: .long 0
        .align 16
        .globl gdt
gdt:
        .quad 0
        .quad 0x00AF9A000000FFFF   /* 0x08: 64-bit code */
        .quad 0x00CF92000000FFFF   /* 0x10: data */
        .quad 0x00CF9A000000FFFF   /* 0x18: 32-bit code (AP trampoline) */
gdt_end:
        .globl gdt_ptr
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
        .long 0
boot_magic: .long 0
boot_info:  .long 0

        .section .bss
        .align 4096
        .globl pml4, pdpt, pd
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4096 * 4
        .align 16
        .skip 16384
boot_stack_top:
        .section .note.GNU-stack, "", @progbits
