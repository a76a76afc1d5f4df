/* inline.c plus the one step a server needs to answer from another thread: each request is
 * suspended in the access handler and resumed once the loop's round is over (here by the
 * same thread, at once: no threads, no queue, no Python).  Its cost over inline.c is what
 * libmicrohttpd's suspend and resume add to every request. */
#include "answer.h"
#include <stdlib.h>
#include <sys/epoll.h>

#define MAX_WAITING 4096
static struct MHD_Connection *waiting[MAX_WAITING];
static int n_waiting;

enum { GOT_HEADERS = 1, SUSPENDED = 2 };

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **request_state)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    static const int got_headers = GOT_HEADERS, suspended = SUSPENDED;
    if (*request_state == NULL) {
        *request_state = (void *)&got_headers;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*(const int *)*request_state == GOT_HEADERS && n_waiting < MAX_WAITING) {
        *request_state = (void *)&suspended;
        MHD_suspend_connection(conn);
        waiting[n_waiting++] = conn;
        return MHD_YES;
    }
    return send_answer(conn);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
                                            (uint16_t)atoi(argv[1]), NULL, NULL, on_request, NULL,
                                            MHD_OPTION_END);
    if (d == NULL)
        return 1;
    /* libmicrohttpd's own epoll fd turns readable when it has events; a resume pokes it */
    int loop = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN,
                                .data.fd = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd};
    if (loop < 0 || epoll_ctl(loop, EPOLL_CTL_ADD, event.data.fd, &event) != 0)
        return 1;
    for (int resumed = 0;;) {
        MHD_UNSIGNED_LONG_LONG timeout;
        int wait_ms = MHD_get_timeout(d, &timeout) == MHD_YES && timeout < 1000 ? (int)timeout : 1000;
        if (!resumed) /* just resumed: run the loop again at once to send their answers */
            epoll_wait(loop, &event, 1, wait_ms);
        MHD_run(d);
        resumed = n_waiting;
        for (int i = 0; i < n_waiting; i++)
            MHD_resume_connection(waiting[i]);
        n_waiting = 0;
    }
}
