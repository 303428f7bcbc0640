/* stub: being written */
#include "autoconfig.h"
extern int sandbox_stub_;
int sandbox_stub_;
