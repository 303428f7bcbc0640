/* stub: being written */
#include "autoconfig.h"
extern int pidfile_stub_;
int pidfile_stub_;
