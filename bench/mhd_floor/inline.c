/* The cheapest libmicrohttpd server there is: its own epoll thread answers every request
 * with a constant from the access handler.  bench/mhd_floor.py measures what a request
 * costs in libmicrohttpd and the kernel alone. */
#include "answer.h"
#include <stdlib.h>
#include <unistd.h>

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **request_state)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    if (*request_state == NULL) { /* headers only: the body, if any, comes next */
        *request_state = conn;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    return send_answer(conn);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
                                            (uint16_t)atoi(argv[1]), NULL, NULL, on_request, NULL,
                                            MHD_OPTION_END);
    if (d == NULL)
        return 1;
    for (;;)
        pause();
}
