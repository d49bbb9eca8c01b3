/* version.c — the one source of libouro.la of its own: the allocator lives
 * in the convenience library libouro-core.la, shared with libouro-malloc. */
#include "ouro.h"
