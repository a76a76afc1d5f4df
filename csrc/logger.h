/* The Python face of log.c: formatting logging.LogRecords as Cortex's JSON lines, and
 * the level/sink settings.  Needs the GIL. */
#ifndef CX_LOGGER_H
#define CX_LOGGER_H

#include "module.h"

/* emit(record): format one logging.LogRecord and write it, if its level is enabled for
 * the API whose code runs on this thread. */
PyObject *cx_logger_emit(PyObject *module, PyObject *record);
/* emit_unfiltered(record): write it whatever the levels say (the one "listening" line). */
PyObject *cx_logger_emit_unfiltered(PyObject *module, PyObject *record);
/* set_log_level(slot, levelno): slot -1 sets the default. */
PyObject *cx_logger_set_level(PyObject *module, PyObject *args);
/* set_log_fd(fd, slot=-1): where lines go (1 = stdout), by default or for one slot. */
PyObject *cx_logger_set_fd(PyObject *module, PyObject *args);
/* set_current_api(slot) -> previous slot: whose level and sink apply on this thread. */
PyObject *cx_logger_set_current_api(PyObject *module, PyObject *arg);
/* format_record(record) -> str: the line emit() would write, without the newline. */
PyObject *cx_logger_format(PyObject *module, PyObject *record);

#endif
