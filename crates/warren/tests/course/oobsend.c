/* Stevens' tcpsend01 (the course's oobsend), as the tests run it: the same writes and urgent
 * bytes, with the pause between them given in milliseconds (the original sleeps 1 s). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void must(long r, const char *what) {
    if (r < 0) {
        perror(what);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: oobsend <ipv4> <port> <pause-ms>\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    long ms = atol(argv[3]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    must(connect(fd, (struct sockaddr *)&to, sizeof to), "connect");
    must(write(fd, "123", 3), "write");
    printf("wrote 3 bytes of normal data\n");
    pause_ms(ms);
    must(send(fd, "4", 1, MSG_OOB), "send");
    printf("wrote 1 byte of OOB data\n");
    pause_ms(ms);
    must(write(fd, "56", 2), "write");
    printf("wrote 2 bytes of normal data\n");
    pause_ms(ms);
    must(send(fd, "7", 1, MSG_OOB), "send");
    printf("wrote 1 byte of OOB data\n");
    pause_ms(ms);
    must(write(fd, "89", 2), "write");
    printf("wrote 2 bytes of normal data\n");
    pause_ms(ms);
    return 0;
}
