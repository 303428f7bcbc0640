/* stub: being written */
#include "autoconfig.h"
extern int log_stub_;
int log_stub_;
