/* Stevens' tcprecv01 (the course's oobrecv), as the tests run it: listens on a free loopback
 * port (printed first), accepts one connection, prints normal bytes as read and the urgent
 * byte from its SIGURG handler. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int connfd;

static void sig_urg(int signo) {
    char buff[100];
    (void)signo;
    printf("SIGURG received\n");
    ssize_t n = recv(connfd, buff, sizeof(buff) - 1, MSG_OOB);
    if (n < 0) {
        perror("recv MSG_OOB");
        return;
    }
    buff[n] = 0;
    printf("read %d OOB byte: %s\n", (int)n, buff);
}

int main(void) {
    char buff[100];
    setvbuf(stdout, NULL, _IOLBF, 0);
    int listenfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in at = {0};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof at;
    if (bind(listenfd, (struct sockaddr *)&at, sizeof at) < 0 || listen(listenfd, 1024) < 0) {
        perror("listen");
        return 1;
    }
    getsockname(listenfd, (struct sockaddr *)&at, &len);
    printf("port %d\n", ntohs(at.sin_port));
    connfd = accept(listenfd, NULL, NULL);
    signal(SIGURG, sig_urg);
    fcntl(connfd, F_SETOWN, getpid());
    for (;;) {
        ssize_t n = read(connfd, buff, sizeof(buff) - 1);
        if (n < 0) {
            continue; /* EINTR from the handler */
        }
        if (n == 0) {
            printf("received EOF\n");
            return 0;
        }
        buff[n] = 0;
        printf("read %d bytes: %s\n", (int)n, buff);
    }
}
