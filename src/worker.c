/* stub: being written */
#include "autoconfig.h"
extern int worker_stub_;
int worker_stub_;
