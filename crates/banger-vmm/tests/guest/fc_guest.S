/*
 * A minimal x86-64 guest kernel for the Firecracker tests: an ELF that
 * Firecracker loads and enters in 64-bit mode, with the stack pointer set.
 * It needs no Linux, so it runs where KVM cannot boot a Linux guest.
 *
 * By default it prints its lines on the serial port (COM1), then polls the
 * i8042 keyboard controller. When Firecracker's SendCtrlAltDel puts a key
 * into the controller, it prints a line and resets the machine through the
 * controller (command 0xfe on port 0x64), which makes Firecracker exit, as a
 * Linux guest booted with reboot=k does.
 *
 * Variants, chosen with -D:
 *   IGNORE_CTRL_ALT_DEL  print the lines, then halt with interrupts off
 *   STALL                loop forever without any port I/O
 *   RESET_AT_ONCE        print a line and reset the machine at once
 */

#define COM1 0x3f8
#define I8042_STATUS 0x64
#define I8042_RESET_CPU 0xfe

    .code64
    .globl _start
_start:
#ifdef STALL
1:  jmp 1b
#endif
#ifdef RESET_AT_ONCE
    lea resetting(%rip), %rsi
    call print
    jmp reset
#endif
    lea ready(%rip), %rsi
    call print
#ifdef IGNORE_CTRL_ALT_DEL
    cli
2:  hlt
    jmp 2b
#endif

poll:
    mov $200000, %ecx
3:  pause
    dec %ecx
    jnz 3b
    in $I8042_STATUS, %al
    test $1, %al
    jz poll
    lea ctrl_alt_del(%rip), %rsi
    call print
reset:
    mov $I8042_RESET_CPU, %al
    out %al, $I8042_STATUS
4:  hlt
    jmp 4b

/* Writes the NUL-terminated string at %rsi to COM1. */
print:
    mov $COM1, %dx
5:  lodsb
    test %al, %al
    jz 6f
    out %al, %dx
    jmp 5b
6:  ret

ready:
    .asciz "banger-test-guest: ready\nbanger-probe: ok test-guest\n"
ctrl_alt_del:
    .asciz "banger-test-guest: ctrl-alt-del, resetting\n"
resetting:
    .asciz "banger-test-guest: resetting at once\n"
