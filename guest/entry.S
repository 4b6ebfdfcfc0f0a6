//go:build ignore

/*
 * Entry of the pagecast test guest. (The go:build line keeps the Go tool,
 * which would take this for cgo source, away from it; the Makefile builds it.)
 *
 * The boot CPU arrives here from a multiboot loader (QEMU -kernel, or
 * pagecast's monitor): 32-bit protected mode, paging and interrupts off,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot info.
 * Additional vCPUs (pagecast's monitor only) arrive at the same place with
 * EAX = 0x50434150 ('PCAP'), EBX = the same multiboot info, ESI = cpu index.
 *
 * Every CPU loads the guest's own flat GDT, takes its own 16 KiB stack and
 * calls guest_main(magic, mbi, cpu), which never returns.
 */

#define MULTIBOOT_MAGIC 0x1BADB002
#define MULTIBOOT_FLAGS 0x00000003 /* page-align modules, memory info */
#define AP_MAGIC        0x50434150
#define MAX_CPUS        16
#define STACK_SHIFT     14         /* 16 KiB per CPU */

	.section .multiboot, "a"
	.align 4
	.long MULTIBOOT_MAGIC
	.long MULTIBOOT_FLAGS
	.long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

	.text
	.globl _start
_start:
	cli
	cld
	lgdt gdt_descriptor
	ljmp $0x08, $1f
1:	movw $0x10, %cx
	movw %cx, %ds
	movw %cx, %es
	movw %cx, %fs
	movw %cx, %gs
	movw %cx, %ss

	cmpl $AP_MAGIC, %eax
	jne 2f
	testl %esi, %esi
	jz halt                  /* cpu 0 is the boot CPU */
	cmpl $MAX_CPUS, %esi
	jae halt                 /* no stack for this CPU */
	jmp 3f
2:	xorl %esi, %esi          /* the boot CPU is cpu 0 */

3:	movl %esi, %ecx
	incl %ecx
	shll $STACK_SHIFT, %ecx
	leal stacks(%ecx), %esp  /* top of this CPU's stack */

	pushl %esi               /* cpu */
	pushl %ebx               /* multiboot info */
	pushl %eax               /* boot magic */
	call guest_main

	.globl halt
halt:
	cli
	hlt
	jmp halt

	.section .rodata
	.align 8
gdt:
	.quad 0
	.quad 0x00CF9A000000FFFF /* 0x08: code, base 0, limit 4 GiB, 32-bit */
	.quad 0x00CF92000000FFFF /* 0x10: data, base 0, limit 4 GiB */
gdt_descriptor:
	.word gdt_descriptor - gdt - 1
	.long gdt

	.bss
	.align 16
stacks:
	.skip MAX_CPUS << STACK_SHIFT

	.section .note.GNU-stack, "", @progbits
