/* DogStatsD over UDP, as Cortex's runtime sent its metrics: `name:value|c|#k:v,...` with
 * `|g` for gauges and `|h` for histograms.  Pure C; every call is non-blocking, never fails
 * loudly (a lost datagram is a lost datagram) and needs no GIL. */
#ifndef CX_STATSD_H
#define CX_STATSD_H

#include <stddef.h>

#include "buf.h"

/* Reads CORTEX_STATSD_ADDR (host:port, [v6]:port) or else HOST_IP (port 9125, as Cortex
 * set it) and opens a non-blocking UDP socket to it; nothing when neither is set or the
 * address does not resolve (one warning).  Called once per process tree by cx_metrics_setup. */
void cx_statsd_open_from_env(void);
/* 1 when datagrams are being sent. */
int cx_statsd_enabled(void);
/* Sends one datagram.  type is 'c', 'g' or 'h'; tags is "k:v,k:v" (cx_statsd_tag_append) or
 * empty.  The name's ':' '|' '@' '#' and control bytes are sent as '_'. */
void cx_statsd_send(const char *name, size_t name_len, double value, char type, const char *tags,
                    size_t tags_len);
/* Appends key:value (a ',' first unless tags is empty), normalised as datadogpy's DogStatsd
 * does for ASCII: every byte that is not a letter, digit, '_', '-', ':', '/' or '.' becomes
 * '_' (non-ASCII UTF-8 is kept as is).  0 or -1 (out of memory). */
int cx_statsd_tag_append(cx_buf *tags, const char *key, size_t key_len, const char *value,
                         size_t value_len);

#endif
