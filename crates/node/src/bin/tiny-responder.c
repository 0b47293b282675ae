/*
 * tiny-responder: the smallest program an inetd-style server can start per connection. It
 * writes one line to standard output (the connection) and exits: a static ELF with no libc,
 * no dynamic loader and no runtime, so that what `warren bench superd` measures is the
 * server's own cost of starting a program (fork or clone, execve, exit, reaping), not the
 * program's start-up, which would be the same under every server.
 *
 * `warren bench superd` builds it at run time (Cargo builds no C) with
 *     gcc -Os -static -nostdlib -fno-pie -no-pie -fno-stack-protector -s -o tiny-responder tiny-responder.c
 * Only the two system calls below are made: write(1, line) and exit_group(0).
 */

static const char line[] = "hello from tiny-responder\n";

static long sys3(long n, long a, long b, long c) {
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#else
#error "tiny-responder: add this architecture's system call instruction"
#endif
    return ret;
}

#if defined(__x86_64__)
enum { SYS_WRITE = 1, SYS_EXIT_GROUP = 231 };
#else
enum { SYS_WRITE = 64, SYS_EXIT_GROUP = 94 };
#endif

void _start(void) {
    /* A short write on a fresh connection's empty send buffer does not happen for 26 bytes. */
    long written = sys3(SYS_WRITE, 1, (long)line, sizeof line - 1);
    sys3(SYS_EXIT_GROUP, written == (long)(sizeof line - 1) ? 0 : 1, 0, 0);
    for (;;) {
    }
}
