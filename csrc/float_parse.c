/* The decimal-to-double conversion is all inline in float_parse.h: its one hot caller
 * (json_decode.c) parses arrays of numbers, where a call per number showed. */
#include "float_parse.h"
