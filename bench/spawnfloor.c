/*
 * spawnfloor: the floor for fwatchdog's fork modes.
 *
 * Does what a fork-mode watchdog must do per request, minus HTTP: start the handler
 * in its own process group with stdin/stdout/stderr as pipes, write the request body,
 * read stdout to EOF, drain stderr, wait for the exit status. CONC threads do this in a
 * loop for SECONDS seconds.
 *
 * HOW is how the handler is started:
 *   posix_spawn  posix_spawn(3) with POSIX_SPAWN_SETPGROUP, an empty signal mask and
 *                SIGPIPE reset; glibc does it with clone(CLONE_VM|CLONE_VFORK). This is
 *                what Rust's std::process::Command (and so fwatchdog) does.
 *   fork         fork(2), setpgid, dup2, execv: the textbook way, which also copies the
 *                page tables and so costs more CPU in the parent.
 *
 * usage: spawnfloor HOW CONC SECONDS BODY_BYTES /abs/path/to/handler [args...]
 * prints one line of JSON:
 *   {"requests":N,"errors":E,"seconds":S,"rps":R,"p50_us":..,"p99_us":..,"cpu_us":..}
 * where cpu_us is this program's own CPU time per request (RUSAGE_SELF: user+system,
 * all threads, children excluded), the spawning cost a watchdog cannot avoid.
 *
 * Compiled by bench/run at bench time: gcc -O2 -pthread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char **handler_argv;
static int use_fork;
static posix_spawnattr_t attr;
extern char **environ;
static size_t body_len;
static char *body;
static double deadline;

struct worker {
    pthread_t tid;
    double *lat; /* latencies in microseconds */
    size_t n, cap;
    long errors;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static long drain(int fd) {
    char buf[65536];
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        total += r;
    }
    return total;
}

/* One request: returns 0 on success (exit 0 and all bytes echoed back). */
static int one(void) {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return -1;
    pid_t pid;
    if (use_fork) {
        pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            setpgid(0, 0);
            signal(SIGPIPE, SIG_DFL);
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(err[1], 2);
            execv(handler_argv[0], handler_argv);
            _exit(127);
        }
    } else {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, err[1], 2);
        int rc = posix_spawn(&pid, handler_argv[0], &fa, &attr, handler_argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) return -1;
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    /* The body is tiny (fits a pipe buffer), so write-then-read cannot deadlock here. */
    int ok = write_all(in[1], body, body_len) == 0;
    close(in[1]);
    long got = drain(out[0]);
    close(out[0]);
    drain(err[0]);
    close(err[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return (ok && got >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : -1;
}

static void *run(void *arg) {
    struct worker *w = arg;
    while (now() < deadline) {
        double t0 = now();
        int rc = one();
        double dt = (now() - t0) * 1e6;
        if (rc != 0) {
            w->errors++;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = realloc(w->lat, w->cap * sizeof(double));
            if (!w->lat) abort();
        }
        w->lat[w->n++] = dt;
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s posix_spawn|fork CONC SECONDS BODY_BYTES /abs/handler [args...]\n",
                argv[0]);
        return 2;
    }
    use_fork = strcmp(argv[1], "fork") == 0;
    int conc = atoi(argv[2]);
    double secs = atof(argv[3]);
    body_len = (size_t)atol(argv[4]);
    handler_argv = &argv[5];
    if ((!use_fork && strcmp(argv[1], "posix_spawn") != 0) || conc < 1 || secs <= 0 ||
        handler_argv[0][0] != '/') {
        fprintf(stderr, "spawnfloor: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t none, pipe_only;
    sigemptyset(&none);
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &pipe_only);
    body = malloc(body_len + 1);
    memset(body, 'x', body_len);
    if (body_len) body[body_len - 1] = '\n';

    struct worker *ws = calloc((size_t)conc, sizeof *ws);
    double start = now();
    deadline = start + secs;
    for (int i = 0; i < conc; i++) pthread_create(&ws[i].tid, NULL, run, &ws[i]);
    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(ws[i].tid, NULL);
        total += ws[i].n;
        errors += ws[i].errors;
    }
    double elapsed = now() - start;
    double *all = malloc((total ? total : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < conc; i++) {
        memcpy(all + k, ws[i].lat, ws[i].n * sizeof(double));
        k += ws[i].n;
    }
    qsort(all, total, sizeof(double), cmp);
    double p50 = total ? all[(size_t)(0.50 * (total - 1))] : 0;
    double p99 = total ? all[(size_t)(0.99 * (total - 1))] : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec +
                 ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
    printf("{\"requests\":%zu,\"errors\":%ld,\"seconds\":%.6f,\"rps\":%.2f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"cpu_us\":%.1f}\n",
           total, errors, elapsed, total / elapsed, p50, p99, total ? cpu / total : 0);
    return 0;
}
