/* What both floor servers send: bench/run.py's expected answer, from static memory. */
#ifndef MHD_FLOOR_ANSWER_H
#define MHD_FLOOR_ANSWER_H

#include <microhttpd.h>

static enum MHD_Result send_answer(struct MHD_Connection *conn)
{
    static const char answer[] = "{\"y\": 6}";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof answer - 1, (void *)answer,
                                                             MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ok;
}

#endif
