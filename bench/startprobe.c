/*
 * startprobe: time from fork() of a watchdog to its first "200" on /_/health.
 *
 * usage: startprobe PORT TIMEOUT_MS /abs/path/to/watchdog [args...]
 * The watchdog inherits this program's environment (bench/run sets port=PORT etc.),
 * with stdout/stderr sent to /dev/null. The clock starts just before fork(); the
 * parent then connects to 127.0.0.1:PORT in a tight loop and sends
 * "GET /_/health" until the status line says 200. The watchdog is then killed
 * with SIGKILL (it has no children at idle) and reaped.
 * Prints one line of JSON: {"us":N,"attempts":A} or {"error":"..."}; exit 1 on error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 1 = got 200, 0 = not yet (refused, closed, other status) */
static int probe(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        static const char req[] =
            "GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
            char buf[64];
            size_t got = 0;
            while (got < 12) {
                ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
                if (r <= 0) break;
                got += (size_t)r;
            }
            buf[got] = 0;
            ok = got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0;
        }
    }
    close(fd);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 4 || argv[3][0] != '/') {
        fprintf(stderr, "usage: %s PORT TIMEOUT_MS /abs/watchdog [args...]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double timeout = atof(argv[2]) / 1000.0;
    signal(SIGPIPE, SIG_IGN);

    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) {
        printf("{\"error\":\"fork: %s\"}\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execv(argv[3], &argv[3]);
        _exit(127);
    }
    long attempts = 0;
    int healthy = 0, status = 0, exited = 0;
    double t1 = t0;
    while (now() - t0 < timeout) {
        attempts++;
        if (probe(port)) {
            t1 = now();
            healthy = 1;
            break;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            exited = 1;
            break;
        }
        sched_yield();
    }
    if (!exited) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    }
    if (healthy) {
        printf("{\"us\":%.1f,\"attempts\":%ld}\n", (t1 - t0) * 1e6, attempts);
        return 0;
    }
    if (exited)
        printf("{\"error\":\"watchdog exited before healthy (status %d)\"}\n",
               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    else
        printf("{\"error\":\"no 200 on /_/health within %.0f ms\"}\n", timeout * 1000);
    return 1;
}
